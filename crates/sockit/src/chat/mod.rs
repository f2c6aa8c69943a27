//! The chat room, whatever carries its lines: the rules in [`room`], members known by
//! [`MemberId`].
//!
//! The UDP front end (`--udp`) maps addresses to members and runs the room's task.

mod member;
pub mod room;

pub use member::MemberId;
