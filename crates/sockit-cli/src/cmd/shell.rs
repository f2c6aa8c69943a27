//! `sockit shell`: log in once, then run one command per line, like the tutorials' `>>:`
//! client. `exit`, `quit` or Ctrl-D leaves; the exit status is the last command's.
//!
//! On a terminal the prompt has line editing and history (rustyline); in a pipe, each line of
//! standard input is a command and there is no prompt.
//!
//! Each line is its own `sh -c` on the server, so the shell keeps the working directory
//! itself: a line that is only `cd [DIR]` is run on the server and, if it worked, every
//! later line runs as `cd -- 'DIR' || exit; LINE`. On a terminal, Ctrl-C while a command runs
//! gives up on it and comes back to the prompt: the connection is made again, and the server
//! kills the old connection's command when it goes away.

use std::io::{BufRead, IsTerminal};
use std::time::Duration;

use rustyline::error::ReadlineError;
use rustyline::DefaultEditor;
use sockit::{ClientError, ExecOutcome, OutputStream};

use super::exec::FAILED;
use super::out::BROKEN_PIPE;
use super::remote::{report, LoginArgs, Remote};
use super::serve::parse_seconds;
use crate::cmd::CmdError;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    login: LoginArgs,
    /// Seconds after which the server kills each command (it may allow less); sockit gives
    /// up on a command 10 s after that.
    #[arg(long, value_name = "SECS", value_parser = parse_seconds)]
    timeout: Option<Duration>,
}

const PROMPT: &str = ">>: ";
/// The status of a command given up on with Ctrl-C, as shells report SIGINT.
const INTERRUPTED: u8 = 130;

pub(crate) async fn run(args: Args) -> Result<u8, CmdError> {
    let mut remote = Remote::connect(&args.login).await?;
    // A server that runs no commands (one without accounts) says so now, before any prompt.
    remote
        .exec_to(":", args.timeout, |_, _| Ok(()))
        .await
        .map_err(CmdError::from)?;
    let terminal = std::io::stdin().is_terminal();
    let mut next_line: Box<dyn FnMut() -> Option<String>> = if terminal {
        let mut editor = DefaultEditor::new()
            .map_err(|err| CmdError::failed("cannot start the line editor", err))?;
        Box::new(move || loop {
            match editor.readline(PROMPT) {
                Ok(line) => {
                    let _ = editor.add_history_entry(line.as_str());
                    return Some(line);
                }
                Err(ReadlineError::Interrupted) => continue,
                Err(_) => return None,
            }
        })
    } else {
        let mut lines = std::io::stdin().lock().lines();
        Box::new(move || lines.next()?.ok())
    };
    let mut cwd: Option<String> = None;
    let mut status = 0;
    while let Some(line) = next_line() {
        let line = line.trim();
        match line {
            "" => continue,
            "exit" | "quit" => break,
            _ => {}
        }
        let ran = if let Some(dir) = lone_cd(line) {
            change_dir(&mut remote, &mut cwd, dir, args.timeout, terminal).await
        } else {
            let cmd = in_dir(cwd.as_deref(), line);
            interruptible(remote.exec(&cmd, args.timeout), terminal).await
        };
        match ran {
            Ran::Done(Ok(outcome)) => {
                report(&outcome);
                status = outcome.status();
                if status != 0 && terminal {
                    super::out::note!("[exit {status}]");
                }
            }
            // The reader of our output went away: end as exec does.
            Ran::Done(Err(err)) if err.is_broken_pipe() => return Ok(BROKEN_PIPE),
            Ran::Done(Err(err)) => {
                eprintln!("sockit: {err}");
                status = FAILED;
            }
            Ran::Interrupted => {
                status = INTERRUPTED;
                eprintln!("sockit: interrupted; the remote command was stopped");
                if let Err(err) = remote.abandon().await {
                    eprintln!("sockit: cannot connect again: {err}");
                }
            }
        }
    }
    Ok(status)
}

