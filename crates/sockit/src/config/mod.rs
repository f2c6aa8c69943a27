//! What `sockit serve` can be told: [`ServerConfig`], its listeners ([`ListenerSpec`]) and the
//! checks [`Server::bind`](crate::Server::bind) makes before anything is bound
//! ([`ServerConfig::check`]). Every default is read from [`crate::defaults`].

mod check;
mod listener;

pub use check::{ConfigError, MAX_TIME};
pub use listener::{ListenerSpec, ServiceKind};

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use sockit_proto::Limits;

use crate::auth::penalty::PenaltyPolicy;
use crate::bus::BusConfig;
use crate::chat::room::RoomConfig;
use crate::defaults;

/// Everything `sockit serve` can be told.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// What to listen for, and where, in the order of the `listening` lines. A
    /// [`ServiceKind::LegacyExec`] listener runs commands without a login, so only a loopback
    /// address is accepted for it.
    pub listeners: Vec<ListenerSpec>,
    /// The users file. With one, everything but `ping` and `echo` needs a login and `exec` is
    /// available; without, `exec` is disabled.
    pub users: Option<PathBuf>,
    /// Login attempts, deadline and penalties.
    pub login: LoginConfig,
    /// Limits on remote commands.
    pub exec: ExecConfig,
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
    /// Most partial uploads held at once, over all addresses; a new upload past it is `busy`.
    pub max_partials: usize,
    /// Most partial uploads held at once that one IP address began; a new upload from it past
    /// this is `busy`.
    pub max_partials_per_source: usize,
    /// The chat rooms' limits.
    pub chat: RoomConfig,
    /// Streaming transfers: how many at once, each source's share, the pace they must keep.
    pub transfers: TransferConfig,
    /// The memory that bodies held in memory share.
    pub memory: MemoryConfig,
    /// What the UDP echo answers.
    pub udp_echo: UdpEchoConfig,
    /// The certificate and key of the TLS listeners.
    pub tls: TlsIdentity,
    /// The Redis bus shared with other servers (`--bus`): chat rooms and login lockouts. None:
    /// this server alone.
    pub bus: Option<BusConfig>,
    /// The browser front end's sessions.
    pub http: HttpConfig,
}

/// Where the TLS listeners' certificate and key come from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum TlsIdentity {
    /// Generated (self-signed) on first start and kept under the store's bookkeeping directory,
    /// so that its fingerprint survives restarts.
    #[default]
    Kept,
    /// PEM files: the certificate chain (end entity first) and its private key.
    Files {
        /// The certificate chain.
        cert: PathBuf,
        /// The private key.
        key: PathBuf,
    },
}

impl Default for ServerConfig {
    fn default() -> Self {
        let addr: SocketAddr = defaults::ADDR.parse().expect("default address is valid");
        ServerConfig {
            listeners: vec![
                ListenerSpec::new(ServiceKind::Framed, addr),
                ListenerSpec::new(ServiceKind::Chat, addr),
            ],
            users: None,
            login: LoginConfig::default(),
            exec: ExecConfig::default(),
            root: PathBuf::from(defaults::ROOT),
            limits: Limits::default(),
            max_conns: defaults::MAX_CONNS,
            max_conns_per_source: defaults::MAX_CONNS_PER_SOURCE,
            header_timeout: defaults::HEADER_TIMEOUT,
            idle_timeout: defaults::IDLE_TIMEOUT,
            shutdown_timeout: defaults::SHUTDOWN_TIMEOUT,
            partial_ttl: defaults::PARTIAL_TTL,
            max_partials: defaults::MAX_PARTIALS,
            max_partials_per_source: defaults::MAX_PARTIALS_PER_SOURCE,
            chat: RoomConfig::default(),
            tls: TlsIdentity::default(),
            transfers: TransferConfig::default(),
            memory: MemoryConfig::default(),
            udp_echo: UdpEchoConfig::default(),
            bus: None,
            http: HttpConfig::default(),
        }
    }
}

impl ServerConfig {
    /// A configuration for tests and embedding: the framed protocol on `127.0.0.1:0` (so the
    /// kernel picks a free port), no chat room, defaults otherwise.
    pub fn loopback() -> ServerConfig {
        let any_port: SocketAddr = "127.0.0.1:0".parse().expect("valid address");
        ServerConfig {
            listeners: vec![ListenerSpec::new(ServiceKind::Framed, any_port)],
            ..ServerConfig::default()
        }
    }

    /// Adds a listener for `service` on `addr`, after those already declared.
    pub fn add_listener(&mut self, service: ServiceKind, addr: SocketAddr) -> &mut Self {
        self.listeners.push(ListenerSpec::new(service, addr));
        self
    }
}

