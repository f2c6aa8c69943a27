//! `exec` in frames: output frames `{"ok":true,"stream":"stdout"|"stderr","size":n}` + n
//! bytes as the command writes them, then one final frame with how it ended.
//!
//! With `"stdin":true` the command's standard input comes from the client: once the command
//! has started, the server says so (`{"ok":true,"started":true}`), and the client then sends
//! input frames `{"size":n}` + n bytes and the end frame `{"end":true}`, while output frames
//! go the other way. Input that arrives after the command closed its standard input, or
//! after it ended, is read and dropped up to the end frame, so the stream stays in step.
//!
//! Unlike every other reply, output is flushed as it is produced: the client must see it while
//! the command still runs. If the client goes away meanwhile, the command is killed.

use std::io;

use bytes::{Buf, Bytes};
use sockit_proto::message::{ExecFrame, ExecInput, ExecRequest};
use sockit_proto::{Event, FrameError, Header};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::process::ChildStdin;
use tokio::time::timeout_at;

use super::{answer, refuse, start_reply, Flow};
use crate::connection::{ConnError, Connection};
use crate::core::exec::{self, Exec, ExecEvent};
use crate::core::{Core, Session};

/// Runs `exec`, streaming its output back (and its input in, when asked).
pub(super) async fn exec<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    header: &Header,
    core: &Core,
    session: &Session,
    request: &ExecRequest<'_>,
) -> Result<Flow, ConnError> {
    let mut command = match exec::start(core, session, request) {
        Ok(command) => command,
        Err(err) => return refuse(conn, header, &err).await,
    };
    let mut stdin = command.take_stdin();
    // Whether the client is still sending input, and what came that the command has not taken.
    let mut input_open = stdin.is_some();
    let mut pending = Bytes::new();
    if input_open {
        answer(conn, header, &ExecFrame::Started { started: true });
        conn.flush().await?;
    }
    loop {
        if input_open && pending.is_empty() {
            input_open = take_buffered(conn, &mut stdin, &mut pending)?;
            if !input_open {
                // Dropping the pipe's end is the end of the command's input.
                stdin = None;
            }
        }
        let reading = input_open && pending.is_empty();
        let event = tokio::select! {
            event = command.next() => event,
            () = write_pending(&mut stdin, &mut pending) => continue,
            more = more_input(conn, input_open, reading) => {
                if more? {
                    continue;
                }
                return Err(client_left(&command));
            }
        };
        match event {
            ExecEvent::Output(stream, data) => {
                start_reply(conn, header)
                    .fields(&ExecFrame::Output { stream })
                    .finish(data.len() as u64)
                    .expect("an output frame always encodes");
                let sent = timeout_at(command.send_by(), async {
                    conn.write_body(&data).await?;
                    conn.flush().await
                });
                sent.await.map_err(|_| {
                    ConnError::Io(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the command's time ran out while the client was not reading",
                    ))
                })??;
            }
            ExecEvent::Exit(exit) => {
                answer(conn, header, &exit);
                if input_open {
                    // The client stops sending once it sees the end; drop what it sent.
                    conn.flush().await?;
                    drop_input(conn).await?;
                }
                return Ok(Flow::Continue);
            }
        }
    }
}

/// The error that ends a connection whose client went away while its command ran.
fn client_left(command: &Exec) -> ConnError {
    tracing::info!(
        user = command.user(),
        "client left while its command ran; command killed"
    );
    ConnError::Io(io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "client left while its command ran",
    ))
}

/// Moves the input already buffered on `conn` into `pending`, without I/O, up to the first
/// piece of data (dropped when the command closed its input, `stdin` being `None`). `false`
/// once the end frame has come.
fn take_buffered<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    stdin: &mut Option<ChildStdin>,
    pending: &mut Bytes,
) -> Result<bool, ConnError> {
    while pending.is_empty() {
        match conn.buffered()? {
            None => break,
            Some(Event::Body(data)) => {
                if stdin.is_some() {
                    *pending = data;
                }
            }
            Some(Event::Header(frame)) => match ExecInput::parse(&frame) {
                Ok(ExecInput::Data(_)) => {}
                Ok(ExecInput::End) => return Ok(false),
                Err(message) => return Err(broken(&message)),
            },
        }
    }
    Ok(true)
}

/// Hands pending input to the command; never completes when there is none. When the command
/// has closed its standard input, what is pending is dropped, and so is what comes later.
async fn write_pending(stdin: &mut Option<ChildStdin>, pending: &mut Bytes) {
    let Some(writer) = stdin.as_mut().filter(|_| !pending.is_empty()) else {
        return std::future::pending().await;
    };
    match writer.write(pending).await {
        Ok(written) if written > 0 => pending.advance(written),
        _ => {
            *pending = Bytes::new();
            *stdin = None;
        }
    }
}

/// Reads more from the client: input, while it is `reading` it; else, while input is open,
/// nothing (the command has not taken what came); else only to notice the client leaving.
/// `false` when it left.
async fn more_input<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    input_open: bool,
    reading: bool,
) -> Result<bool, ConnError> {
    match (input_open, reading) {
        (true, true) => conn.exchange(None).await,
        (true, false) => std::future::pending().await,
        (false, _) => {
            conn.peer_gone().await;
            Ok(false)
        }
    }
}

/// Reads and drops input frames up to the end frame, after the command ended.
async fn drop_input<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
) -> Result<(), ConnError> {
    while conn.body_remaining() > 0 {
        conn.skip_body().await?;
    }
    loop {
        let frame = conn.read_continuation().await?;
        match ExecInput::parse(&frame) {
            Ok(ExecInput::Data(_)) => conn.skip_body().await?,
            Ok(ExecInput::End) => return Ok(()),
            Err(message) => return Err(broken(&message)),
        }
    }
}

/// A frame that is no input frame: the stream cannot be followed after it.
fn broken(message: &str) -> ConnError {
    tracing::debug!(message, "bad exec input frame");
    ConnError::Frame(FrameError::UnexpectedBody(
        "an exec input frame was expected",
    ))
}
