//! The defaults of `sockit serve`, each written once.
//!
//! [`ServerConfig::default`](crate::ServerConfig), the `Default`s of the login, exec, penalty
//! and chat room settings, and the command line's flags all read these. The frame limits'
//! defaults belong to the wire format: [`sockit_proto::DEFAULT_MAX_HEADER_LEN`] and
//! [`sockit_proto::DEFAULT_MAX_BUFFERED_BODY`].

use std::time::Duration;

/// Where the framed listener and the chat room listen (`--listen`, `--udp`), and where client
/// commands connect (`--server`).
pub const ADDR: &str = "127.0.0.1:9000";
/// The port of [`ADDR`], which a client's `--server HOST` without a port connects to.
pub const PORT: u16 = 9000;
/// The file store directory (`--root`).
pub const ROOT: &str = "./sockit-data";

/// Most TCP connections open at once, over all listeners (`--max-conns`).
///
/// An idle framed connection holds no buffer and costs the server about 3.4 KiB (measured by
/// `bench/idle_conns.py`: 10,000 idle connections, each having sent one `ping`, added 33 MiB
/// of resident memory), so 16,384 of them about 55 MiB. `Server::bind` raises the open-files
/// limit to match, within the hard limit.
pub const MAX_CONNS: usize = 16_384;
/// Most TCP connections open at once from one IP address (`--max-conns-per-source`): 128
/// addresses at this limit fill [`MAX_CONNS`].
pub const MAX_CONNS_PER_SOURCE: usize = 128;
/// Time a frame header may take once begun, and a new connection to send one
/// (`--header-timeout`).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a connection may stay silent (`--idle-timeout`).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Time connections get to finish on shutdown (`--shutdown-timeout`).
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
/// Time an interrupted upload is kept for resuming (`--partial-ttl`).
pub const PARTIAL_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// Most partial uploads held at once, over all addresses (`--max-partials`).
pub const MAX_PARTIALS: usize = 4096;
/// Most partial uploads held at once that one IP address began (`--max-partials-per-source`).
pub const MAX_PARTIALS_PER_SOURCE: usize = 32;

/// Most uploads, downloads and renames streaming at once (`--max-transfers`). Each holds two
/// threads of the runtime's blocking pool (512 by default) while it streams; the cap keeps the
/// rest of the pool free for `stat`, `list` and commits.
pub const MAX_TRANSFERS: usize = 128;
/// Most of those streaming slots one IP address holds or waits for (`--max-transfers-per-source`).
pub const MAX_TRANSFERS_PER_SOURCE: usize = 16;
/// Longest a request waits for a streaming slot, for memory, or for a password check's turn
/// before it is answered `busy` (`--queue-timeout`).
pub const QUEUE_TIMEOUT: Duration = Duration::from_secs(10);
/// Slowest pace a transfer's body may keep, in bytes a second averaged over each
/// [`TRANSFER_RATE_WINDOW`]; slower, it is cut (`--transfer-min-rate`, 0 for no minimum).
pub const TRANSFER_MIN_RATE: u64 = 4096;
/// The stretch of time over which a transfer's pace is measured (`--transfer-rate-window`).
pub const TRANSFER_RATE_WINDOW: Duration = Duration::from_secs(30);
/// Most bytes held in memory by bodies (`echo`, `list` pages) over all connections
/// (`--memory-budget`).
pub const MEMORY_BUDGET: u64 = 256 * 1024 * 1024;
/// Most of that memory one IP address holds or waits for (`--memory-budget-per-source`).
pub const MEMORY_BUDGET_PER_SOURCE: u64 = 32 * 1024 * 1024;

/// Longest a remote command may run (`--exec-timeout`).
pub const EXEC_TIMEOUT: Duration = Duration::from_secs(3600);
/// Output after which a remote command is killed (`--exec-max-output`).
pub const EXEC_MAX_OUTPUT: u64 = 64 * 1024 * 1024;
/// Most remote commands running at once (`--exec-max-running`).
pub const EXEC_MAX_RUNNING: usize = 64;

/// Time a connection has to log in (`--login-grace`).
pub const LOGIN_GRACE: Duration = Duration::from_secs(60);
/// Failed logins allowed on one connection (`--login-max-tries`).
pub const LOGIN_MAX_TRIES: u32 = 6;
/// Failed logins from one address, or for one user, before lockouts begin
/// (`--login-free-failures`).
pub const LOGIN_FREE_FAILURES: u32 = 5;
/// The first lockout; each further failure doubles it (`--login-backoff`).
pub const LOGIN_BACKOFF: Duration = Duration::from_secs(1);
/// The longest lockout (`--login-backoff-max`).
pub const LOGIN_BACKOFF_MAX: Duration = Duration::from_secs(300);
/// Failures are forgotten this long after the last one.
pub const LOGIN_FORGET_AFTER: Duration = Duration::from_secs(900);

/// A chat member silent this long is dropped (`--chat-idle`).
pub const CHAT_IDLE: Duration = Duration::from_secs(600);
/// Lines a second a chat member may send, on average (`--chat-rate`).
pub const CHAT_RATE: f64 = 20.0;
/// A chat member's burst, in multiples of its rate.
pub const CHAT_BURST_PER_RATE: f64 = 2.0;
/// Most chat members at once, in all rooms together (`--chat-max-members`).
pub const CHAT_MAX_MEMBERS: usize = 1024;
/// New chat members a second over all rooms, on average (bursts of ten times that).
pub const CHAT_JOIN_RATE: f64 = 20.0;
/// Bytes the UDP chat room sends an address in all until it proves that it receives them
/// (`--chat-unconfirmed-bytes`).
pub const CHAT_UNCONFIRMED_BYTES: usize = 64 * 1024;
/// Bytes the UDP chat room sends all unproven addresses together in any one second
/// (`--chat-unconfirmed-rate`).
pub const CHAT_UNCONFIRMED_RATE: usize = 256 * 1024;

/// How long Redis keeps a server's chat presence on the bus unless the server refreshes it
/// (`--bus-presence-ttl`). The server refreshes it every third of this, and reads the others'
/// as often, so the members of a server that dies leave `/who` everywhere within this plus a
/// third of it: 20 s with 15 s.
pub const BUS_PRESENCE_TTL: Duration = Duration::from_secs(15);
/// Chat lines waiting to go out on the bus, and lines from the bus waiting for the room; past
/// it, lines are dropped and counted (`--bus-backlog`).
pub const BUS_BACKLOG: usize = 1024;
/// The longest a call to Redis may take before the bus counts Redis as down; a login then
/// counts its lockouts on this server alone (`--bus-timeout`).
pub const BUS_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a browser's login session lasts (`--http-session-ttl`).
pub const HTTP_SESSION_TTL: Duration = Duration::from_secs(12 * 60 * 60);
/// Most browser login sessions alive at once; a login past it ends the oldest
/// (`--http-max-sessions`).
pub const HTTP_MAX_SESSIONS: usize = 4096;

/// Bytes a second one source address may draw from the UDP echo (`--udp-echo-source-rate`).
pub const UDP_ECHO_SOURCE_RATE: u64 = 64 * 1024;
/// Bytes a second all sources together may draw from the UDP echo (`--udp-echo-rate`).
pub const UDP_ECHO_RATE: u64 = 1024 * 1024;
/// Most source addresses the UDP echo meters at once (`--udp-echo-max-sources`).
pub const UDP_ECHO_MAX_SOURCES: usize = 4096;

/// The longest a `sockit bench` run may last, whatever its `-n` or `--duration`.
pub const BENCH_MAX_DURATION: Duration = Duration::from_secs(600);
