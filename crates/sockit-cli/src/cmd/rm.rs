//! `sockit rm`: remove stored files, each name on its own; a name that cannot be removed is
//! reported and the others are still tried. Silent on success, like rm.

use sockit::client::printable;
use sockit::ClientError;

use super::remote::{self, LoginArgs};
use super::{CmdResult, TimeoutArg};
use crate::cmd::CmdError;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Stored names to remove.
    #[arg(required = true, value_name = "NAME")]
    names: Vec<String>,
    #[command(flatten)]
    login: LoginArgs,
    #[command(flatten)]
    pub(crate) timeout: TimeoutArg,
}

pub(crate) async fn run(args: Args) -> CmdResult {
    let mut client = remote::connect(&args.login).await?;
    let mut failed = 0;
    for name in &args.names {
        match client.delete(name).await {
            Ok(()) => {}
            Err(err @ ClientError::Remote { .. }) if args.names.len() > 1 => {
                eprintln!("sockit: cannot remove {}: {err}", printable(name));
                failed += 1;
            }
            // The one name failed, or the connection is gone and the others cannot be tried.
            Err(err) => {
                return Err(CmdError::failed(
                    format!("cannot remove {}", printable(name)),
                    err,
                ))
            }
        }
    }
    match failed {
        0 => Ok(()),
        failed => Err(format!(
            "{failed} of {} names could not be removed",
            args.names.len()
        )
        .into()),
    }
}
