//! Running remote commands: `exec`, its output delivered as it arrives.

use std::io;
use std::time::Duration;

use sockit_proto::message::{ExecFrame, ExecRequest, Request, Stream};

use super::{parse_header, Client, ClientError, Connect};
use crate::command::{Exit, OutputStream};

/// How a remote command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExecOutcome {
    /// Its exit status or signal.
    pub exit: Exit,
    /// The server's output cap was reached: it was killed and the rest of its output lost.
    pub truncated: bool,
    /// Its time ran out: it was killed.
    pub timed_out: bool,
}

impl ExecOutcome {
    /// The exit status a local process should end with to pass this on: the command's own
    /// status, or 128 + the signal that killed it (as shells and ssh report it).
    pub fn status(&self) -> u8 {
        match self.exit {
            Exit::Code(code) => u8::try_from(code & 0xff).unwrap_or(255),
            Exit::Signal(signal) => u8::try_from((128 + signal).min(255)).unwrap_or(255),
        }
    }
}

impl<C: Connect> Client<C> {
    /// Runs `cmd` with `sh -c` on the server (logged in first), passing each piece of its
    /// output to `output` as it arrives. `timeout` asks the server to kill it after that long
    /// (the server may allow less).
    ///
    /// # Errors
    ///
    /// `unauthorized` when not logged in, `disabled` from a server without accounts, `busy`
    /// when too many commands run; [`ClientError::Local`] when `output` fails.
    pub async fn exec(
        &mut self,
        cmd: &str,
        timeout: Option<Duration>,
        mut output: impl FnMut(OutputStream, &[u8]) -> io::Result<()>,
    ) -> Result<ExecOutcome, ClientError> {
        let request = Request::Exec(ExecRequest {
            cmd: cmd.into(),
            timeout: timeout.map(|timeout| timeout.as_secs_f64()),
        });
        self.write_request(&request, 0)?;
        // A command may rightly say nothing for as long as it runs.
        self.conn
            .set_idle(timeout.map(|timeout| timeout + self.reply_timeout));
        let outcome = self.read_exec_reply(&mut output).await;
        self.conn.set_idle(Some(self.reply_timeout));
        outcome
    }

    async fn read_exec_reply(
        &mut self,
        output: &mut impl FnMut(OutputStream, &[u8]) -> io::Result<()>,
    ) -> Result<ExecOutcome, ClientError> {
        loop {
            let header = self.read_reply_header().await?;
            let stream = match parse_header(&header)? {
                ExecFrame::Output { stream } => match stream {
                    Stream::Stdout => OutputStream::Stdout,
                    Stream::Stderr => OutputStream::Stderr,
                },
                ExecFrame::Exit(exit) => {
                    let exit_status = match (exit.exit_code, exit.signal) {
                        (Some(code), _) => Exit::Code(code),
                        (None, Some(signal)) => Exit::Signal(signal),
                        (None, None) => {
                            return Err(ClientError::BadReply(
                                "final exec frame has neither exit_code nor signal".into(),
                            ))
                        }
                    };
                    self.conn.skip_body().await?;
                    return Ok(ExecOutcome {
                        exit: exit_status,
                        truncated: exit.truncated,
                        timed_out: exit.timed_out,
                    });
                }
            };
            while let Some(chunk) = self.conn.read_body_chunk().await? {
                output(stream, &chunk).map_err(|source| ClientError::Local {
                    path: stream.describe().to_owned(),
                    source,
                })?;
            }
        }
    }
}
