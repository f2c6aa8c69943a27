//! `exec`: a remote command for a logged-in session, as a stream of events.
//!
//! [`start`] checks the request and the limits and spawns `sh -c CMD` (see
//! [`crate::command`]); [`Exec::next`] then yields its output as it is produced and, last, how
//! it ended. Dropping the [`Exec`] kills the command's process group, which is what happens
//! when the client goes away.

use std::ffi::OsStr;
use std::time::Duration;

use bytes::Bytes;
use nix::sys::signal::Signal;
use sockit_proto::message::{ExecExit, ExecRequest, Stream};
use sockit_proto::ErrorCode;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use super::{Core, OpError, Session};
use crate::command::{CommandLimits, Event, Exit, Finished, RunningCommand};

/// How long past a command's deadline its last output may take to reach the client.
const SEND_GRACE: Duration = Duration::from_secs(10);

/// A running remote command.
#[derive(Debug)]
pub(crate) struct Exec {
    command: RunningCommand,
    user: String,
    started: Instant,
    _slot: OwnedSemaphorePermit,
}

/// What a running command did next.
#[derive(Debug)]
pub(crate) enum ExecEvent {
    /// Some output.
    Output(Stream, Bytes),
    /// It ended, and all its output was delivered.
    Exit(ExecExit),
}

/// Starts the command `request` asks for, as the session's user.
///
/// # Errors
///
/// `bad_request` for an empty command line or a bad timeout, `busy` when the most commands
/// allowed already run, `internal` when the shell cannot start.
pub(crate) fn start(
    core: &Core,
    session: &Session,
    request: &ExecRequest<'_>,
) -> Result<Exec, OpError> {
    let user = session
        .user()
        .expect("authorize lets exec through only for a logged-in session");
    if request.cmd.trim().is_empty() || request.cmd.contains('\0') {
        return Err(OpError::bad_request(
            "cmd must be a non-empty command line without NUL bytes",
        ));
    }
    let timeout = timeout_of(request.timeout, core.exec.max_timeout)?;
    let Ok(slot) = core.exec_slots.clone().try_acquire_owned() else {
        return Err(OpError::new(
            ErrorCode::Busy,
            format!(
                "{} commands are running already; try again later",
                core.exec.max_running
            ),
        ));
    };
    let limits = CommandLimits {
        deadline: Instant::now() + timeout,
        max_output: core.exec.max_output,
    };
    let spawn = if request.stdin {
        RunningCommand::spawn_with_input
    } else {
        RunningCommand::spawn
    };
    let command =
        spawn(OsStr::new(&*request.cmd), &[("SOCKIT_USER", user)], limits).map_err(|err| {
            OpError::new(
                ErrorCode::Internal,
                format!("cannot start the shell: {err}"),
            )
        })?;
    tracing::debug!(user, cmd = %request.cmd, "exec");
    Ok(Exec {
        command,
        user: user.to_owned(),
        started: Instant::now(),
        _slot: slot,
    })
}

impl Exec {
    /// When the last of the command's output must have reached the client.
    pub(crate) fn send_by(&self) -> Instant {
        self.command.deadline() + SEND_GRACE
    }

    /// The writing end of the command's standard input, once, when the request asked for
    /// `stdin`; dropping it is the end of input.
    pub(crate) fn take_stdin(&mut self) -> Option<tokio::process::ChildStdin> {
        self.command.take_stdin()
    }

    /// The user it runs for.
    pub(crate) fn user(&self) -> &str {
        &self.user
    }

    /// The command's next output, or how it ended (after which it yields nothing new).
    pub(crate) async fn next(&mut self) -> ExecEvent {
        match self.command.next().await {
            Event::Output(stream, data) => ExecEvent::Output(stream.into(), data),
            Event::Finished(finished) => {
                let elapsed = self.started.elapsed();
                tracing::info!(user = self.user, exit = ?finished.exit, ?elapsed, "command finished");
                ExecEvent::Exit(exit_of(&finished, elapsed))
            }
        }
    }
}

/// The time a command may run: what the client asked for, capped by the server's `max`; any
/// positive number is accepted, however large (`1e300` is the server's limit).
///
/// # Errors
///
/// `bad_request` for zero or a negative number.
fn timeout_of(asked: Option<f64>, max: Duration) -> Result<Duration, OpError> {
    match asked {
        None => Ok(max),
        Some(secs) if secs > 0.0 && secs >= max.as_secs_f64() => Ok(max),
        Some(secs) if secs > 0.0 => Ok(Duration::from_secs_f64(secs).max(Duration::from_nanos(1))),
        Some(_) => Err(OpError::bad_request(
            "timeout must be a positive number of seconds",
        )),
    }
}

/// The end of an `exec` reply.
fn exit_of(finished: &Finished, elapsed: Duration) -> ExecExit {
    let (exit_code, signal, signal_name) = match finished.exit {
        Exit::Code(code) => (Some(code), None, None),
        Exit::Signal(signal) => (
            None,
            Some(signal),
            Signal::try_from(signal)
                .ok()
                .map(|name| name.as_str().to_owned()),
        ),
    };
    ExecExit {
        exit_code,
        signal,
        signal_name,
        truncated: finished.truncated,
        timed_out: finished.timed_out,
        elapsed_ms: elapsed.as_millis() as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: Duration = Duration::from_secs(3600);

    #[test]
    fn timeouts_are_capped_not_refused() {
        assert_eq!(timeout_of(None, MAX).unwrap(), MAX);
        assert_eq!(timeout_of(Some(1e300), MAX).unwrap(), MAX);
        assert_eq!(timeout_of(Some(f64::MAX), MAX).unwrap(), MAX);
        assert_eq!(timeout_of(Some(3600.5), MAX).unwrap(), MAX);
        assert_eq!(
            timeout_of(Some(1.5), MAX).unwrap(),
            Duration::from_millis(1500)
        );
        assert_eq!(
            timeout_of(Some(1e-300), MAX).unwrap(),
            Duration::from_nanos(1)
        );
    }

    #[test]
    fn zero_negative_and_nan_timeouts_are_refused() {
        for secs in [0.0, -0.0, -1.0, -1e300, f64::NAN] {
            let err = timeout_of(Some(secs), MAX).unwrap_err();
            assert_eq!(err.code, ErrorCode::BadRequest, "{secs}");
        }
    }
}
