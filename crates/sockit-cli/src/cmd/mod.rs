//! One module per subcommand, plus what they share: the `--server` option and error exits.

pub(crate) mod bench;
pub(crate) mod chat;
pub(crate) mod connect;
pub(crate) mod demo;
pub(crate) mod docs;
pub(crate) mod echo;
pub(crate) mod exec;
pub(crate) mod get;
pub(crate) mod keygen;
pub(crate) mod ls;
pub(crate) mod mv;
pub(crate) mod out;
pub(crate) mod ping;
mod progress;
pub(crate) mod put;
pub(crate) mod remote;
pub(crate) mod rm;
pub(crate) mod serve;
pub(crate) mod shell;
pub(crate) mod user;

use std::fmt::Display;
use std::future::Future;
use std::process::ExitCode;
use std::time::Duration;

pub(crate) use connect::{Conn, ConnectArgs, ServerArg};

/// How a command ends when it fails: printed as one line, `sockit: <error>`.
pub(crate) type CmdResult = Result<(), CmdError>;

/// Why a command failed: an error of the library, with its sources, or a sentence of the CLI's
/// own about what was asked.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CmdError {
    /// Talking to the server failed, or the server refused.
    #[error(transparent)]
    Client(#[from] sockit::ClientError),
    /// Logging in failed.
    #[error("login failed: {0}")]
    Login(#[source] sockit::ClientError),
    /// A download could not be saved where it was asked to go.
    #[error(transparent)]
    Save(#[from] sockit::client::SaveError),
    /// The users file could not be read or written.
    #[error(transparent)]
    Users(#[from] sockit::auth::users::UsersError),
    /// A user name that breaks the rules.
    #[error(transparent)]
    UserName(#[from] sockit::auth::users::BadUserName),
    /// A password that cannot be used.
    #[error(transparent)]
    Password(#[from] sockit::auth::users::BadPassword),
    /// A key file could not be made, read or used.
    #[error(transparent)]
    Identity(#[from] sockit::auth::keys::IdentityError),
    /// The server could not start.
    #[error(transparent)]
    Start(#[from] sockit::server::StartError),
    /// A local file or the terminal failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// Something the command did failed: what, and the error that says why.
    #[error("{what}: {source}")]
    Failed {
        /// What was being done, in words.
        what: String,
        /// Why it failed.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// What was asked cannot be done, in the CLI's words.
    #[error("{0}")]
    Usage(String),
    /// The failure was already reported on standard error: the command ends with status 1
    /// and says nothing more.
    #[error("failed")]
    Reported,
    /// The reader of standard output went away: the command ends quietly (see [`out`]).
    #[error("standard output closed")]
    BrokenPipe,
    /// SIGINT (Ctrl-C) ended a transfer; what had arrived is kept for a resume when `resume`.
    #[error("interrupted{}", if *resume { "; run the same command again to resume" } else { "" })]
    Interrupted {
        /// Whether running the same command again resumes.
        resume: bool,
    },
    /// The command did not finish within its `--timeout`.
    #[error("gave up after {} s (--timeout)", .0.as_secs_f64())]
    TimedOut(Duration),
}

impl CmdError {
    /// `what` failed because of `source`.
    pub(crate) fn failed(
        what: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> CmdError {
        CmdError::Failed {
            what: what.into(),
            source: source.into(),
        }
    }
}

impl CmdError {
    /// Whether the server was refused because its TLS identity is not the one trusted.
    pub(crate) fn is_untrusted_server(&self) -> bool {
        use sockit::tls::{KnownServersError, TrustError};
        let (CmdError::Client(sockit::ClientError::Tls(err))
        | CmdError::Login(sockit::ClientError::Tls(err))) = self
        else {
            return false;
        };
        matches!(
            **err,
            TrustError::NotPinned { .. } | TrustError::Known(KnownServersError::Changed { .. })
        )
    }
}

impl From<String> for CmdError {
    fn from(message: String) -> CmdError {
        CmdError::Usage(message)
    }
}

impl From<&str> for CmdError {
    fn from(message: &str) -> CmdError {
        CmdError::Usage(message.to_owned())
    }
}

/// A server to connect to, with the default port when none is given: `HOST` and `[IPv6]`
/// become `HOST:9000`, a bare IP address gets port 9000 too, and `:PORT` means `127.0.0.1`.
pub(crate) fn parse_server(text: &str) -> Result<String, String> {
    use std::net::{IpAddr, Ipv4Addr, SocketAddr};
    let port = sockit::defaults::PORT;
    if text.is_empty() {
        return Err("an empty server address: give HOST:PORT or HOST".to_owned());
    }
    if let Ok(ip) = text
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        return Ok(SocketAddr::new(ip, port).to_string());
    }
    if let Some(rest) = text.strip_prefix(':') {
        let port: u16 = rest
            .parse()
            .map_err(|_| format!("`{rest}` in `{text}` is not a port number"))?;
        return Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, port)).to_string());
    }
    match text.rsplit_once(':') {
        None => Ok(format!("{text}:{port}")),
        Some((_, port)) if port.parse::<u16>().is_ok() => Ok(text.to_owned()),
        Some((_, port)) => Err(format!("`{port}` in `{text}` is not a port number")),
    }
}

/// How long a client command may take in all.
#[derive(Debug, clap::Args)]
pub(crate) struct TimeoutArg {
    /// Give up after this many seconds in all (default: no limit, as transfers may be long;
    /// a server silent for 60 s is given up on anyway).
    #[arg(long, value_name = "SECS", value_parser = serve::parse_seconds)]
    pub(crate) timeout: Option<Duration>,
}

/// Connects to `server` without logging in (`ping`, `echo`).
pub(crate) async fn connect(server: &ServerArg, connect: &ConnectArgs) -> Result<Conn, CmdError> {
    connect.connect(&server.server).await
}

/// Runs a command, giving up with [`CmdError::TimedOut`] once `timeout` has passed. What the
/// command held is dropped, which closes its connection.
pub(crate) async fn within<T>(
    timeout: Option<Duration>,
    command: impl Future<Output = Result<T, CmdError>>,
) -> Result<T, CmdError> {
    match timeout {
        None => command.await,
        Some(limit) => tokio::time::timeout(limit, command)
            .await
            .unwrap_or(Err(CmdError::TimedOut(limit))),
    }
}

/// The exit status after SIGINT, as a shell reports a process killed by it.
pub(crate) const INTERRUPTED: u8 = 130;

/// Runs a transfer until it ends or SIGINT (Ctrl-C) comes, which ends it with
/// [`CmdError::Interrupted`]: what it held is dropped, leaving an upload's partial on the
/// server and a download's part file for a resume.
pub(crate) async fn interruptible<T>(
    resume: bool,
    transfer: impl Future<Output = Result<T, CmdError>>,
) -> Result<T, CmdError> {
    tokio::select! {
        result = transfer => result,
        Ok(()) = tokio::signal::ctrl_c() => Err(CmdError::Interrupted { resume }),
    }
}

/// Prints `sockit: <why>` to standard error and gives the failing exit status.
pub(crate) fn fail(why: &dyn Display) -> ExitCode {
    eprintln!("sockit: {why}");
    ExitCode::FAILURE
}

#[cfg(test)]
mod tests {
    use super::parse_server;

    #[test]
    fn a_server_without_a_port_gets_port_9000() {
        assert_eq!(parse_server("localhost").unwrap(), "localhost:9000");
        assert_eq!(parse_server("localhost:9000").unwrap(), "localhost:9000");
        assert_eq!(parse_server("127.0.0.1").unwrap(), "127.0.0.1:9000");
        assert_eq!(parse_server("::1").unwrap(), "[::1]:9000");
        assert_eq!(parse_server("[::1]").unwrap(), "[::1]:9000");
        assert_eq!(parse_server("[::1]:7").unwrap(), "[::1]:7");
        assert_eq!(parse_server(":9500").unwrap(), "127.0.0.1:9500");
    }

    #[test]
    fn a_bad_port_is_named() {
        let err = parse_server("localhost:nine").unwrap_err();
        assert!(err.contains("`nine`"), "{err}");
        assert!(parse_server("").is_err());
    }
}
