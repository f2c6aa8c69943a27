//! `sockit serve`.

use std::fmt;
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use sockit::auth::penalty::PenaltyPolicy;
use sockit::bus::{BusConfig, BusSettings};
use sockit::chat::room::RoomConfig;
use sockit::config::{
    ExecConfig, HttpConfig, ListenerSpec, LoginConfig, MemoryConfig, ServiceKind, TlsIdentity,
    TransferConfig, UdpEchoConfig,
};
use sockit::defaults;
use sockit::{Server, ServerConfig};
use sockit_proto::Limits;

use super::CmdResult;
use crate::cmd::CmdError;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The framed TCP protocol: HOST:PORT (names are resolved), or :PORT for 127.0.0.1:PORT.
    #[arg(long, value_name = "ADDR", default_value = defaults::ADDR, value_parser = parse_addr)]
    listen: SocketAddr,
    /// The UDP chat room port ("off" to disable).
    #[arg(long, value_name = "ADDR", default_value = defaults::ADDR, value_parser = parse_optional_addr)]
    udp: OptionalAddr,
    /// Raw TCP upper-case echo, as the tutorials' socketserver.
    #[arg(long, value_name = "ADDR", value_parser = parse_addr)]
    legacy_echo: Option<SocketAddr>,
    /// UDP upper-case echo.
    #[arg(long, value_name = "ADDR", value_parser = parse_addr)]
    udp_echo: Option<SocketAddr>,
    /// Raw TCP remote commands for the tutorials' clients: no login, so loopback only.
    #[arg(long, value_name = "ADDR", value_parser = parse_addr)]
    legacy_exec: Option<SocketAddr>,
    /// The browser front end: the page, the HTTP API and the chat WebSocket (HTTPS with
    /// --tls, `listening https ADDR`).
    #[arg(long, value_name = "ADDR", value_parser = parse_addr)]
    http: Option<SocketAddr>,
    /// Seconds a browser's login session (and its cookie) lasts.
    #[arg(long, value_name = "SECS", default_value_t = Seconds(defaults::HTTP_SESSION_TTL))]
    http_session_ttl: Seconds,
    /// Most browser login sessions alive at once; a login past it ends the oldest.
    #[arg(long, value_name = "N", default_value_t = defaults::HTTP_MAX_SESSIONS)]
    http_max_sessions: usize,
    /// TLS 1.3 on the framed listener (`listening tls ADDR`, then `fingerprint sha256:HEX`).
    /// Without --tls-cert and --tls-key, a self-signed certificate is made on first start and
    /// kept in the store (<root>/.sockit/tls/).
    #[arg(long)]
    tls: bool,
    /// The TLS certificate chain, PEM (with --tls-key; implies --tls).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The TLS private key, PEM (with --tls-cert).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Accounts file (see `sockit user`): requires login for all but ping and echo, and
    /// enables exec.
    #[arg(
        long,
        value_name = "FILE",
        env = "SOCKIT_USERS",
        hide_env_values = true
    )]
    users: Option<PathBuf>,
    /// Longest a remote command may run, in seconds (a client may ask for less).
    #[arg(long, value_name = "SECS", default_value_t = Seconds(defaults::EXEC_TIMEOUT))]
    exec_timeout: Seconds,
    /// Output after which a remote command is killed and reported truncated, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = defaults::EXEC_MAX_OUTPUT)]
    exec_max_output: u64,
    /// Most remote commands running at once; more are refused as busy.
    #[arg(long, value_name = "N", default_value_t = defaults::EXEC_MAX_RUNNING)]
    exec_max_running: usize,
    /// Seconds a connection has to log in after connecting.
    #[arg(long, value_name = "SECS", default_value_t = Seconds(defaults::LOGIN_GRACE))]
    login_grace: Seconds,
    /// Failed logins allowed on one connection before it is closed.
    #[arg(long, value_name = "N", default_value_t = defaults::LOGIN_MAX_TRIES)]
    login_max_tries: u32,
    /// Failed logins from one address (or for one user) before lockouts begin.
    #[arg(long, value_name = "N", default_value_t = defaults::LOGIN_FREE_FAILURES)]
    login_free_failures: u32,
    /// First lockout, in seconds; each further failure doubles it.
    #[arg(long, value_name = "SECS", default_value_t = Seconds(defaults::LOGIN_BACKOFF))]
    login_backoff: Seconds,
    /// Longest lockout, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = Seconds(defaults::LOGIN_BACKOFF_MAX))]
    login_backoff_max: Seconds,
    /// The file store directory.
    #[arg(long, value_name = "DIR", default_value = defaults::ROOT)]
    root: PathBuf,
    /// Most TCP connections open at once; more wait to be accepted. The open-files limit is
    /// raised to match, within the hard limit.
    #[arg(long, value_name = "N", default_value_t = defaults::MAX_CONNS)]
    max_conns: usize,
    /// Most TCP connections open at once from one IP address; more are refused.
    #[arg(long, value_name = "N", default_value_t = defaults::MAX_CONNS_PER_SOURCE)]
    max_conns_per_source: usize,
    /// Seconds a frame header may take to arrive once begun (and a new connection to send one).
    #[arg(long, value_name = "SECS", default_value_t = Seconds(defaults::HEADER_TIMEOUT))]
    header_timeout: Seconds,
    /// Seconds a connection may stay silent.
    #[arg(long, value_name = "SECS", default_value_t = Seconds(defaults::IDLE_TIMEOUT))]
    idle_timeout: Seconds,
    /// Seconds connections get to finish on SIGINT or SIGTERM.
    #[arg(long, value_name = "SECS", default_value_t = Seconds(defaults::SHUTDOWN_TIMEOUT))]
    shutdown_timeout: Seconds,
    /// Seconds an interrupted upload is kept for resuming.
    #[arg(long, value_name = "SECS", default_value_t = Seconds(defaults::PARTIAL_TTL))]
    partial_ttl: Seconds,
    /// Most interrupted uploads kept at once; a new upload past it is refused as busy.
    #[arg(long, value_name = "N", default_value_t = defaults::MAX_PARTIALS)]
    max_partials: usize,
    /// Most interrupted uploads kept at once that one IP address began; more are refused as busy.
    #[arg(long, value_name = "N", default_value_t = defaults::MAX_PARTIALS_PER_SOURCE)]
    max_partials_per_source: usize,
    /// Seconds a chat member may stay silent before being dropped from the room.
    #[arg(long, value_name = "SECS", default_value_t = Seconds(defaults::CHAT_IDLE))]
    chat_idle: Seconds,
    /// Lines per second a chat member may send (bursts of twice that).
    #[arg(long, value_name = "N", default_value_t = defaults::CHAT_RATE)]
    chat_rate: f64,
    /// Most chat members at once.
    #[arg(long, value_name = "N", default_value_t = defaults::CHAT_MAX_MEMBERS)]
    chat_max_members: usize,
    /// Bytes the UDP chat room sends an address in all until it proves that it receives them
    /// (`/confirm`).
    #[arg(long, value_name = "BYTES", default_value_t = defaults::CHAT_UNCONFIRMED_BYTES)]
    chat_unconfirmed_bytes: usize,
    /// Bytes the UDP chat room sends all unproven addresses together in any one second.
    #[arg(long, value_name = "BYTES", default_value_t = defaults::CHAT_UNCONFIRMED_RATE)]
    chat_unconfirmed_rate: usize,
    /// Bytes a second one source address may draw from the UDP echo (each datagram counts as
    /// at least 64).
    #[arg(long, value_name = "BYTES", default_value_t = defaults::UDP_ECHO_SOURCE_RATE)]
    udp_echo_source_rate: u64,
    /// Bytes a second all sources together may draw from the UDP echo.
    #[arg(long, value_name = "BYTES", default_value_t = defaults::UDP_ECHO_RATE)]
    udp_echo_rate: u64,
    /// Most source addresses the UDP echo meters at once; a new one beyond them is not answered.
    #[arg(long, value_name = "N", default_value_t = defaults::UDP_ECHO_MAX_SOURCES)]
    udp_echo_max_sources: usize,
    /// Largest frame header, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = sockit_proto::DEFAULT_MAX_HEADER_LEN)]
    max_header_len: usize,
    /// Largest body an in-memory operation such as echo accepts, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = sockit_proto::DEFAULT_MAX_BUFFERED_BODY)]
    max_body_in_memory: u64,
    /// Most uploads, downloads and renames streaming at once.
    #[arg(long, value_name = "N", default_value_t = defaults::MAX_TRANSFERS)]
    max_transfers: usize,
    /// Most streaming slots one IP address holds or waits for at once.
    #[arg(long, value_name = "N", default_value_t = defaults::MAX_TRANSFERS_PER_SOURCE)]
    max_transfers_per_source: usize,
    /// Seconds a request waits for a streaming slot or for memory, and a password login for its
    /// turn at the check, before it is refused as busy.
    #[arg(long, value_name = "SECS", default_value_t = Seconds(defaults::QUEUE_TIMEOUT))]
    queue_timeout: Seconds,
    /// Slowest pace of a transfer, in bytes a second over each rate window; slower transfers
    /// are cut (an upload keeps what arrived for a resume). 0: no minimum.
    #[arg(long, value_name = "BYTES", default_value_t = defaults::TRANSFER_MIN_RATE)]
    transfer_min_rate: u64,
    /// Seconds over which a transfer's pace is measured.
    #[arg(long, value_name = "SECS", default_value_t = Seconds(defaults::TRANSFER_RATE_WINDOW))]
    transfer_rate_window: Seconds,
    /// Most bytes that bodies held in memory (echo, list pages) take, over all connections.
    #[arg(long, value_name = "BYTES", default_value_t = defaults::MEMORY_BUDGET)]
    memory_budget: u64,
    /// Most of the memory budget one IP address holds or waits for at once.
    #[arg(long, value_name = "BYTES", default_value_t = defaults::MEMORY_BUDGET_PER_SOURCE)]
    memory_budget_per_source: u64,
    /// Share chat rooms and login lockouts with every server on this Redis:
    /// redis://HOST:PORT[/DB].
    #[arg(long, value_name = "URL")]
    bus: Option<String>,
    /// Seconds Redis keeps this server's chat members unless refreshed (every third of it);
    /// a dead server's members leave `/who` everywhere within this and a third.
    #[arg(long, value_name = "SECS", default_value_t = Seconds(defaults::BUS_PRESENCE_TTL))]
    bus_presence_ttl: Seconds,
    /// Chat lines queued each way between the room and the bus; more are dropped and counted.
    #[arg(long, value_name = "N", default_value_t = defaults::BUS_BACKLOG)]
    bus_backlog: usize,
    /// Seconds a call to Redis may take before the bus counts it as down.
    #[arg(long, value_name = "SECS", default_value_t = Seconds(defaults::BUS_TIMEOUT))]
    bus_timeout: Seconds,
}

