//! `sockit`: the command line. Each subcommand parses its arguments and calls the library.

mod cmd;

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

/// A socket toolkit: framed TCP server and client, file transfer, remote commands, echo and chat.
#[derive(Debug, Parser)]
#[command(name = "sockit", version, about, max_term_width = 100)]
struct Cli {
    /// Print only errors and what the command is for: no progress bars, no result, status or
    /// note lines, only error logs.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
    /// Log more: info (debug for serve). SOCKIT_LOG, when set, decides instead.
    #[arg(short, long, global = true)]
    verbose: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server: the framed TCP protocol and the optional raw listeners.
    #[command(
        after_help = "Logs go to standard error at info (debug with -v, errors only with -q). \
                      SOCKIT_LOG, when set, decides instead: e.g. SOCKIT_LOG=warn, \
                      SOCKIT_LOG=sockit=debug. NO_COLOR turns colour off."
    )]
    Serve(Box<cmd::serve::Args>),
    /// Measure round trips to a server.
    Ping(cmd::ping::Args),
    /// Send text (or standard input) to a server and print what comes back.
    Echo(cmd::echo::Args),
    /// Upload files to the server's store (resumable, verified by BLAKE3).
    Put(cmd::put::Args),
    /// Download a file from the server's store (resumable, verified by BLAKE3).
    Get(cmd::get::Args),
    /// List the files in the server's store.
    Ls(cmd::ls::Args),
    /// Remove files from the server's store.
    Rm(cmd::rm::Args),
    /// Rename a file in the server's store (replacing another only with --force).
    Mv(cmd::mv::Args),
    /// Run a command on the server; its output and exit status come back.
    Exec(cmd::exec::Args),
    /// Log in once and run commands interactively (`>>:` prompt).
    Shell(cmd::shell::Args),
    /// Join the UDP chat room: standard input lines go out, room lines come in.
    Chat(cmd::chat::Args),
    /// Load a server as redis-benchmark does: a rate, latency percentiles and errors, counting
    /// only verified replies.
    #[command(subcommand)]
    Bench(cmd::bench::Bench),
    /// Edit the users file of `sockit serve --users`.
    #[command(subcommand)]
    User(cmd::user::User),
    /// Make an ed25519 key pair for key login.
    Keygen(cmd::keygen::Args),
    /// Demonstrations of the problems sockit solves.
    #[command(subcommand)]
    Demo(cmd::demo::Demo),
    /// Print a shell completion script (e.g. `sockit completions bash > ~/.local/share/bash-completion/completions/sockit`).
    Completions(cmd::docs::CompletionsArgs),
    /// Print the man page in roff (e.g. `sockit manpage > sockit.1`; `sockit manpage put` for sockit-put).
    Manpage(cmd::docs::ManpageArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => return usage_error(&err),
    };
    let serve = matches!(cli.command, Command::Serve(_));
    let default_log = match (cli.quiet, cli.verbose, serve) {
        (true, _, _) => "error",
        (false, true, true) => "debug",
        (false, true, false) | (false, false, true) => "info",
        (false, false, false) => "warn",
    };
    cmd::out::set_quiet(cli.quiet);
    init_logging(default_log);
    let runtime = match cli.command.runtime() {
        Ok(runtime) => runtime,
        Err(err) => return cmd::fail(&format!("cannot start the runtime: {err}")),
    };
    match runtime.block_on(cli.command.run()) {
        Ok(code) => code,
        // The reader of our output went away: end quietly, as a process killed by SIGPIPE.
        Err((cmd::CmdError::BrokenPipe, _)) => ExitCode::from(cmd::out::BROKEN_PIPE),
        Err((cmd::CmdError::Reported, code)) => code,
        Err((err @ cmd::CmdError::Interrupted { .. }, _)) => {
            cmd::fail(&err);
            ExitCode::from(cmd::INTERRUPTED)
        }
        Err((err, code)) => {
            cmd::fail(&err);
            code
        }
    }
}

impl Command {
    /// The runtime the command runs on. The server spreads its connections over a worker per
    /// core. A client does one thing at a time, like redis-benchmark, which `bench` is compared
    /// with: one thread, and no worker threads to start and join around a command that may
    /// take a millisecond (`exec`). Blocking work, such as hashing a file, still goes to
    /// threads of its own.
    fn runtime(&self) -> std::io::Result<tokio::runtime::Runtime> {
        match self {
            Command::Serve(_) => tokio::runtime::Runtime::new(),
            _ => tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build(),
        }
    }

