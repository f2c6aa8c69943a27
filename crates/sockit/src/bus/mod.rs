//! Several servers as one, through Redis (`serve --bus redis://HOST:PORT[/DB]`): the chat rooms
//! and the login lockouts shared by every server on the same bus.
//!
//! - [`node`](BusLink): a server's rooms on the bus. Lines said in a room go out on a pub/sub
//!   channel and come in from the other servers, each tagged with its node's id so a node
//!   ignores its own echo; one connection publishes them in order, so each sender's lines
//!   arrive in order, once, wherever they are heard. Each node keeps its members' list in Redis
//!   under a key that expires unless refreshed, so `/who` lists every server's members and a
//!   server that dies drops out within the presence TTL plus a third of it.
//! - [`SharedLockouts`]: login failures counted in Redis with expiring keys, so a guesser gains
//!   nothing by moving between servers.
//! - `wire`: the messages and keys, checked before they are trusted.
//!
//! The bus never makes a server wait on Redis or fail because of it: the room task hands lines
//! to bounded queues and never waits (a line past them is dropped and counted); every call to
//! Redis has a timeout; when Redis is down, stopped or slow, each server serves its own members,
//! counts lockouts on its own, logs the outage once and reconnects with a backoff, then writes
//! its presence again and reads the others'. Without `--bus` none of this runs: a server alone
//! needs no Redis.

mod lockouts;
mod node;
mod wire;

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::defaults;
pub use lockouts::{SharedLockouts, SharedReservation};
pub use node::BusLink;

/// Where the bus is and how it behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusConfig {
    /// `redis://HOST:PORT[/DB]`.
    pub url: String,
    /// How it behaves.
    pub settings: BusSettings,
}

impl BusConfig {
    /// The bus at `url`, with the default settings.
    pub fn new(url: impl Into<String>) -> BusConfig {
        BusConfig {
            url: url.into(),
            settings: BusSettings::default(),
        }
    }
}

/// How the bus behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BusSettings {
    /// How long Redis keeps a server's presence unless the server refreshes it; the server
    /// refreshes it, and reads the others', every third of this.
    pub presence_ttl: Duration,
    /// Lines queued each way between the room and the bus; more are dropped and counted.
    pub backlog: usize,
    /// The longest a call to Redis may take before Redis counts as down.
    pub timeout: Duration,
}

impl Default for BusSettings {
    fn default() -> Self {
        BusSettings {
            presence_ttl: defaults::BUS_PRESENCE_TTL,
            backlog: defaults::BUS_BACKLOG,
            timeout: defaults::BUS_TIMEOUT,
        }
    }
}

/// Why a call to the bus failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BusError {
    /// Redis refused or failed the call, or the connection broke.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// Redis did not answer in time.
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    /// The connection closed.
    #[error("the connection to redis closed")]
    Closed,
    /// A connection failed under a second ago; not tried again yet.
    #[error("redis unreachable a moment ago; not tried again yet")]
    Waiting,
}

/// A bus `url` that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("--bus {url}: {why}")]
pub struct BusUrlError {
    url: String,
    why: String,
}

/// A Redis server shared by several sockit servers. Connecting happens in the background:
/// making one never fails because Redis is down.
#[derive(Debug)]
pub struct Bus {
    client: redis::Client,
    settings: BusSettings,
}

impl Bus {
    /// The bus `config` names.
    ///
    /// # Errors
    ///
    /// [`BusUrlError`] when the URL is not `redis://HOST:PORT[/DB]`.
    pub fn new(config: &BusConfig) -> Result<Bus, BusUrlError> {
        let refuse = |why: &str| BusUrlError {
            url: config.url.clone(),
            why: why.to_owned(),
        };
        if !config.url.starts_with("redis://") {
            return Err(refuse("a bus is redis://HOST:PORT[/DB]"));
        }
        let client =
            redis::Client::open(config.url.as_str()).map_err(|err| refuse(&err.to_string()))?;
        Ok(Bus {
            client,
            settings: config.settings,
        })
    }

    /// A link for one room task, and the task that carries its traffic until `stop`, for the
    /// caller to spawn.
    pub fn link(
        &self,
        stop: CancellationToken,
    ) -> (
        BusLink,
        impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        node::start(self.client.clone(), self.settings, stop)
    }

    /// Login lockouts counted on this bus.
    pub fn lockouts(&self) -> SharedLockouts {
        SharedLockouts::new(self.client.clone(), self.settings)
    }
}
