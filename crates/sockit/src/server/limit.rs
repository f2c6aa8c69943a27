//! Connection limits: a total over all TCP listeners, and a share per source address (an
//! IPv6 address's /64, see [`Source`]).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::source::Source;

/// Counts open connections, in total and per source IP.
///
/// Touched once when a connection is accepted and once when it ends; never per request.
#[derive(Debug)]
pub(crate) struct ConnLimiter {
    slots: Arc<Semaphore>,
    per_source: Mutex<HashMap<Source, usize>>,
    max_per_source: usize,
}

/// A connection's place under the limits, given back when dropped.
#[derive(Debug)]
pub(crate) struct ConnPermit {
    _slot: OwnedSemaphorePermit,
    _source: Option<SourceGuard>,
}

#[derive(Debug)]
struct SourceGuard {
    limiter: Arc<ConnLimiter>,
    source: Source,
}

impl ConnLimiter {
    pub(crate) fn new(max_conns: usize, max_per_source: usize) -> Arc<ConnLimiter> {
        Arc::new(ConnLimiter {
            slots: Arc::new(Semaphore::new(max_conns.max(1))),
            per_source: Mutex::new(HashMap::new()),
            max_per_source: max_per_source.max(1),
        })
    }

    /// Waits for a free slot under the total limit.
    pub(crate) async fn slot(&self) -> OwnedSemaphorePermit {
        self.slots
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed")
    }

    /// Admits a connection from `ip` into `slot`, or gives the slot back as `Err` when that
    /// source already has its share.
    pub(crate) fn admit(
        self: &Arc<Self>,
        slot: OwnedSemaphorePermit,
        ip: IpAddr,
    ) -> Result<ConnPermit, OwnedSemaphorePermit> {
        let mut counts = self
            .per_source
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let source = Source::of(ip);
        let count = counts.entry(source).or_insert(0);
        if *count >= self.max_per_source {
            return Err(slot);
        }
        *count += 1;
        Ok(ConnPermit {
            _slot: slot,
            _source: Some(SourceGuard {
                limiter: Arc::clone(self),
                source,
            }),
        })
    }
}

impl Drop for SourceGuard {
    fn drop(&mut self) {
        let mut counts = self
            .limiter
            .per_source
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = counts.get_mut(&self.source) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.source);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn per_source_share_is_enforced_and_released() {
        let limiter = ConnLimiter::new(10, 2);
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let first = limiter.admit(limiter.slot().await, a).unwrap();
        let _second = limiter.admit(limiter.slot().await, a).unwrap();
        assert!(limiter.admit(limiter.slot().await, a).is_err());
        let _other = limiter.admit(limiter.slot().await, b).unwrap();
        drop(first);
        assert!(limiter.admit(limiter.slot().await, a).is_ok());
    }

    #[tokio::test]
    async fn the_addresses_of_one_ipv6_slash_64_share_one_share() {
        let limiter = ConnLimiter::new(10, 2);
        let ip = |text: &str| text.parse::<IpAddr>().unwrap();
        let _first = limiter
            .admit(limiter.slot().await, ip("2001:db8:0:1::1"))
            .unwrap();
        let _second = limiter
            .admit(limiter.slot().await, ip("2001:db8:0:1::2"))
            .unwrap();
        let third = limiter.admit(limiter.slot().await, ip("2001:db8:0:1:ffff::3"));
        assert!(third.is_err(), "the same /64");
        let _next = limiter
            .admit(limiter.slot().await, ip("2001:db8:0:2::1"))
            .unwrap();
    }

    #[tokio::test]
    async fn total_limit_waits_for_a_free_slot() {
        let limiter = ConnLimiter::new(1, 5);
        let held = limiter.slot().await;
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(50), limiter.slot());
        assert!(waiting.await.is_err(), "no slot while one is held");
        drop(held);
        let _slot = limiter.slot().await;
    }
}
