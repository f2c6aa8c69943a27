//! `sockit serve`: binds every listener, accepts under limits, and shuts down gracefully.
//!
//! [`Server::bind`] opens all listeners first, so that a port in use fails before anything is
//! served and [`Server::listening`] can report the addresses actually bound (port 0 included).
//! [`Server::run`] then serves until the `shutdown` future completes: accepting stops, every
//! connection finishes the request it is in, and `run` returns once all have closed or the
//! shutdown deadline has passed. A framed request still reading from its client when the
//! shutdown timeout passes is cut short with a `shutting_down` reply; an upload cut so keeps
//! what arrived for a resume.
//!
//! Each connection is its own task. A connection that fails, misbehaves or panics ends alone;
//! its place under the connection limits is returned when its task ends, however it ends.

mod accept;
mod limit;
mod listener;
mod nofile;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::accounts::Accounts;
use crate::auth::users::UsersError;
use crate::bus::{Bus, BusUrlError};
use crate::chat::{Console, LocalLink, RoomHost};
use crate::config::{ConfigError, ServerConfig, TlsIdentity};
pub use crate::config::{ListenerSpec, ServiceKind};
use crate::core::Core;
use crate::front::chat_hub;
use crate::front::framed::Framed;
use crate::front::http::HttpFront;
use crate::front::tls::TlsFramed;
use crate::front::{legacy, udp_chat, udp_echo, TcpService};
use crate::store::{PartialLimits, Store, BOOKKEEPING_DIR};
use crate::tls::{Fingerprint, IdentityError, ServerIdentity};
use accept::accept_loop;
use limit::ConnLimiter;
use listener::Bound;

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
    /// A setting is out of range.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The TLS certificate and key cannot be used.
    #[error("TLS: {0}")]
    Tls(#[from] IdentityError),
    /// The bus's URL cannot be used (Redis being down is no error: the server starts and
    /// connects when it can).
    #[error(transparent)]
    Bus(#[from] BusUrlError),
}

/// A server with its listeners bound, ready to [`run`](Server::run).
#[derive(Debug)]
pub struct Server {
    config: Arc<ServerConfig>,
    store: Arc<Store>,
    accounts: Option<Arc<Accounts>>,
    bus: Option<Bus>,
    console: Option<Console>,
    listeners: Vec<Bound>,
    /// The TLS listeners' configuration and certificate fingerprint, when there are any.
    tls: Option<(Arc<rustls::ServerConfig>, Fingerprint)>,
}

impl Server {
    /// Opens every listener in `config`, the file store and the users file. It first raises
    /// the process's soft limit of open files towards what `max_conns` connections need (up
    /// to the hard limit; a warning is logged when that falls short).
    ///
    /// # Errors
    ///
    /// A setting out of range ([`ServerConfig::check`]) or a [`ServiceKind::LegacyExec`]
    /// listener on an address that is not loopback, both found before anything is bound; the
    /// first listener that cannot be bound, a store directory
    /// that cannot be created, or a users file that cannot be read.
    pub async fn bind(config: ServerConfig) -> Result<Server, StartError> {
        config.check()?;
        let open_files = nofile::raise_for(config.max_conns);
        if let Some(limit) = open_files
            .filter(|&limit| limit < (config.max_conns as u64).saturating_add(nofile::RESERVED))
        {
            tracing::warn!(
                limit,
                max_conns = config.max_conns,
                "the open-files limit is lower than the most connections allowed need; past it, accepting pauses until descriptors free up (raise the hard limit, or lower --max-conns)"
            );
        }
        if let Some(spec) = config
            .listeners
            .iter()
            .find(|spec| spec.service == ServiceKind::LegacyExec && !spec.addr.ip().is_loopback())
        {
            return Err(StartError::LegacyExecNotLoopback(spec.addr));
        }
        let bus = config.bus.as_ref().map(Bus::new).transpose()?;
        let accounts = match &config.users {
            Some(path) => {
                let mut accounts =
                    Accounts::open(path, config.login.penalties, config.transfers.wait)?;
                if let Some(bus) = &bus {
                    accounts.share_lockouts(bus.lockouts());
                }
                Some(Arc::new(accounts))
            }
            None => None,
        };
        let listeners = config
            .listeners
            .iter()
            .map(Bound::bind)
            .collect::<Result<Vec<_>, _>>()?;
        let partials = PartialLimits {
            ttl: config.partial_ttl,
            max_total: config.max_partials,
            max_per_source: config.max_partials_per_source,
        };
        let store = Store::open(&config.root, partials).map_err(|source| StartError::Store {
            path: config.root.clone(),
            source,
        })?;
        let tls = if listeners.iter().any(|listener| {
            matches!(
                listener.service(),
                ServiceKind::FramedTls | ServiceKind::Https
            )
        }) {
            let identity = server_identity(&config)?;
            Some((identity.server_config()?, identity.fingerprint()))
        } else {
            None
        };
        Ok(Server {
            store,
            accounts,
            bus,
            console: None,
            config: Arc::new(config),
            listeners,
            tls,
        })
    }

    /// The chat room's operator console: lines from `typed` are said to every member as
    /// `<server> text`, and the room's traffic comes back on the returned receiver as
    /// `[room] line`, for the caller to show. The room never waits for that reader: lines past
    /// [`CONSOLE_BACKLOG`](crate::chat::CONSOLE_BACKLOG) unread are dropped.
    pub fn operator_console(&mut self, typed: mpsc::Receiver<String>) -> mpsc::Receiver<String> {
        let (console, traffic) = Console::new(typed);
        self.console = Some(console);
        traffic
    }

    /// Every listener with the address it is bound to, in the order they were declared.
    pub fn listening(&self) -> Vec<(ServiceKind, SocketAddr)> {
        self.listeners
            .iter()
            .filter_map(|listener| Some((listener.service(), listener.local_addr().ok()?)))
            .collect()
    }

    /// The fingerprint of the TLS listeners' certificate, which clients pin; `None` without
    /// TLS listeners.
    pub fn fingerprint(&self) -> Option<Fingerprint> {
        self.tls.as_ref().map(|(_, fingerprint)| *fingerprint)
    }

    /// Serves until `shutdown` completes, then shuts down gracefully.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let config = self.config;
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        let limiter = ConnLimiter::new(config.max_conns, config.max_conns_per_source);

        let exec_slots = Arc::new(tokio::sync::Semaphore::new(config.exec.max_running));
        let core = Core::new(
            Arc::clone(&self.store),
            self.accounts,
            &config,
            Arc::clone(&exec_slots),
        );
        match &core.accounts {
            Some(accounts) => tracing::info!(
                users = accounts.len(),
                "accounts loaded: login required for everything but ping and echo"
            ),
            None => tracing::info!("no users file: files open to all, exec disabled"),
        }
        warn_of_clear_passwords(&config);
        let http_core = core.clone();
        let framed = Arc::new(Framed::new(&config, core));
        // The rooms' members reached through streams (browsers), shared with the UDP room.
        let (hub, mut hub_members) = {
            let (hub, members) = chat_hub::hub();
            (hub, Some(members))
        };
        tasks.spawn(sweep_partials(Arc::clone(&self.store), stop.clone()));
        let mut console = self.console;
        for listener in self.listeners {
            match listener {
                Bound::Framed(tcp) => {
                    spawn_accept(&tasks, tcp, Arc::clone(&framed), &limiter, &stop);
                }
                Bound::FramedTls(tcp) => {
                    let (tls_config, _) = self.tls.clone().expect("bound with a TLS listener");
                    let framed = Arc::clone(&framed);
                    let service = TlsFramed::new(framed, tls_config, config.header_timeout);
                    spawn_accept(&tasks, tcp, Arc::new(service), &limiter, &stop);
                }
                Bound::Chat(udp) => {
                    let members = hub_members.take().unwrap_or_else(|| chat_hub::hub().1);
                    match &self.bus {
                        Some(bus) => {
                            let (link, node) = bus.link(stop.clone());
                            tasks.spawn(node);
                            let host = RoomHost::new(config.chat, link, console.take());
                            let room =
                                udp_chat::serve(udp, host, config.chat, members, stop.clone());
                            tasks.spawn(room);
                        }
                        None => {
                            let host = RoomHost::new(config.chat, LocalLink, console.take());
                            let room =
                                udp_chat::serve(udp, host, config.chat, members, stop.clone());
                            tasks.spawn(room);
                        }
                    }
                }
                Bound::LegacyEcho(tcp) => {
                    let service = legacy::LegacyEcho::new(config.idle_timeout);
                    spawn_accept(&tasks, tcp, Arc::new(service), &limiter, &stop);
                }
                Bound::LegacyExec(tcp) => {
                    tracing::warn!(
                        "legacy-exec: anyone on this machine can run commands as this user, without a login"
                    );
                    let slots = Arc::clone(&exec_slots);
                    let service = legacy::LegacyExec::new(config.idle_timeout, config.exec, slots);
                    spawn_accept(&tasks, tcp, Arc::new(service), &limiter, &stop);
                }
                Bound::UdpEcho(udp) => {
                    tasks.spawn(udp_echo::serve(udp, config.udp_echo, stop.clone()));
                }
                Bound::Http { tcp, tls } => {
                    let tls_config = if tls {
                        self.tls.clone().map(|(config, _)| config)
                    } else {
                        None
                    };
                    let service =
                        HttpFront::new(&config, http_core.clone(), tls_config, hub.clone());
                    spawn_accept(&tasks, tcp, Arc::new(service), &limiter, &stop);
                }
            }
        }
        // Browsers chat even without a UDP room: the rooms then have no socket of their own.
        if let Some(members) = hub_members {
            if config
                .listeners
                .iter()
                .any(|spec| matches!(spec.service, ServiceKind::Http | ServiceKind::Https))
            {
                match &self.bus {
                    Some(bus) => {
                        let (link, node) = bus.link(stop.clone());
                        tasks.spawn(node);
                        let host = RoomHost::new(config.chat, link, console.take());
                        tasks.spawn(chat_hub::serve_alone(host, members, stop.clone()));
                    }
                    None => {
                        let host = RoomHost::new(config.chat, LocalLink, console.take());
                        tasks.spawn(chat_hub::serve_alone(host, members, stop.clone()));
                    }
                }
            }
        }

        shutdown.await;
        tracing::info!("shutting down");
        stop.cancel();
        tasks.close();
        // Requests still running when the timeout passes are cut short with a reply; give
        // those replies the time to go out before closing what is left.
        let limit = config.shutdown_timeout + CUT_REPLY_TIME;
        if tokio::time::timeout(limit, tasks.wait()).await.is_err() {
            tracing::warn!(
                remaining = tasks.len(),
                "connections still busy after {limit:?}; closing them"
            );
        }
    }
}

