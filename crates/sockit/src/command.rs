//! Remote commands: `sh -c CMD` in its own process group, with stdin from /dev/null (or a
//! pipe the caller writes, [`RunningCommand::spawn_with_input`]), its output read as it is
//! produced, an output cap and a deadline.
//!
//! The command is over when `sh` exits. Whatever it left running in its group is killed then,
//! as it is when the cap or the deadline is reached, and when the [`RunningCommand`] is
//! dropped (the client went away, the server is shutting down). No process of a command
//! outlives it unless it left the group on purpose (`setsid`); output still held open by such
//! a process is waited for only [`DRAIN_GRACE`].
//!
//! A command gets a clean environment, never the server's own (which may hold secrets): the
//! fixed [`FIXED_ENV`], the few server variables named in [`PASSED_ENV`] when the server has
//! them, and what the caller adds (`SOCKIT_USER` for `exec`).

use std::ffi::OsStr;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::AsyncReadExt;
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout};
use tokio::time::{sleep_until, Instant};

/// The most one output frame carries.
pub(crate) const OUTPUT_CHUNK: usize = 64 * 1024;
/// How long output pipes may stay open after the command has ended and its group was killed.
const DRAIN_GRACE: Duration = Duration::from_secs(1);

/// Variables every command gets, whatever the server's environment.
pub const FIXED_ENV: [(&str, &str); 2] = [
    ("PATH", "/usr/local/bin:/usr/bin:/bin"),
    ("SHELL", "/bin/sh"),
];

/// Variables a command gets from the server's environment when the server has them: the
/// account the commands run as (its home directory and name) and the locale and time zone.
/// Nothing else of the server's environment reaches a command.
pub const PASSED_ENV: [&str; 7] = [
    "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TZ",
];

/// Which output a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

impl OutputStream {
    /// `standard output` or `standard error`, for messages.
    pub fn describe(self) -> &'static str {
        match self {
            OutputStream::Stdout => "standard output",
            OutputStream::Stderr => "standard error",
        }
    }
}

/// The output as the protocol names it.
impl From<OutputStream> for sockit_proto::message::Stream {
    fn from(stream: OutputStream) -> Self {
        match stream {
            OutputStream::Stdout => Self::Stdout,
            OutputStream::Stderr => Self::Stderr,
        }
    }
}