/// How running one line ended.
enum Ran {
    Done(Result<ExecOutcome, ClientError>),
    /// Ctrl-C: the command was given up on, and the connection is out of step.
    Interrupted,
}

/// Runs `running`; on a terminal, Ctrl-C gives up on it. (In a pipe, Ctrl-C ends sockit, as
/// it ends any program reading a pipe.)
async fn interruptible(
    running: impl std::future::Future<Output = Result<ExecOutcome, ClientError>>,
    terminal: bool,
) -> Ran {
    if !terminal {
        return Ran::Done(running.await);
    }
    tokio::select! {
        outcome = running => Ran::Done(outcome),
        _ = tokio::signal::ctrl_c() => Ran::Interrupted,
    }
}

/// The arguments of a line that is only a `cd` (`""` for `cd` alone), or `None` for any other
/// line. They are the server's shell's to read (`cd ~/src`, `cd "a b"`); a line with more than
/// one command in it (`cd x && make`) is an ordinary line, and changes nothing after it.
fn lone_cd(line: &str) -> Option<&str> {
    let rest = line.strip_prefix("cd")?;
    if !rest.is_empty() && !rest.starts_with([' ', '\t']) {
        return None;
    }
    let one_command = !rest.contains(['&', '|', ';', '<', '>', '(', ')', '`', '\n', '#']);
    one_command.then_some(rest.trim())
}

/// `line`, run in `cwd` when the shell has changed directory.
fn in_dir(cwd: Option<&str>, line: &str) -> String {
    match cwd {
        Some(dir) => format!("cd -- {} || exit; {line}", quote(dir)),
        None => line.to_owned(),
    }
}

/// `text` as one single-quoted `sh` word.
fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// Changes the tracked directory as `cd DIR` does (home when `dir` is empty), if `cd` works there on the
/// server; a failed `cd` says why (the server's shell's message) and keeps the directory.
async fn change_dir(
    remote: &mut Remote,
    cwd: &mut Option<String>,
    dir: &str,
    timeout: Option<Duration>,
    terminal: bool,
) -> Ran {
    let cmd = in_dir(cwd.as_deref(), &format!("cd {dir} && pwd -P"));
    let mut printed = Vec::new();
    let ran = interruptible(
        remote.exec_to(&cmd, timeout, |stream, data| match stream {
            OutputStream::Stdout => {
                printed.extend_from_slice(data);
                Ok(())
            }
            OutputStream::Stderr => {
                use std::io::Write;
                let mut err = std::io::stderr().lock();
                err.write_all(data)?;
                err.flush()
            }
        }),
        terminal,
    )
    .await;
    if let Ran::Done(Ok(outcome)) = &ran {
        let now = String::from_utf8_lossy(&printed);
        let now = now.trim_end_matches('\n');
        if outcome.status() == 0 && now.starts_with('/') {
            *cwd = Some(now.to_owned());
        }
    }
    ran
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_line_that_is_one_cd_is_tracked() {
        assert_eq!(lone_cd("cd"), Some(""));
        assert_eq!(lone_cd("cd /tmp"), Some("/tmp"));
        assert_eq!(lone_cd("cd  \"a b\" "), Some("\"a b\""));
        assert_eq!(lone_cd("cd ~/src"), Some("~/src"));
        assert_eq!(lone_cd("cdx"), None);
        assert_eq!(lone_cd("cd /tmp && ls"), None);
        assert_eq!(lone_cd("cd /tmp; ls"), None);
        assert_eq!(lone_cd("ls"), None);
    }

    #[test]
    fn lines_run_in_the_tracked_directory() {
        assert_eq!(in_dir(None, "ls"), "ls");
        assert_eq!(
            in_dir(Some("/a b/it's"), "ls & pwd"),
            r"cd -- '/a b/it'\''s' || exit; ls & pwd"
        );
    }
}
