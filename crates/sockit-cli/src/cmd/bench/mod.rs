//! `sockit bench`: a built-in load generator, as redis-benchmark is for Redis.
//!
//! One module per workload — [`echo`] (pipelined framed echo), [`files`] (`put` and `get`),
//! [`exec`] (runs of a command), [`udp`] (round trips to `--udp-echo`), [`conns`] (ping
//! latency while idle connections are held) — and what they share: the load options here,
//! the [`Budget`] that bounds a run in count and time, and the counting in [`stats`].
//!
//! Every run ends: at `-n` requests over all connections or after `--duration` seconds, and
//! never later than [`MAX_DURATION`]. Only verified replies count as requests; a reply that
//! fails verification, an error reply, or a request lost with its connection counts as one
//! error each, and the run goes on (a broken connection is made again).

mod conns;
mod echo;
mod exec;
mod files;
pub(crate) mod stats;
mod udp;

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::out::{outln, statusln};
use super::serve::parse_seconds;
use super::{CmdError, CmdResult};
use stats::{Report, Tally};

/// The longest any run may last, whatever `-n` or `--duration` say.
pub(crate) const MAX_DURATION: Duration = sockit::defaults::BENCH_MAX_DURATION;

/// The most connections `-c` may ask for.
const MAX_CONNECTIONS: u32 = 100_000;

/// How long a reply may take by default (`--reply-timeout`).
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// The workloads.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum Bench {
    /// Pipelined echo of distinct payloads, each reply checked byte for byte (default -n 100000).
    Echo(echo::Args),
    /// Uploads of a file of -d bytes under distinct names, deleted at the end (default -n 100).
    Put(files::Args),
    /// Downloads of a file of -d bytes stored first, each checked against its hash (default -n 100).
    Get(files::Args),
    /// Runs of a command (default `true`), each checked for exit status 0 (default -n 100).
    Exec(exec::Args),
    /// Round trips to `serve --udp-echo`, each reply checked to be the payload upper-cased
    /// (default -n 1000).
    Udp(udp::Args),
    /// Holds -c idle connections, then measures ping latency on one more (default -n 1000).
    Conns(conns::Args),
}

/// How much load and for how long: the options every workload shares.
#[derive(Debug, clap::Args)]
pub(crate) struct Load {
    /// Concurrent connections (for `conns`: idle connections held), at most 100000.
    #[arg(short = 'c', long = "connections", value_name = "CONNS",
          value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_CONNECTIONS)))]
    connections: Option<u32>,
    /// Requests in all, over every connection (the default depends on the workload).
    #[arg(short = 'n', long = "requests", value_name = "TOTAL", conflicts_with = "duration",
          value_parser = clap::value_parser!(u64).range(1..))]
    requests: Option<u64>,
    /// Run for this many seconds instead of a count (at most 600).
    #[arg(long, value_name = "SECS", value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Seconds a reply may take before its request counts as an error (and, over TCP, the
    /// connection is made again; `exec`: the command's limit; `put` and `get` wait for 60 s of
    /// silence, as the other commands do) [default: 5; udp: 1].
    #[arg(long, value_name = "SECS", value_parser = parse_seconds)]
    reply_timeout: Option<Duration>,
    /// Print only the result, as one JSON object on standard output: requests (verified
    /// replies), errors, bytes, seconds, rate (requests / seconds), p50_ms, p99_ms, max_ms,
    /// cpu_us_per_request (the client's CPU time over the requests made).
    #[arg(long)]
    json: bool,
}

/// `--duration`: seconds, more than zero and at most [`MAX_DURATION`].
fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration = parse_seconds(text)?;
    if duration.is_zero() || duration > MAX_DURATION {
        return Err(format!(
            "give more than 0 and at most {} seconds",
            MAX_DURATION.as_secs()
        ));
    }
    Ok(duration)
}

impl Load {
    /// Connections asked for, else `default`.
    fn connections_or(&self, default: u32) -> u32 {
        self.connections.unwrap_or(default)
    }

    /// How long a reply may take: `--reply-timeout`, else [`REPLY_TIMEOUT`].
    fn reply_timeout(&self) -> Duration {
        self.reply_timeout.unwrap_or(REPLY_TIMEOUT)
    }

