//! `sockit exec`: run one command on the server, its output and exit status passed through.
//!
//! The words after `--` are quoted for the remote shell, so it sees exactly the words given:
//! `sockit exec -- ls 'my file'` lists one file, and `;`, `|`, `$` or `*` in a word stay
//! literal. For a command line the shell should interpret (pipes, redirections), give it whole
//! with `-c`: `sockit exec -c 'ls | wc -l'`.
//!
//! The exit status is the remote command's; 128 + the signal when it was killed by one; 255
//! when sockit itself failed (cannot connect, login refused), as ssh does.

use std::time::Duration;

use sockit::{ExecOutcome, Exit};

use super::out::BROKEN_PIPE;
use super::remote::{report, LoginArgs, Remote};
use super::serve::parse_seconds;
use crate::cmd::CmdError;

/// Exit status when sockit itself failed.
pub(crate) const FAILED: u8 = 255;

#[derive(Debug, clap::Args)]
#[command(group = clap::ArgGroup::new("what").required(true).args(["line", "words"]))]
pub(crate) struct Args {
    #[command(flatten)]
    login: LoginArgs,
    /// Seconds after which the server kills the command (it may allow less); sockit gives up
    /// 10 s after that.
    #[arg(long, value_name = "SECS", value_parser = parse_seconds)]
    pub(crate) timeout: Option<Duration>,
    /// For scripts: once the command ends, one JSON object as the last line of standard error
    /// (`status`, `code`, `signal`, `timed_out`, `truncated`). None when sockit itself failed.
    #[arg(long)]
    json: bool,
    /// A whole command line for the remote `sh -c`, pipes and all.
    #[arg(short = 'c', value_name = "LINE", conflicts_with = "words")]
    line: Option<String>,
    /// The command and its arguments, each passed as one word.
    #[arg(
        value_name = "CMD",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    words: Vec<String>,
}

/// Runs the command; the exit status to end with, or why sockit failed.
pub(crate) async fn run(args: Args) -> Result<u8, CmdError> {
    let cmd = match args.line {
        Some(line) => line,
        None => shell_words(&args.words),
    };
    let mut remote = Remote::connect(&args.login).await?;
    match remote.exec(&cmd, args.timeout).await {
        Ok(outcome) => {
            report(&outcome);
            if args.json {
                eprintln!("{}", json_status(&outcome));
            }
            Ok(outcome.status())
        }
        Err(err) if err.is_broken_pipe() => Ok(BROKEN_PIPE),
        Err(err) => Err(err.into()),
    }
}

/// The `--json` object of how the command ended: `status` (what sockit exits with), `code`
/// or `signal` (the other null), `timed_out`, `truncated`.
fn json_status(outcome: &ExecOutcome) -> serde_json::Value {
    let (code, signal) = match outcome.exit {
        Exit::Code(code) => (Some(code), None),
        Exit::Signal(signal) => (None, Some(signal)),
    };
    serde_json::json!({
        "status": outcome.status(),
        "code": code,
        "signal": signal,
        "timed_out": outcome.timed_out,
        "truncated": outcome.truncated,
    })
}

/// The words as one command line for `sh`, each single-quoted unless it is plainly safe.
pub(crate) fn shell_words(words: &[String]) -> String {
    words
        .iter()
        .map(|word| quote(word))
        .collect::<Vec<_>>()
        .join(" ")
}

fn quote(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        return word.to_owned();
    }
    format!("'{}'", word.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_quoted_only_when_needed() {
        let words: Vec<String> = ["echo", "a b", "it's", "", "$HOME", "x;y", "--flag=1"]
            .map(String::from)
            .to_vec();
        assert_eq!(
            shell_words(&words),
            r#"echo 'a b' 'it'\''s' '' '$HOME' 'x;y' --flag=1"#
        );
    }
}
