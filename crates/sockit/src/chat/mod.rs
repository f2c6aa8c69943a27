//! The chat room, whatever carries its lines.
//!
//! - [`line`]: one line as a member sent it, checked and parsed.
//! - [`room`]: the rules, with no sockets and no clock; members are [`MemberId`]s.
//! - [`confirm`]: how a peer proves that it receives what is sent to it (`/confirm TOKEN`),
//!   for front ends whose peers' addresses can be forged.
//! - [`RoomHost`]: the room task's state: the rules, the expiry clock, the operator's
//!   [`Console`] and the other servers, reached through a [`RoomLink`] ([`LocalLink`] when
//!   alone). The library never prints: the console's traffic goes to its maker.
//!
//! A front end maps its peers to members and drives a [`RoomHost`]; the UDP one (`--udp`) is
//! the only one so far.

pub mod confirm;
mod console;
mod host;
pub mod line;
mod link;
mod member;
pub mod room;

pub use console::{Console, CONSOLE_BACKLOG};
pub use host::RoomHost;
pub use link::{LocalLink, Presence, RoomLine, RoomLink, Roster};
pub use member::MemberId;
pub(crate) use member::MemberMap;

/// The room's clock: tokio's, so that paused time in tests applies to the room too.
pub(crate) fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}