pub(crate) async fn run(args: Args) -> CmdResult {
    let limits = Limits::builder()
        .max_header_len(args.max_header_len)
        .max_buffered_body(args.max_body_in_memory)
        .build()
        .map_err(|err| CmdError::failed("invalid frame limits", err))?;
    let tls = match (args.tls_cert, args.tls_key) {
        (Some(cert), Some(key)) => Some(TlsIdentity::Files { cert, key }),
        _ => args.tls.then_some(TlsIdentity::Kept),
    };
    let (framed, http) = match tls {
        Some(_) => (ServiceKind::FramedTls, ServiceKind::Https),
        None => (ServiceKind::Framed, ServiceKind::Http),
    };
    // In the order of the `listening` lines.
    let listeners = [
        Some((framed, args.listen)),
        args.legacy_echo.map(|addr| (ServiceKind::LegacyEcho, addr)),
        args.legacy_exec.map(|addr| (ServiceKind::LegacyExec, addr)),
        args.udp.0.map(|addr| (ServiceKind::Chat, addr)),
        args.udp_echo.map(|addr| (ServiceKind::UdpEcho, addr)),
        args.http.map(|addr| (http, addr)),
    ];
    let config = ServerConfig {
        listeners: listeners
            .into_iter()
            .flatten()
            .map(|(service, addr)| ListenerSpec::new(service, addr))
            .collect(),
        users: args.users,
        login: LoginConfig {
            max_tries: args.login_max_tries.max(1),
            grace: args.login_grace.0,
            penalties: PenaltyPolicy {
                free_failures: args.login_free_failures,
                base: args.login_backoff.0,
                max: args.login_backoff_max.0.max(args.login_backoff.0),
                ..PenaltyPolicy::default()
            },
        },
        exec: ExecConfig {
            max_timeout: args.exec_timeout.0,
            max_output: args.exec_max_output,
            max_running: args.exec_max_running,
        },
        root: args.root,
        limits,
        max_conns: args.max_conns,
        max_conns_per_source: args.max_conns_per_source,
        header_timeout: args.header_timeout.0,
        idle_timeout: args.idle_timeout.0,
        shutdown_timeout: args.shutdown_timeout.0,
        partial_ttl: args.partial_ttl.0,
        max_partials: args.max_partials,
        max_partials_per_source: args.max_partials_per_source,
        chat: RoomConfig {
            idle: args.chat_idle.0,
            rate: args.chat_rate,
            burst: args.chat_rate * defaults::CHAT_BURST_PER_RATE,
            max_members: args.chat_max_members,
            unconfirmed_bytes: args.chat_unconfirmed_bytes,
            unconfirmed_rate: args.chat_unconfirmed_rate,
            ..RoomConfig::default()
        },
        tls: tls.unwrap_or_default(),
        transfers: TransferConfig {
            max_running: args.max_transfers,
            max_per_source: args.max_transfers_per_source,
            wait: args.queue_timeout.0,
            min_rate: args.transfer_min_rate,
            rate_window: args.transfer_rate_window.0,
        },
        memory: MemoryConfig {
            budget: args.memory_budget,
            per_source: args.memory_budget_per_source,
            wait: args.queue_timeout.0,
        },
        udp_echo: UdpEchoConfig {
            source_rate: args.udp_echo_source_rate,
            rate: args.udp_echo_rate,
            max_sources: args.udp_echo_max_sources,
        },
        bus: args.bus.map(|url| BusConfig {
            url,
            settings: BusSettings {
                presence_ttl: args.bus_presence_ttl.0,
                backlog: args.bus_backlog,
                timeout: args.bus_timeout.0,
            },
        }),
        http: HttpConfig {
            session_ttl: args.http_session_ttl.0,
            max_sessions: args.http_max_sessions,
        },
    };
    let chat_enabled = args.udp.0.is_some() || args.http.is_some();
    let mut server = Server::bind(config).await?;
    if chat_enabled && owns_the_terminal() {
        let traffic = server.operator_console(operator_lines());
        print_room_traffic(traffic);
    }
    // Watched before the listening lines go out: whoever reads them may signal at once.
    let shutdown =
        shutdown_signal().map_err(|err| CmdError::failed("cannot watch for signals", err))?;
    let mut stdout = std::io::stdout().lock();
    for (service, addr) in server.listening() {
        writeln!(stdout, "listening {service} {addr}")?;
    }
    if let Some(fingerprint) = server.fingerprint() {
        writeln!(stdout, "fingerprint {fingerprint}")?;
    }
    stdout.flush()?;
    drop(stdout);
    server.run(shutdown).await;
    Ok(())
}