/// How logging in is limited.
#[derive(Debug, Clone, Copy)]
pub struct LoginConfig {
    /// Failed logins allowed on one connection; the last one closes it (sshd's MaxAuthTries).
    pub max_tries: u32,
    /// A connection must log in within this long of connecting (sshd's LoginGraceTime).
    pub grace: Duration,
    /// Lockouts after repeated failures, per source address and per user name.
    pub penalties: PenaltyPolicy,
}

impl Default for LoginConfig {
    fn default() -> Self {
        LoginConfig {
            max_tries: defaults::LOGIN_MAX_TRIES,
            grace: defaults::LOGIN_GRACE,
            penalties: PenaltyPolicy::default(),
        }
    }
}

/// Limits on remote commands (`exec`, and the legacy listener).
#[derive(Debug, Clone, Copy)]
pub struct ExecConfig {
    /// The longest a command may run; a client may ask for less, never more.
    pub max_timeout: Duration,
    /// Output (stdout and stderr together) after which a command is killed and its output
    /// reported truncated.
    pub max_output: u64,
    /// Most commands running at once, over all connections; more are refused with `busy`.
    pub max_running: usize,
}

impl Default for ExecConfig {
    fn default() -> Self {
        ExecConfig {
            max_timeout: defaults::EXEC_TIMEOUT,
            max_output: defaults::EXEC_MAX_OUTPUT,
            max_running: defaults::EXEC_MAX_RUNNING,
        }
    }
}

/// Limits on streaming transfers (`put`, `get`, and the hashing of `rename`).
#[derive(Debug, Clone, Copy)]
pub struct TransferConfig {
    /// Most transfers streaming at once, over all connections.
    pub max_running: usize,
    /// Most streaming slots one IP address holds or waits for at once.
    pub max_per_source: usize,
    /// Longest a request waits for a slot, and a password login for its turn at the check;
    /// then it is answered `busy` with `retry_after`.
    pub wait: Duration,
    /// Slowest pace a body may keep, in bytes a second over each `rate_window`; a transfer
    /// slower than that is cut (an upload keeps what arrived for a resume). 0: no minimum.
    pub min_rate: u64,
    /// The stretch of time over which the pace is measured.
    pub rate_window: Duration,
}

impl Default for TransferConfig {
    fn default() -> Self {
        TransferConfig {
            max_running: defaults::MAX_TRANSFERS,
            max_per_source: defaults::MAX_TRANSFERS_PER_SOURCE,
            wait: defaults::QUEUE_TIMEOUT,
            min_rate: defaults::TRANSFER_MIN_RATE,
            rate_window: defaults::TRANSFER_RATE_WINDOW,
        }
    }
}

/// The budget of memory held by bodies (`echo` bodies and their replies, `list` pages), over
/// all connections.
#[derive(Debug, Clone, Copy)]
pub struct MemoryConfig {
    /// Most bytes held at once, over all connections.
    pub budget: u64,
    /// Most of them one IP address holds or waits for at once; at least the largest body in
    /// memory (`max_body_in_memory`).
    pub per_source: u64,
    /// Longest a request waits for memory; then it is answered `busy` with `retry_after`.
    pub wait: Duration,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig {
            budget: defaults::MEMORY_BUDGET,
            per_source: defaults::MEMORY_BUDGET_PER_SOURCE,
            wait: defaults::QUEUE_TIMEOUT,
        }
    }
}

/// The browser front end's login sessions (`--http`).
#[derive(Debug, Clone, Copy)]
pub struct HttpConfig {
    /// How long a session (and its cookie) lasts after the login.
    pub session_ttl: Duration,
    /// Most sessions alive at once; a login past it ends the oldest.
    pub max_sessions: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            session_ttl: defaults::HTTP_SESSION_TTL,
            max_sessions: defaults::HTTP_MAX_SESSIONS,
        }
    }
}

/// What the UDP echo (`--udp-echo`) answers: a source address can be forged, so the bytes it
/// sends back are metered, per source and in all. Each datagram counts as at least 64 bytes, and
/// each bucket holds a quarter second's worth.
#[derive(Debug, Clone, Copy)]
pub struct UdpEchoConfig {
    /// Bytes a second one source IP address (all its ports together) may draw.
    pub source_rate: u64,
    /// Bytes a second all sources together may draw.
    pub rate: u64,
    /// Most source addresses metered at once; a new one beyond them is not answered until
    /// some have been quiet for a quarter second.
    pub max_sources: usize,
}

impl Default for UdpEchoConfig {
    fn default() -> Self {
        UdpEchoConfig {
            source_rate: defaults::UDP_ECHO_SOURCE_RATE,
            rate: defaults::UDP_ECHO_RATE,
            max_sources: defaults::UDP_ECHO_MAX_SOURCES,
        }
    }
}
