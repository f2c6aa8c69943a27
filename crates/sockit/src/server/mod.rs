//! `sockit serve`: binds every listener, accepts under limits, and shuts down gracefully.
//!
//! [`Server::bind`] opens all listeners first, so that a port in use fails before anything is
//! served and [`Server::listening`] can report the addresses actually bound (port 0 included).
//! [`Server::run`] then serves until the `shutdown` future completes: accepting stops, every
//! connection finishes the request it is in, and `run` returns once all have closed or the
//! shutdown deadline has passed.
//!
//! Each connection is its own task. A connection that fails, misbehaves or panics ends alone;
//! its place under the connection limits is returned when its task ends, however it ends.

pub(crate) mod accept;
mod limit;

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpSocket, UdpSocket};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::accounts::Accounts;
use crate::auth::users::UsersError;
use crate::chat;
use crate::config::ServerConfig;
use crate::core::Core;
use crate::front::framed::Framed;
use crate::front::{legacy, udp_echo, TcpService};
use crate::store::Store;
use accept::accept_loop;
use limit::ConnLimiter;

/// The services `sockit serve` can listen for, named as in its `listening` lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceKind {
    /// The framed protocol, over TCP (`tcp`).
    Framed,
    /// The chat room, over UDP (`udp`).
    Chat,
    /// Raw TCP upper-case echo.
    LegacyEcho,
    /// Raw TCP remote commands for the tutorials' clients.
    LegacyExec,
    /// UDP upper-case echo.
    UdpEcho,
}

impl ServiceKind {
    /// The service's name in `listening <service> <addr>`.
    pub fn name(self) -> &'static str {
        match self {
            ServiceKind::Framed => "tcp",
            ServiceKind::Chat => "udp",
            ServiceKind::LegacyEcho => "legacy-echo",
            ServiceKind::LegacyExec => "legacy-exec",
            ServiceKind::UdpEcho => "udp-echo",
        }
    }
}

impl fmt::Display for ServiceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// A listener could not be opened.
    #[error("cannot listen on {addr} for {service}: {source}")]
    Bind {
        /// Which listener.
        service: ServiceKind,
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        source: io::Error,
    },
    /// `--legacy-exec` was given an address other machines can reach.
    #[error("--legacy-exec runs any command for anyone who connects, without a login, so it only binds loopback addresses (127.0.0.1, ::1); {0} is not one")]
    LegacyExecNotLoopback(SocketAddr),
    /// The file store directory could not be opened.
    #[error("file store {path}: {source}")]
    Store {
        /// The store directory.
        path: std::path::PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The users file could not be used.
    #[error(transparent)]
    Users(#[from] UsersError),
}

/// A server with its listeners bound, ready to [`run`](Server::run).
#[derive(Debug)]
pub struct Server {
    config: Arc<ServerConfig>,
    store: Arc<Store>,
    accounts: Option<Arc<Accounts>>,
    operator: Option<tokio::sync::mpsc::Receiver<String>>,
    tcp: TcpListener,
    udp: Option<UdpSocket>,
    legacy_echo: Option<TcpListener>,
    legacy_exec: Option<TcpListener>,
    udp_echo: Option<UdpSocket>,
}

impl Server {
    /// Opens every listener in `config`, the file store and the users file.
    ///
    /// # Errors
    ///
    /// The first listener that cannot be bound, a `legacy_exec` address that is not loopback,
    /// a store directory that cannot be created, or a users file that cannot be read.
    pub async fn bind(config: ServerConfig) -> Result<Server, StartError> {
        if let Some(addr) = config.legacy_exec {
            if !addr.ip().is_loopback() {
                return Err(StartError::LegacyExecNotLoopback(addr));
            }
        }
        let accounts = match &config.users {
            Some(path) => Some(Arc::new(Accounts::open(path, config.login.penalties)?)),
            None => None,
        };
        let tcp = bind_tcp(ServiceKind::Framed, config.listen)?;
        let udp = match config.udp {
            Some(addr) => Some(bind_udp(ServiceKind::Chat, addr)?),
            None => None,
        };
        let legacy_echo = match config.legacy_echo {
            Some(addr) => Some(bind_tcp(ServiceKind::LegacyEcho, addr)?),
            None => None,
        };
        let legacy_exec = match config.legacy_exec {
            Some(addr) => Some(bind_tcp(ServiceKind::LegacyExec, addr)?),
            None => None,
        };
        let udp_echo = match config.udp_echo {
            Some(addr) => Some(bind_udp(ServiceKind::UdpEcho, addr)?),
            None => None,
        };
        let store =
            Store::open(&config.root, config.partial_ttl).map_err(|source| StartError::Store {
                path: config.root.clone(),
                source,
            })?;
        Ok(Server {
            store,
            accounts,
            operator: None,
            config: Arc::new(config),
            tcp,
            udp,
            legacy_echo,
            legacy_exec,
            udp_echo,
        })
    }

    /// Lines typed by the server's operator, said to the chat room as `<server> text`; the
    /// room's traffic is then printed on standard output.
    pub fn operator_lines(&mut self, lines: tokio::sync::mpsc::Receiver<String>) {
        self.operator = Some(lines);
    }

    /// Every listener with the address it is bound to, in a fixed order.
    pub fn listening(&self) -> Vec<(ServiceKind, SocketAddr)> {
        let tcp = [
            (ServiceKind::Framed, Some(&self.tcp)),
            (ServiceKind::LegacyEcho, self.legacy_echo.as_ref()),
            (ServiceKind::LegacyExec, self.legacy_exec.as_ref()),
        ]
        .into_iter()
        .filter_map(|(kind, listener)| Some((kind, listener?.local_addr().ok()?)));
        let udp = [
            (ServiceKind::Chat, self.udp.as_ref()),
            (ServiceKind::UdpEcho, self.udp_echo.as_ref()),
        ]
        .into_iter()
        .filter_map(|(kind, socket)| Some((kind, socket?.local_addr().ok()?)));
        tcp.chain(udp).collect()
    }

    /// Serves until `shutdown` completes, then shuts down gracefully.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let config = self.config;
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        let limiter = ConnLimiter::new(config.max_conns, config.max_conns_per_source);

        let exec_slots = Arc::new(tokio::sync::Semaphore::new(config.exec.max_running));
        let core = Core {
            store: Arc::clone(&self.store),
            accounts: self.accounts,
            login: config.login,
            exec: config.exec,
            exec_slots: Arc::clone(&exec_slots),
        };
        match &core.accounts {
            Some(accounts) => tracing::info!(
                users = accounts.len(),
                "accounts loaded: login required for everything but ping and echo"
            ),
            None => tracing::info!("no users file: files open to all, exec disabled"),
        }
        let framed = Arc::new(Framed::new(&config, core));
        tasks.spawn(sweep_partials(Arc::clone(&self.store), stop.clone()));
        spawn_accept(&tasks, self.tcp, framed, &limiter, &stop);
        if let Some(listener) = self.legacy_echo {
            let service = Arc::new(legacy::LegacyEcho::new(config.idle_timeout));
            spawn_accept(&tasks, listener, service, &limiter, &stop);
        }
        if let Some(listener) = self.legacy_exec {
            tracing::warn!(
                "legacy-exec: anyone on this machine can run commands as this user, without a login"
            );
            let service = legacy::LegacyExec::new(config.idle_timeout, config.exec, exec_slots);
            spawn_accept(&tasks, listener, Arc::new(service), &limiter, &stop);
        }
        if let Some(socket) = self.udp {
            tasks.spawn(chat::serve(
                socket,
                config.chat,
                self.operator,
                stop.clone(),
            ));
        }
        if let Some(socket) = self.udp_echo {
            tasks.spawn(udp_echo::serve(socket, stop.clone()));
        }

        shutdown.await;
        tracing::info!("shutting down");
        stop.cancel();
        tasks.close();
        if tokio::time::timeout(config.shutdown_timeout, tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                remaining = tasks.len(),
                "connections still busy after {:?}; closing them",
                config.shutdown_timeout
            );
        }
    }
}

