//! Transfer progress on standard error: a bar with bytes, rate and ETA on a terminal (bytes and
//! rate for a stream of unknown length), nothing otherwise or under `-q/--quiet`.
//!
//! The first position a transfer reports is where it starts: after a resume, the bytes already
//! there. The rate, the ETA and the elapsed time count from it, so that the skipped prefix does
//! not pass for bytes sent in no time.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};

use indicatif::{ProgressBar, ProgressStyle};

/// A progress bar that is silent when standard error is not a terminal.
pub(crate) struct Progress {
    bar: Option<ProgressBar>,
    /// Whether the transfer has reported where it starts.
    started: AtomicBool,
}

impl Progress {
    pub(crate) fn new(label: &str, total: u64) -> Progress {
        Progress::styled(
            label,
            || ProgressBar::new(total),
            "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
        )
    }

    /// For a transfer whose length is unknown (a stream): the bytes so far and the rate.
    pub(crate) fn stream(label: &str) -> Progress {
        Progress::styled(
            label,
            ProgressBar::no_length,
            "{msg} {bytes} {binary_bytes_per_sec}",
        )
    }

    fn styled(label: &str, bar: impl FnOnce() -> ProgressBar, template: &str) -> Progress {
        if !std::io::stderr().is_terminal() || super::out::quiet() {
            return Progress {
                bar: None,
                started: AtomicBool::new(false),
            };
        }
        let bar = bar();
        bar.set_style(
            ProgressStyle::with_template(template)
                .expect("the template is valid")
                .progress_chars("=> "),
        );
        bar.set_message(label.to_owned());
        Progress::with_bar(bar)
    }

    fn with_bar(bar: ProgressBar) -> Progress {
        Progress {
            bar: Some(bar),
            started: AtomicBool::new(false),
        }
    }

    pub(crate) fn set_total(&self, total: u64) {
        if let Some(bar) = &self.bar {
            bar.set_length(total);
        }
    }

    /// The transfer has reached `done` bytes; the first call says where it starts.
    pub(crate) fn set(&self, done: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(done);
            if !self.started.swap(true, Ordering::Relaxed) {
                // Counted from here: the rate estimate and the elapsed time start again.
                bar.reset_elapsed();
            }
        }
    }

    pub(crate) fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    /// A transfer given up on (Ctrl-C, a timeout) leaves no half-drawn bar behind.
    fn drop(&mut self) {
        if let Some(bar) = self.bar.as_ref().filter(|bar| !bar.is_finished()) {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use indicatif::ProgressBar;

    use super::Progress;

    #[test]
    fn the_rate_after_a_resume_counts_only_the_bytes_sent() {
        let bar = ProgressBar::hidden();
        bar.set_length(2_000_000_000);
        let progress = Progress::with_bar(bar.clone());
        std::thread::sleep(Duration::from_millis(20));
        progress.set(1_000_000_000); // resumed here
        for step in 1..=5 {
            std::thread::sleep(Duration::from_millis(20));
            progress.set(1_000_000_000 + step * 1000);
        }
        // 5000 bytes in about 0.1 s: nowhere near the gigabyte skipped.
        assert!(bar.per_sec() < 1_000_000.0, "{} B/s", bar.per_sec());
        assert!(bar.elapsed() < Duration::from_millis(500));
    }
}
