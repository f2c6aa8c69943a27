//! How every client command that needs it logs in (`put`, `get`, `ls`, `exec`, `shell`): who
//! to log in as, with which key or password; and for `exec` and `shell`, a logged-in
//! connection that comes back by itself if the server closed it while idle.
//!
//! Login order, as ssh does it: the identity key if there is one (no prompt, no argon2 run on
//! the server), then a password from `SOCKIT_PASSWORD`, else asked on the terminal (three
//! tries). A server without accounts needs no login at all.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sockit::auth::keys::Identity;
use sockit::proto::ErrorCode;
use sockit::{ClientError, ExecOutcome, OutputStream};

use super::connect::config_dir;
use super::{Conn, ConnectArgs, ServerArg};
use crate::cmd::CmdError;

/// Password tries at an interactive prompt.
const PROMPT_TRIES: usize = 3;
/// A connection unused for this long is checked with a ping before the next command.
const CHECK_AFTER_IDLE: Duration = Duration::from_secs(1);
/// How long after a command's `--timeout` the client still waits for its final status (and,
/// for `exec`, to connect and log in) before it gives up.
pub(crate) const EXEC_GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, clap::Args)]
pub(crate) struct LoginArgs {
    /// User to log in as (default: your login name).
    #[arg(
        long,
        short = 'u',
        value_name = "USER",
        env = "SOCKIT_USER",
        hide_env_values = true
    )]
    user: Option<String>,
    /// Secret key for key login (default: ~/.config/sockit/id_ed25519, when it exists).
    #[arg(
        long,
        short = 'i',
        value_name = "FILE",
        env = "SOCKIT_IDENTITY",
        hide_env_values = true
    )]
    identity: Option<PathBuf>,
    /// Send a password even over plain TCP to a server that is not on this machine, where
    /// anyone on the path can read it (without TLS, sockit refuses to).
    #[arg(long)]
    insecure: bool,
    #[command(flatten)]
    server: ServerArg,
    #[command(flatten)]
    connect: ConnectArgs,
}

/// `$XDG_CONFIG_HOME/sockit/id_ed25519`, else `~/.config/sockit/id_ed25519`.
pub(crate) fn default_identity_path() -> Option<PathBuf> {
    config_dir().map(|dir| dir.join("id_ed25519"))
}

/// The local login name: `$USER`, `$LOGNAME`, else the name of our user id.
pub(crate) fn local_user() -> Option<String> {
    ["USER", "LOGNAME"]
        .into_iter()
        .find_map(|var| std::env::var(var).ok().filter(|name| !name.is_empty()))
        .or_else(|| {
            let user = nix::unistd::User::from_uid(nix::unistd::getuid()).ok()??;
            Some(user.name)
        })
}

/// Connects to the server and logs in, unless it has no accounts. The client logs in again by
/// itself whenever it reconnects.
pub(crate) async fn connect(args: &LoginArgs) -> Result<Conn, CmdError> {
    let user = args
        .user
        .clone()
        .or_else(local_user)
        .ok_or("no user name: use --user")?;
    // A key given explicitly must exist; the default one is used when it does.
    let identity_path = args
        .identity
        .clone()
        .or_else(|| default_identity_path().filter(|path| path.exists()));
    let identity = identity_path
        .map(|path| load_identity(&path).map(|identity| (path, identity)))
        .transpose()?;
    let addr = &args.server.server;
    let started = Instant::now();
    let mut client = args.connect.connect(addr).await?;
    tracing::info!("connected to {addr} in {:.1?}", started.elapsed());
    client.allow_clear_passwords(args.insecure);
    login(&mut client, &user, identity, addr).await?;
    Ok(client)
}