/// The TLS identity `config` names: its PEM files, or the one kept under the store.
fn server_identity(config: &ServerConfig) -> Result<ServerIdentity, IdentityError> {
    match &config.tls {
        TlsIdentity::Files { cert, key } => ServerIdentity::from_pem_files(cert, key),
        TlsIdentity::Kept => {
            let dir = config.root.join(BOOKKEEPING_DIR).join("tls");
            let (identity, generated) = ServerIdentity::kept_in(&dir)?;
            if generated {
                tracing::info!(
                    fingerprint = %identity.fingerprint(),
                    "generated a self-signed TLS certificate, kept in the store"
                );
            }
            Ok(identity)
        }
    }
}

/// Warns, loudly, when accounts are served in the clear beyond this machine: passwords and
/// everything after a login would cross the network readable by anyone on the path.
fn warn_of_clear_passwords(config: &ServerConfig) {
    if config.users.is_none() {
        return;
    }
    for spec in &config.listeners {
        let clear = matches!(spec.service, ServiceKind::Framed | ServiceKind::Http);
        if clear && !spec.addr.ip().is_loopback() {
            tracing::warn!(
                "WARNING: accounts are served without TLS on {}, which is not a loopback address: \
                 passwords, files and command output cross the network in the clear. Use --tls.",
                spec.addr
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

/// Time after the shutdown timeout for the replies of requests cut short to reach their
/// clients (the graceful close of a connection lingers up to 2 s).
const CUT_REPLY_TIME: std::time::Duration = std::time::Duration::from_secs(3);

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
