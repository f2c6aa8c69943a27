//! `sockit exec`: run one command on the server, its output and exit status passed through.
//!
//! The words after `--` are quoted for the remote shell, so it sees exactly the words given:
//! `sockit exec -- ls 'my file'` lists one file, and `;`, `|`, `$` or `*` in a word stay
//! literal. For a command line the shell should interpret (pipes, redirections), give it whole
//! with `-c`: `sockit exec -c 'ls | wc -l'`.
//!
//! The command's words come after `--`, and only there: an option before `--` is sockit's
//! (a mistyped one is a usage error), and a word before `--` is refused rather than guessed at.
//!
//! The exit status is the remote command's; 128 + the signal when it was killed by one; 255
//! when sockit itself failed (a usage error, cannot connect, login refused), as ssh does.

use std::time::Duration;

use super::remote::{report, LoginArgs, Remote};
use super::serve::parse_seconds;
use crate::cmd::CmdError;

/// Exit status when sockit itself failed.
pub(crate) const FAILED: u8 = 255;
/// Exit status when our own output was closed (as a process killed by SIGPIPE).
const BROKEN_PIPE: u8 = 128 + 13;

#[derive(Debug, clap::Args)]
#[command(group = clap::ArgGroup::new("what").required(true).args(["line", "words"]))]
pub(crate) struct Args {
    #[command(flatten)]
    login: LoginArgs,
    /// Seconds after which the server kills the command (it may allow less).
    #[arg(long, value_name = "SECS", value_parser = parse_seconds)]
    timeout: Option<Duration>,
    /// A whole command line for the remote `sh -c`, pipes and all.
    #[arg(short = 'c', value_name = "LINE", conflicts_with = "words")]
    line: Option<String>,
    /// The command and its arguments after `--`, each passed as one word. Everything before
    /// `--` is sockit's, so a mistyped option is an error, never a word of the command.
    #[arg(value_name = "CMD", last = true)]
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
            Ok(outcome.status())
        }
        Err(err) if err.is_broken_pipe() => Ok(BROKEN_PIPE),
        Err(err) => Err(err.into()),
    }
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
