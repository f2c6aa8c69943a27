//! The tutorials' raw TCP services, so that their clients work unchanged.
//!
//! - `--legacy-echo`: no framing; whatever bytes arrive go back with ASCII letters
//!   upper-cased, exactly what Python's `bytes.upper()` does (their
//!   `socketserver.ThreadingTCPServer` example).
//! - `--legacy-exec`: a raw command in, one frame out (their `subprocess` servers); see
//!   [`LegacyExec`].

use std::ffi::OsStr;
use std::net::SocketAddr;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use sockit_proto::message::LegacyExecReply;
use sockit_proto::HeaderWriter;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{timeout, Instant};
use tokio_util::sync::CancellationToken;

use super::TcpService;
use crate::command::{CommandLimits, Event, Exit, OutputStream, RunningCommand};
use crate::config::ExecConfig;

/// Read size of the legacy echo; the tutorials read 1024 at a time.
const LEGACY_READ: usize = 16 * 1024;

/// Raw TCP upper-case echo.
#[derive(Debug)]
pub(crate) struct LegacyEcho {
    idle: Duration,
}

impl LegacyEcho {
    pub(crate) fn new(idle: Duration) -> LegacyEcho {
        LegacyEcho { idle }
    }
}

impl TcpService for LegacyEcho {
    async fn serve(
        self: Arc<Self>,
        mut stream: TcpStream,
        _peer: SocketAddr,
        stop: CancellationToken,
    ) {
        let _ = stream.set_nodelay(true);
        let mut buf = vec![0u8; LEGACY_READ];
        loop {
            let read = tokio::select! {
                () = stop.cancelled() => break,
                read = timeout(self.idle, stream.read(&mut buf)) => read,
            };
            let n = match read {
                Ok(Ok(n)) if n > 0 => n,
                _ => break,
            };
            buf[..n].make_ascii_uppercase();
            match timeout(self.idle, stream.write_all(&buf[..n])).await {
                Ok(Ok(())) => {}
                _ => return,
            }
        }
        let _ = stream.shutdown().await;
    }

    async fn refuse_busy(self: Arc<Self>, mut stream: TcpStream) {
        let _ = stream.shutdown().await;
    }
}

/// Most output one legacy reply carries; the reply's length goes first, so the output is held
/// in memory.
const LEGACY_MAX_OUTPUT: u64 = 16 * 1024 * 1024;

/// Raw TCP remote commands (`--legacy-exec`), as the tutorials' `subprocess` servers answer
/// them: the bytes of one read are a command for `sh -c`; the reply is one frame whose header
/// has `size`, `data_size` and `total_size` (and `exit_code` or `signal`, `truncated`,
/// `timed_out`), and whose body is the command's stdout followed by its stderr.
///
/// There is no login, so the server binds it to loopback addresses only. Commands get the
/// same process-group handling, deadline and concurrency limit as `exec`, and an output cap of
/// at most 16 MiB. A command's slot is held until its reply has been sent, since the reply
/// holds its whole output: at most `--exec-max-running` outputs are in memory at once. A client that disconnects while its command runs has it killed.
#[derive(Debug)]
pub(crate) struct LegacyExec {
    idle: Duration,
    exec: ExecConfig,
    slots: Arc<Semaphore>,
}

impl LegacyExec {
    pub(crate) fn new(idle: Duration, exec: ExecConfig, slots: Arc<Semaphore>) -> LegacyExec {
        LegacyExec { idle, exec, slots }
    }