/// Serves `listener` with `service` until `stop`, as one of `tasks`.
fn spawn_accept<T: TcpService>(
    tasks: &TaskTracker,
    listener: TcpListener,
    service: Arc<T>,
    limiter: &Arc<ConnLimiter>,
    stop: &CancellationToken,
) {
    let accepting = accept_loop(
        listener,
        service,
        Arc::clone(limiter),
        stop.clone(),
        tasks.clone(),
    );
    tasks.spawn(accepting);
}

/// How often expired partial uploads are looked for.
const SWEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(600);

/// Deletes expired partial uploads now and every [`SWEEP_INTERVAL`] until `stop`.
async fn sweep_partials(store: Arc<Store>, stop: CancellationToken) {
    loop {
        let sweeping = Arc::clone(&store);
        match tokio::task::spawn_blocking(move || sweeping.sweep_expired_partials()).await {
            Ok(Ok(0)) => {}
            Ok(Ok(removed)) => tracing::info!(removed, "expired partial uploads deleted"),
            Ok(Err(err)) => tracing::warn!(%err, "cannot sweep partial uploads"),
            Err(err) => tracing::warn!(%err, "partial upload sweep failed"),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(SWEEP_INTERVAL) => {}
        }
    }
}

/// A TCP listener with `SO_REUSEADDR`, so a restarted server can bind while old connections
/// linger in `TIME_WAIT`.
fn bind_tcp(service: ServiceKind, addr: SocketAddr) -> Result<TcpListener, StartError> {
    let bind = || {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(1024)
    };
    bind().map_err(|source| StartError::Bind {
        service,
        addr,
        source,
    })
}

/// Receive buffer asked for on UDP sockets, so that bursts are queued rather than dropped. The
/// kernel caps it at `net.core.rmem_max`.
const UDP_RECEIVE_BUFFER: usize = 4 * 1024 * 1024;

fn bind_udp(service: ServiceKind, addr: SocketAddr) -> Result<UdpSocket, StartError> {
    let bind = || {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::DGRAM,
            Some(socket2::Protocol::UDP),
        )?;
        // Best effort: a smaller buffer still works.
        let _ = socket.set_recv_buffer_size(UDP_RECEIVE_BUFFER);
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        UdpSocket::from_std(socket.into())
    };
    bind().map_err(|source| StartError::Bind {
        service,
        addr,
        source,
    })
}
