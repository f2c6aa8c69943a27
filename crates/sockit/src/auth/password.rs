//! Password checks whose memory is bounded for the life of the server.
//!
//! argon2 needs its whole memory cost (19 MiB with the default parameters) for each check.
//! Allocated afresh each time, on whichever blocking-pool thread runs the check, the freed
//! memory stays in that thread's malloc arena: failed logins made the server grow by hundreds
//! of MiB for good. Here a check takes one of [`PasswordChecker`]'s slots (one per core) for
//! its whole run, including on the blocking pool after its caller has gone, and its memory
//! from a pool of buffers that is never larger than the slots: the memory of every check ever
//! made is the memory of the checks that may run at once.
//!
//! The slots are a [`FairPool`]: one source address (an IPv6 address's /64) runs one check at
//! a time, and a check waits for a slot at most the queue timeout; then its login is answered
//! `busy`, before any failure is counted, rather than queued behind a flood of guesses.

use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use argon2::password_hash::{Output, PasswordHash};
use argon2::{Algorithm, Argon2, Block, Params, Version};

use crate::core::pool::{FairPool, PoolPermit, Refusal};

/// Runs argon2 password checks, a bounded number at a time, in reused memory.
#[derive(Debug)]
pub(crate) struct PasswordChecker {
    slots: Arc<FairPool>,
    memory: Arc<MemoryPool>,
}

/// The right to run one password check, taken before the login counts a failure.
#[derive(Debug)]
pub(crate) struct CheckSlot {
    _permit: PoolPermit,
}

impl PasswordChecker {
    /// A checker running at most `concurrency` checks at once (at least one), one per source,
    /// where a check waits at most `wait` for its slot.
    pub(crate) fn new(concurrency: usize, wait: Duration) -> PasswordChecker {
        let concurrency = concurrency.max(1);
        PasswordChecker {
            slots: FairPool::new(concurrency, 1, wait),
            memory: Arc::new(MemoryPool::new(concurrency)),
        }
    }

    /// A slot for a check for `source`, once its previous check (if any) and enough others
    /// are done.
    ///
    /// # Errors
    ///
    /// [`Refusal::Waited`] when none came free within the wait.
    pub(crate) async fn slot(&self, source: IpAddr) -> Result<CheckSlot, Refusal> {
        let permit = self.slots.take(source, 1).await?;
        Ok(CheckSlot { _permit: permit })
    }

    /// Whether `password` matches the PHC string `hash`, checked on the blocking pool in
    /// `slot`. False for a hash that does not parse. A check that has begun runs to its end
    /// even if the caller goes away, and holds its slot until then.
    pub(crate) async fn verify(&self, slot: CheckSlot, password: Vec<u8>, hash: String) -> bool {
        let memory = Arc::clone(&self.memory);
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
            verify_in(&memory, &password, &hash)
        })
        .await
        .unwrap_or(false)
    }

    /// How many memory buffers are kept for reuse.
    #[cfg(test)]
    fn pooled(&self) -> usize {
        self.memory
            .buffers
            .lock()
            .map_or(0, |buffers| buffers.len())
    }
}

/// argon2 memory buffers kept for the next checks, at most one per slot.
#[derive(Debug)]
struct MemoryPool {
    buffers: Mutex<Vec<Vec<Block>>>,
    max: usize,
}

impl MemoryPool {
    fn new(max: usize) -> MemoryPool {
        MemoryPool {
            buffers: Mutex::new(Vec::with_capacity(max)),
            max,
        }
    }

    /// A buffer of at least `blocks` blocks: a kept one when there is one, grown if needed.
    fn take(&self, blocks: usize) -> Vec<Block> {
        let kept = self
            .buffers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let mut buffer = kept.unwrap_or_default();
        if buffer.len() < blocks {
            buffer.resize(blocks, Block::default());
        }
        buffer
    }

    /// Keeps `buffer` for the next check, unless as many are kept as checks may run at once.
    fn give_back(&self, buffer: Vec<Block>) {
        let mut buffers = self.buffers.lock().unwrap_or_else(PoisonError::into_inner);
        if buffers.len() < self.max {
            buffers.push(buffer);
        }
    }
}