    /// The run's budget: `-n` (else `default_requests`) or `--duration`.
    fn budget(&self, default_requests: u64) -> Budget {
        match self.duration {
            Some(duration) => Budget::timed(duration),
            None => Budget::counted(self.requests.unwrap_or(default_requests)),
        }
    }
}

/// What a run may still do: requests are claimed from it in batches until the count is spent
/// or the time is up ([`MAX_DURATION`] at most).
#[derive(Debug)]
pub(crate) struct Budget {
    /// Requests in all, when the run is counted.
    total: Option<u64>,
    /// Requests claimed so far.
    claimed: AtomicU64,
    /// How long the run may last.
    limit: Duration,
    /// When no more may be claimed: set by the first claim, as the load starts.
    deadline: OnceLock<Instant>,
}

impl Budget {
    /// A run of `total` requests (ended anyway at [`MAX_DURATION`]).
    pub(crate) fn counted(total: u64) -> Budget {
        Budget {
            total: Some(total),
            claimed: AtomicU64::new(0),
            limit: MAX_DURATION,
            deadline: OnceLock::new(),
        }
    }

    /// A run of `duration`.
    pub(crate) fn timed(duration: Duration) -> Budget {
        Budget {
            total: None,
            claimed: AtomicU64::new(0),
            limit: duration.min(MAX_DURATION),
            deadline: OnceLock::new(),
        }
    }

    /// Claims up to `want` requests to make now, numbered from 0 over the whole run: an
    /// empty range once the run is over.
    pub(crate) fn claim(&self, want: u64) -> Range<u64> {
        let now = Instant::now();
        if now >= *self.deadline.get_or_init(|| now + self.limit) {
            return 0..0;
        }
        let Some(total) = self.total else {
            let first = self.claimed.fetch_add(want, Ordering::Relaxed);
            return first..first + want;
        };
        let claimed = self
            .claimed
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |claimed| {
                let granted = want.min(total.saturating_sub(claimed));
                (granted > 0).then_some(claimed + granted)
            });
        match claimed {
            Ok(first) => first..first + want.min(total - first),
            Err(_) => 0..0,
        }
    }

    /// Requests claimed so far: the run's requests are numbered `0..claimed()`.
    pub(crate) fn claimed(&self) -> u64 {
        self.claimed.load(Ordering::Relaxed)
    }
}

/// How a worker ended: what it counted, and why it stopped early if it did.
pub(crate) struct WorkerEnd {
    tally: Tally,
    /// The connection was lost and could not be made again.
    lost: Option<CmdError>,
}

impl WorkerEnd {
    /// A worker that ran to the end of the budget.
    pub(crate) fn done(tally: Tally) -> WorkerEnd {
        WorkerEnd { tally, lost: None }
    }

    /// A worker that stopped because it could not connect again.
    pub(crate) fn lost(tally: Tally, why: impl Into<CmdError>) -> WorkerEnd {
        WorkerEnd {
            tally,
            lost: Some(why.into()),
        }
    }
}

pub(crate) async fn run(bench: Bench) -> CmdResult {
    let (json, outcome) = match bench {
        Bench::Echo(args) => (args.load.json, echo::run(&args).await),
        Bench::Put(args) => (args.load.json, files::run_put(&args).await),
        Bench::Get(args) => (args.load.json, files::run_get(&args).await),
        Bench::Exec(args) => (args.load.json, exec::run(&args).await),
        Bench::Udp(args) => (args.load.json, udp::run(&args).await),
        Bench::Conns(args) => (args.load.json, conns::run(&args).await),
    };
    let (report, lost) = outcome?;
    if json {
        outln!("{}", report.json())?;
    } else {
        for line in report.lines() {
            statusln!("{line}")?;
        }
    }
    match lost {
        0 => Ok(()),
        lost => Err(format!(
            "{lost} connection(s) were lost and could not be made again; their share of the \
             run was not made"
        )
        .into()),
    }
}

