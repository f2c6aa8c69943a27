//! `sockit mv`: rename a stored file and print what is now stored under the new name (unless
//! `-q`). A file already stored under the new name is replaced only with `--force`.

use sockit::client::printable;
use sockit::proto::ErrorCode;

use super::out::statusln;
use super::remote::{self, LoginArgs};
use super::{CmdResult, TimeoutArg};
use crate::cmd::CmdError;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The stored name.
    #[arg(value_name = "OLD")]
    old: String,
    /// Its new name.
    #[arg(value_name = "NEW")]
    new: String,
    /// Replace a stored file named NEW.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    login: LoginArgs,
    #[command(flatten)]
    pub(crate) timeout: TimeoutArg,
}

pub(crate) async fn run(args: Args) -> CmdResult {
    let mut client = remote::connect(&args.login).await?;
    let (old, new) = (printable(&args.old), printable(&args.new));
    match client.rename(&args.old, &args.new, args.force).await {
        Ok(renamed) => statusln!(
            "{old} -> {new}: {} bytes, blake3 {}",
            renamed.length,
            renamed.hash
        ),
        Err(err) if err.remote_code() == Some(ErrorCode::Exists) => Err(format!(
            "cannot rename {old} to {new}: {new} already exists (use --force to replace it)"
        )
        .into()),
        Err(err) => Err(CmdError::failed(
            format!("cannot rename {old} to {new}"),
            err,
        )),
    }
}
