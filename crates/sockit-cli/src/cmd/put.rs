//! `sockit put`: upload files, devices, pipes or standard input, resuming interrupted uploads
//! of files, verified by BLAKE3.
//!
//! What each argument is (a file, a block device, a stream, a directory) is the library's
//! [`Source`]'s decision. Messages name the argument as the user typed it. A file that changed
//! while it was read is stored as it was read, with a warning and exit status 1, like tar.

use std::path::{Path, PathBuf};

use sockit::client::{PutOutcome, Source, SourceKind};
use sockit::proto::ErrorCode;
use sockit::store::FileName;
use sockit::ClientError;

use super::out::{outln, statusln};
use super::progress::Progress;
use super::remote::{self, LoginArgs};
use super::{CmdResult, Conn, TimeoutArg};
use crate::cmd::CmdError;

/// The argument that means standard input.
const STDIN_ARG: &str = "-";

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Files to upload. `-` is standard input (needs --as). FIFOs, character devices and files
    /// of /proc are read to their end; block devices are read whole.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    /// Store the file under this name (only with one FILE; required for `-`).
    #[arg(long = "as", value_name = "NAME")]
    name: Option<String>,
    /// Replace a stored file of the same name.
    #[arg(short = 'f', long)]
    force: bool,
    /// For scripts: one JSON object per stored file on standard output (`name`, `length`,
    /// `hash`, `resumed_from`) instead of the result lines.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    login: LoginArgs,
    #[command(flatten)]
    pub(crate) timeout: TimeoutArg,
}

/// How one upload ended, when it stored something.
enum Stored {
    /// As it was when opened.
    Whole,
    /// The file changed while it was read; what was read is stored.
    Changed,
}

pub(crate) async fn run(args: Args) -> CmdResult {
    // Ctrl-C leaves what the server received for a resume: of a file or a block device, not
    // of a stream (standard input, a FIFO, a character device, a file of /proc), which is sent
    // in chunks that cannot resume.
    let resume = args.files.iter().all(|path| resumable(path));
    super::interruptible(resume, put_all(args)).await
}

async fn put_all(args: Args) -> CmdResult {
    if args.name.is_some() && args.files.len() > 1 {
        return Err("--as takes a single FILE".into());
    }
    if args.name.is_none() && args.files.iter().any(|path| is_stdin(path)) {
        return Err("standard input has no name: give it one with --as NAME".into());
    }
    if let Some(name) = &args.name {
        // Checked here, by the server's rules, before anything is sent (PROTOCOL.md §3.2).
        FileName::new(name).map_err(|err| format!("--as {name:?}: not a valid name: {err}"))?;
    }
    let mut client = remote::connect(&args.login).await?;
    if let [path] = &args.files[..] {
        // One file: its own line says what happened; no tally after it.
        return match put_one(&mut client, path, &args).await? {
            Stored::Whole => Ok(()),
            Stored::Changed => Err(CmdError::Reported),
        };
    }
    let (mut failed, mut changed) = (0, 0);
    for path in &args.files {
        match put_one(&mut client, path, &args).await {
            Ok(Stored::Whole) => {}
            Ok(Stored::Changed) => changed += 1,
            Err(CmdError::BrokenPipe) => return Err(CmdError::BrokenPipe),
            Err(message) => {
                eprintln!("sockit: {message}");
                failed += 1;
            }
        }
    }
    summary(failed, changed, args.files.len())
}

