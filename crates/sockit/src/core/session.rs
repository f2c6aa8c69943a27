//! What a connection has proved about itself, whichever front end it came through.

use std::net::IpAddr;
use std::time::Instant;

use crate::auth::keys::CHALLENGE_LEN;
use crate::tls::ChannelBinding;

/// One client's standing: who it logged in as, the challenge it may sign, its failures.
#[derive(Debug)]
pub(crate) struct Session {
    pub(super) peer: IpAddr,
    pub(super) connected: Instant,
    pub(super) user: Option<String>,
    pub(super) challenge: Option<[u8; CHALLENGE_LEN]>,
    /// The TLS exporter value of the connection, which a key login must sign with the challenge.
    pub(super) binding: Option<ChannelBinding>,
    pub(super) failures: u32,
}

impl Session {
    /// A session for a client at `peer`, starting now.
    pub(crate) fn new(peer: IpAddr) -> Session {
        Session {
            peer,
            connected: Instant::now(),
            user: None,
            challenge: None,
            binding: None,
            failures: 0,
        }
    }

    /// The same, for a connection with a TLS channel binding.
    pub(crate) fn bound_to(mut self, binding: Option<ChannelBinding>) -> Session {
        self.binding = binding;
        self
    }

    /// The address the client connects from.
    pub(crate) fn peer(&self) -> IpAddr {
        self.peer
    }

    /// The user this session logged in as.
    pub(crate) fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }
}
