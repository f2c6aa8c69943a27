//! Standard output, as every command writes it, and `-q/--quiet`.
//!
//! When the reader of our output goes away (`sockit ping | head -1`), the command ends at once,
//! quietly, with status 141 — what a shell reports for a process killed by SIGPIPE, as `cat`
//! or `yes` would be — never a panic or an error message. Any other failure to write standard
//! output is one line and status 1.

use std::fmt;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};

use super::{CmdError, CmdResult};

/// The exit status when the reader of our output went away: 128 + SIGPIPE.
pub(crate) const BROKEN_PIPE: u8 = 128 + 13;

/// Whether `-q/--quiet` was given: no progress bars, result or status lines, only errors and
/// what the command is for (the echoed bytes, a listing, a download to standard output,
/// remote output, room lines).
static QUIET: AtomicBool = AtomicBool::new(false);

/// Sets `-q/--quiet` for the whole run.
pub(crate) fn set_quiet(quiet: bool) {
    QUIET.store(quiet, Ordering::Relaxed);
}

/// Whether `-q/--quiet` was given.
pub(crate) fn quiet() -> bool {
    QUIET.load(Ordering::Relaxed)
}

/// The error for a failed write to standard output: quiet for a broken pipe.
pub(crate) fn failed(err: io::Error) -> CmdError {
    if err.kind() == io::ErrorKind::BrokenPipe {
        CmdError::BrokenPipe
    } else {
        CmdError::failed("cannot write standard output", err)
    }
}

/// Writes one line to standard output and flushes it.
pub(crate) fn line(args: fmt::Arguments<'_>) -> CmdResult {
    let mut out = io::stdout().lock();
    out.write_fmt(args)
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush())
        .map_err(failed)
}

/// Writes one status line (a transfer's result, a ping's report) to standard output, unless
/// quiet.
pub(crate) fn status(args: fmt::Arguments<'_>) -> CmdResult {
    if quiet() {
        return Ok(());
    }
    line(args)
}

/// `println!` that returns the failure instead of panicking: a broken pipe is
/// [`CmdError::BrokenPipe`].
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::cmd::out::line(format_args!($($arg)*))
    };
}
pub(crate) use outln;

/// [`outln!`] for status lines, which `-q/--quiet` leaves out.
macro_rules! statusln {
    ($($arg:tt)*) => {
        $crate::cmd::out::status(format_args!($($arg)*))
    };
}
pub(crate) use statusln;

/// `eprintln!` for notes that are not errors, which `-q/--quiet` leaves out.
macro_rules! note {
    ($($arg:tt)*) => {
        if !$crate::cmd::out::quiet() {
            eprintln!($($arg)*);
        }
    };
}
pub(crate) use note;
