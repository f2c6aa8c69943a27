//! What a bench run counts and how it is reported: per-worker [`Tally`]s of verified requests,
//! errors and bytes, with their latencies in a [`Histogram`]; merged into a [`Report`] that
//! prints a summary or one JSON line.
//!
//! Only a verified reply counts as a request; every failed or missing reply is one error.
//! The client's own CPU time (user + system, from `getrusage`) is measured over the run, so
//! a rate can be compared honestly with another tool's.

use std::time::Duration;

use nix::sys::resource::{getrusage, UsageWho};

/// Sub-buckets per power of two: latencies are kept to within 1/128 (under 0.8 %).
const SUB_BUCKETS: u64 = 128;
/// log2 of [`SUB_BUCKETS`].
const SUB_BITS: u32 = 7;
/// Buckets enough for every `u64` of nanoseconds.
const BUCKETS: usize = ((64 - SUB_BITS as usize) + 1) * SUB_BUCKETS as usize;

/// Latencies in nanoseconds, in log-linear buckets (as HdrHistogram keeps them): constant
/// memory however long the run, each value kept to within 1/128 of itself; the maximum is kept
/// exactly.
#[derive(Debug, Clone)]
pub(crate) struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Histogram {
        Histogram {
            counts: vec![0; BUCKETS],
            total: 0,
            max: 0,
        }
    }
}

impl Histogram {
    /// Records one latency.
    pub(crate) fn record(&mut self, latency: Duration) {
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.counts[bucket_of(nanos)] += 1;
        self.total += 1;
        self.max = self.max.max(nanos);
    }

    /// Adds every latency of `other`.
    pub(crate) fn merge(&mut self, other: &Histogram) {
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
    }

    /// How many latencies were recorded.
    #[cfg(test)]
    pub(crate) fn len(&self) -> u64 {
        self.total
    }

    /// The latency at `quantile` (0.0 to 1.0): the highest value of the bucket that holds
    /// it, never above the maximum; `None` when nothing was recorded.
    pub(crate) fn quantile(&self, quantile: f64) -> Option<Duration> {
        if self.total == 0 {
            return None;
        }
        // The rank of the value asked for, 1-based: at least the first, at most the last.
        let rank = ((quantile * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (bucket, &count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Some(Duration::from_nanos(bucket_high(bucket).min(self.max)));
            }
        }
        Some(Duration::from_nanos(self.max))
    }

    /// The highest latency recorded.
    pub(crate) fn max(&self) -> Option<Duration> {
        (self.total > 0).then(|| Duration::from_nanos(self.max))
    }
}

/// The bucket of `value`: values under [`SUB_BUCKETS`] each have their own; above, each
/// power of two is split into [`SUB_BUCKETS`] equal parts.
fn bucket_of(value: u64) -> usize {
    if value < SUB_BUCKETS {
        return value as usize;
    }
    let magnitude = 63 - value.leading_zeros(); // >= SUB_BITS
    let shift = magnitude - SUB_BITS;
    let sub = (value >> shift) - SUB_BUCKETS; // 0..SUB_BUCKETS
    ((shift as u64 + 1) * SUB_BUCKETS + sub) as usize
}

/// The highest value that falls in `bucket`.
fn bucket_high(bucket: usize) -> u64 {
    let bucket = bucket as u64;
    if bucket < SUB_BUCKETS {
        return bucket;
    }
    let shift = bucket / SUB_BUCKETS - 1;
    let sub = bucket % SUB_BUCKETS;
    let low = (SUB_BUCKETS + sub) << shift;
    low.saturating_add((1u64 << shift) - 1)
}

/// What one worker counted.
#[derive(Debug, Clone, Default)]
pub(crate) struct Tally {
    /// Verified replies.
    pub(crate) requests: u64,
    /// Replies that failed verification, error replies, and requests lost with a connection.
    pub(crate) errors: u64,
    /// Payload bytes of the verified replies.
    pub(crate) bytes: u64,
    /// Latencies of the verified replies.
    pub(crate) latency: Histogram,
    /// Why the first error happened.
    pub(crate) first_error: Option<String>,
}

impl Tally {
    /// One verified reply of `bytes` payload bytes, `latency` after its request was queued.
    pub(crate) fn verified(&mut self, bytes: u64, latency: Duration) {
        self.requests += 1;
        self.bytes += bytes;
        self.latency.record(latency);
    }

    /// `count` requests that failed, for the reason `why`.
    pub(crate) fn failed(&mut self, count: u64, why: &dyn std::fmt::Display) {
        self.errors += count;
        if self.first_error.is_none() {
            self.first_error = Some(why.to_string());
        }
    }

    /// Adds what `other` counted.
    pub(crate) fn merge(&mut self, other: &Tally) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.bytes += other.bytes;
        self.latency.merge(&other.latency);
        if self.first_error.is_none() {
            self.first_error.clone_from(&other.first_error);
        }
    }
}

/// The client's CPU time so far (user + system, every thread).
pub(crate) fn cpu_time() -> Duration {
    match getrusage(UsageWho::RUSAGE_SELF) {
        Ok(usage) => {
            let micros = |time: nix::sys::time::TimeVal| {
                Duration::from_secs(time.tv_sec().max(0) as u64)
                    + Duration::from_micros(time.tv_usec().max(0) as u64)
            };
            micros(usage.user_time()) + micros(usage.system_time())
        }
        Err(_) => Duration::ZERO,
    }
}

