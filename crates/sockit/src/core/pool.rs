//! A pool of units shared fairly between source addresses (an IPv6 address's /64, see
//! [`Source`]), with a bounded wait: the streaming
//! slots of `put`, `get` and `rename` (one unit each) and the server's memory budget (one unit
//! per KiB held by a body in memory) are each one [`FairPool`].
//!
//! A taker waits first for its source's share (no source holds, or waits on the pool for, more
//! than its share), then for the pool itself, first come first served. Both waits together
//! last at most the pool's wait; a taker that gets nothing by then is told so, and its request
//! is answered `busy` with `retry_after`, never left hanging. What was taken is given back when
//! the [`PoolPermit`] is dropped, also when the connection that held it dies.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{timeout_at, Instant};

use crate::source::Source;

/// Units shared by every source, each source up to its share.
#[derive(Debug)]
pub(crate) struct FairPool {
    total: Arc<Semaphore>,
    /// One semaphore of `share` units per source that holds or waits for units.
    per_source: Mutex<HashMap<Source, Arc<Semaphore>>>,
    share: usize,
    wait: Duration,
}

/// Why nothing was taken from a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The units did not come free within the pool's wait.
    Waited(Duration),
    /// More units than a source's share (or the whole pool): they can never be had.
    Never,
}

/// Units taken from a [`FairPool`]; they go back when this is dropped.
#[derive(Debug)]
pub(crate) struct PoolPermit {
    pool: Arc<FairPool>,
    source: Source,
    /// Dropped before the source's entry is tidied away.
    held: Option<(OwnedSemaphorePermit, OwnedSemaphorePermit)>,
}

impl FairPool {
    /// A pool of `size` units, at most `share` of them for one source (both at least 1), where
    /// a taker waits at most `wait`.
    pub(crate) fn new(size: usize, share: usize, wait: Duration) -> Arc<FairPool> {
        let size = size.clamp(1, Semaphore::MAX_PERMITS);
        Arc::new(FairPool {
            total: Arc::new(Semaphore::new(size)),
            per_source: Mutex::new(HashMap::new()),
            share: share.clamp(1, size),
            wait,
        })
    }

    /// Takes `units` for a request from `ip`, waiting at most the pool's wait.
    ///
    /// # Errors
    ///
    /// [`Refusal::Never`] when `units` exceeds a source's share, [`Refusal::Waited`] when they
    /// did not come free in time.
    pub(crate) async fn take(
        self: &Arc<Self>,
        ip: IpAddr,
        units: u32,
    ) -> Result<PoolPermit, Refusal> {
        if units as usize > self.share {
            return Err(Refusal::Never);
        }
        let deadline = Instant::now() + self.wait;
        let key = Source::of(ip);
        let source = self.source(key);
        let taken = async {
            let own = source.acquire_many_owned(units).await.ok()?;
            let total = Arc::clone(&self.total)
                .acquire_many_owned(units)
                .await
                .ok()?;
            Some((own, total))
        };
        let held = timeout_at(deadline, taken).await.ok().flatten();
        let permit = PoolPermit {
            pool: Arc::clone(self),
            source: key,
            held,
        };
        if permit.held.is_some() {
            Ok(permit)
        } else {
            // Dropping `permit` tidies the source's entry away if no one else uses it.
            Err(Refusal::Waited(self.wait))
        }
    }

    /// Units free in the whole pool right now.
    #[cfg(test)]
    fn available(&self) -> usize {
        self.total.available_permits()
    }

    /// The most one source holds.
    pub(crate) fn share(&self) -> usize {
        self.share
    }

    /// The semaphore of `source`'s share, made when it has none.
    fn source(&self, source: Source) -> Arc<Semaphore> {
        let mut sources = self.sources();
        let share = self.share;
        Arc::clone(
            sources
                .entry(source)
                .or_insert_with(|| Arc::new(Semaphore::new(share))),
        )
    }

