//! Login penalties: after a few free failures, each further failure for the same key (a source
//! address, or a user name) locks that key out for twice as long as the last, up to a cap.
//! Failures are forgotten after a quiet spell. This is sshd's per-source penalty model,
//! applied to user names as well.
//!
//! A login *reserves* its failure before its proof is checked (refused while locked out, else
//! counted at once with [`Penalties::fail`]) and gives it back if the proof was good
//! ([`Penalties::give_back`]). So guesses sent in parallel, all in flight before the first is
//! answered, are checked no more often than guesses sent one after another.
//!
//! No I/O and no clock of its own: callers pass `now`, so the rules are tested exactly.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

use crate::defaults;

/// The penalty rules.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PenaltyPolicy {
    /// Failures allowed before any lockout.
    pub free_failures: u32,
    /// The first lockout.
    pub base: Duration,
    /// The longest lockout.
    pub max: Duration,
    /// Failures are forgotten this long after the last one.
    pub forget_after: Duration,
}

impl Default for PenaltyPolicy {
    fn default() -> Self {
        PenaltyPolicy {
            free_failures: defaults::LOGIN_FREE_FAILURES,
            base: defaults::LOGIN_BACKOFF,
            max: defaults::LOGIN_BACKOFF_MAX,
            forget_after: defaults::LOGIN_FORGET_AFTER,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Record {
    failures: u32,
    last_failure: Instant,
    locked_until: Option<Instant>,
}

/// Failure records by key, at most `capacity` of them.
#[derive(Debug)]
pub(crate) struct Penalties<K> {
    policy: PenaltyPolicy,
    records: HashMap<K, Record>,
    capacity: usize,
}

impl<K: Hash + Eq> Penalties<K> {
    pub(crate) fn new(policy: PenaltyPolicy, capacity: usize) -> Penalties<K> {
        Penalties {
            policy,
            records: HashMap::new(),
            capacity,
        }
    }

    /// `Err(wait)` while `key` is locked out.
    pub(crate) fn check<Q>(&self, key: &Q, now: Instant) -> Result<(), Duration>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        match self.records.get(key).and_then(|record| record.locked_until) {
            Some(until) if until > now => Err(until - now),
            _ => Ok(()),
        }
    }

    /// Gives back a failure reserved for an attempt that succeeded after all: one fewer
    /// failure, and no lockout once the count is within the free failures again.
    pub(crate) fn give_back<Q>(&mut self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let free_failures = self.policy.free_failures;
        if let Some(record) = self.records.get_mut(key) {
            record.failures = record.failures.saturating_sub(1);
            if record.failures <= free_failures {
                record.locked_until = None;
            }
        }
    }

    /// Counts a failure for `key`, locking it out once past the free failures.
    pub(crate) fn fail<Q>(&mut self, key: &Q, now: Instant)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        if !self.records.contains_key(key) && self.records.len() >= self.capacity {
            self.forget_stale(now);
            if self.records.len() >= self.capacity {
                // Full of live records: the key goes untracked rather than growing the table
                // without bound. The other table (source or user) still counts the failure.
                return;
            }
        }
        let policy = self.policy;
        let record = self.records.entry(key.to_owned()).or_insert(Record {
            failures: 0,
            last_failure: now,
            locked_until: None,
        });
        if now.duration_since(record.last_failure) > policy.forget_after {
            record.failures = 0;
        }
        record.failures = record.failures.saturating_add(1);
        record.last_failure = now;
        if let Some(over) = record
            .failures
            .checked_sub(policy.free_failures.saturating_add(1))
        {
            let lockout = policy
                .base
                .checked_mul(1 << over.min(30))
                .map_or(policy.max, |lockout| lockout.min(policy.max));
            record.locked_until = Some(now + lockout);
        }
    }

    /// Clears `key`'s record after a success.
    pub(crate) fn succeed<Q>(&mut self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.records.remove(key);
    }

    fn forget_stale(&mut self, now: Instant) {
        let forget_after = self.policy.forget_after;
        self.records.retain(|_, record| {
            now.duration_since(record.last_failure) <= forget_after
                || record.locked_until.is_some_and(|until| until > now)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: PenaltyPolicy = PenaltyPolicy {
        free_failures: 3,
        base: Duration::from_secs(1),
        max: Duration::from_secs(8),
        forget_after: Duration::from_secs(60),
    };

    #[test]
    fn free_failures_then_doubling_lockouts_up_to_the_cap() {
        let start = Instant::now();
        let mut penalties = Penalties::new(POLICY, 16);
        for _ in 0..3 {
            penalties.fail(&"ip", start);
            assert_eq!(penalties.check(&"ip", start), Ok(()));
        }
        let mut now = start;
        for expected in [1, 2, 4, 8, 8, 8] {
            penalties.fail(&"ip", now);
            assert_eq!(
                penalties.check(&"ip", now),
                Err(Duration::from_secs(expected))
            );
            now += Duration::from_secs(expected);
            assert_eq!(
                penalties.check(&"ip", now),
                Ok(()),
                "free after {expected}s"
            );
        }
        assert_eq!(penalties.check(&"other", now), Ok(()));
    }

    #[test]
    fn as_many_free_failures_as_a_count_holds_never_lock_out() {
        let start = Instant::now();
        let policy = PenaltyPolicy {
            free_failures: u32::MAX,
            ..POLICY
        };
        let mut penalties = Penalties::new(policy, 16);
        for _ in 0..10 {
            penalties.fail(&"ip", start);
        }
        assert_eq!(penalties.check(&"ip", start), Ok(()));
    }

    #[test]
    fn success_clears_and_quiet_forgets() {
        let start = Instant::now();
        let mut penalties = Penalties::new(POLICY, 16);
        for _ in 0..4 {
            penalties.fail(&"alice", start);
        }
        assert!(penalties.check(&"alice", start).is_err());
        penalties.succeed(&"alice");
        assert_eq!(penalties.check(&"alice", start), Ok(()));

        for _ in 0..3 {
            penalties.fail(&"bob", start);
        }
        let later = start + Duration::from_secs(61);
        penalties.fail(&"bob", later);
        assert_eq!(
            penalties.check(&"bob", later),
            Ok(()),
            "old failures forgotten"
        );
    }

    #[test]
    fn reservations_count_before_the_outcome_and_a_success_gives_its_back() {
        let start = Instant::now();
        let mut penalties = Penalties::new(POLICY, 16);
        // Four attempts in flight at once: the three free failures and the one that locks out.
        for _ in 0..4 {
            assert_eq!(penalties.check(&"ip", start), Ok(()));
            penalties.fail(&"ip", start);
        }
        assert_eq!(
            penalties.check(&"ip", start),
            Err(Duration::from_secs(1)),
            "a fifth parallel attempt is refused before it is checked"
        );
        // The fourth was the right password: its failure is given back, and the lockout with it.
        penalties.give_back(&"ip");
        assert_eq!(penalties.check(&"ip", start), Ok(()));
        assert_eq!(penalties.records[&"ip"].failures, 3);
        penalties.give_back(&"unknown");
        assert!(!penalties.records.contains_key(&"unknown"));
    }

    #[test]
    fn the_table_never_grows_past_its_capacity() {
        let start = Instant::now();
        let mut penalties = Penalties::new(POLICY, 4);
        for key in 0..100 {
            penalties.fail(&key, start);
        }
        assert_eq!(penalties.records.len(), 4);
        let later = start + Duration::from_secs(61);
        penalties.fail(&1000, later);
        assert!(
            penalties.records.contains_key(&1000),
            "stale records make room"
        );
    }
}
