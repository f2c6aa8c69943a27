//! Server configuration with the defaults `sockit serve` uses.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use sockit_proto::Limits;

use crate::chat::room::RoomConfig;

/// Default address of the framed TCP listener and of the UDP room.
pub const DEFAULT_ADDR: &str = "127.0.0.1:9000";

/// Everything `sockit serve` can be told.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The framed TCP protocol.
    pub listen: SocketAddr,
    /// The UDP chat room, if any.
    pub udp: Option<SocketAddr>,
    /// Raw TCP upper-case echo (the tutorials' socketserver), if any.
    pub legacy_echo: Option<SocketAddr>,
    /// UDP upper-case echo, if any.
    pub udp_echo: Option<SocketAddr>,
    /// The file store directory.
    pub root: PathBuf,
    /// Frame limits.
    pub limits: Limits,
    /// Most TCP connections open at once, over all listeners. Further clients wait in the
    /// kernel's accept queue until one closes.
    pub max_conns: usize,
    /// Most TCP connections open at once from one IP address; more are refused with `busy`.
    pub max_conns_per_source: usize,
    /// A frame's header must be complete this long after its first byte (and a new connection
    /// must send its first header this long after connecting).
    pub header_timeout: Duration,
    /// A connection with no traffic for this long is closed.
    pub idle_timeout: Duration,
    /// On shutdown, connections get this long to finish what they are doing.
    pub shutdown_timeout: Duration,
    /// A partial upload untouched for this long is deleted.
    pub partial_ttl: Duration,
    /// The UDP chat room's limits.
    pub chat: RoomConfig,
}

impl Default for ServerConfig {
    fn default() -> Self {
        let addr: SocketAddr = DEFAULT_ADDR.parse().expect("default address is valid");
        ServerConfig {
            listen: addr,
            udp: Some(addr),
            legacy_echo: None,
            udp_echo: None,
            root: PathBuf::from("sockit-data"),
            limits: Limits::default(),
            max_conns: 1024,
            max_conns_per_source: 256,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            shutdown_timeout: Duration::from_secs(10),
            partial_ttl: Duration::from_secs(24 * 60 * 60),
            chat: RoomConfig::default(),
        }
    }
}

impl ServerConfig {
    /// A configuration for tests and embedding: every listener on `127.0.0.1:0` (so the
    /// kernel picks free ports), no UDP room, defaults otherwise.
    pub fn loopback() -> ServerConfig {
        let any_port: SocketAddr = "127.0.0.1:0".parse().expect("valid address");
        ServerConfig {
            listen: any_port,
            udp: None,
            ..ServerConfig::default()
        }
    }
}
