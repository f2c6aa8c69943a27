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
//! Standard input, when it is not a terminal, is the remote command's (`tar c . | sockit exec
//! -- tar x -C dst`), as with ssh; `-n` gives the command an empty one instead.
//!
//! The exit status is the remote command's; 128 + the signal when it was killed by one; 255
//! when sockit itself failed (a usage error, cannot connect, login refused), as ssh does.

use std::io::{IsTerminal, Read};
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
    /// Give the command an empty standard input instead of ours (ours is sent when it is not a
    /// terminal).
    #[arg(short = 'n', long)]
    no_stdin: bool,
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
    let outcome = if args.no_stdin || std::io::stdin().is_terminal() {
        remote.exec(&cmd, args.timeout).await
    } else {
        remote
            .exec_with_input(&cmd, args.timeout, &mut StdinReader::start())
            .await
    };
    match outcome {
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

/// Our standard input, read by a thread of its own, so that nothing waits for it once the
/// command has ended (a read of a pipe cannot be cancelled).
struct StdinReader {
    chunks: tokio::sync::mpsc::Receiver<std::io::Result<Vec<u8>>>,
    held: Vec<u8>,
    at: usize,
}

impl StdinReader {
    fn start() -> StdinReader {
        let (sender, chunks) = tokio::sync::mpsc::channel(4);
        std::thread::spawn(move || {
            let mut stdin = std::io::stdin().lock();
            loop {
                let mut buf = vec![0u8; 64 * 1024];
                let read = match stdin.read(&mut buf) {
                    Ok(read) => {
                        buf.truncate(read);
                        Ok(buf)
                    }
                    Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(err) => Err(err),
                };
                let last = !matches!(&read, Ok(buf) if !buf.is_empty());
                if sender.blocking_send(read).is_err() || last {
                    return;
                }
            }
        });
        StdinReader {
            chunks,
            held: Vec::new(),
            at: 0,
        }
    }
}

impl tokio::io::AsyncRead for StdinReader {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.at == self.held.len() {
            match std::task::ready!(self.chunks.poll_recv(cx)) {
                Some(Ok(chunk)) => {
                    self.held = chunk;
                    self.at = 0;
                }
                Some(Err(err)) => return std::task::Poll::Ready(Err(err)),
                None => return std::task::Poll::Ready(Ok(())),
            }
        }
        let take = buf.remaining().min(self.held.len() - self.at);
        let at = self.at;
        buf.put_slice(&self.held[at..at + take]);
        self.at += take;
        std::task::Poll::Ready(Ok(()))
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
