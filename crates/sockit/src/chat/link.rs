//! How the rooms reach beyond this server: lines said here go out to the other servers, and
//! theirs come in.
//!
//! [`RoomLink`] is the seam. [`LocalLink`] is a server on its own: nothing goes out, nothing
//! comes in. A bus that shares the rooms of several servers implements the same trait.

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
