//! Who the room's rules talk about: a [`MemberId`], never a socket address.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};

/// A member of the chat rooms, as the rules know it.
///
/// The rules hand ids out ([`Rooms::new_member_id`](super::room::Rooms::new_member_id)) and
/// never reuse one. A front end keeps the map from its own peers (a UDP address, a WebSocket)
/// to their ids, so the rules stay the same whatever carries the lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MemberId(u64);

/// Hands out [`MemberId`]s, each once.
#[derive(Debug, Default)]
pub(super) struct MemberIds {
    last: u64,
}

impl MemberIds {
    /// An id never handed out before.
    pub(super) fn next(&mut self) -> MemberId {
        self.last += 1;
        MemberId(self.last)
    }
}

/// A map keyed by member id.
///
/// Ids are handed out by the room, never chosen by a peer, so they need no hash that resists
/// chosen collisions: one multiplication spreads them over the table, and every line relayed to
/// a room looks up each of its members this way.
pub(crate) type MemberMap<V> = HashMap<MemberId, V, SpreadIds>;

/// Builds the hasher of [`MemberMap`].
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SpreadIds;

impl BuildHasher for SpreadIds {
    type Hasher = IdHasher;

    fn build_hasher(&self) -> IdHasher {
        IdHasher(0)
    }
}

/// Fibonacci hashing of a member id: the high bits, which the table looks at, depend on every
/// bit of the id.
#[derive(Debug)]
pub(crate) struct IdHasher(u64);

/// 2^64 divided by the golden ratio.
const SPREAD: u64 = 0x9E37_79B9_7F4A_7C15;

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*byte)).wrapping_mul(SPREAD);
        }
    }

    fn write_u64(&mut self, number: u64) {
        self.0 = (self.0 ^ number).wrapping_mul(SPREAD);
    }
}

#[cfg(test)]
impl MemberId {
    /// A chosen id, for tests that name members by number.
    pub(super) fn from_number(number: u64) -> MemberId {
        MemberId(number)
    }
}
