//! A token bucket: tokens earned at a steady rate up to a capacity, spent by what they meter.
//! The chat room meters each member's lines and the joins with one; the UDP echo meters bytes
//! per source and in all.
//!
//! The rate and the capacity are the caller's, passed on each call, so that a table of
//! thousands of buckets stores only what differs between them: a balance and when it was
//! last brought up to date.

use std::time::Instant;

/// Tokens earned at a rate, up to a capacity.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TokenBucket {
    tokens: f64,
    updated: Instant,
}

impl TokenBucket {
    /// A bucket holding `capacity` tokens at `now`.
    pub(crate) fn full(capacity: f64, now: Instant) -> TokenBucket {
        TokenBucket {
            tokens: capacity,
            updated: now,
        }
    }

    /// Adds what `rate` tokens a second earned since the last update, up to `capacity`.
    pub(crate) fn refill(&mut self, rate: f64, capacity: f64, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(capacity);
        self.updated = now;
    }

    /// The tokens held (below zero when in debt).
    pub(crate) fn tokens(&self) -> f64 {
        self.tokens
    }

    /// Spends `cost` tokens, going into debt if it holds fewer.
    pub(crate) fn spend(&mut self, cost: f64) {
        self.tokens -= cost;
    }

    /// Refills, then spends `cost` if the bucket holds that many; whether it did.
    pub(crate) fn take(&mut self, cost: f64, rate: f64, capacity: f64, now: Instant) -> bool {
        self.refill(rate, capacity, now);
        let enough = self.tokens >= cost;
        if enough {
            self.spend(cost);
        }
        enough
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_bucket_pays_its_capacity_then_its_rate() {
        let now = Instant::now();
        let mut bucket = TokenBucket::full(3.0, now);
        let taken = (0..10)
            .take_while(|_| bucket.take(1.0, 2.0, 3.0, now))
            .count();
        assert_eq!(taken, 3, "the capacity at once");
        let later = now + Duration::from_millis(1500);
        let taken = (0..10)
            .take_while(|_| bucket.take(1.0, 2.0, 3.0, later))
            .count();
        assert_eq!(taken, 3, "2 a second for 1.5 s");
        let much_later = later + Duration::from_secs(3600);
        bucket.refill(2.0, 3.0, much_later);
        assert_eq!(bucket.tokens(), 3.0, "never above the capacity");
        bucket.spend(5.0);
        assert_eq!(bucket.tokens(), -2.0, "in debt");
        assert!(!bucket.take(1.0, 2.0, 3.0, much_later));
    }
}
