//! `sockit shell`: log in once, then run one command per line, like the tutorials' `>>:`
//! client. `exit`, `quit` or Ctrl-D leaves; the exit status is the last command's.
//!
//! On a terminal the prompt has line editing and history (rustyline); in a pipe, each line of
//! standard input is a command and there is no prompt.

use std::io::{BufRead, IsTerminal};
use std::time::Duration;

use rustyline::error::ReadlineError;
use rustyline::DefaultEditor;

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

pub(crate) async fn run(args: Args) -> Result<u8, CmdError> {
    let mut remote = Remote::connect(&args.login).await?;
    let mut next_line: Box<dyn FnMut() -> Option<String>> = if std::io::stdin().is_terminal() {
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
    let mut status = 0;
    while let Some(line) = next_line() {
        let cmd = line.trim();
        match cmd {
            "" => continue,
            "exit" | "quit" => break,
            _ => {}
        }
        match remote.exec(cmd, args.timeout).await {
            Ok(outcome) => {
                report(&outcome);
                status = outcome.status();
                if status != 0 && std::io::stdin().is_terminal() {
                    super::out::note!("[exit {status}]");
                }
            }
            // The reader of our output went away: end as exec does.
            Err(err) if err.is_broken_pipe() => return Ok(BROKEN_PIPE),
            Err(err) => {
                eprintln!("sockit: {err}");
                status = FAILED;
            }
        }
    }
    Ok(status)
}
