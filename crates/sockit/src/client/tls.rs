//! Reaching a server over TLS ([`Tls`]), and choosing TLS or plain TCP when the program runs
//! ([`Endpoint`]).
//!
//! [`Tls`] connects over TCP, completes the TLS 1.3 handshake within the connect timeout,
//! judges the server's certificate by the client's [`Trust`] before sending anything of its
//! own, and exposes the connection's channel binding, which a key login signs.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::{ClientError, Connect, Tcp};
use crate::tls::{channel_binding, ChannelBinding, Fingerprint, Trust, TrustError, Verdict};

/// What to do when a server is met for the first time and its fingerprint recorded: show the
/// user (`host:port`, the fingerprint, the known-servers file).
pub type FirstUseNotice = Arc<dyn Fn(&str, Fingerprint, &std::path::Path) + Send + Sync>;

/// TLS over TCP to `host:port`, trusting the server as a [`Trust`] says.
#[derive(Clone)]
pub struct Tls {
    tcp: Tcp,
    trust: Trust,
    connector: TlsConnector,
    name: ServerName<'static>,
    on_first_use: Option<FirstUseNotice>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("server", &self.tcp.addr)
            .field("trust", &self.trust)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// TLS to `addr` (`host:port`).
    ///
    /// # Errors
    ///
    /// A CA file that cannot be used.
    pub fn new(addr: &str, trust: Trust) -> Result<Tls, TrustError> {
        let config = trust.client_config()?;
        let host = host_of(addr);
        // A name that is neither a DNS name nor an IP address can still be pinned: the name
        // only matters to a CA check, which then fails on it.
        let name = ServerName::try_from(host.to_owned())
            .unwrap_or_else(|_| ServerName::try_from("invalid.invalid").expect("a DNS name"));
        Ok(Tls {
            tcp: Tcp::new(addr),
            trust,
            connector: TlsConnector::from(config),
            name,
            on_first_use: None,
        })
    }

    /// The same, giving up on connecting (and the handshake) after `timeout`.
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Tls {
        self.tcp = self.tcp.connect_timeout(timeout);
        self
    }

    /// Calls `notice` when a server's fingerprint is recorded for the first time.
    #[must_use]
    pub fn on_first_use(mut self, notice: FirstUseNotice) -> Tls {
        self.on_first_use = Some(notice);
        self
    }

    /// The handshake over `tcp`, given up at `deadline`.
    async fn handshake(
        &self,
        tcp: TcpStream,
        deadline: tokio::time::Instant,
    ) -> Result<TlsStream<TcpStream>, ClientError> {
        let server = &self.tcp.addr;
        let handshake = self.connector.connect(self.name.clone(), tcp);
        let stream = match tokio::time::timeout_at(deadline, handshake).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(err)) => return Err(handshake_error(server, &err).into()),
            Err(_) => {
                return Err(ClientError::Connect {
                    addr: server.clone(),
                    source: self.tcp.timed_out("no TLS handshake"),
                })
            }
        };
        let certificate = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .ok_or_else(|| TrustError::Handshake {
                server: server.clone(),
                reason: "the server presented no certificate".into(),
            })?;
        if let Verdict::FirstUse(fingerprint) = self.trust.judge(server, certificate)? {
            if let (Some(notice), Trust::FirstUse(known)) = (&self.on_first_use, &self.trust) {
                notice(server, fingerprint, known.path());
            }
        }
        Ok(stream)
    }
}

/// The host part of `host:port` (without the brackets of an IPv6 address).
fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// A failed handshake in words: a server that answered in plain frames is named as such.
fn handshake_error(server: &str, err: &io::Error) -> TrustError {
    let rustls_error = err
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match rustls_error {
        Some(rustls::Error::InvalidMessage(_)) => TrustError::NotTls {
            server: server.to_owned(),
        },
        Some(other) => TrustError::Handshake {
            server: server.to_owned(),
            reason: other.to_string(),
        },
        None if err.kind() == io::ErrorKind::UnexpectedEof => TrustError::Handshake {
            server: server.to_owned(),
            reason:
                "the server closed the connection (it may be busy, or not speak TLS on this port)"
                    .into(),
        },
        None => TrustError::Handshake {
            server: server.to_owned(),
            reason: super::describe_io_error(err),
        },
    }
}

impl Connect for Tls {
    type Stream = TlsStream<TcpStream>;

    /// Connects and completes the handshake, both within the connect timeout.
    async fn connect(&self) -> Result<Self::Stream, ClientError> {
        let deadline = tokio::time::Instant::now() + self.tcp.connect_timeout;
        let tcp = self.tcp.connect_by(deadline).await?;
        self.handshake(tcp, deadline).await
    }

    fn channel_binding(stream: &Self::Stream) -> Option<ChannelBinding> {
        channel_binding(stream.get_ref().1)
    }

    fn peer_addr(stream: &Self::Stream) -> Option<SocketAddr> {
        stream.get_ref().0.peer_addr().ok()
    }
}

/// Plain TCP or TLS, as the user chose when the program ran.
#[derive(Debug, Clone)]
pub enum Endpoint {
    /// Plain TCP.
    Tcp(Tcp),
    /// TLS over TCP.
    Tls(Tls),
}

impl Endpoint {
    /// Whether the connection is encrypted.
    pub fn is_tls(&self) -> bool {
        matches!(self, Endpoint::Tls(_))
    }
}

/// The stream an [`Endpoint`] opens.
#[derive(Debug)]
pub enum EndpointStream {
    /// Plain TCP.
    Tcp(TcpStream),
    /// TLS over TCP.
    Tls(Box<TlsStream<TcpStream>>),
}

impl Connect for Endpoint {
    type Stream = EndpointStream;

    async fn connect(&self) -> Result<EndpointStream, ClientError> {
        match self {
            Endpoint::Tcp(tcp) => tcp.connect().await.map(EndpointStream::Tcp),
            Endpoint::Tls(tls) => tls
                .connect()
                .await
                .map(|stream| EndpointStream::Tls(Box::new(stream))),
        }
    }

    fn channel_binding(stream: &EndpointStream) -> Option<ChannelBinding> {
        match stream {
            EndpointStream::Tcp(_) => None,
            EndpointStream::Tls(tls) => Tls::channel_binding(tls),
        }
    }

    fn peer_addr(stream: &EndpointStream) -> Option<SocketAddr> {
        match stream {
            EndpointStream::Tcp(tcp) => Tcp::peer_addr(tcp),
            EndpointStream::Tls(tls) => Tls::peer_addr(tls),
        }
    }
}

impl AsyncRead for EndpointStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            EndpointStream::Tcp(tcp) => Pin::new(tcp).poll_read(cx, buf),
            EndpointStream::Tls(tls) => Pin::new(tls).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for EndpointStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            EndpointStream::Tcp(tcp) => Pin::new(tcp).poll_write(cx, buf),
            EndpointStream::Tls(tls) => Pin::new(tls).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            EndpointStream::Tcp(tcp) => Pin::new(tcp).poll_write_vectored(cx, bufs),
            EndpointStream::Tls(tls) => Pin::new(tls).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            EndpointStream::Tcp(tcp) => tcp.is_write_vectored(),
            EndpointStream::Tls(tls) => tls.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            EndpointStream::Tcp(tcp) => Pin::new(tcp).poll_flush(cx),
            EndpointStream::Tls(tls) => Pin::new(tls).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            EndpointStream::Tcp(tcp) => Pin::new(tcp).poll_shutdown(cx),
            EndpointStream::Tls(tls) => Pin::new(tls).poll_shutdown(cx),
        }
    }
}
