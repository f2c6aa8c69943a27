//! One module per subcommand, plus what they share: the `--server` option and error exits.

pub(crate) mod chat;
pub(crate) mod demo;
pub(crate) mod echo;
pub(crate) mod exec;
pub(crate) mod get;
pub(crate) mod keygen;
pub(crate) mod ls;
pub(crate) mod ping;
mod progress;
pub(crate) mod put;
mod remote;
pub(crate) mod serve;
pub(crate) mod shell;
pub(crate) mod user;

use std::fmt::Display;
use std::process::ExitCode;

/// The failure of a command, as the one line it prints.
pub(crate) type CmdResult = Result<(), String>;

/// Where a client command connects.
#[derive(Debug, clap::Args)]
pub(crate) struct ServerArg {
    /// Server address, host:port.
    #[arg(long, env = "SOCKIT_SERVER", default_value = sockit::defaults::ADDR)]
    pub(crate) server: String,
}

/// Prints `sockit: <why>` to standard error and gives the failing exit status.
pub(crate) fn fail(why: &dyn Display) -> ExitCode {
    eprintln!("sockit: {why}");
    ExitCode::FAILURE
}
