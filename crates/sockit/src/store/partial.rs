//! The partial uploads a store holds: which ones an upload is writing now, which address began
//! each, and the caps on how many one address, and all addresses together, may hold.
//!
//! A partial file is counted from the moment it is created until it is gone from the disk
//! (stored under its name, discarded, emptied, or swept once expired). The table lives in
//! memory: partials found on disk when the store opens are counted in the total with no
//! address, since none is recorded on disk, and whoever resumes one does not take it over.
//! Resuming a partial never counts as a new one, so a client at its cap can still finish what
//! it began.
//!
//! At its own cap, an address does not wait for its partials to expire: a new upload from it
//! deletes the oldest partial it began that no upload is writing now (by modification time),
//! and takes its place. Only when every one of its partials is being written is it `busy`. The
//! cap over all addresses evicts nothing, since the partials it counts are other people's:
//! past it, a new upload is `busy`.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use super::{Store, StoreError};
use crate::defaults;
use crate::source::Source;

/// How many partial uploads a store keeps, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartialLimits {
    /// A partial untouched for this long is deleted by
    /// [`Store::sweep_expired_partials`].
    pub ttl: Duration,
    /// Most partials held at once, over all addresses; a new upload past it is `busy`.
    pub max_total: usize,
    /// Most partials held at once that one IP address began; a new upload from it past this
    /// deletes the oldest of them that no upload is writing, and is `busy` only when all are
    /// being written.
    pub max_per_source: usize,
}

impl Default for PartialLimits {
    fn default() -> Self {
        PartialLimits {
            ttl: defaults::PARTIAL_TTL,
            max_total: defaults::MAX_PARTIALS,
            max_per_source: defaults::MAX_PARTIALS_PER_SOURCE,
        }
    }
}

/// Which of the caps a new partial would pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartialCap {
    /// [`PartialLimits::max_per_source`].
    PerSource(usize),
    /// [`PartialLimits::max_total`].
    Total(usize),
}

/// The partial files of one store, by their names in the partial directory.
#[derive(Debug, Default)]
pub(super) struct Partials {
    /// Partial files an upload is writing now.
    active: HashSet<String>,
    /// Every partial file held, with the address that began it (`None`: it was on the disk
    /// when the store opened).
    owners: HashMap<String, Option<Source>>,
    /// How many of `owners` each address began.
    per_source: HashMap<Source, usize>,
}

impl Partials {
    /// The table of a store that opens with `found` partial files on its disk.
    pub(super) fn found(found: impl IntoIterator<Item = String>) -> Partials {
        Partials {
            owners: found.into_iter().map(|path| (path, None)).collect(),
            ..Partials::default()
        }
    }

    /// Whether an upload is writing `partial`.
    pub(super) fn is_active(&self, partial: &str) -> bool {
        self.active.contains(partial)
    }

    /// How many partials are held, in all.
    pub(super) fn held(&self) -> usize {
        self.owners.len()
    }

    /// How many of the partials held `source` began.
    pub(super) fn held_by(&self, source: IpAddr) -> usize {
        self.per_source
            .get(&Source::of(source))
            .copied()
            .unwrap_or(0)
    }

    /// Counts `partial` as held, begun by `source`, unless it already is; refuses when that
    /// would pass a cap.
    fn admit(
        &mut self,
        partial: &str,
        source: IpAddr,
        limits: &PartialLimits,
    ) -> Result<(), PartialCap> {
        if self.owners.contains_key(partial) {
            return Ok(());
        }
        if self.held_by(source) >= limits.max_per_source {
            return Err(PartialCap::PerSource(limits.max_per_source));
        }
        if self.held() >= limits.max_total {
            return Err(PartialCap::Total(limits.max_total));
        }
        let source = Source::of(source);
        self.owners.insert(partial.to_owned(), Some(source));
        *self.per_source.entry(source).or_default() += 1;
        Ok(())
    }

    /// The partials `source` began that no upload is writing now.
    fn idle_of(&self, source: IpAddr) -> Vec<String> {
        let source = Some(Source::of(source));
        self.owners
            .iter()
            .filter(|(partial, owner)| **owner == source && !self.active.contains(*partial))
            .map(|(partial, _)| partial.clone())
            .collect()
    }

    /// Stops counting `partial`, which is gone from the disk.
    pub(super) fn forget(&mut self, partial: &str) {
        if let Some(Some(source)) = self.owners.remove(partial) {
            if let Some(count) = self.per_source.get_mut(&source) {
                *count -= 1;
                if *count == 0 {
                    self.per_source.remove(&source);
                }
            }
        }
    }
}

/// Marks a partial file as written by one upload. Dropped, it releases the file, and stops
/// counting it if it is no longer on the disk.
#[derive(Debug)]
pub(super) struct Claim {
    store: Arc<Store>,
    partial: String,
}

