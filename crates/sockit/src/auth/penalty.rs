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
//! The lock state follows from the failures alone: with `n` failures, the latest counted at
//! `t`, the key is locked until `t` plus the lockout for `n` (none while `n` is within the free
//! failures). Giving a failure back takes it out of that history, so the state is then exactly
//! what it would have been had the failure never been counted, whatever other reservations are
//! in flight: a success never arms a lockout of its own, nor lifts one that other failures set.
//!
//! No I/O and no clock of its own: callers pass `now`, so the rules are tested exactly.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

use crate::defaults;

/// How many of a key's latest failures keep their times, so that one of them can be given back
/// exactly. More reservations than this in flight at once for one key is far past any lockout;
/// a failure given back after falling out of this window still comes off the count, and the
/// lock then runs from the latest time that fell out (never shorter than it should).
const RECENT: usize = 16;

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

impl PenaltyPolicy {
    /// The lockout after `failures` failures: none within the free failures, then the first
    /// lockout, doubling with each further failure up to the longest.
    pub(crate) fn lockout(&self, failures: u32) -> Option<Duration> {
        let over = failures.checked_sub(self.free_failures.saturating_add(1))?;
        Some(
            self.base
                .checked_mul(1 << over.min(30))
                .map_or(self.max, |lockout| lockout.min(self.max)),
        )
    }
}

#[derive(Debug, Clone)]
struct Record {
    failures: u32,
    /// When this run of failures began: a failure counted before it was forgotten with the
    /// run that held it.
    since: Instant,
    /// When the latest failures were counted, at most [`RECENT`] of them, in no set order.
    recent: Vec<Instant>,
    /// The latest time of those that no longer fit in `recent`.
    older: Option<Instant>,
}

impl Record {
    /// When the latest failure still counted was.
    fn last_failure(&self) -> Option<Instant> {
        self.recent.iter().copied().chain(self.older).max()
    }