impl From<sockit_proto::message::Stream> for OutputStream {
    fn from(stream: sockit_proto::message::Stream) -> Self {
        match stream {
            sockit_proto::message::Stream::Stdout => Self::Stdout,
            sockit_proto::message::Stream::Stderr => Self::Stderr,
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
    /// Starts `sh -c command` with a clean environment (see the module docs) plus `env`.
    ///
    /// # Errors
    ///
    /// The shell cannot be started.
    pub(crate) fn spawn(
        command: &OsStr,
        env: &[(&str, &str)],
        limits: CommandLimits,
    ) -> io::Result<RunningCommand> {
        RunningCommand::start(command, env, limits, Stdio::null())
    }

    /// Starts `sh -c command` as [`spawn`](RunningCommand::spawn) does, with its standard
    /// input a pipe: [`take_stdin`](RunningCommand::take_stdin) gives its writing end.
    ///
    /// # Errors
    ///
    /// The shell cannot be started.
    pub(crate) fn spawn_with_input(
        command: &OsStr,
        env: &[(&str, &str)],
        limits: CommandLimits,
    ) -> io::Result<RunningCommand> {
        RunningCommand::start(command, env, limits, Stdio::piped())
    }

    fn start(
        command: &OsStr,
        env: &[(&str, &str)],
        limits: CommandLimits,
        stdin: Stdio,
    ) -> io::Result<RunningCommand> {
        let mut shell = tokio::process::Command::new("/bin/sh");
        shell
            .arg("-c")
            .arg(command)
            .env_clear()
            .envs(FIXED_ENV)
            .envs(
                PASSED_ENV
                    .iter()
                    .filter_map(|name| Some((name, std::env::var_os(name)?))),
            )
            .envs(env.iter().copied())
            .stdin(stdin)
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

    /// The writing end of the command's standard input, once, when it was started with
    /// [`spawn_with_input`](RunningCommand::spawn_with_input). Dropping it is the end of input.
    pub(crate) fn take_stdin(&mut self) -> Option<ChildStdin> {
        self.child.stdin.take()
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

#[cfg(test)]
mod tests {
    //! Real `sh` processes: exit codes, signals, the output cap, the deadline, and that no
    //! process of a command's group outlives it.

    use std::future::Future;
    use std::pin::pin;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::task::{Context, Poll, Waker};

    use nix::sys::signal::kill;

    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn limits(time: Duration, max_output: u64) -> CommandLimits {
        CommandLimits {
            deadline: Instant::now() + time,
            max_output,
        }
    }

    fn spawn(cmd: &str, limits: CommandLimits) -> RunningCommand {
        RunningCommand::spawn(OsStr::new(cmd), &[("SOCKIT_TEST", "a value")], limits).unwrap()
    }

    /// Everything a command produced, in the pieces it came in, and how it ended.
    #[derive(Debug, Default)]
    struct Ran {
        stdout: Vec<u8>,
        stderr: Vec<u8>,
        pieces: Vec<usize>,
        finished: Option<Finished>,
    }

    impl Ran {
        fn exit(&self) -> Exit {
            self.finished.expect("finished").exit
        }
    }

    async fn finish(command: &mut RunningCommand) -> Ran {
        let mut ran = Ran::default();
        loop {
            match command.next().await {
                Event::Output(stream, data) => {
                    ran.pieces.push(data.len());
                    match stream {
                        OutputStream::Stdout => ran.stdout.extend_from_slice(&data),
                        OutputStream::Stderr => ran.stderr.extend_from_slice(&data),
                    }
                }
                Event::Finished(finished) => {
                    ran.finished = Some(finished);
                    return ran;
                }
            }
        }
    }

    async fn run(cmd: &str, limits: CommandLimits) -> Ran {
        finish(&mut spawn(cmd, limits)).await
    }

    /// Polls `future` once: its output if it is ready now.
    fn now_or_never<F: Future>(future: F) -> Option<F::Output> {
        let future = pin!(future);
        match future.poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(output) => Some(output),
            Poll::Pending => None,
        }
    }

    /// A number of seconds for `sleep` that no other process uses, so that `/proc` finds only
    /// the processes of one test.
    fn marker() -> String {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        format!("{}.{}", 7000 + std::process::id() % 1000, 1000 + n)
    }

    /// The processes running `sleep MARKER` (not the `sh -c` that names it).
    fn sleepers(marker: &str) -> Vec<Pid> {
        let wanted = format!("sleep\0{marker}\0");
        let mut found = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
                continue;
            };
            if cmdline.ends_with(wanted.as_bytes()) {
                found.push(Pid::from_raw(pid));
            }
        }
        found
    }

    /// Starts a command whose group holds two `sleep MARKER` (one in a subshell), once both run.
    async fn spawn_sleepers(marker: &str) -> RunningCommand {
        let cmd = format!("sleep {marker} & (sleep {marker}; true) & echo started; wait");
        let mut command = spawn(&cmd, limits(HOUR, 1024));
        let Event::Output(OutputStream::Stdout, started) = command.next().await else {
            panic!("no output");
        };
        assert_eq!(&started[..], b"started\n");
        running(marker, 2).await;
        command
    }

    /// Waits until `count` processes run `sleep MARKER` (a forked child takes a moment to
    /// become `sleep`).
    async fn running(marker: &str, count: usize) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while sleepers(marker).len() < count {
            assert!(std::time::Instant::now() < deadline, "never started");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(sleepers(marker).len(), count);
    }

    /// Waits until no `sleep MARKER` is left (a killed process takes a moment to be reaped).
    async fn all_gone(marker: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !sleepers(marker).is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "left behind: {:?}",
                sleepers(marker)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn stdout_stderr_and_the_exit_code_come_back_separately() {
        let ran = run("echo out; echo err >&2; exit 3", limits(HOUR, 1024)).await;
        assert_eq!(
            (&ran.stdout[..], &ran.stderr[..]),
            (&b"out\n"[..], &b"err\n"[..])
        );
        assert_eq!(
            ran.finished,
            Some(Finished {
                exit: Exit::Code(3),
                truncated: false,
                timed_out: false
            })
        );
        assert_eq!(run("true", limits(HOUR, 1024)).await.exit(), Exit::Code(0));
        assert_eq!(
            run("exit 255", limits(HOUR, 1024)).await.exit(),
            Exit::Code(255)
        );
    }

    #[tokio::test]
    async fn the_environment_is_added_and_stdin_is_empty() {
        let ran = run("echo \"$SOCKIT_TEST\"; cat; echo end", limits(HOUR, 1024)).await;
        assert_eq!(ran.stdout, b"a value\nend\n");
        assert_eq!(ran.exit(), Exit::Code(0));
    }

    #[tokio::test]
    async fn the_environment_is_the_documented_set_and_nothing_else() {
        let ran = run("env", limits(HOUR, 1 << 16)).await;
        let stdout = String::from_utf8(ran.stdout).unwrap();
        let mut names: Vec<&str> = stdout
            .lines()
            .filter_map(|line| line.split_once('=').map(|(name, _)| name))
            .filter(|name| *name != "PWD" && *name != "SHLVL" && *name != "_")
            .collect();
        names.sort_unstable();
        let mut expected: Vec<&str> = FIXED_ENV.iter().map(|(name, _)| *name).collect();
        expected.extend(
            PASSED_ENV
                .iter()
                .filter(|name| std::env::var_os(name).is_some()),
        );
        expected.push("SOCKIT_TEST");
        expected.sort_unstable();
        assert_eq!(names, expected, "{stdout}");
        assert!(
            stdout.contains("PATH=/usr/local/bin:/usr/bin:/bin\n"),
            "{stdout}"
        );
    }

    #[tokio::test]
    async fn a_command_killed_by_a_signal_reports_the_signal() {
        for (signal, number) in [("TERM", 15), ("KILL", 9), ("HUP", 1)] {
            let ran = run(&format!("kill -{signal} $$"), limits(HOUR, 1024)).await;
            assert_eq!(ran.exit(), Exit::Signal(number), "{signal}");
        }
    }

    #[tokio::test]
    async fn finished_is_returned_again_once_the_command_is_over() {
        let mut command = spawn("exit 4", limits(HOUR, 1024));
        let first = finish(&mut command).await.finished;
        for _ in 0..3 {
            let Some(Event::Finished(again)) = now_or_never(command.next()) else {
                panic!("Finished is not returned again at once");
            };
            assert_eq!(Some(again), first);
        }
    }

    #[tokio::test]
    async fn output_comes_in_pieces_of_at_most_one_frame() {
        // Written at once into a pipe enlarged to 1 MiB (F_SETPIPE_SZ), so that a read could
        // take far more than a frame.
        let python = "import fcntl, os; fcntl.fcntl(1, 1031, 1 << 20); os.write(1, bytes(300000))";
        if std::process::Command::new("python3")
            .arg("-c")
            .arg("1")
            .status()
            .is_err()
        {
            assert!(std::env::var_os("CI").is_none(), "CI must have python3");
            eprintln!("python3 not found: skipping the large-pipe test");
            return;
        }
        let ran = run(&format!("python3 -c '{python}'"), limits(HOUR, 1 << 20)).await;
        assert_eq!(ran.stdout.len(), 300_000);
        assert!(
            ran.pieces.iter().all(|&n| n > 0 && n <= OUTPUT_CHUNK),
            "{:?}",
            ran.pieces
        );
        assert_eq!(ran.exit(), Exit::Code(0));
    }

    #[tokio::test]
    async fn output_up_to_the_cap_is_whole_and_one_byte_more_is_truncated() {
        let ran = run("head -c 1000 /dev/zero", limits(HOUR, 1000)).await;
        assert_eq!((ran.stdout.len(), ran.exit()), (1000, Exit::Code(0)));
        assert!(!ran.finished.unwrap().truncated);

        let ran = run("head -c 1001 /dev/zero", limits(HOUR, 1000)).await;
        assert_eq!(ran.stdout.len(), 1000);
        assert!(ran.finished.unwrap().truncated);
    }

    #[tokio::test]
    async fn the_cap_counts_both_streams_and_kills_a_command_that_passes_it() {
        let ran = run("yes out & yes err >&2", limits(HOUR, 100_000)).await;
        assert_eq!(ran.stdout.len() + ran.stderr.len(), 100_000);
        assert!(ran.stdout.chunks(4).all(|line| b"out\n".starts_with(line)));
        assert!(ran.stderr.chunks(4).all(|line| b"err\n".starts_with(line)));
        let finished = ran.finished.unwrap();
        assert!(finished.truncated && !finished.timed_out);
        assert_eq!(finished.exit, Exit::Signal(9));
    }

    #[tokio::test]
    async fn at_the_deadline_the_whole_group_is_killed_and_not_a_moment_before() {
        let marker = marker();
        let mut command = spawn_sleepers(&marker).await;

        // From here the clock moves only when told to, or when nothing else can happen.
        tokio::time::pause();
        let deadline = command.deadline();
        tokio::time::advance(deadline - Instant::now() - Duration::from_millis(1)).await;
        assert!(
            now_or_never(command.next()).is_none(),
            "over before its deadline"
        );
        assert!(!command.timed_out, "killed before its deadline");
        assert_eq!(sleepers(&marker).len(), 2, "killed before its deadline");

        tokio::time::advance(Duration::from_millis(1)).await;
        let ran = finish(&mut command).await;
        assert_eq!(
            ran.finished,
            Some(Finished {
                exit: Exit::Signal(9),
                truncated: false,
                timed_out: true
            })
        );
        assert!(ran.stdout.is_empty() && ran.stderr.is_empty());
        tokio::time::resume();
        all_gone(&marker).await;
    }

    #[tokio::test]
    async fn a_real_deadline_ends_a_command_on_time() {
        let started = Instant::now();
        let ran = run("sleep 30", limits(Duration::from_millis(300), 1024)).await;
        let waited = started.elapsed();
        assert!(ran.finished.unwrap().timed_out);
        assert_eq!(ran.exit(), Exit::Signal(9));
        assert!(
            waited >= Duration::from_millis(300),
            "killed early: {waited:?}"
        );
        assert!(waited < Duration::from_secs(5), "killed late: {waited:?}");
    }

    #[tokio::test]
    async fn background_children_are_killed_when_the_shell_exits() {
        let marker = marker();
        let mut command = spawn(&format!("sleep {marker} & echo done"), limits(HOUR, 1024));
        let ran = finish(&mut command).await;
        assert_eq!(
            (&ran.stdout[..], ran.exit()),
            (&b"done\n"[..], Exit::Code(0))
        );
        // The child held the output pipe open: killing it ended the output, not the grace.
        let grace_ends = command.drain_until.expect("the shell's exit was seen");
        assert!(Instant::now() < grace_ends, "waited out the drain grace");
        all_gone(&marker).await;
    }

    #[tokio::test]
    async fn dropping_a_running_command_kills_its_group() {
        let marker = marker();
        let command = spawn_sleepers(&marker).await;
        drop(command);
        all_gone(&marker).await;
    }

    /// Kills, by their ids, the processes a test started outside any command's group.
    struct Escaped(String);

    impl Drop for Escaped {
        fn drop(&mut self) {
            for pid in sleepers(&self.0) {
                let _ = kill(pid, Signal::SIGKILL);
            }
        }
    }

    #[tokio::test]
    async fn output_held_open_by_a_process_that_left_the_group_is_waited_for_only_briefly() {
        let marker = marker();
        let escaped = Escaped(marker.clone());
        // The shell exits only once its child has left the group and says so through a FIFO.
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("left").display().to_string();
        let cmd = format!(
            "mkfifo '{fifo}'; setsid sh -c \"echo > '{fifo}'; exec sleep {marker}\" & \
             read left < '{fifo}'; echo done"
        );
        let started = Instant::now();
        let ran = run(&cmd, limits(HOUR, 1024)).await;
        let waited = started.elapsed();
        assert_eq!(
            (&ran.stdout[..], ran.exit()),
            (&b"done\n"[..], Exit::Code(0))
        );
        assert_eq!(sleepers(&marker).len(), 1, "setsid left the group");
        assert!(waited >= DRAIN_GRACE, "{waited:?}");
        assert!(waited < DRAIN_GRACE + Duration::from_secs(4), "{waited:?}");
        drop(escaped);
        all_gone(&marker).await;
    }
}