/// Uploads one argument; on failure, the message (without the `sockit: ` prefix).
async fn put_one(client: &mut Conn, path: &Path, args: &Args) -> Result<Stored, CmdError> {
    let label = label(path);
    let name = args
        .name
        .clone()
        .or_else(|| default_name(path))
        .ok_or_else(|| format!("{label}: cannot tell its name; use --as NAME"))?;
    if args.name.is_none() {
        FileName::new(&name).map_err(|err| {
            format!("{label}: {name:?} is not a valid name on the server: {err}; use --as NAME")
        })?;
    }
    let shown_name = sockit::client::printable(&name);
    let source = if is_stdin(path) {
        Source::stdin()
    } else {
        Source::open(path).await
    };
    let source = source.map_err(|err| CmdError::failed(label.to_string(), err))?;
    let progress = match source.length() {
        Some(total) => Progress::new(&shown_name, total),
        None => Progress::stream(&shown_name),
    };
    let started = std::time::Instant::now();
    let outcome = client
        .put_source(&source, &name, args.force, &mut |done| progress.set(done))
        .await;
    progress.finish();
    let resumable = source.length().is_some();
    let put = outcome
        .map_err(|err| CmdError::Usage(format!("{label}: {}", describe(&err, resumable))))?;
    tracing::info!(
        "put {shown_name}: {} bytes sent in {:.2?}",
        put.length - put.resumed_from,
        started.elapsed()
    );
    if args.json {
        outln!("{}", json_line(&name, &put))?;
    } else {
        statusln!("{}", result_line(&label, &name, &source, &put))?;
    }
    if !put.changed {
        return Ok(Stored::Whole);
    }
    eprintln!(
        "sockit: {label}: file changed as we read it; stored the first {} bytes",
        put.length
    );
    Ok(Stored::Changed)
}

/// `FILE -> NAME: N bytes, blake3 HASH`, and how it was read when that matters.
fn result_line(label: &str, name: &str, source: &Source, put: &PutOutcome) -> String {
    let how = match (source.kind(), put.resumed_from) {
        // A regular file that reported a size of 0 is read to its end, in case it is not
        // really empty; one that was is a file like any other.
        (SourceKind::Stream, _) if source.is_regular_file() && put.length == 0 => String::new(),
        (SourceKind::Stream, _) if source.is_regular_file() => {
            " (read to its end: its size showed as 0)".to_owned()
        }
        (SourceKind::Stream, _) => " (a stream, read to its end)".to_owned(),
        _ if put.started_over => {
            " (started over: the file changed since the interrupted upload)".to_owned()
        }
        (_, 0) => String::new(),
        (_, from) => format!(" (resumed at byte {from})"),
    };
    let name = sockit::client::printable(name);
    format!(
        "{label} -> {name}: {} bytes, blake3 {}{how}",
        put.length, put.hash
    )
}

/// The `--json` object of one stored file.
fn json_line(name: &str, put: &PutOutcome) -> serde_json::Value {
    serde_json::json!({
        "name": name,
        "length": put.length,
        "hash": put.hash,
        "resumed_from": put.resumed_from,
    })
}

/// A failed upload's cause, in words about what the user typed (the caller names it);
/// `resumable` when what it reads can resume (a file, not a stream).
fn describe(err: &ClientError, resumable: bool) -> String {
    match err {
        ClientError::Source { source, .. } => source.to_string(),
        ClientError::Remote { code, message, .. } if *code == ErrorCode::Exists => {
            format!("{message} (use --force to replace it)")
        }
        ClientError::Remote { code, .. } if *code == ErrorCode::ShuttingDown => {
            if resumable {
                "server shutting down; run the same command again to resume".to_owned()
            } else {
                "server shutting down; nothing was stored: send it again".to_owned()
            }
        }
        other => other.to_string(),
    }
}

/// The line that ends a run with failures or changed files, which exits with status 1.
fn summary(failed: usize, changed: usize, total: usize) -> CmdResult {
    match (failed, changed) {
        (0, 0) => Ok(()),
        (0, changed) => Err(format!("{changed} of {total} files changed as they were read").into()),
        (failed, 0) => Err(format!("{failed} of {total} uploads failed").into()),
        (failed, changed) => Err(format!(
            "{failed} of {total} uploads failed, and {changed} files changed as they were read"
        )
        .into()),
    }
}

/// Whether an upload of `path` can resume: a regular file that says its length, or a block
/// device (see [`sockit::client::Source`]).
fn resumable(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    !is_stdin(path)
        && std::fs::metadata(path).is_ok_and(|meta| {
            (meta.is_file() && meta.len() > 0) || meta.file_type().is_block_device()
        })
}

fn is_stdin(path: &Path) -> bool {
    path.as_os_str() == STDIN_ARG
}

/// What messages call an argument: the path as typed (control characters made safe), or
/// "standard input" for `-`.
fn label(path: &Path) -> String {
    if is_stdin(path) {
        "standard input".to_owned()
    } else {
        sockit::client::shown_path(path)
    }
}

/// A path's last component, when it is valid UTF-8.
fn default_name(path: &Path) -> Option<String> {
    path.file_name()?.to_str().map(str::to_owned)
}