/// Reads the identity file `path` (`-i`), with messages that name it as such: one that is
/// missing or unreadable, or that is not a regular file (`/dev/null`, a directory), is no key
/// file, whatever its permissions.
fn load_identity(path: &Path) -> Result<Identity, String> {
    use std::os::unix::fs::FileTypeExt;
    let shown = sockit::client::shown_path(path);
    let meta = std::fs::metadata(path).map_err(|err| {
        format!(
            "identity file {shown}: {}",
            sockit::client::plain_io_error(&err)
        )
    })?;
    let kind = meta.file_type();
    let not_a_file = if kind.is_dir() {
        Some("a directory")
    } else if kind.is_char_device() || kind.is_block_device() {
        Some("a device")
    } else if kind.is_fifo() {
        Some("a FIFO")
    } else if kind.is_socket() {
        Some("a socket")
    } else {
        None
    };
    if let Some(what) = not_a_file {
        return Err(format!(
            "identity file {shown}: is {what}, not a key file (make one with `sockit keygen`)"
        ));
    }
    Identity::load(path).map_err(|err| format!("identity file {err}"))
}

/// A logged-in connection for running commands.
pub(crate) struct Remote {
    client: Conn,
    last_used: Instant,
    /// A command was given up on mid-reply: the connection is out of step.
    stale: bool,
}

impl Remote {
    /// Connects and logs in.
    pub(crate) async fn connect(args: &LoginArgs) -> Result<Remote, CmdError> {
        Ok(Remote {
            client: connect(args).await?,
            last_used: Instant::now(),
            stale: false,
        })
    }

    /// Runs `cmd`, writing its output to our stdout and stderr as it arrives. A connection
    /// that sat idle is checked first and, if the server closed it meanwhile, made again. With
    /// a `timeout`, the command is given up on [`EXEC_GRACE`] after it.
    pub(crate) async fn exec(
        &mut self,
        cmd: &str,
        timeout: Option<Duration>,
    ) -> Result<ExecOutcome, ClientError> {
        self.exec_to(cmd, timeout, write_output).await
    }

    /// Runs `cmd` as [`exec`](Remote::exec) does, handing its output to `output`.
    pub(crate) async fn exec_to(
        &mut self,
        cmd: &str,
        timeout: Option<Duration>,
        output: impl FnMut(OutputStream, &[u8]) -> std::io::Result<()>,
    ) -> Result<ExecOutcome, ClientError> {
        let idle = self.last_used.elapsed() > CHECK_AFTER_IDLE;
        if self.stale || (idle && self.client.ping().await.is_err()) {
            self.client.reconnect().await?; // and logs in again
            self.stale = false;
        }
        let running = self.client.exec(cmd, timeout, output);
        let outcome = match timeout {
            None => running.await,
            Some(limit) => match tokio::time::timeout(limit + EXEC_GRACE, running).await {
                Ok(outcome) => outcome,
                Err(_) => {
                    self.stale = true;
                    Err(ClientError::from(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!(
                            "no final status {} s after the command's --timeout; gave up",
                            EXEC_GRACE.as_secs()
                        ),
                    )))
                }
            },
        };
        self.last_used = Instant::now();
        outcome
    }

    /// Gives up on a command cut short (Ctrl-C in `shell`): the connection is made again at
    /// once (logging in again by itself), which closes the old one, and the server kills the
    /// command's whole process group when its client goes away. Nothing is added to the
    /// protocol for it. If connecting again fails, the next command tries again.
    pub(crate) async fn abandon(&mut self) -> Result<(), ClientError> {
        self.stale = true;
        self.client.reconnect().await?;
        self.stale = false;
        self.last_used = Instant::now();
        Ok(())
    }

    /// Runs `cmd` as [`exec`](Remote::exec) does, with `input` as its standard input.
    pub(crate) async fn exec_with_input(
        &mut self,
        cmd: &str,
        timeout: Option<Duration>,
        input: &mut (impl tokio::io::AsyncRead + Unpin),
    ) -> Result<ExecOutcome, ClientError> {
        let outcome = self
            .client
            .exec_with_input(cmd, timeout, input, write_output)
            .await;
        self.last_used = Instant::now();
        outcome
    }
}