/// Whether `password` matches `hash`, computing argon2 in a buffer from `memory`; the outputs
/// are compared in constant time.
fn verify_in(memory: &MemoryPool, password: &[u8], hash: &str) -> bool {
    let Ok(hash) = PasswordHash::new(hash) else {
        return false;
    };
    let Some((argon2, salt, expected)) = argon2_of(&hash) else {
        return false;
    };
    let mut salt_bytes = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_bytes) else {
        return false;
    };
    let mut computed = vec![0u8; expected.len()];
    let mut buffer = memory.take(argon2.params().block_count());
    let hashed = argon2.hash_password_into_with_memory(password, salt, &mut computed, &mut buffer);
    memory.give_back(buffer);
    hashed.is_ok() && Output::new(&computed).is_ok_and(|computed| computed == expected)
}

/// The argon2 instance, salt and expected output a PHC hash describes.
fn argon2_of<'h>(
    hash: &PasswordHash<'h>,
) -> Option<(Argon2<'static>, argon2::password_hash::Salt<'h>, Output)> {
    let algorithm = Algorithm::try_from(hash.algorithm).ok()?;
    let version = match hash.version {
        Some(version) => Version::try_from(version).ok()?,
        None => Version::default(),
    };
    let params = Params::try_from(hash).ok()?;
    Some((
        Argon2::new(algorithm, version, params),
        hash.salt?,
        hash.hash?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::users::hash_password;

    const WAIT: Duration = Duration::from_secs(10);

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    /// Checks `password` against `hash` for a source of its own.
    async fn check(checker: &PasswordChecker, password: &[u8], hash: String) -> bool {
        let slot = checker.slot(ip(1)).await.unwrap();
        checker.verify(slot, password.to_vec(), hash).await
    }

    #[tokio::test]
    async fn the_right_password_matches_and_others_do_not() {
        let checker = PasswordChecker::new(2, WAIT);
        let hash = hash_password("right").unwrap();
        assert!(check(&checker, b"right", hash.clone()).await);
        assert!(!check(&checker, b"wrong", hash.clone()).await);
        assert!(!check(&checker, b"", hash).await);
        assert!(!check(&checker, b"right", "$not$a$hash".into()).await);
    }

    #[tokio::test]
    async fn hashes_made_with_other_parameters_are_checked_with_theirs() {
        let checker = PasswordChecker::new(1, WAIT);
        let params = Params::new(1024, 3, 2, Some(24)).unwrap();
        let argon2 = Argon2::new(Algorithm::Argon2i, Version::V0x10, params);
        let salt = argon2::password_hash::SaltString::encode_b64(b"sixteen byte salt").unwrap();
        let hash = argon2::password_hash::PasswordHasher::hash_password(&argon2, b"pw", &salt)
            .unwrap()
            .to_string();
        assert!(check(&checker, b"pw", hash.clone()).await, "{hash}");
        assert!(!check(&checker, b"pw2", hash).await);
        // The buffer grown for the default hash serves the smaller one too.
        assert!(check(&checker, b"x", hash_password("x").unwrap()).await);
    }

    #[tokio::test]
    async fn memory_is_kept_for_no_more_checks_than_may_run_at_once() {
        let checker = Arc::new(PasswordChecker::new(2, WAIT));
        let hash = hash_password("pw").unwrap();
        let checks: Vec<_> = (0..8)
            .map(|n| {
                let checker = Arc::clone(&checker);
                let hash = hash.clone();
                tokio::spawn(async move {
                    let slot = checker.slot(ip(n)).await.unwrap();
                    checker.verify(slot, b"no".to_vec(), hash).await
                })
            })
            .collect();
        for check in checks {
            assert!(!check.await.unwrap());
        }
        assert!(checker.pooled() <= 2, "{}", checker.pooled());
    }

    #[tokio::test(start_paused = true)]
    async fn one_source_checks_one_at_a_time_and_waits_no_longer_than_the_wait() {
        let checker = PasswordChecker::new(2, WAIT);
        let held = checker.slot(ip(1)).await.unwrap();
        let started = tokio::time::Instant::now();
        assert_eq!(
            checker.slot(ip(1)).await.unwrap_err(),
            Refusal::Waited(WAIT)
        );
        assert_eq!(started.elapsed(), WAIT);
        let other = checker.slot(ip(2)).await.unwrap();
        assert!(
            checker.slot(ip(3)).await.is_err(),
            "two checks at once, no more"
        );
        drop((held, other));
        assert!(checker.slot(ip(3)).await.is_ok());
    }
}
