//! What the servers on a bus say to each other, and the names they use in Redis.
//!
//! Every message on the chat channel is one JSON object, tagged by `kind`:
//!
//! ```text
//! {"kind":"line","from":"<node>","room":"lobby","line":"<alice> hi\n"}
//! {"kind":"presence","from":"<node>","members":[["lobby","alice"],["kitchen","bob"]]}
//! ```
//!
//! `from` is the sending node's id (a server's rooms), so a node ignores its own echo. A
//! `presence` message is the whole list of the node's members, sent when it changes; the same
//! object is kept under [`presence_key`] with an expiry the node refreshes. Nothing that comes
//! from Redis is trusted: a message is checked for size before it is parsed, and every field
//! for length after; the rules sanitise the text again as they do every line from outside.

use serde::{Deserialize, Serialize};

use crate::chat::room::MAX_LINE;

/// The pub/sub channel every node's chat traffic goes on.
pub(crate) const CHANNEL: &str = "sockit:chat";
/// The set of node ids that have kept a presence key.
pub(crate) const NODES: &str = "sockit:nodes";
/// The largest message accepted from the bus.
pub(crate) const MAX_MESSAGE: usize = 1024 * 1024;
/// The most members one node's presence may list.
pub(crate) const MAX_MEMBERS: usize = 16_384;
/// The longest room name, member name or node id accepted from the bus, in bytes (a
/// newcomer's name is its address, `[v6]:port`, longer than a chosen nick may be).
const MAX_FIELD: usize = 128;
/// The longest line accepted from the bus: a member's line with its `<name> ` in front.
const MAX_SAID: usize = MAX_LINE + MAX_FIELD + 4;

/// The key a node's presence is kept under.
pub(crate) fn presence_key(node: &str) -> String {
    format!("sockit:presence:{node}")
}

/// A message on the chat channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum Message {
    /// A line said in a room on node `from`.
    Line {
        /// The node.
        from: String,
        /// The room.
        room: String,
        /// The line, ending in `\n`.
        line: String,
    },
    /// Every member of node `from`: `[room, name]` pairs.
    Presence {
        /// The node.
        from: String,
        /// The members.
        members: Vec<(String, String)>,
    },
}

/// Why a message from the bus was not accepted.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WireError {
    /// Larger than [`MAX_MESSAGE`].
    #[error("a message of {0} bytes (at most {MAX_MESSAGE})")]
    TooLarge(usize),
    /// Not a message.
    #[error("not a bus message: {0}")]
    Json(#[from] serde_json::Error),
    /// A field longer than it may be, or too many members.
    #[error("a message with a field too long or too many members")]
    OutOfBounds,
}

impl Message {
    /// The node that sent it.
    pub(crate) fn from(&self) -> &str {
        match self {
            Message::Line { from, .. } | Message::Presence { from, .. } => from,
        }
    }

    /// The bytes to publish.
    pub(crate) fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a message always serialises")
    }

    /// A message from the bus, checked.
    ///
    /// # Errors
    ///
    /// [`WireError`] when `bytes` are too many, not a message, or hold fields out of bounds.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Message, WireError> {
        if bytes.len() > MAX_MESSAGE {
            return Err(WireError::TooLarge(bytes.len()));
        }
        let message: Message = serde_json::from_slice(bytes)?;
        let short = |field: &str| field.len() <= MAX_FIELD;
        let fits = match &message {
            Message::Line { from, room, line } => {
                short(from) && short(room) && line.len() <= MAX_SAID
            }
            Message::Presence { from, members } => {
                short(from)
                    && members.len() <= MAX_MEMBERS
                    && members
                        .iter()
                        .all(|(room, name)| short(room) && short(name))
            }
        };
        if fits {
            Ok(message)
        } else {
            Err(WireError::OutOfBounds)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_in_the_documented_form() {
        let line = Message::Line {
            from: "n1".into(),
            room: "lobby".into(),
            line: "<alice> hi \"there\"\n".into(),
        };
        assert_eq!(
            String::from_utf8(line.encode()).unwrap(),
            r#"{"kind":"line","from":"n1","room":"lobby","line":"<alice> hi \"there\"\n"}"#
        );
        assert_eq!(Message::decode(&line.encode()).unwrap(), line);
        let presence = Message::Presence {
            from: "n2".into(),
            members: vec![("lobby".into(), "alice".into())],
        };
        assert_eq!(
            String::from_utf8(presence.encode()).unwrap(),
            r#"{"kind":"presence","from":"n2","members":[["lobby","alice"]]}"#
        );
        assert_eq!(Message::decode(&presence.encode()).unwrap(), presence);
        assert_eq!(presence.from(), "n2");
    }

    #[test]
    fn oversized_malformed_and_out_of_bounds_messages_are_refused() {
        let huge = vec![b' '; MAX_MESSAGE + 1];
        assert!(matches!(
            Message::decode(&huge),
            Err(WireError::TooLarge(n)) if n == MAX_MESSAGE + 1
        ));
        assert!(matches!(
            Message::decode(b"{\"kind\":\"shout\"}"),
            Err(WireError::Json(_))
        ));
        let long_room = Message::Line {
            from: "n".into(),
            room: "r".repeat(MAX_FIELD + 1),
            line: "x\n".into(),
        };
        assert!(matches!(
            Message::decode(&long_room.encode()),
            Err(WireError::OutOfBounds)
        ));
        let long_line = Message::Line {
            from: "n".into(),
            room: "lobby".into(),
            line: "x".repeat(MAX_SAID + 1),
        };
        assert!(matches!(
            Message::decode(&long_line.encode()),
            Err(WireError::OutOfBounds)
        ));
        let crowd = Message::Presence {
            from: "n".into(),
            members: vec![("a".into(), "b".into()); MAX_MEMBERS + 1],
        };
        assert!(matches!(
            Message::decode(&crowd.encode()),
            Err(WireError::OutOfBounds)
        ));
    }
}
