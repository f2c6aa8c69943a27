//! Running remote commands: `exec`, its output delivered as it arrives.

use std::io;
use std::time::Duration;

use sockit_proto::message::{
    ExecExit, ExecFrame, ExecInputEnd, ExecRequest, ReplyStatus, Request, Stream,
};
use sockit_proto::{Event, Header};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::Instant;

use super::{parse_header, remote_error, Client, ClientError, Connect};
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
            stdin: false,
        });
        self.write_request(&request, 0)?;
        // A command may rightly say nothing for as long as it runs.
        self.conn
            .set_idle(timeout.map(|timeout| timeout + self.reply_timeout));
        let outcome = self.read_exec_reply(&mut output).await;
        self.conn.set_idle(Some(self.reply_timeout));
        outcome
    }

    /// Runs `cmd` as [`exec`](Client::exec) does, with `input` as its standard input: read to
    /// its end and sent while the output comes back. Once the command has ended, the rest of
    /// `input` is not read. `input` must be cancel-safe to read (as tokio's standard input and
    /// files are).
    ///
    /// # Errors
    ///
    /// As [`exec`](Client::exec), and [`ClientError::Local`] when `input` fails.
    pub async fn exec_with_input(
        &mut self,
        cmd: &str,
        timeout: Option<Duration>,
        input: &mut (impl AsyncRead + Unpin),
        mut output: impl FnMut(OutputStream, &[u8]) -> io::Result<()>,
    ) -> Result<ExecOutcome, ClientError> {
        let request = Request::Exec(ExecRequest {
            cmd: cmd.into(),
            timeout: timeout.map(|timeout| timeout.as_secs_f64()),
            stdin: true,
        });
        self.write_request(&request, 0)?;
        // The command's input goes only once it runs: a refusal is the only answer otherwise.
        let started = self.read_reply_header().await?;
        match parse_header(&started)? {
            ExecFrame::Started { .. } if started.body_len() == 0 => {}
            _ => {
                return Err(ClientError::BadReply(
                    "expected the exec started frame".into(),
                ))
            }
        }
        let deadline = timeout.map(|timeout| Instant::now() + timeout + self.reply_timeout);
        let mut buf = vec![0u8; INPUT_CHUNK];
        let mut input_open = true;
        let mut stream = None;
        loop {
            while let Some(event) = self.conn.buffered()? {
                match event {
                    Event::Header(header) => match self.exec_frame(&header)? {
                        ExecFrame::Output { stream: which } => stream = Some(which),
                        ExecFrame::Exit(exit) => {
                            if input_open {
                                self.write_fields(&ExecInputEnd::FRAME, 0)?;
                            }
                            self.conn.flush().await?;
                            return outcome_of(&exit);
                        }
                        ExecFrame::Started { .. } => {
                            return Err(ClientError::BadReply("a second started frame".into()))
                        }
                    },
                    Event::Body(chunk) => {
                        let which = stream.ok_or_else(|| {
                            ClientError::BadReply("exec output without its frame".into())
                        })?;
                        write_output(&mut output, which, &chunk)?;
                    }
                }
            }
            let reading = input_open && !self.conn.has_unwritten();
            tokio::select! {
                read = input.read(&mut buf), if reading => {
                    let read = read.map_err(|source| ClientError::Local {
                        path: "standard input".into(),
                        source,
                    })?;
                    if read == 0 {
                        self.write_fields(&ExecInputEnd::FRAME, 0)?;
                        input_open = false;
                    } else {
                        self.write_fields(&serde_json::json!({}), read as u64)?;
                        self.conn.write_buf().extend_from_slice(&buf[..read]);
                    }
                }
                open = self.conn.exchange(deadline) => {
                    if !open? {
                        return Err(ClientError::Closed);
                    }
                }
            }
        }
    }

    /// An `exec` reply frame's header: an error reply as the error, else the frame.
    fn exec_frame(&self, header: &Header) -> Result<ExecFrame, ClientError> {
        let status: ReplyStatus = parse_header(header)?;
        if !status.ok {
            return Err(remote_error(header)?);
        }
        let frame: ExecFrame = parse_header(header)?;
        if matches!(frame, ExecFrame::Exit(_)) && header.body_len() > 0 {
            return Err(ClientError::BadReply(
                "the final exec frame has a body".into(),
            ));
        }
        Ok(frame)
    }

    async fn read_exec_reply(
        &mut self,
        output: &mut impl FnMut(OutputStream, &[u8]) -> io::Result<()>,
    ) -> Result<ExecOutcome, ClientError> {
        loop {
            let header = self.read_reply_header().await?;
            let stream = match parse_header(&header)? {
                ExecFrame::Output { stream } => stream,
                ExecFrame::Exit(exit) => {
                    self.conn.skip_body().await?;
                    return outcome_of(&exit);
                }
                ExecFrame::Started { .. } => {
                    return Err(ClientError::BadReply(
                        "a started frame for an exec without input".into(),
                    ))
                }
            };
            while let Some(chunk) = self.conn.read_body_chunk().await? {
                write_output(output, stream, &chunk)?;
            }
        }
    }
}

/// The most standard input one input frame carries.
const INPUT_CHUNK: usize = 64 * 1024;

/// How the command ended, from the final frame.
fn outcome_of(exit: &ExecExit) -> Result<ExecOutcome, ClientError> {
    let exit_status = match (exit.exit_code, exit.signal) {
        (Some(code), _) => Exit::Code(code),
        (None, Some(signal)) => Exit::Signal(signal),
        (None, None) => {
            return Err(ClientError::BadReply(
                "final exec frame has neither exit_code nor signal".into(),
            ))
        }
    };
    Ok(ExecOutcome {
        exit: exit_status,
        truncated: exit.truncated,
        timed_out: exit.timed_out,
    })
}

/// Passes a piece of output on.
fn write_output(
    output: &mut impl FnMut(OutputStream, &[u8]) -> io::Result<()>,
    stream: Stream,
    chunk: &[u8],
) -> Result<(), ClientError> {
    let stream = OutputStream::from(stream);
    output(stream, chunk).map_err(|source| ClientError::Local {
        path: stream.describe().to_owned(),
        source,
    })
}