    /// Runs one command and builds its reply frame, which holds the command's slot until it
    /// is sent.
    async fn run(
        &self,
        command: &[u8],
        stream: &mut TcpStream,
        pending: &mut BytesMut,
    ) -> Option<LegacyReply> {
        let Ok(slot) = self.slots.clone().try_acquire_owned() else {
            let message = format!(
                "sockit: {} commands are running already\n",
                self.exec.max_running
            );
            return Some(LegacyReply::unslotted(legacy_failure(&message)));
        };
        let limits = CommandLimits {
            deadline: Instant::now() + self.exec.max_timeout,
            max_output: self.exec.max_output.min(LEGACY_MAX_OUTPUT),
        };
        let mut running = match RunningCommand::spawn(OsStr::from_bytes(command), &[], limits) {
            Ok(running) => running,
            Err(err) => {
                let message = format!("sockit: cannot run the command: {err}\n");
                return Some(LegacyReply::unslotted(legacy_failure(&message)));
            }
        };
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        let finished = loop {
            let event = tokio::select! {
                event = running.next() => event,
                gone = read_more(stream, pending) => {
                    if gone {
                        return None;
                    }
                    continue;
                }
            };
            match event {
                Event::Output(OutputStream::Stdout, data) => stdout.extend_from_slice(&data),
                Event::Output(OutputStream::Stderr, data) => stderr.extend_from_slice(&data),
                Event::Finished(finished) => break finished,
            }
        };
        stdout.extend_from_slice(&stderr);
        let (exit_code, signal) = match finished.exit {
            Exit::Code(code) => (Some(code), None),
            Exit::Signal(signal) => (None, Some(signal)),
        };
        let reply = LegacyExecReply {
            exit_code,
            signal,
            truncated: Some(finished.truncated),
            timed_out: Some(finished.timed_out),
            ..LegacyExecReply::for_body(stdout.len() as u64)
        };
        Some(LegacyReply {
            frame: legacy_reply(&stdout, &reply),
            _slot: Some(slot),
        })
    }
}

/// A reply frame, with the command slot of the command whose whole output it holds: the slot
/// is given back only once the reply is sent (or the client is gone), so no more outputs are
/// held in memory than `--exec-max-running` commands may run.
struct LegacyReply {
    frame: Vec<u8>,
    _slot: Option<OwnedSemaphorePermit>,
}

impl LegacyReply {
    /// A reply that holds no command's output, so no slot.
    fn unslotted(frame: Vec<u8>) -> LegacyReply {
        LegacyReply { frame, _slot: None }
    }
}

/// Reads what the client sends while its command runs (it may already be the next command),
/// up to one read buffer. True when the client has gone; pending forever once the buffer is
/// full.
async fn read_more(stream: &mut TcpStream, pending: &mut BytesMut) -> bool {
    if pending.len() >= LEGACY_READ {
        return std::future::pending().await;
    }
    pending.reserve(LEGACY_READ - pending.len());
    matches!(stream.read_buf(pending).await, Ok(0) | Err(_))
}

/// The reply when a command could not be run: the reason as its output, exit status 255.
fn legacy_failure(message: &str) -> Vec<u8> {
    let reply = LegacyExecReply {
        exit_code: Some(255),
        ..LegacyExecReply::for_body(message.len() as u64)
    };
    legacy_reply(message.as_bytes(), &reply)
}

/// One frame: `{"data_size":N,"total_size":N,…}` and the body.
fn legacy_reply(body: &[u8], reply: &LegacyExecReply) -> Vec<u8> {
    let mut frame = BytesMut::with_capacity(256 + body.len());
    HeaderWriter::new(&mut frame)
        .fields(reply)
        .finish(body.len() as u64)
        .expect("a legacy reply header always encodes");
    frame.extend_from_slice(body);
    Vec::from(frame)
}

impl TcpService for LegacyExec {
    async fn serve(
        self: Arc<Self>,
        mut stream: TcpStream,
        peer: SocketAddr,
        stop: CancellationToken,
    ) {
        let _ = stream.set_nodelay(true);
        let mut pending = BytesMut::with_capacity(LEGACY_READ);
        loop {
            if pending.is_empty() {
                let read = tokio::select! {
                    () = stop.cancelled() => break,
                    read = timeout(self.idle, stream.read_buf(&mut pending)) => read,
                };
                match read {
                    Ok(Ok(n)) if n > 0 => {}
                    _ => break,
                }
            }
            let command = pending.split();
            tracing::debug!(%peer, "legacy exec");
            let Some(reply) = self.run(&command, &mut stream, &mut pending).await else {
                tracing::info!(%peer, "legacy exec client left while its command ran; command killed");
                return;
            };
            match timeout(self.idle, stream.write_all(&reply.frame)).await {
                Ok(Ok(())) => {}
                _ => return,
            }
        }
        let _ = stream.shutdown().await;
    }

    async fn refuse_busy(self: Arc<Self>, mut stream: TcpStream) {
        let _ = stream.shutdown().await;
    }
}
