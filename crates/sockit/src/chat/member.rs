//! Who the room's rules talk about: a [`MemberId`], never a socket address.

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

#[cfg(test)]
impl MemberId {
    /// A chosen id, for tests that name members by number.
    pub(super) fn from_number(number: u64) -> MemberId {
        MemberId(number)
    }
}