/// Runs `workers` to their end, timing them and the client's CPU, and merges what they
/// counted: the report and how many workers stopped early (each said why on standard error).
pub(crate) async fn measure<F>(
    workload: &'static str,
    workers: Vec<F>,
) -> Result<(Report, usize), CmdError>
where
    F: std::future::Future<Output = WorkerEnd> + Send + 'static,
{
    let cpu_before = stats::cpu_time();
    let started = Instant::now();
    let handles: Vec<_> = workers.into_iter().map(tokio::spawn).collect();
    let mut tally = Tally::default();
    let mut lost = 0;
    for handle in handles {
        let end = handle
            .await
            .map_err(|err| CmdError::failed("a bench worker failed", err))?;
        tally.merge(&end.tally);
        if let Some(why) = end.lost {
            eprintln!("sockit: {why}");
            lost += 1;
        }
    }
    let elapsed = started.elapsed();
    if let Some(why) = &tally.first_error {
        eprintln!("sockit: {} errors; the first: {why}", tally.errors);
    }
    let cpu = stats::cpu_time().saturating_sub(cpu_before);
    Ok((
        Report {
            workload,
            tally,
            elapsed,
            cpu,
            extra: Vec::new(),
        },
        lost,
    ))
}

/// The payloads of a run: `len` bytes unique to each request `seq`, its number in decimal
/// digits (the last digits when `len` is short), then lower-case letters. Made and checked
/// with a copy and a comparison, as this runs once a request.
#[derive(Debug, Clone)]
pub(crate) struct Payloads {
    template: Vec<u8>,
}

/// Digits of the largest request number.
const SEQ_DIGITS: usize = 20;

impl Payloads {
    pub(crate) fn new(len: usize) -> Payloads {
        let mut template: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
        let shown = len.min(SEQ_DIGITS);
        template[..shown].fill(b'0');
        Payloads { template }
    }

    /// The payload of request `seq`, into `out`.
    pub(crate) fn fill(&self, seq: u64, out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(&self.template);
        let shown = self.shown();
        out[..shown].copy_from_slice(&digits(seq)[SEQ_DIGITS - shown..]);
    }

    /// Whether `body` is exactly the payload of request `seq`.
    pub(crate) fn matches(&self, seq: u64, body: &[u8]) -> bool {
        let shown = self.shown();
        body.len() == self.template.len()
            && body[shown..] == self.template[shown..]
            && body[..shown] == digits(seq)[SEQ_DIGITS - shown..]
    }

    fn shown(&self) -> usize {
        self.template.len().min(SEQ_DIGITS)
    }
}

/// `seq` in decimal, zero-padded to [`SEQ_DIGITS`].
fn digits(seq: u64) -> [u8; SEQ_DIGITS] {
    let mut digits = [b'0'; SEQ_DIGITS];
    let mut rest = seq;
    for digit in digits.iter_mut().rev() {
        *digit = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    digits
}

#[cfg(test)]
mod tests {
    use super::{Budget, Payloads};

    #[test]
    fn a_counted_budget_grants_exactly_its_total() {
        let budget = Budget::counted(10);
        assert_eq!(budget.claim(4), 0..4);
        assert_eq!(budget.claim(4), 4..8);
        assert_eq!(budget.claim(4), 8..10);
        assert!(budget.claim(4).is_empty());
    }

    #[test]
    fn payloads_differ_per_request_and_are_checked_whole() {
        let payloads = Payloads::new(32);
        let (mut one, mut two) = (Vec::new(), Vec::new());
        payloads.fill(7, &mut one);
        payloads.fill(8, &mut two);
        assert_eq!(one.len(), 32);
        assert_ne!(one, two);
        assert_eq!(&one[..20], b"00000000000000000007");
        assert_eq!(&one[20..23], b"uvw");
        assert!(payloads.matches(7, &one) && payloads.matches(8, &two));
        assert!(!payloads.matches(8, &one), "another request's payload");
        assert!(!payloads.matches(7, &one[..31]), "one byte short");
        let mut wrong = one.clone();
        wrong[31] ^= 0x20;
        assert!(!payloads.matches(7, &wrong), "one byte changed");
        let short = Payloads::new(2);
        short.fill(123, &mut one);
        assert_eq!(one, b"23");
        Payloads::new(0).fill(5, &mut one);
        assert!(one.is_empty());
        Payloads::new(20).fill(u64::MAX, &mut one);
        assert_eq!(one, u64::MAX.to_string().as_bytes());
    }
}