    /// Forgets `source`'s share once no one holds or waits for it.
    fn tidy(&self, source: Source) {
        let mut sources = self.sources();
        if sources
            .get(&source)
            .is_some_and(|share| Arc::strong_count(share) == 1)
        {
            sources.remove(&source);
        }
    }

    fn sources(&self) -> std::sync::MutexGuard<'_, HashMap<Source, Arc<Semaphore>>> {
        self.per_source
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    #[cfg(test)]
    fn sources_known(&self) -> usize {
        self.sources().len()
    }
}

impl PoolPermit {
    /// Gives back all but `units` of what is held (nothing when it holds no more than that).
    pub(crate) fn shrink_to(&mut self, units: u32) {
        if let Some((own, total)) = &mut self.held {
            let extra = own.num_permits().saturating_sub(units as usize);
            if extra > 0 {
                drop(own.split(extra));
                drop(total.split(extra));
            }
        }
    }

    /// How many units are held.
    #[cfg(test)]
    fn units(&self) -> usize {
        self.held.as_ref().map_or(0, |(own, _)| own.num_permits())
    }
}

impl Drop for PoolPermit {
    fn drop(&mut self) {
        drop(self.held.take());
        self.pool.tidy(self.source);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[tokio::test(start_paused = true)]
    async fn one_source_gets_its_share_and_others_the_rest() {
        let pool = FairPool::new(4, 2, Duration::from_secs(10));
        let _a1 = pool.take(ip(1), 1).await.unwrap();
        let _a2 = pool.take(ip(1), 1).await.unwrap();
        let started = Instant::now();
        assert_eq!(
            pool.take(ip(1), 1).await.unwrap_err(),
            Refusal::Waited(Duration::from_secs(10))
        );
        assert_eq!(started.elapsed(), Duration::from_secs(10));
        let _b1 = pool.take(ip(2), 1).await.unwrap();
        let _b2 = pool.take(ip(2), 1).await.unwrap();
        assert_eq!(pool.available(), 0);
        assert!(pool.take(ip(3), 1).await.is_err(), "the pool is empty");
    }

    #[tokio::test(start_paused = true)]
    async fn the_addresses_of_one_ipv6_slash_64_share_one_share() {
        let pool = FairPool::new(4, 1, Duration::from_secs(1));
        let ip = |text: &str| text.parse::<IpAddr>().unwrap();
        let held = pool.take(ip("2001:db8:0:1::1"), 1).await.unwrap();
        assert!(pool.take(ip("2001:db8:0:1::2"), 1).await.is_err());
        let _other = pool.take(ip("2001:db8:0:2::1"), 1).await.unwrap();
        drop(held);
        assert_eq!(
            pool.sources_known(),
            1,
            "the /64's entry is forgotten with its units"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_gets_what_is_given_back_within_the_wait() {
        let pool = FairPool::new(1, 1, Duration::from_secs(10));
        let held = pool.take(ip(1), 1).await.unwrap();
        let waiting = tokio::spawn({
            let pool = Arc::clone(&pool);
            async move { pool.take(ip(2), 1).await.map(|permit| permit.units()) }
        });
        tokio::time::sleep(Duration::from_secs(3)).await;
        drop(held);
        assert_eq!(waiting.await.unwrap(), Ok(1));
        assert_eq!(pool.available(), 1);
    }

    #[tokio::test]
    async fn more_than_a_share_is_refused_at_once_and_sources_are_forgotten() {
        let pool = FairPool::new(100, 10, Duration::from_secs(10));
        assert_eq!(pool.take(ip(1), 11).await.unwrap_err(), Refusal::Never);
        let mut permit = pool.take(ip(1), 10).await.unwrap();
        assert_eq!(pool.available(), 90);
        permit.shrink_to(4);
        assert_eq!((permit.units(), pool.available()), (4, 96));
        assert_eq!(pool.sources_known(), 1);
        drop(permit);
        assert_eq!(pool.available(), 100);
        assert_eq!(
            pool.sources_known(),
            0,
            "a source holding nothing is forgotten"
        );
    }
}
