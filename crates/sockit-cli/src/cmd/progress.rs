//! Transfer progress on standard error: a bar with bytes, rate and ETA on a terminal (bytes and
//! rate for a stream of unknown length), nothing otherwise or under `-q/--quiet`.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

/// A progress bar that is silent when standard error is not a terminal.
pub(crate) struct Progress {
    bar: Option<ProgressBar>,
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
            return Progress { bar: None };
        }
        let bar = bar();
        bar.set_style(
            ProgressStyle::with_template(template)
                .expect("the template is valid")
                .progress_chars("=> "),
        );
        bar.set_message(label.to_owned());
        Progress { bar: Some(bar) }
    }

    pub(crate) fn set_total(&self, total: u64) {
        if let Some(bar) = &self.bar {
            bar.set_length(total);
        }
    }

    pub(crate) fn set(&self, done: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(done);
        }
    }

    pub(crate) fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
