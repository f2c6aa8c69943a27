//! `sockit get`: download a file, resuming an interrupted download, verified by BLAKE3.

use std::path::PathBuf;

use sockit::store::FileName;
use sockit::Client;

use super::progress::Progress;
use super::{CmdResult, ServerArg};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The stored file's name.
    name: String,
    /// Where to write it (default: NAME in the current directory).
    #[arg(short = 'o', long = "output", value_name = "PATH")]
    output: Option<PathBuf>,
    #[command(flatten)]
    server: ServerArg,
}

pub(crate) async fn run(args: Args) -> CmdResult {
    let output = match args.output {
        Some(path) => path,
        None => match FileName::new(&args.name) {
            Ok(name) => PathBuf::from(name.as_str()),
            Err(err) => return Err(format!("{err}; choose where to save it with -o PATH")),
        },
    };
    let mut client = Client::connect(&args.server.server)
        .await
        .map_err(|err| err.to_string())?;
    let progress = Progress::new(&args.name, 0);
    let outcome = client
        .get_file(&args.name, &output, &mut |done, total| {
            progress.set_total(total);
            progress.set(done);
        })
        .await;
    progress.finish();
    let got = outcome.map_err(|err| err.to_string())?;
    let resumed = match got.resumed_from {
        0 => String::new(),
        from => format!(" (resumed at byte {from})"),
    };
    println!(
        "{} -> {}: {} bytes, blake3 {}{resumed}",
        args.name,
        output.display(),
        got.length,
        got.hash
    );
    Ok(())
}
