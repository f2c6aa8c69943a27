//! `sockit get`: download a file, resuming an interrupted download, verified by BLAKE3.

use std::path::PathBuf;

use sockit::client::{SaveError, SaveOptions, Target};
use sockit::ClientError;

use super::out::{outln, statusln};
use super::progress::Progress;
use super::remote::{self, LoginArgs};
use super::{CmdError, CmdResult, TimeoutArg};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The stored file's name.
    name: String,
    /// Where to write it: a file, a directory to save into, a device or FIFO to write through,
    /// or `-` for standard output (default: NAME in the current directory).
    #[arg(short = 'o', long = "output", value_name = "PATH")]
    output: Option<PathBuf>,
    /// Replace an existing file (its mode, owner and hard links are kept).
    #[arg(short = 'f', long)]
    force: bool,
    /// Give the saved file the stored file's modification time and permission bits.
    #[arg(short = 'p', long)]
    preserve: bool,
    /// For scripts: one JSON object on standard output (`name`, `path`, `length`, `hash`,
    /// `resumed_from`) instead of the result line. Not with `-o -`.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    login: LoginArgs,
    #[command(flatten)]
    pub(crate) timeout: TimeoutArg,
}

pub(crate) async fn run(args: Args) -> CmdResult {
    let target = Target::resolve(args.output.as_deref(), &args.name, args.force)?;
    // Ctrl-C leaves the part file for a resume; a download written through (standard
    // output, a device, a FIFO) has none.
    let resume = matches!(target, Target::File { .. });
    super::interruptible(resume, get_to(args, target)).await
}

async fn get_to(args: Args, target: Target) -> CmdResult {
    if args.json && matches!(target, Target::Stdout) {
        return Err("--json cannot go with -o -: standard output carries the file".into());
    }
    let options = SaveOptions {
        force: args.force,
        preserve: args.preserve,
    };
    let mut client = remote::connect(&args.login).await?;
    let progress = Progress::new(&sockit::client::printable(&args.name), 0);
    let started = std::time::Instant::now();
    let outcome = client
        .get_to(&args.name, &target, options, &mut |done, total| {
            progress.set_total(total);
            progress.set(done);
        })
        .await;
    progress.finish();
    let got = match outcome {
        Err(err) if matches!(target, Target::Stdout) && is_broken_pipe(&err) => {
            return Err(CmdError::BrokenPipe)
        }
        result => result?,
    };
    tracing::info!(
        "get {}: {} bytes received in {:.2?}",
        args.name,
        got.length - got.resumed_from,
        started.elapsed()
    );
    if let Target::Stdout = target {
        return Ok(()); // standard output carries the file and nothing else
    }
    if args.json {
        return outln!(
            "{}",
            serde_json::json!({
                "name": args.name,
                "path": target.shown(),
                "length": got.length,
                "hash": got.hash,
                "resumed_from": got.resumed_from,
            })
        );
    }
    let resumed = match got.resumed_from {
        0 if got.started_over => {
            " (started over: the file changed since the interrupted download)".to_owned()
        }
        0 => String::new(),
        from => format!(" (resumed at byte {from})"),
    };
    statusln!(
        "{} -> {}: {} bytes, blake3 {}{resumed}",
        sockit::client::printable(&args.name),
        target.shown(),
        got.length,
        got.hash
    )
}

/// Whether writing the download failed because the reader of our output went away.
fn is_broken_pipe(err: &ClientError) -> bool {
    match err {
        ClientError::Save(SaveError::Io { source, .. }) => {
            source.kind() == std::io::ErrorKind::BrokenPipe
        }
        other => other.is_broken_pipe(),
    }
}
