//! `--http`: the browser front end. The page, its assets and an HTTP API over the same core as
//! the framed port: the file store (list, download with `Range`, atomic verified upload, tus
//! resumable uploads), logins with the same users file and lockouts, and the chat rooms over a
//! WebSocket.
//!
//! The HTTP grammar is hyper's (through axum's router); this module only translates. Each
//! connection is served by hyper's HTTP/1.1 server with:
//! - a request head of at most [`MAX_HEAD`] bytes, else `431` and the connection closes;
//! - the head within the header timeout once begun, and the connection closed after the idle
//!   timeout without a byte moving either way ([`guard`]);
//! - request bodies read through [`body::RequestBody`], held to the same idle timeout and
//!   transfer pace as a framed body.
//!
//! Under `--tls` the listener speaks HTTPS with the server's one identity.
//!
//! - [`routes`]: the router, the login wall and the cross-site checks, errors as responses.
//! - [`files`]: `GET /api/files`, `GET /files/<name>`, `PUT /files/<name>`.
//! - [`tus`]: resumable uploads (tus 1.0 core with creation) under `/api/uploads/`.
//! - [`session`]: `POST /api/login`, the session cookies.
//! - [`ws`]: the chat WebSocket at `/chat`.
//! - [`assets`]: the page, compiled into the binary.
//! - [`zero_copy`]: on a plain connection, downloads sent by `sendfile` until the first request
//!   that is not one; hyper serves the rest.

mod assets;
mod body;
mod files;
mod guard;
mod routes;
mod session;
mod tus;
mod ws;
mod zero_copy;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use super::chat_hub::ChatHub;
use super::TcpService;
use crate::config::ServerConfig;
use crate::connection::MinRate;
use crate::core::Core;
use guard::{Activity, Guarded};
use zero_copy::{Prefixed, Served};

/// Largest request head (request line and headers) a connection may send: larger gets `431`.
pub(crate) const MAX_HEAD: usize = 64 * 1024;

/// What every request of a connection knows about it.
#[derive(Debug, Clone)]
pub(crate) struct ConnInfo {
    pub(crate) peer: SocketAddr,
    /// Fires when the server shuts down.
    pub(crate) stop: CancellationToken,
    /// When bytes last moved on the connection, and how many it wrote.
    pub(crate) activity: Activity,
    /// Work that outlives the request on this connection (an upgraded WebSocket): the
    /// connection, and its place under the connection limits, last until it is done.
    pub(crate) upgraded: TaskTracker,
}

/// What the handlers share.
#[derive(Debug)]
pub(crate) struct Web {
    pub(crate) core: Core,
    pub(crate) sessions: session::Sessions,
    /// The connection is HTTPS: cookies are `Secure`.
    pub(crate) secure: bool,
    /// A request body with no byte for this long is cut.
    pub(crate) idle_timeout: Duration,
    /// The chat rooms, when the server has them.
    pub(crate) hub: ChatHub,
}

/// Serves the browser front end on each connection.
pub(crate) struct HttpFront {
    router: axum::Router,
    tls: Option<TlsAcceptor>,
    header_timeout: Duration,
    idle_timeout: Duration,
    /// The pace a download must keep.
    pace: Option<MinRate>,
}

impl HttpFront {
    /// The front end for `config` over `core`, HTTPS with `tls`, chat through `hub`.
    pub(crate) fn new(
        config: &ServerConfig,
        core: Core,
        tls: Option<Arc<rustls::ServerConfig>>,
        hub: ChatHub,
    ) -> HttpFront {
        let web = Arc::new(Web {
            core,
            sessions: session::Sessions::new(config.http.session_ttl, config.http.max_sessions),
            secure: tls.is_some(),
            idle_timeout: config.idle_timeout,
            hub,
        });
        HttpFront {
            pace: web.core.min_rate,
            router: routes::router(web),
            tls: tls.map(|config| {
                let mut config = (*config).clone();
                config.alpn_protocols = vec![b"http/1.1".to_vec()];
                TlsAcceptor::from(Arc::new(config))
            }),
            header_timeout: config.header_timeout,
            idle_timeout: config.idle_timeout,
        }
    }

    /// Serves HTTP/1.1 on `io` until the peer leaves, the connection falls idle, or `stop`
    /// (then the request in progress finishes first).
    async fn serve_http<S>(&self, io: S, idle: Activity, info: ConnInfo)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let upgraded = info.upgraded.clone();
        let router = self.router.clone();
        let stop = info.stop.clone();
        let service = tower::service_fn(move |mut request: hyper::Request<_>| {
            request.extensions_mut().insert(info.clone());
            router.clone().oneshot(request)
        });
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(self.header_timeout)
            .max_buf_size(MAX_HEAD);
        let conn = builder
            .serve_connection(TokioIo::new(io), TowerToHyperService::new(service))
            .with_upgrades();
        tokio::pin!(conn);
        tokio::select! {
            served = conn.as_mut() => {
                if let Err(err) = served {
                    tracing::debug!(%err, "http connection ended");
                }
            }
            () = idle.expired(self.idle_timeout) => {
                tracing::debug!("http connection idle; closed");
            }
            () = idle.too_slow(self.pace) => {
                tracing::debug!("http download slower than the transfer pace; cut");
            }
            () = stop.cancelled() => {
                conn.as_mut().graceful_shutdown();
                tokio::select! {
                    _ = conn.as_mut() => {}
                    () = idle.expired(self.idle_timeout) => {}
                }
            }
        }
        upgraded.close();
        upgraded.wait().await;
    }
}

impl TcpService for HttpFront {
    async fn serve(self: Arc<Self>, stream: TcpStream, peer: SocketAddr, stop: CancellationToken) {
        let _ = stream.set_nodelay(true);
        let stream = Guarded::new(stream);
        let idle = stream.activity();
        let info = ConnInfo {
            peer,
            stop,
            activity: idle.clone(),
            upgraded: TaskTracker::new(),
        };
        match &self.tls {
            None => {
                let mut stream = stream;
                if let Served::Handoff(read) = self.serve_downloads(&mut stream, &info).await {
                    self.serve_http(Prefixed::new(read, stream), idle, info)
                        .await;
                }
            }
            Some(acceptor) => {
                let handshake = acceptor.accept(stream);
                match tokio::time::timeout(self.header_timeout, handshake).await {
                    Ok(Ok(tls)) => self.serve_http(tls, idle, info).await,
                    Ok(Err(err)) => tracing::debug!(%err, "TLS handshake failed"),
                    Err(_) => tracing::debug!("TLS handshake timed out"),
                }
            }
        }
    }

    /// Over its address's share of connections: closed at once, before any work.
    async fn refuse_busy(self: Arc<Self>, stream: TcpStream) {
        drop(stream);
    }
}
