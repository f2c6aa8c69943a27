//! `exec`: a remote command for a logged-in connection, its output streamed back as produced.
//!
//! Request: `{"op":"exec","cmd":"…","timeout":SECS}` (`timeout` optional, capped by the
//! server). Reply: any number of output frames `{"ok":true,"stream":"stdout"|"stderr",
//! "size":N}` + N bytes, in the order the command wrote them, then one final frame without
//! `stream`: `{"ok":true,"exit_code":C}` or `{"ok":true,"signal":S,"signal_name":"SIGKILL"}`,
//! with `truncated`, `timed_out` and `elapsed_ms`. A refused request is a single error reply.
//!
//! If the client goes away while the command runs, the command's process group is killed.

use std::borrow::Cow;
use std::ffi::OsStr;
use std::io;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde::Deserialize;
use sockit_proto::{ErrorCode, Header};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{timeout_at, Instant};

use super::login::Session;
use super::{refuse, Context, Flow};
use crate::command::{CommandLimits, Event, Exit, Finished, RunningCommand};
use crate::connection::{ConnError, Connection};
use crate::reply;

/// How long past a command's deadline its last output may take to reach the client.
const SEND_GRACE: Duration = Duration::from_secs(10);

#[derive(Deserialize)]
struct ExecRequest<'a> {
    #[serde(borrow)]
    cmd: Cow<'a, str>,
    #[serde(default)]
    timeout: Option<f64>,
}

/// Runs `exec`.
pub(super) async fn exec<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    header: &Header,
    context: &Context,
    session: &Session,
) -> Result<Flow, ConnError> {
    if context.accounts.is_none() {
        let message = "remote commands are off: the server runs without a users file (--users)";
        return refuse(conn, header, ErrorCode::Disabled, &message).await;
    }
    let Some(user) = session.user() else {
        return refuse(conn, header, ErrorCode::Unauthorized, &"log in first").await;
    };
    if header.body_len() > 0 {
        return refuse(conn, header, ErrorCode::BadRequest, &"exec takes no body").await;
    }
    let request: ExecRequest<'_> = match header.parse() {
        Ok(request) => request,
        Err(err) => return refuse(conn, header, ErrorCode::BadRequest, &err).await,
    };
    if request.cmd.trim().is_empty() || request.cmd.contains('\0') {
        let message = "cmd must be a non-empty command line without NUL bytes";
        return refuse(conn, header, ErrorCode::BadRequest, &message).await;
    }
    let max_timeout = context.exec.max_timeout;
    let timeout = match request.timeout {
        None => max_timeout,
        Some(secs) => match Duration::try_from_secs_f64(secs) {
            Ok(asked) if !asked.is_zero() => asked.min(max_timeout),
            _ => {
                let message = "timeout must be a positive number of seconds";
                return refuse(conn, header, ErrorCode::BadRequest, &message).await;
            }
        },
    };
    let Ok(_slot) = context.exec_slots.clone().try_acquire_owned() else {
        let message = format!(
            "{} commands are running already; try again later",
            context.exec.max_running
        );
        return refuse(conn, header, ErrorCode::Busy, &message).await;
    };
    let limits = CommandLimits {
        deadline: Instant::now() + timeout,
        max_output: context.exec.max_output,
    };
    let started = Instant::now();
    let mut command =
        match RunningCommand::spawn(OsStr::new(&*request.cmd), &[("SOCKIT_USER", user)], limits) {
            Ok(command) => command,
            Err(err) => {
                let message = format!("cannot start the shell: {err}");
                return refuse(conn, header, ErrorCode::Internal, &message).await;
            }
        };
    tracing::debug!(user, cmd = %request.cmd, "exec");
    let send_by = command.deadline() + SEND_GRACE;
    loop {
        let event = tokio::select! {
            event = command.next() => event,
            () = conn.peer_gone() => {
                tracing::info!(user, "client left while its command ran; command killed");
                return Err(ConnError::Io(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    "client left while its command ran",
                )));
            }
        };
        match event {
            Event::Output(stream, data) => {
                reply::ok(conn.write_buf(), header.id())
                    .field("stream", stream.name())
                    .finish(data.len() as u64)
                    .expect("an output frame always encodes");
                let sent = timeout_at(send_by, async {
                    conn.write_body(&data).await?;
                    conn.flush().await
                });
                match sent.await {
                    Ok(sent) => sent?,
                    Err(_) => {
                        return Err(ConnError::Io(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "the command's time ran out while the client was not reading",
                        )))
                    }
                }
            }
            Event::Finished(finished) => {
                let elapsed = started.elapsed();
                tracing::info!(user, exit = ?finished.exit, ?elapsed, "command finished");
                write_final(conn, header, &finished, elapsed);
                return Ok(Flow::Continue);
            }
        }
    }
}

/// The frame that ends an `exec` reply.
fn write_final<S>(conn: &mut Connection<S>, header: &Header, finished: &Finished, elapsed: Duration)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut reply = reply::ok(conn.write_buf(), header.id());
    match finished.exit {
        Exit::Code(code) => {
            reply.field("exit_code", &code);
        }
        Exit::Signal(signal) => {
            reply.field("signal", &signal);
            if let Ok(name) = Signal::try_from(signal) {
                reply.field("signal_name", name.as_str());
            }
        }
    }
    reply
        .field("truncated", &finished.truncated)
        .field("timed_out", &finished.timed_out)
        .field("elapsed_ms", &(elapsed.as_millis() as u64))
        .finish(0)
        .expect("a final exec frame always encodes");
}
