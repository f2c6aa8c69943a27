//! `sockit put`: upload files, resuming interrupted uploads, verified by BLAKE3.

use std::path::PathBuf;

use sockit::Client;

use super::progress::Progress;
use super::{CmdResult, ServerArg};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Files to upload.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    /// Store the file under this name (only with one FILE).
    #[arg(long = "as", value_name = "NAME")]
    name: Option<String>,
    /// Replace a stored file of the same name.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    server: ServerArg,
}

pub(crate) async fn run(args: Args) -> CmdResult {
    if args.name.is_some() && args.files.len() > 1 {
        return Err("--as takes a single FILE".into());
    }
    let mut client = Client::connect(&args.server.server)
        .await
        .map_err(|err| err.to_string())?;
    let mut failures = 0;
    for path in &args.files {
        let name = match args.name.clone().or_else(|| default_name(path)) {
            Some(name) => name,
            None => {
                eprintln!(
                    "sockit: {}: cannot tell its name; use --as NAME",
                    path.display()
                );
                failures += 1;
                continue;
            }
        };
        let total = std::fs::metadata(path).map(|meta| meta.len()).unwrap_or(0);
        let progress = Progress::new(&name, total);
        let outcome = client
            .put_file(path, &name, args.force, &mut |done| progress.set(done))
            .await;
        progress.finish();
        match outcome {
            Ok(put) => {
                let resumed = match put.resumed_from {
                    0 => String::new(),
                    from => format!(" (resumed at byte {from})"),
                };
                println!(
                    "{} -> {name}: {} bytes, blake3 {}{resumed}",
                    path.display(),
                    put.length,
                    put.hash
                );
            }
            Err(err) => {
                eprintln!("sockit: {}: {err}", path.display());
                failures += 1;
            }
        }
    }
    match failures {
        0 => Ok(()),
        n => Err(format!("{n} of {} uploads failed", args.files.len())),
    }
}

/// A path's last component, when it is valid UTF-8.
fn default_name(path: &std::path::Path) -> Option<String> {
    path.file_name()?.to_str().map(str::to_owned)
}