/// Logs in: with the key if there is one, else with `SOCKIT_PASSWORD`, else with a password
/// asked on the terminal; not at all on a server without accounts.
///
/// A password is only sent where no one else can read it (TLS, or this machine), unless the
/// user said `--insecure`; a prompt for one comes only where it could be sent.
async fn login(
    client: &mut Conn,
    user: &str,
    identity: Option<(PathBuf, Identity)>,
    addr: &str,
) -> Result<(), CmdError> {
    let failed = CmdError::Login;
    // The key the server refused for `user`, to say so if no password can be given either.
    let mut refused_key = None;
    match identity {
        Some((path, identity)) => {
            let key = format!(
                "{} (fingerprint {})",
                path.display(),
                identity.public_key("").fingerprint()
            );
            tracing::info!("trying the key {key} for {user}");
            match client.login_key(user, &identity).await {
                Ok(()) => {
                    tracing::info!("logged in as {user} with the key {key}");
                    return Ok(());
                }
                Err(err) if err.remote_code() == Some(ErrorCode::Disabled) => {
                    tracing::info!("the server has no accounts: no login");
                    return Ok(());
                }
                Err(err) if err.remote_code() == Some(ErrorCode::Unauthorized) => {
                    tracing::info!(
                        "the server refused the key {key} for {user} ({err}); trying a password"
                    );
                    refused_key = Some(key);
                }
                Err(err) => return Err(failed(err)),
            }
        }
        None => match client.challenge().await {
            Ok(_) => {}
            Err(err) if err.remote_code() == Some(ErrorCode::Disabled) => {
                tracing::info!("the server has no accounts: no login");
                return Ok(());
            }
            Err(err) => return Err(failed(err)),
        },
    }
    client.password_allowed(user).map_err(failed)?;
    if let Ok(password) = std::env::var("SOCKIT_PASSWORD") {
        client
            .login_password(user, &password)
            .await
            .map_err(failed)?;
        tracing::info!("logged in as {user} with SOCKIT_PASSWORD");
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(match refused_key {
            Some(key) => format!(
                "{addr} refused the key {key} for {user}: it is not authorised for that user; \
                 use --user NAME to log in as the user it is authorised for, \
                 or set SOCKIT_PASSWORD to log in as {user} by password"
            ),
            None => format!(
                "{user}@{addr} needs a password: set SOCKIT_PASSWORD, or use a key (sockit keygen)"
            ),
        }
        .into());
    }
    let mut last_error = None;
    for _ in 0..PROMPT_TRIES {
        let password = rpassword::prompt_password(format!("{user}@{addr}'s password: "))
            .map_err(|err| CmdError::failed("cannot read the password", err))?;
        match client.login_password(user, &password).await {
            Ok(()) => {
                tracing::info!("logged in as {user} with a password");
                return Ok(());
            }
            Err(err) if err.remote_code() == Some(ErrorCode::Unauthorized) => {
                eprintln!("sockit: {err}");
                last_error = Some(err);
            }
            Err(err) => return Err(failed(err)),
        }
    }
    Err(failed(last_error.expect("at least one try")))
}

/// Writes remote output to the matching local stream at once.
fn write_output(stream: OutputStream, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    match stream {
        OutputStream::Stdout => {
            let mut out = std::io::stdout().lock();
            out.write_all(data)?;
            out.flush()
        }
        OutputStream::Stderr => {
            let mut err = std::io::stderr().lock();
            err.write_all(data)?;
            err.flush()
        }
    }
}

/// Warnings about how a command ended, for standard error.
pub(crate) fn report(outcome: &ExecOutcome) {
    if outcome.truncated {
        eprintln!("sockit: output reached the server's limit; the command was killed");
    }
    if outcome.timed_out {
        eprintln!("sockit: the command ran out of time and was killed");
    }
}
