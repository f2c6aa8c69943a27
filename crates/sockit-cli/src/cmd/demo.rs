//! `sockit demo`: demonstrations of the problems sockit solves, one module each.

mod sticky;

use super::CmdResult;
use crate::cmd::CmdError;

#[derive(Debug, clap::Subcommand)]
pub(crate) enum Demo {
    /// Show TCP's sticky-packet problem on a real socket, then sockit's frames fixing it.
    Sticky,
}

pub(crate) async fn run(demo: Demo) -> CmdResult {
    match demo {
        Demo::Sticky => {
            let mut stdout = std::io::stdout().lock();
            sticky::sticky(&mut stdout)
                .await
                .map_err(|err| match err.kind() {
                    std::io::ErrorKind::BrokenPipe => CmdError::BrokenPipe,
                    _ => CmdError::failed("demo failed", err),
                })
        }
    }
}
