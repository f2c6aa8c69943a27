//! The accept loop shared by every TCP listener: limits, one task per connection, shutdown.
//!
//! A failed accept (out of file descriptors, most often) is not fatal: the loop pauses, for
//! longer while the failures go on, and logs the first failure and then at most one line
//! every [`FAILURE_LOG_EVERY`] with how many it did not log.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::limit::ConnLimiter;
use crate::front::TcpService;

/// Accepts connections until `stop`, each in its own task holding its place under the limits.
///
/// A slot under the total limit is taken *before* accepting, so a full server leaves new
/// clients in the kernel's accept queue instead of accepting and dropping them.
pub(crate) async fn accept_loop<T: TcpService>(
    listener: TcpListener,
    service: Arc<T>,
    limiter: Arc<ConnLimiter>,
    stop: CancellationToken,
    tasks: TaskTracker,
) {
    let mut failures = AcceptFailures::default();
    loop {
        let slot = tokio::select! {
            () = stop.cancelled() => return,
            slot = limiter.slot() => slot,
        };
        let (stream, peer) = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of descriptors or a connection reset before accept: not fatal.
                    let (log, pause) = failures.failed(Instant::now());
                    if let Some(unlogged) = log {
                        tracing::warn!(%err, unlogged, "accept failed");
                    }
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(pause) => continue,
                    }
                }
            },
        };
        failures.succeeded();
        let service = Arc::clone(&service);
        match limiter.admit(slot, peer.ip()) {
            Ok(permit) => {
                let span = tracing::debug_span!("conn", %peer);
                let stop = stop.clone();
                tasks.spawn(
                    async move {
                        let _permit = permit;
                        service.serve(stream, peer, stop).await;
                    }
                    .instrument(span),
                );
            }
            Err(slot) => {
                tracing::debug!(%peer, "too many connections from this source");
                tasks.spawn(async move {
                    let _slot = slot;
                    service.refuse_busy(stream).await;
                });
            }
        }
    }
}

/// Failed accepts are logged at most this often (the first at once).
const FAILURE_LOG_EVERY: Duration = Duration::from_secs(5);
/// The pause after a failed accept, doubled while failures go on up to [`FAILURE_PAUSE_MAX`].
const FAILURE_PAUSE_MIN: Duration = Duration::from_millis(50);
/// The longest pause after a failed accept.
const FAILURE_PAUSE_MAX: Duration = Duration::from_secs(1);

/// What the accept loop does about failed accepts: when to log one, and how long to pause.
#[derive(Debug)]
struct AcceptFailures {
    last_logged: Option<Instant>,
    unlogged: u64,
    pause: Duration,
}

impl Default for AcceptFailures {
    fn default() -> AcceptFailures {
        AcceptFailures {
            last_logged: None,
            unlogged: 0,
            pause: FAILURE_PAUSE_MIN,
        }
    }
}

impl AcceptFailures {
    /// An accept failed at `now`: whether to log it (with how many failures since the last
    /// line went unlogged), and how long to pause before accepting again.
    fn failed(&mut self, now: Instant) -> (Option<u64>, Duration) {
        let pause = self.pause;
        self.pause = (self.pause * 2).min(FAILURE_PAUSE_MAX);
        let due = self
            .last_logged
            .is_none_or(|last| now.duration_since(last) >= FAILURE_LOG_EVERY);
        if !due {
            self.unlogged += 1;
            return (None, pause);
        }
        self.last_logged = Some(now);
        (Some(std::mem::take(&mut self.unlogged)), pause)
    }

    /// An accept succeeded: the next failure pauses briefly again (but is still logged no
    /// more often than [`FAILURE_LOG_EVERY`]).
    fn succeeded(&mut self) {
        self.pause = FAILURE_PAUSE_MIN;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_logged_once_per_interval_with_the_count_left_out() {
        let start = Instant::now();
        let mut failures = AcceptFailures::default();
        assert_eq!(failures.failed(start).0, Some(0), "the first is logged");
        // Twenty a second for just under the interval: none logged.
        let mut now = start;
        for _ in 0..99 {
            now += Duration::from_millis(50);
            assert_eq!(failures.failed(now).0, None);
        }
        now += Duration::from_millis(50);
        assert_eq!(
            failures.failed(now).0,
            Some(99),
            "then one line saying how many"
        );
        assert_eq!(failures.failed(now).0, None);
    }

    #[test]
    fn the_pause_doubles_while_failures_go_on_and_resets_after_an_accept() {
        let now = Instant::now();
        let mut failures = AcceptFailures::default();
        let pauses: Vec<u64> = (0..7)
            .map(|_| failures.failed(now).1.as_millis() as u64)
            .collect();
        assert_eq!(pauses, [50, 100, 200, 400, 800, 1000, 1000]);
        failures.succeeded();
        assert_eq!(failures.failed(now).1, FAILURE_PAUSE_MIN);
    }
}