    fn locked_until(&self, policy: &PenaltyPolicy) -> Option<Instant> {
        Some(self.last_failure()? + policy.lockout(self.failures)?)
    }
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
        match self
            .records
            .get(key)
            .and_then(|record| record.locked_until(&self.policy))
        {
            Some(until) if until > now => Err(until - now),
            _ => Ok(()),
        }
    }

    /// Gives back the failure counted for `key` at `at` (by [`Penalties::fail`]) for an
    /// attempt that was no guess after all: the count and the lockout become what they would
    /// be had it never been counted. Nothing when that failure was forgotten already.
    pub(crate) fn give_back<Q>(&mut self, key: &Q, at: Instant)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let Some(record) = self.records.get_mut(key) else {
            return;
        };
        if at < record.since {
            return;
        }
        record.failures = record.failures.saturating_sub(1);
        if let Some(index) = record.recent.iter().position(|&time| time == at) {
            record.recent.swap_remove(index);
        }
        if record.failures == 0 {
            self.records.remove(key);
        }
    }

    /// Counts a failure for `key` at `now`, locking it out once past the free failures. `now`
    /// is what [`Penalties::give_back`] takes to give it back.
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
        let forget_after = self.policy.forget_after;
        let record = self.records.entry(key.to_owned()).or_insert(Record {
            failures: 0,
            since: now,
            recent: Vec::new(),
            older: None,
        });
        let quiet = record
            .last_failure()
            .is_none_or(|last| now.saturating_duration_since(last) > forget_after);
        if quiet {
            *record = Record {
                failures: 0,
                since: now,
                recent: Vec::new(),
                older: None,
            };
        }
        record.failures = record.failures.saturating_add(1);
        if record.recent.len() >= RECENT {
            let (index, &oldest) = record
                .recent
                .iter()
                .enumerate()
                .min_by_key(|(_, time)| **time)
                .expect("RECENT is not 0");
            record.recent.swap_remove(index);
            record.older = record.older.max(Some(oldest));
        }
        record.recent.push(now);
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
        let policy = self.policy;
        self.records.retain(|_, record| {
            record
                .last_failure()
                .is_some_and(|last| now.saturating_duration_since(last) <= policy.forget_after)
                || record
                    .locked_until(&policy)
                    .is_some_and(|until| until > now)
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
        penalties.give_back(&"ip", start);
        assert_eq!(penalties.check(&"ip", start), Ok(()));
        assert_eq!(penalties.records[&"ip"].failures, 3);
        penalties.give_back(&"unknown", start);
        assert!(!penalties.records.contains_key(&"unknown"));
    }

    #[test]
    fn a_success_after_a_lockout_arms_no_lockout_of_its_own() {
        let start = Instant::now();
        let mut penalties = Penalties::new(POLICY, 16);
        for _ in 0..4 {
            penalties.fail(&"ip", start);
        }
        assert_eq!(penalties.check(&"ip", start), Err(Duration::from_secs(1)));
        // Past the lockout, the right password: its reservation, the fifth failure, would lock
        // for 2 s; given back, the record is as the four failures left it.
        let mut now = start + Duration::from_millis(1500);
        for _ in 0..5 {
            assert_eq!(penalties.check(&"ip", now), Ok(()));
            penalties.fail(&"ip", now);
            assert_eq!(penalties.check(&"ip", now), Err(Duration::from_secs(2)));
            penalties.give_back(&"ip", now);
            assert_eq!(
                penalties.check(&"ip", now),
                Ok(()),
                "the next login may go on"
            );
            now += Duration::from_millis(300);
        }
        // A wrong guess then is the fifth failure, as it would have been.
        penalties.fail(&"ip", now);
        assert_eq!(penalties.check(&"ip", now), Err(Duration::from_secs(2)));
    }

    #[test]
    fn giving_back_one_of_parallel_reservations_leaves_the_others_lockout() {
        let start = Instant::now();
        let at = |millis| start + Duration::from_millis(millis);
        // Two in flight below the lockout: the second would lock. Whichever is given back, the
        // other is the third failure, which does not.
        for first_back in [true, false] {
            let mut penalties = Penalties::new(POLICY, 16);
            penalties.fail(&"ip", at(0));
            penalties.fail(&"ip", at(0));
            penalties.fail(&"ip", at(100));
            penalties.fail(&"ip", at(200));
            assert_eq!(penalties.check(&"ip", at(200)), Err(Duration::from_secs(1)));
            penalties.give_back(&"ip", if first_back { at(100) } else { at(200) });
            assert_eq!(penalties.check(&"ip", at(200)), Ok(()), "{first_back}");
            assert_eq!(penalties.records[&"ip"].failures, 3);
        }

        // A lockout that runs out while one is in flight: four failures lock until 1 s; A is
        // counted at 1.5 s (locking until 3.5 s), B at 4 s (locking until 8 s).
        let (a, b) = (at(1500), at(4000));
        let fresh = || {
            let mut penalties = Penalties::new(POLICY, 16);
            for _ in 0..4 {
                penalties.fail(&"ip", start);
            }
            penalties.fail(&"ip", a);
            penalties.fail(&"ip", b);
            assert_eq!(penalties.check(&"ip", b), Err(Duration::from_secs(4)));
            penalties
        };
        // A given back first: B is the fifth failure, locking for 2 s from 4 s.
        let mut penalties = fresh();
        penalties.give_back(&"ip", a);
        assert_eq!(penalties.check(&"ip", b), Err(Duration::from_secs(2)));
        penalties.give_back(&"ip", b);
        assert_eq!(
            penalties.check(&"ip", b),
            Ok(()),
            "the lockout of 1 s is long over"
        );
        // B given back first: A's own lockout, until 3.5 s, is all there was.
        let mut penalties = fresh();
        penalties.give_back(&"ip", b);
        assert_eq!(penalties.check(&"ip", a), Err(Duration::from_secs(2)));
        assert_eq!(penalties.check(&"ip", at(3500)), Ok(()));
        penalties.give_back(&"ip", a);
        assert_eq!(penalties.check(&"ip", a), Ok(()));
        assert_eq!(penalties.records[&"ip"].failures, 4);
    }

    #[test]
    fn a_failure_forgotten_with_its_run_is_not_given_back_from_the_next() {
        let start = Instant::now();
        let mut penalties = Penalties::new(POLICY, 16);
        penalties.fail(&"ip", start);
        let later = start + Duration::from_secs(61);
        for _ in 0..4 {
            penalties.fail(&"ip", later);
        }
        penalties.give_back(&"ip", start);
        assert_eq!(penalties.records[&"ip"].failures, 4);
        assert_eq!(penalties.check(&"ip", later), Err(Duration::from_secs(1)));
    }

    #[test]
    fn more_reservations_than_keep_their_times_still_come_off_the_count() {
        let start = Instant::now();
        let policy = PenaltyPolicy {
            free_failures: 100,
            ..POLICY
        };
        let mut penalties = Penalties::new(policy, 16);
        let times: Vec<Instant> = (0..40).map(|i| start + Duration::from_millis(i)).collect();
        for &time in &times {
            penalties.fail(&"ip", time);
        }
        assert_eq!(penalties.records[&"ip"].recent.len(), RECENT);
        for &time in &times {
            penalties.give_back(&"ip", time);
        }
        assert!(!penalties.records.contains_key(&"ip"), "all given back");
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