    /// Runs the command: its exit status, or why it failed with the status to end with.
    async fn run(self) -> Result<ExitCode, (cmd::CmdError, ExitCode)> {
        let done = |result: cmd::CmdResult| {
            result
                .map(|()| ExitCode::SUCCESS)
                .map_err(|err| (err, ExitCode::FAILURE))
        };
        // exec and shell end with the remote command's status, and 255 when sockit failed.
        // A server whose identity is not trusted is refused with 1, as by every command.
        let remote = |result: Result<u8, cmd::CmdError>| {
            result.map(ExitCode::from).map_err(|err| {
                let code = if err.is_untrusted_server() {
                    ExitCode::FAILURE
                } else {
                    ExitCode::from(cmd::exec::FAILED)
                };
                (err, code)
            })
        };
        match self {
            Command::Serve(args) => done(cmd::serve::run(*args).await),
            Command::Ping(args) => {
                done(cmd::within(args.timeout.timeout, cmd::ping::run(args)).await)
            }
            Command::Echo(args) => {
                done(cmd::within(args.timeout.timeout, cmd::echo::run(args)).await)
            }
            Command::Put(args) => {
                done(cmd::within(args.timeout.timeout, cmd::put::run(args)).await)
            }
            Command::Get(args) => {
                done(cmd::within(args.timeout.timeout, cmd::get::run(args)).await)
            }
            Command::Ls(args) => done(cmd::within(args.timeout.timeout, cmd::ls::run(args)).await),
            Command::Rm(args) => done(cmd::within(args.timeout.timeout, cmd::rm::run(args)).await),
            Command::Mv(args) => done(cmd::within(args.timeout.timeout, cmd::mv::run(args)).await),
            // exec's --timeout is the remote command's limit; connecting, logging in and the
            // final status get a grace period on top.
            Command::Exec(args) => {
                let limit = args.timeout.map(|limit| limit + cmd::remote::EXEC_GRACE);
                remote(cmd::within(limit, cmd::exec::run(args)).await)
            }
            Command::Shell(args) => remote(cmd::shell::run(args).await),
            Command::Chat(args) => done(cmd::chat::run(args).await),
            Command::Bench(bench) => done(cmd::bench::run(bench).await),
            Command::User(user) => done(cmd::user::run(user)),
            Command::Keygen(args) => done(cmd::keygen::run(args)),
            Command::Demo(demo) => done(cmd::demo::run(demo).await),
            Command::Completions(args) => done(cmd::docs::completions(args, Cli::command())),
            Command::Manpage(args) => done(cmd::docs::manpage(args, Cli::command())),
        }
    }
}

/// Prints clap's message (or the help asked for) and gives the exit status: `exec` and `shell`
/// end with 255 when sockit itself failed, so that no usage error looks like a remote status.
fn usage_error(err: &clap::Error) -> ExitCode {
    let _ = err.print();
    if !err.use_stderr() {
        return ExitCode::SUCCESS;
    }
    let subcommand = std::env::args_os()
        .skip(1)
        .find(|arg| !arg.to_string_lossy().starts_with('-'));
    match subcommand.as_ref().and_then(|arg| arg.to_str()) {
        Some("exec" | "shell") => ExitCode::from(cmd::exec::FAILED),
        _ => ExitCode::from(u8::try_from(err.exit_code()).unwrap_or(2)),
    }
}

/// Logs go to standard error, filtered by `SOCKIT_LOG` (e.g. `debug`, `sockit=trace`), in
/// colour only on a terminal and when `NO_COLOR` is not set.
fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SOCKIT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let ansi = colour(
        std::io::IsTerminal::is_terminal(&std::io::stderr()),
        std::env::var_os("NO_COLOR"),
    );
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .init();
}

/// Whether to colour a terminal's output: never when `NO_COLOR` is set to anything but the
/// empty string (no-color.org), else when it is a terminal.
fn colour(terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    terminal && no_color.is_none_or(|value| value.is_empty())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn help_shows_no_environment_values_and_serve_names_sockit_log() {
        let mut cli = super::Cli::command();
        let ping = cli.find_subcommand_mut("ping").unwrap().render_long_help();
        let ping = ping.to_string();
        assert!(ping.contains("[env: SOCKIT_SERVER]"), "{ping}");
        assert!(!ping.contains("SOCKIT_SERVER="), "{ping}");
        let serve = cli.find_subcommand_mut("serve").unwrap().render_long_help();
        assert!(serve.to_string().contains("SOCKIT_LOG"), "{serve}");
    }

    #[test]
    fn command_line_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }

    #[test]
    fn quiet_and_verbose_go_anywhere_but_into_a_remote_command() {
        use clap::Parser;
        let parse = |args: &[&str]| super::Cli::try_parse_from(args).unwrap();
        let cli = parse(&["sockit", "put", "f", "-q"]);
        assert!(cli.quiet && !cli.verbose);
        let cli = parse(&["sockit", "-v", "ls"]);
        assert!(cli.verbose && !cli.quiet);
        let cli = parse(&["sockit", "exec", "-q", "--", "ls", "-v"]);
        assert!(cli.quiet && !cli.verbose, "-v belongs to ls");
        let cli = parse(&["sockit", "exec", "--", "ls", "-q"]);
        assert!(!cli.quiet, "-q belongs to ls");
        assert!(
            super::Cli::try_parse_from(["sockit", "exec", "ls", "-q"]).is_err(),
            "the command's words come after --"
        );
    }

    #[test]
    fn no_color_turns_colour_off() {
        assert!(super::colour(true, None));
        assert!(super::colour(true, Some("".into())));
        assert!(!super::colour(true, Some("1".into())));
        assert!(!super::colour(false, None));
    }
}
