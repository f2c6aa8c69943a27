//! `sockit bench put` and `sockit bench get`: transfers of a file of `-d` bytes over `-c`
//! logged-in connections, `-n` in all.
//!
//! `put` makes the file once in a temporary directory and uploads it under a distinct name per
//! request (`bench-<pid>-<n>`); an upload counts when the server stored exactly its length and
//! BLAKE3 hash. The names are deleted at the end. `get` first stores the file as
//! `bench-<pid>-get`, then downloads it again and again; a download counts when its length and
//! hash are the file's. It is deleted at the end too.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use sockit::client::part_path;

use super::stats::{Report, Tally};
use super::{measure, Budget, Load, WorkerEnd};
use crate::cmd::remote::{self, LoginArgs};
use crate::cmd::{CmdError, Conn};

/// Transfers when neither `-n` nor `--duration` is given.
const DEFAULT_REQUESTS: u64 = 100;
/// Bytes written at a time when the file is made.
const WRITE_CHUNK: usize = 1 << 20;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    pub(super) load: Load,
    /// Bytes of the file.
    #[arg(
        short = 'd',
        long = "data-size",
        visible_alias = "size",
        value_name = "BYTES",
        default_value_t = 32
    )]
    data_size: u64,
    #[command(flatten)]
    login: LoginArgs,
}

/// The file every transfer moves: where it is, and its length and hash.
struct Sample {
    dir: tempfile::TempDir,
    path: PathBuf,
    length: u64,
    hash: String,
}

impl Sample {
    /// Makes a file of `length` bytes of letters in a new temporary directory.
    fn make(length: u64) -> Result<Sample, CmdError> {
        let dir = tempfile::Builder::new()
            .prefix("sockit-bench-")
            .tempdir()
            .map_err(|err| CmdError::failed("cannot make a temporary directory", err))?;
        let path = dir.path().join("sample");
        let failed = |err| CmdError::failed(format!("cannot write {}", path.display()), err);
        let mut file = std::io::BufWriter::new(std::fs::File::create(&path).map_err(failed)?);
        let chunk: Vec<u8> = (0..WRITE_CHUNK).map(|i| b'a' + (i % 26) as u8).collect();
        let mut hasher = blake3::Hasher::new();
        let mut left = length;
        while left > 0 {
            let take = left.min(WRITE_CHUNK as u64) as usize;
            file.write_all(&chunk[..take]).map_err(failed)?;
            hasher.update(&chunk[..take]);
            left -= take as u64;
        }
        file.flush().map_err(failed)?;
        Ok(Sample {
            length,
            hash: hasher.finalize().to_hex().to_string(),
            path: path.clone(),
            dir,
        })
    }
}

/// The name of upload `seq` of this process.
fn stored_name(seq: u64) -> String {
    format!("bench-{}-{seq}", std::process::id())
}

pub(crate) async fn run_put(args: &Args) -> Result<(Report, usize), CmdError> {
    let sample = Arc::new(Sample::make(args.data_size)?);
    let budget = Arc::new(args.load.budget(DEFAULT_REQUESTS));
    let mut workers = Vec::new();
    for _ in 0..args.load.connections_or(1) {
        let client = remote::connect(&args.login).await?;
        workers.push(put_worker(client, sample.clone(), budget.clone()));
    }
    let outcome = measure("put", workers).await;
    let mut client = remote::connect(&args.login).await?;
    for seq in 0..budget.claimed() {
        // An upload that failed may have stored nothing: not_found is expected then.
        let _ = client.delete(&stored_name(seq)).await;
    }
    outcome
}

/// Uploads the sample under a new name per request while the budget lasts.
async fn put_worker(mut client: Conn, sample: Arc<Sample>, budget: Arc<Budget>) -> WorkerEnd {
    let mut tally = Tally::default();
    loop {
        let batch = budget.claim(1);
        if batch.is_empty() {
            return WorkerEnd::done(tally);
        }
        let started = Instant::now();
        let put = client
            .put_file(&sample.path, &stored_name(batch.start), true, &mut |_| {})
            .await;
        match put {
            Ok(stored) if stored.length == sample.length && stored.hash == sample.hash => {
                tally.verified(sample.length, started.elapsed());
            }
            Ok(stored) => tally.failed(
                1,
                &format!("stored {} bytes with hash {}", stored.length, stored.hash),
            ),
            // A failed upload has already made its connection again (logging in again).
            Err(err) => tally.failed(1, &err),
        }
    }
}

pub(crate) async fn run_get(args: &Args) -> Result<(Report, usize), CmdError> {
    let sample = Arc::new(Sample::make(args.data_size)?);
    let name = format!("bench-{}-get", std::process::id());
    let mut client = remote::connect(&args.login).await?;
    client
        .put_file(&sample.path, &name, true, &mut |_| {})
        .await?;
    let budget = Arc::new(args.load.budget(DEFAULT_REQUESTS));
    let mut workers = Vec::new();
    for worker in 0..args.load.connections_or(1) {
        let client = remote::connect(&args.login).await?;
        let out = sample.dir.path().join(format!("got-{worker}"));
        workers.push(get_worker(
            client,
            name.clone(),
            out,
            sample.clone(),
            budget.clone(),
        ));
    }
    let outcome = measure("get", workers).await;
    let _ = client.delete(&name).await;
    outcome
}

/// Downloads `name` to `out` while the budget lasts, checking each against the sample.
async fn get_worker(
    mut client: Conn,
    name: String,
    out: PathBuf,
    sample: Arc<Sample>,
    budget: Arc<Budget>,
) -> WorkerEnd {
    let mut tally = Tally::default();
    while !budget.claim(1).is_empty() {
        let started = Instant::now();
        let got = client.get_file(&name, &out, &mut |_, _| {}).await;
        remove_download(&out);
        match got {
            Ok(got) if got.length == sample.length && got.hash == sample.hash => {
                tally.verified(sample.length, started.elapsed());
            }
            Ok(got) => tally.failed(
                1,
                &format!("got {} bytes with hash {}", got.length, got.hash),
            ),
            Err(err @ sockit::ClientError::Remote { .. }) => tally.failed(1, &err),
            Err(err) => {
                tally.failed(1, &err);
                if let Err(err) = client.reconnect().await {
                    return WorkerEnd::lost(tally, err);
                }
            }
        }
    }
    WorkerEnd::done(tally)
}

/// Removes a download and its part file, so that the next one starts afresh.
fn remove_download(out: &Path) {
    let _ = std::fs::remove_file(out);
    let _ = std::fs::remove_file(part_path(out));
}