impl Claim {
    /// Claims `partial`, unless another upload is writing it.
    pub(super) fn new(store: &Arc<Store>, partial: String) -> Option<Claim> {
        let inserted = store.partials().active.insert(partial.clone());
        inserted.then(|| Claim {
            store: Arc::clone(store),
            partial,
        })
    }

    /// Counts the claimed file as a partial held for `source`, before it is created. At the
    /// cap of `source`, its oldest partial that no upload is writing is deleted to make room.
    ///
    /// # Errors
    ///
    /// [`StoreError::TooManyPartials`] when that would pass the total cap, or the cap of
    /// `source` while every partial it began is being written.
    pub(super) fn admit(&self, source: IpAddr) -> Result<(), StoreError> {
        let limits = self.store.partial_limits;
        let mut partials = self.store.partials();
        let admitted = match partials.admit(&self.partial, source, &limits) {
            Err(PartialCap::PerSource(_))
                if self.store.evict_oldest_idle(&mut partials, source) =>
            {
                partials.admit(&self.partial, source, &limits)
            }
            admitted => admitted,
        };
        admitted.map_err(StoreError::TooManyPartials)
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut partials = self.store.partials();
        partials.active.remove(&self.partial);
        if self.store.partial_dir.metadata(&self.partial).is_err() {
            partials.forget(&self.partial);
        }
    }
}

impl Store {
    /// Deletes the partial `source` began that was written to longest ago and that no upload
    /// is writing now; false when there is none. Called with the table locked, so that no
    /// upload claims it in between.
    fn evict_oldest_idle(&self, partials: &mut Partials, source: IpAddr) -> bool {
        let mut oldest: Option<(std::time::SystemTime, String)> = None;
        for partial in partials.idle_of(source) {
            let Ok(meta) = self.partial_dir.metadata(&partial) else {
                // Gone from the disk already: it only had to be forgotten.
                partials.forget(&partial);
                return true;
            };
            let modified = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
            if oldest
                .as_ref()
                .is_none_or(|(when, name)| (modified, &partial) < (*when, name))
            {
                oldest = Some((modified, partial));
            }
        }
        let Some((_, partial)) = oldest else {
            return false;
        };
        match self.partial_dir.remove(&partial) {
            Ok(()) => {
                tracing::info!(
                    %source,
                    partial,
                    "partial upload deleted to make room for a new upload from the same address, at its cap"
                );
                partials.forget(&partial);
                true
            }
            Err(err) => {
                tracing::warn!(%err, partial, "could not delete a partial upload to make room");
                false
            }
        }
    }

    /// The table of partials, locked.
    pub(super) fn partials(&self) -> std::sync::MutexGuard<'_, Partials> {
        self.partials.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_per_source: usize, max_total: usize) -> PartialLimits {
        PartialLimits {
            ttl: Duration::from_secs(60),
            max_total,
            max_per_source,
        }
    }

    #[test]
    fn each_address_and_all_together_are_capped_and_a_held_partial_is_never_new() {
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let limits = limits(2, 3);
        let mut partials = Partials::found(["old".to_owned()]);
        assert_eq!(partials.held(), 1);
        assert_eq!(partials.admit("a1", a, &limits), Ok(()));
        assert_eq!(partials.admit("a2", a, &limits), Ok(()));
        assert_eq!(
            partials.admit("a3", a, &limits),
            Err(PartialCap::PerSource(2))
        );
        // Held already (a resume, by anyone): not a new partial.
        assert_eq!(partials.admit("a1", b, &limits), Ok(()));
        assert_eq!(partials.admit("old", a, &limits), Ok(()));
        assert_eq!(partials.admit("b1", b, &limits), Err(PartialCap::Total(3)));
        assert_eq!((partials.held_by(a), partials.held_by(b)), (2, 0));

        partials.forget("a1");
        partials.forget("old");
        assert_eq!((partials.held(), partials.held_by(a)), (1, 1));
        assert_eq!(partials.admit("a3", a, &limits), Ok(()));
        assert_eq!(partials.admit("b1", b, &limits), Ok(()));
        assert_eq!(partials.admit("b2", b, &limits), Err(PartialCap::Total(3)));
    }

    #[test]
    fn the_addresses_of_one_ipv6_slash_64_share_one_cap() {
        let ip = |text: &str| text.parse::<IpAddr>().unwrap();
        let limits = limits(1, 10);
        let mut partials = Partials::default();
        assert_eq!(partials.admit("a", ip("2001:db8::1"), &limits), Ok(()));
        assert_eq!(
            partials.admit("b", ip("2001:db8::2"), &limits),
            Err(PartialCap::PerSource(1))
        );
        assert_eq!(partials.admit("c", ip("2001:db8:0:1::1"), &limits), Ok(()));
        assert_eq!(partials.held_by(ip("2001:db8::ffff")), 1);
    }
}