/// Whether standard input is a terminal that this process may read: one whose foreground
/// process group is ours. A server started in the background (`sockit serve &`) must never read
/// it — the shell would stop the whole server at its first read (SIGTTIN).
fn owns_the_terminal() -> bool {
    let stdin = std::io::stdin();
    stdin.is_terminal()
        && nix::unistd::tcgetpgrp(&stdin).is_ok_and(|group| group == nix::unistd::getpgrp())
}

/// Lines typed on the server's terminal, for the chat room. A thread reads standard input,
/// which has no async interface that works for terminals; it ends with the input.
fn operator_lines() -> tokio::sync::mpsc::Receiver<String> {
    let (lines, receiver) = tokio::sync::mpsc::channel(64);
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { break };
            if lines.blocking_send(line).is_err() {
                break;
            }
        }
    });
    receiver
}

/// Prints the chat room's traffic on standard output as it comes, from a thread of its own so
/// that a slow terminal holds up nothing but this thread; it ends with the room.
fn print_room_traffic(mut traffic: tokio::sync::mpsc::Receiver<String>) {
    std::thread::spawn(move || {
        while let Some(line) = traffic.blocking_recv() {
            let mut stdout = std::io::stdout().lock();
            if writeln!(stdout, "{line}")
                .and_then(|()| stdout.flush())
                .is_err()
            {
                break;
            }
        }
    });
}