/// A finished run.
#[derive(Debug)]
pub(crate) struct Report {
    /// The workload's name (`echo`, `put`, …).
    pub(crate) workload: &'static str,
    /// Everything the workers counted.
    pub(crate) tally: Tally,
    /// From the start of the load (connections made) to the last reply.
    pub(crate) elapsed: Duration,
    /// The client's CPU time over the same span.
    pub(crate) cpu: Duration,
    /// Extra fields of the workload (`held` for `conns`), for both outputs.
    pub(crate) extra: Vec<(&'static str, u64)>,
}

impl Report {
    /// Verified requests a second (unrounded).
    pub(crate) fn rate(&self) -> f64 {
        let seconds = self.elapsed.as_secs_f64();
        if seconds > 0.0 {
            self.tally.requests as f64 / seconds
        } else {
            0.0
        }
    }

    /// Client CPU microseconds per request made (verified or not).
    fn cpu_us_per_request(&self) -> Option<f64> {
        let made = self.tally.requests + self.tally.errors;
        (made > 0).then(|| self.cpu.as_secs_f64() * 1e6 / made as f64)
    }

    /// The `--json` object: `workload`, `requests`, `errors`, `bytes`, `seconds`, `rate`,
    /// `p50_ms`, `p99_ms`, `max_ms` (null without a verified reply), `cpu_us_per_request`,
    /// and the workload's own fields.
    pub(crate) fn json(&self) -> serde_json::Value {
        let latency = &self.tally.latency;
        let mut object = serde_json::json!({
            "workload": self.workload,
            "requests": self.tally.requests,
            "errors": self.tally.errors,
            "bytes": self.tally.bytes,
            "seconds": self.elapsed.as_secs_f64(),
            "rate": self.rate(),
            "p50_ms": latency.quantile(0.50).map(as_millis),
            "p99_ms": latency.quantile(0.99).map(as_millis),
            "max_ms": latency.max().map(as_millis),
            "cpu_us_per_request": self.cpu_us_per_request(),
        });
        for (key, value) in &self.extra {
            object[*key] = (*value).into();
        }
        object
    }

    /// The summary for people, in two or three lines.
    pub(crate) fn lines(&self) -> Vec<String> {
        let tally = &self.tally;
        let mut lines = vec![format!(
            "{}: {} requests, {} errors in {:.3} s: {:.1} requests/s",
            self.workload,
            tally.requests,
            tally.errors,
            self.elapsed.as_secs_f64(),
            self.rate()
        )];
        let latency = &tally.latency;
        if let (Some(p50), Some(p99), Some(max)) =
            (latency.quantile(0.5), latency.quantile(0.99), latency.max())
        {
            lines.push(format!(
                "latency: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
                as_millis(p50),
                as_millis(p99),
                as_millis(max)
            ));
        }
        let mut last = Vec::new();
        if tally.bytes > 0 {
            last.push(format!("{} payload bytes verified", tally.bytes));
        }
        if let Some(cpu) = self.cpu_us_per_request() {
            last.push(format!("client CPU {cpu:.2} µs/request"));
        }
        for (key, value) in &self.extra {
            last.push(format!("{key} {value}"));
        }
        if !last.is_empty() {
            lines.push(last.join(", "));
        }
        lines
    }
}

fn as_millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{bucket_high, bucket_of, Histogram, BUCKETS};

    #[test]
    fn every_value_lands_in_a_bucket_that_holds_it() {
        let mut values: Vec<u64> = (0..5000).collect();
        values.extend((0..64).map(|bit| 1u64 << bit));
        values.extend((1..64).map(|bit| (1u64 << bit) - 1));
        values.extend([123_456_789, 987_654_321_012, u64::MAX]);
        for value in values {
            let bucket = bucket_of(value);
            assert!(bucket < BUCKETS, "{value}");
            assert!(bucket_high(bucket) >= value, "{value}");
            // Within 1/128 of the value.
            assert!(bucket_high(bucket) - value <= value / 128, "{value}");
            if bucket > 0 {
                assert!(bucket_high(bucket - 1) < value, "{value}");
            }
        }
    }

    #[test]
    fn quantiles_of_known_latencies() {
        let mut histogram = Histogram::default();
        assert_eq!(histogram.quantile(0.5), None);
        for micros in 1..=100 {
            histogram.record(Duration::from_micros(micros));
        }
        let near = |quantile: f64, micros: u64| {
            let got = histogram.quantile(quantile).unwrap().as_nanos() as f64;
            let want = micros as f64 * 1000.0;
            assert!(
                (got - want).abs() <= want / 128.0,
                "{quantile}: {got} vs {want}"
            );
        };
        near(0.5, 50);
        near(0.99, 99);
        near(1.0, 100);
        assert_eq!(histogram.max(), Some(Duration::from_micros(100)));
        assert_eq!(histogram.len(), 100);
        let mut other = Histogram::default();
        other.record(Duration::from_millis(7));
        histogram.merge(&other);
        assert_eq!(histogram.max(), Some(Duration::from_millis(7)));
        assert_eq!(histogram.len(), 101);
    }
}
