//! How the rooms reach beyond this server: lines said here go out to the other servers, and
//! theirs come in.
//!
//! [`RoomLink`] is the seam. [`LocalLink`] is a server on its own: nothing goes out, nothing
//! comes in. A bus that shares the rooms of several servers implements the same trait (the
//! Redis one is [`crate::bus`]).
//!
//! Besides lines, a link carries presence: the room task tells it who is here
//! ([`RoomLink::present`]) whenever that changes, and asks it who is in the rooms elsewhere
//! ([`RoomLink::others`]), a [`Roster`] the rules use for `/who` and for names that must be
//! unique.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;

/// A line said in a room — a member's line, or a notice such as `* bob joined` — as that
/// room's members receive it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomLine {
    /// The room.
    pub room: Arc<str>,
    /// The line, ending in `\n`.
    pub line: Arc<str>,
}

/// One member as the other servers see it: the room it is in and its name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Presence {
    /// The room.
    pub room: Arc<str>,
    /// The member's name.
    pub name: String,
}

/// Who is in the rooms on the other servers.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Roster {
    /// Names by room.
    rooms: HashMap<Arc<str>, Vec<String>>,
    /// Every name, lower-cased (names are unique regardless of case).
    names: HashSet<String>,
}

impl Roster {
    /// The roster of `members`.
    pub fn new(members: impl IntoIterator<Item = Presence>) -> Roster {
        let mut roster = Roster::default();
        for member in members {
            roster.names.insert(member.name.to_lowercase());
            roster
                .rooms
                .entry(member.room)
                .or_default()
                .push(member.name);
        }
        for names in roster.rooms.values_mut() {
            names.sort_unstable();
        }
        roster
    }

    /// The names in `room`.
    pub fn in_room(&self, room: &str) -> &[String] {
        self.rooms.get(room).map_or(&[], Vec::as_slice)
    }

    /// Whether a member elsewhere goes by `name`, regardless of case.
    pub fn has_name(&self, name: &str) -> bool {
        self.names.contains(&name.to_lowercase())
    }

    /// How many members there are.
    pub fn len(&self) -> usize {
        self.rooms.values().map(Vec::len).sum()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// The room task's connection to the other servers.
///
/// The task calls [`publish`](RoomLink::publish) for every line said in a room here, and polls
/// [`receive`](RoomLink::receive) among its other events. Neither may make the task wait on the
/// outside world: `publish` hands the line on and returns at once (dropping it when the link
/// is down or behind), and `receive` must be cancel-safe, because the task drops it whenever
/// something else happens first.
pub trait RoomLink: Send + 'static {
    /// Shares a line said in a room here with the other servers; never waits.
    fn publish(&mut self, said: RoomLine);

    /// The next line said in a room on another server; `None` once the link has closed for
    /// good.
    fn receive(&mut self) -> impl Future<Output = Option<RoomLine>> + Send;

    /// Tells the other servers who is here now, after a change: every member's room and name.
    /// Never waits; a link with no other servers ignores it.
    fn present(&mut self, _here: Vec<Presence>) {}

    /// Who is in the rooms on the other servers, when that changed since last asked; never
    /// waits.
    fn others(&mut self) -> Option<Arc<Roster>> {
        None
    }
}

/// A server on its own: nothing to share, nothing to receive.
#[derive(Debug, Default, Clone, Copy)]
pub struct LocalLink;

impl RoomLink for LocalLink {
    fn publish(&mut self, _said: RoomLine) {}

    async fn receive(&mut self) -> Option<RoomLine> {
        std::future::pending().await
    }
}