/// Completes on the first SIGINT or SIGTERM.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    })
}

/// An address, or none when given as `off`.
#[derive(Debug, Clone, Copy)]
struct OptionalAddr(Option<SocketAddr>);

fn parse_optional_addr(text: &str) -> Result<OptionalAddr, String> {
    match text {
        "off" | "none" => Ok(OptionalAddr(None)),
        _ => parse_addr(text)
            .map(|addr| OptionalAddr(Some(addr)))
            .map_err(|err| format!("{err} (or \"off\")")),
    }
}

/// An address to listen on: `IP:PORT`, `HOST:PORT` (the name resolved, an IPv4 address
/// preferred), or `:PORT` for `127.0.0.1:PORT` (never every interface unless asked for).
pub(crate) fn parse_addr(text: &str) -> Result<SocketAddr, String> {
    use std::net::{Ipv4Addr, ToSocketAddrs};
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    let Some((host, port)) = text
        .rsplit_once(':')
        .filter(|(host, _)| !host.ends_with(':'))
    else {
        return Err(format!(
            "`{text}` has no port: give HOST:PORT (e.g. {text}:9000), or :PORT for 127.0.0.1"
        ));
    };
    let port: u16 = port
        .parse()
        .map_err(|_| format!("`{port}` in `{text}` is not a port number (0 to 65535)"))?;
    if host.is_empty() {
        return Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
    }
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let found: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|err| format!("cannot resolve `{host}`: {err}"))?
        .collect();
    found
        .iter()
        .find(|addr| addr.is_ipv4())
        .or_else(|| found.first())
        .copied()
        .ok_or_else(|| format!("`{host}` resolves to no address"))
}

