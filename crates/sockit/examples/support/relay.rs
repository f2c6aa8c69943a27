//! What the chat relay load generators share: the sender's lines (a number and the moment each
//! was sent), the pace they go out at, and what one listener makes of them as they arrive:
//! every line once and in order, and how long each took.

use std::ops::Range;
use std::time::{Duration, Instant, SystemTime};

/// The wall clock, which the kernel's receive timestamps also use.
pub(crate) fn since_epoch() -> Duration {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
}

/// The sender's line number `seq`, stamped with the moment it is made: `mSEQ NANOS`.
pub(crate) fn line(seq: u64) -> String {
    format!("m{seq} {}", since_epoch().as_nanos())
}

/// A line of the sender's as the room relays it (`<sender> mSEQ NANOS`): its number and when it
/// was sent. Anything else (notices, other members' lines) is `None`.
pub(crate) fn parse(relayed: &[u8]) -> Option<(u64, Duration)> {
    let relayed = std::str::from_utf8(relayed).ok()?;
    let rest = relayed.strip_prefix("<sender> m")?;
    let (seq, nanos) = rest.trim_end().split_once(' ')?;
    Some((seq.parse().ok()?, Duration::from_nanos(nanos.parse().ok()?)))
}

/// A run's load, from the arguments after the address: RATE (lines a second), SECONDS (at
/// most two minutes) and LISTENERS (10 when absent, at most `max_listeners`).
pub(crate) struct Load {
    pub(crate) rate: u64,
    pub(crate) seconds: f64,
    pub(crate) listeners: usize,
}

impl Load {
    /// Reads `args[2..]` (`args[1]` is the address); panics with the argument's name on a bad one.
    pub(crate) fn from_args(args: &[String], max_listeners: usize) -> Load {
        let rate: u64 = args[2].parse().expect("RATE is a number");
        let seconds: f64 = args[3].parse().expect("SECONDS is a number");
        assert!(seconds <= 120.0, "at most two minutes");
        let listeners: usize = args
            .get(4)
            .map_or(10, |n| n.parse().expect("LISTENERS is a number"));
        assert!(
            (1..=max_listeners).contains(&listeners),
            "1 to {max_listeners} listeners"
        );
        Load {
            rate,
            seconds,
            listeners,
        }
    }
}

/// RATE lines a second, `total` of them: which are due at any moment.
pub(crate) struct Pace {
    started: Instant,
    rate: f64,
    total: u64,
    sent: u64,
}

impl Pace {
    /// Starts the clock for `rate` lines a second over `seconds`.
    pub(crate) fn new(rate: u64, seconds: f64) -> Pace {
        Pace {
            started: Instant::now(),
            rate: rate as f64,
            total: (rate as f64 * seconds) as u64,
            sent: 0,
        }
    }

    /// How many lines there are in all.
    pub(crate) fn total(&self) -> u64 {
        self.total
    }

    /// The numbers of the lines due by now and not yet handed out; counted as sent.
    pub(crate) fn due(&mut self) -> Range<u64> {
        let due = ((self.started.elapsed().as_secs_f64() * self.rate) as u64).min(self.total);
        let from = self.sent;
        self.sent = due.max(from);
        from..self.sent
    }

    /// Whether every line has been handed out.
    pub(crate) fn done(&self) -> bool {
        self.sent >= self.total
    }

    /// Waits a millisecond before the next lines are due.
    pub(crate) async fn wait(&self) {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }

    /// Seconds since the clock started.
    pub(crate) fn elapsed(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }
}

/// What one listener heard of the sender's `total` lines.
pub(crate) struct Heard {
    seen: Vec<bool>,
    /// One past the highest number heard so far.
    next: u64,
    /// Deliveries of the sender's lines, repeats included.
    pub(crate) received: u64,
    /// Different lines heard.
    pub(crate) distinct: u64,
    /// Deliveries of a line already heard.
    pub(crate) duplicated: u64,
    /// Lines heard after a line with a higher number.
    pub(crate) out_of_order: u64,
    /// From just before each line was sent to when it was read.
    pub(crate) latencies: Vec<Duration>,
}

impl Heard {
    pub(crate) fn new(total: u64) -> Heard {
        Heard {
            seen: vec![false; total as usize],
            next: 0,
            received: 0,
            distinct: 0,
            duplicated: 0,
            out_of_order: 0,
            latencies: Vec::with_capacity(total as usize),
        }
    }

    /// Counts line `seq`, sent at `sent` and read at `read` (both since the epoch).
    pub(crate) fn line(&mut self, seq: u64, sent: Duration, read: Duration) {
        self.received += 1;
        self.latencies.push(read.saturating_sub(sent));
        match self.seen.get_mut(seq as usize) {
            Some(true) => self.duplicated += 1,
            Some(seen) => {
                *seen = true;
                self.distinct += 1;
                if seq < self.next {
                    self.out_of_order += 1;
                }
            }
            None => self.out_of_order += 1, // a number never sent: counted as disorder
        }
        self.next = self.next.max(seq + 1);
    }
}

/// p50, p99 and max of `latencies`, in milliseconds.
pub(crate) fn quantiles(mut latencies: Vec<Duration>) -> [f64; 3] {
    latencies.sort_unstable();
    let at = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(0.0, |latency| latency.as_secs_f64() * 1000.0)
    };
    [at(0.5), at(0.99), at(1.0)]
}

/// The JSON fields every relay load generator prints, from `sent` lines, what each listener
/// heard, and the seconds the sending took: lines sent, deliveries expected and received, lines
/// lost (never heard), duplicated and out of order, deliveries a second, and the latency (p50,
/// p99, max in milliseconds).
pub(crate) fn summary(sent: u64, heard: &[Heard], sending: f64) -> String {
    let expected = sent * heard.len() as u64;
    let received: u64 = heard.iter().map(|h| h.received).sum();
    let distinct: u64 = heard.iter().map(|h| h.distinct).sum();
    let duplicated: u64 = heard.iter().map(|h| h.duplicated).sum();
    let out_of_order: u64 = heard.iter().map(|h| h.out_of_order).sum();
    let latencies = heard.iter().flat_map(|h| h.latencies.iter().copied());
    let [p50, p99, max] = quantiles(latencies.collect());
    format!(
        "\"sent\":{sent},\"expected\":{expected},\"received\":{received},\"lost\":{},\
         \"duplicated\":{duplicated},\"out_of_order\":{out_of_order},\
         \"deliveries_per_second\":{:.0},\"p50_ms\":{p50:.3},\"p99_ms\":{p99:.3},\"max_ms\":{max:.3}",
        expected.saturating_sub(distinct),
        received as f64 / sending,
    )
}
