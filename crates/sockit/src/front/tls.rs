//! `--tls`: the framed protocol over TLS 1.3. A thin acceptor in front of [`Framed`]: it tells
//! a TLS client from a plain one by the first bytes, completes the handshake within the
//! header timeout, and hands the encrypted stream, with its channel binding, to the same
//! connection loop as plain TCP.
//!
//! A client that sends plain frames gets one plain error reply, `tls_required`, and the
//! connection closes: the only unencrypted bytes this listener ever writes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use sockit_proto::message::{error_reply, ErrorReply};
use sockit_proto::ErrorCode;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::framed::Framed;
use super::TcpService;
use crate::connection::Connection;
use crate::tls::channel_binding;

/// Serves the framed protocol to TLS clients.
pub(crate) struct TlsFramed {
    framed: Arc<Framed>,
    acceptor: TlsAcceptor,
    /// How long a new connection has to show what it speaks and finish the handshake.
    handshake_timeout: Duration,
}

/// What a new connection's first bytes say it speaks.
enum Greeting {
    /// A TLS handshake record.
    Tls,
    /// Anything else: a plain frame, most likely.
    Plain,
    /// Nothing within the timeout, or the peer left.
    Silent,
}

impl TlsFramed {
    pub(crate) fn new(
        framed: Arc<Framed>,
        config: Arc<rustls::ServerConfig>,
        handshake_timeout: Duration,
    ) -> TlsFramed {
        TlsFramed {
            framed,
            acceptor: TlsAcceptor::from(config),
            handshake_timeout,
        }
    }

    /// The handshake, within the timeout; `None` (and a debug line) when it fails.
    async fn handshake(&self, stream: TcpStream) -> Option<TlsStream<TcpStream>> {
        match tokio::time::timeout(self.handshake_timeout, self.acceptor.accept(stream)).await {
            Ok(Ok(tls)) => Some(tls),
            Ok(Err(err)) => {
                tracing::debug!(%err, "TLS handshake failed");
                None
            }
            Err(_) => {
                tracing::debug!("TLS handshake timed out");
                None
            }
        }
    }

    /// Answers a plain client with `tls_required`, then closes.
    async fn refuse_plain(&self, stream: TcpStream) {
        tracing::debug!("plain frames on the TLS port");
        let mut conn = Connection::new(stream, self.framed.limits(), self.framed.deadlines());
        let reply = ErrorReply::new(
            ErrorCode::TlsRequired,
            "this port speaks TLS only: connect with TLS (sockit --tls)",
        );
        error_reply(conn.write_buf(), None, &reply);
        conn.close().await;
    }
}

impl TcpService for TlsFramed {
    async fn serve(self: Arc<Self>, stream: TcpStream, peer: SocketAddr, stop: CancellationToken) {
        let _ = stream.set_nodelay(true);
        match greeting(&stream, self.handshake_timeout).await {
            Greeting::Silent => {}
            Greeting::Plain => self.refuse_plain(stream).await,
            Greeting::Tls => {
                let Some(tls) = self.handshake(stream).await else {
                    return;
                };
                let binding = channel_binding(tls.get_ref().1);
                self.framed.serve_stream(tls, peer, binding, stop).await;
            }
        }
    }

    async fn refuse_busy(self: Arc<Self>, stream: TcpStream) {
        match greeting(&stream, self.handshake_timeout).await {
            Greeting::Silent => {}
            Greeting::Plain => self.refuse_plain(stream).await,
            Greeting::Tls => {
                if let Some(tls) = self.handshake(stream).await {
                    self.framed.refuse_busy_on(tls).await;
                }
            }
        }
    }
}

/// The first bytes of a TLS connection: a handshake record (22) of a TLS version 3.x. A plain
/// frame starting so would announce a header of at least 66,326 bytes.
const TLS_HANDSHAKE_START: [u8; 2] = [0x16, 0x03];

/// Looks at (without taking) the first bytes the client sends.
async fn greeting(stream: &TcpStream, timeout: Duration) -> Greeting {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut first = [0u8; 2];
    loop {
        match tokio::time::timeout_at(deadline, stream.peek(&mut first)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return Greeting::Silent,
            Ok(Ok(1)) if first[0] == TLS_HANDSHAKE_START[0] => {
                // Only the first byte is here; the second decides. Clients send a greeting
                // whole, so this is rare: wait a little and look again.
                if tokio::time::Instant::now() >= deadline {
                    return Greeting::Silent;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Ok(Ok(len)) if first[..len] == TLS_HANDSHAKE_START[..len] => return Greeting::Tls,
            Ok(Ok(_)) => return Greeting::Plain,
        }
    }
}