pub(crate) fn parse_seconds(text: &str) -> Result<Duration, String> {
    text.parse::<f64>()
        .ok()
        .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
        .filter(|duration| !duration.is_zero())
        .ok_or_else(|| format!("`{text}` is not a positive number of seconds"))
}

/// A number of seconds on the command line: more than zero, fractions allowed.
#[derive(Debug, Clone, Copy)]
struct Seconds(Duration);

impl FromStr for Seconds {
    type Err = String;

    fn from_str(text: &str) -> Result<Seconds, String> {
        parse_seconds(text).map(Seconds)
    }
}

impl fmt::Display for Seconds {
    /// As typed: `3600`, `0.5`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::parse_addr;

    #[test]
    fn a_bare_port_listens_on_loopback_only() {
        assert_eq!(parse_addr(":9500").unwrap().to_string(), "127.0.0.1:9500");
        assert_eq!(parse_addr(":0").unwrap().to_string(), "127.0.0.1:0");
    }

    #[test]
    fn names_are_resolved_and_addresses_taken_as_they_are() {
        assert!(parse_addr("localhost:9500").unwrap().ip().is_loopback());
        assert_eq!(parse_addr("localhost:9500").unwrap().port(), 9500);
        assert_eq!(parse_addr("0.0.0.0:1").unwrap().to_string(), "0.0.0.0:1");
        assert_eq!(parse_addr("[::1]:2").unwrap().to_string(), "[::1]:2");
    }

    #[test]
    fn what_is_missing_is_said() {
        let err = parse_addr("localhost").unwrap_err();
        assert!(err.contains("has no port"), "{err}");
        let err = parse_addr("localhost:http").unwrap_err();
        assert!(err.contains("not a port number"), "{err}");
        let err = parse_addr(":99999").unwrap_err();
        assert!(err.contains("not a port number"), "{err}");
    }
}
