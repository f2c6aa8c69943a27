//! Remote commands: `sh -c CMD` in its own process group, with stdin from /dev/null, its
//! output read as it is produced, an output cap and a deadline.
//!
//! The command is over when `sh` exits. Whatever it left running in its group is killed then,
//! as it is when the cap or the deadline is reached, and when the [`RunningCommand`] is
//! dropped (the client went away, the server is shutting down). No process of a command
//! outlives it unless it left the group on purpose (`setsid`); output still held open by such
//! a process is waited for only [`DRAIN_GRACE`].

use std::ffi::OsStr;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::AsyncReadExt;
use tokio::process::{Child, ChildStderr, ChildStdout};
use tokio::time::{sleep_until, Instant};

/// The most one output frame carries.
pub(crate) const OUTPUT_CHUNK: usize = 64 * 1024;
/// How long output pipes may stay open after the command has ended and its group was killed.
const DRAIN_GRACE: Duration = Duration::from_secs(1);

/// Which output a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

impl OutputStream {
    /// `"stdout"` or `"stderr"`, as on the wire.
    pub fn name(self) -> &'static str {
        match self {
            OutputStream::Stdout => "stdout",
            OutputStream::Stderr => "stderr",
        }
    }
}

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// It exited with this status.
    Code(i32),
    /// It was killed by this signal.
    Signal(i32),
}

impl From<ExitStatus> for Exit {
    fn from(status: ExitStatus) -> Exit {
        match (status.code(), status.signal()) {
            (Some(code), _) => Exit::Code(code),
            (None, Some(signal)) => Exit::Signal(signal),
            (None, None) => Exit::Code(-1),
        }
    }
}

/// The end of a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Finished {
    pub(crate) exit: Exit,
    /// The output cap was reached: the command was killed and the rest of its output lost.
    pub(crate) truncated: bool,
    /// The deadline passed: the command was killed.
    pub(crate) timed_out: bool,
}

/// What a running command did next.
#[derive(Debug)]
pub(crate) enum Event {
    /// Some output, at most [`OUTPUT_CHUNK`] bytes.
    Output(OutputStream, Bytes),
    /// The command is over and its output fully read.
    Finished(Finished),
}

/// Limits on one command.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CommandLimits {
    /// Killed when this passes.
    pub(crate) deadline: Instant,
    /// Killed once it has written this many bytes (stdout and stderr together).
    pub(crate) max_output: u64,
}

/// A process group that is killed when dropped.
#[derive(Debug)]
struct ProcessGroup {
    id: Option<Pid>,
}

impl ProcessGroup {
    fn kill(&mut self) {
        if let Some(id) = self.id.take() {
            // ESRCH (no process left in the group) is the usual, harmless answer.
            let _ = killpg(id, Signal::SIGKILL);
        }
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A command being run.
#[derive(Debug)]
pub(crate) struct RunningCommand {
    child: Child,
    group: ProcessGroup,
    stdout: Option<ChildStdout>,
    stderr: Option<ChildStderr>,
    stdout_buf: BytesMut,
    stderr_buf: BytesMut,
    exit: Option<ExitStatus>,
    drain_until: Option<Instant>,
    limits: CommandLimits,
    output_left: u64,
    truncated: bool,
    timed_out: bool,
}

impl RunningCommand {
    /// Starts `sh -c command` with `env` added to the server's environment.
    ///
    /// # Errors
    ///
    /// The shell cannot be started.
    pub(crate) fn spawn(
        command: &OsStr,
        env: &[(&str, &str)],
        limits: CommandLimits,
    ) -> io::Result<RunningCommand> {
        let mut shell = tokio::process::Command::new("/bin/sh");
        shell
            .arg("-c")
            .arg(command)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = shell.spawn()?;
        let id = child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .map(Pid::from_raw);
        Ok(RunningCommand {
            stdout: child.stdout.take(),
            stderr: child.stderr.take(),
            child,
            group: ProcessGroup { id },
            stdout_buf: BytesMut::new(),
            stderr_buf: BytesMut::new(),
            exit: None,
            drain_until: None,
            output_left: limits.max_output,
            limits,
            truncated: false,
            timed_out: false,
        })
    }

    /// The command's deadline.
    pub(crate) fn deadline(&self) -> Instant {
        self.limits.deadline
    }

    /// Waits for the next output or for the end. Cancel-safe: dropping the future loses
    /// nothing. Once it has returned [`Event::Finished`], it returns it again at once.
    pub(crate) async fn next(&mut self) -> Event {
        loop {
            if self.stdout.is_none() && self.stderr.is_none() {
                if let Some(status) = self.exit {
                    return Event::Finished(Finished {
                        exit: status.into(),
                        truncated: self.truncated,
                        timed_out: self.timed_out,
                    });
                }
            }
            let drain_until = self.drain_until;
            tokio::select! {
                biased;
                read = read_some(self.stdout.as_mut(), &mut self.stdout_buf) => {
                    if let Some(output) = self.took(OutputStream::Stdout, read) {
                        return output;
                    }
                }
                read = read_some(self.stderr.as_mut(), &mut self.stderr_buf) => {
                    if let Some(output) = self.took(OutputStream::Stderr, read) {
                        return output;
                    }
                }
                status = self.child.wait(), if self.exit.is_none() => {
                    // A failed wait means the child is gone without a status to report.
                    self.exit = Some(status.unwrap_or_else(|_| ExitStatus::from_raw(255 << 8)));
                    self.group.kill();
                    self.drain_until = Some(Instant::now() + DRAIN_GRACE);
                }
                () = sleep_until(self.limits.deadline), if !self.timed_out && self.exit.is_none() => {
                    self.timed_out = true;
                    self.group.kill();
                }
                () = sleep_until(drain_until.unwrap_or_else(Instant::now)), if drain_until.is_some() => {
                    self.stdout = None;
                    self.stderr = None;
                }
            }
        }
    }

    /// Accounts for one read of `stream`: output within the cap, or its end.
    fn took(&mut self, stream: OutputStream, read: io::Result<usize>) -> Option<Event> {
        let buf = match stream {
            OutputStream::Stdout => &mut self.stdout_buf,
            OutputStream::Stderr => &mut self.stderr_buf,
        };
        let n = match read {
            Ok(0) | Err(_) => {
                match stream {
                    OutputStream::Stdout => self.stdout = None,
                    OutputStream::Stderr => self.stderr = None,
                }
                return None;
            }
            Ok(n) => n as u64,
        };
        let mut chunk = buf.split().freeze();
        if n > self.output_left {
            chunk.truncate(usize::try_from(self.output_left).unwrap_or(usize::MAX));
            self.output_left = 0;
            if !self.truncated {
                self.truncated = true;
                self.group.kill();
            }
            self.stdout = None;
            self.stderr = None;
        } else {
            self.output_left -= n;
        }
        (!chunk.is_empty()).then_some(Event::Output(stream, chunk))
    }
}

/// Reads what `pipe` has into `buf`; pending forever when there is no pipe.
async fn read_some<R: tokio::io::AsyncRead + Unpin>(
    pipe: Option<&mut R>,
    buf: &mut BytesMut,
) -> io::Result<usize> {
    match pipe {
        Some(pipe) => {
            buf.reserve(OUTPUT_CHUNK);
            let mut limited = pipe.take(OUTPUT_CHUNK as u64);
            limited.read_buf(buf).await
        }
        None => std::future::pending().await,
    }
}
