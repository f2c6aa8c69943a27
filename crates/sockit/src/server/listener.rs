//! Binding the declared listeners: a TCP listener or a UDP socket for each, per its service.

use std::io;
use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpSocket, UdpSocket};

use super::StartError;
use crate::config::{ListenerSpec, ServiceKind};

/// A listener bound to its address, not serving yet; the variant says what it will serve.
#[derive(Debug)]
pub(super) enum Bound {
    /// The framed protocol.
    Framed(TcpListener),
    /// The framed protocol over TLS.
    FramedTls(TcpListener),
    /// The chat room.
    Chat(UdpSocket),
    /// Raw TCP upper-case echo.
    LegacyEcho(TcpListener),
    /// Raw TCP remote commands.
    LegacyExec(TcpListener),
    /// UDP upper-case echo.
    UdpEcho(UdpSocket),
    /// The browser front end, plain or (`tls`) HTTPS.
    Http { tcp: TcpListener, tls: bool },
}

impl Bound {
    /// Binds `spec`'s address with the socket its service needs.
    pub(super) fn bind(spec: &ListenerSpec) -> Result<Bound, StartError> {
        let bound = match spec.service {
            ServiceKind::Framed => bind_tcp(spec.addr).map(Bound::Framed),
            ServiceKind::FramedTls => bind_tcp(spec.addr).map(Bound::FramedTls),
            ServiceKind::Chat => bind_udp(spec.addr).map(Bound::Chat),
            ServiceKind::LegacyEcho => bind_tcp(spec.addr).map(Bound::LegacyEcho),
            ServiceKind::LegacyExec => bind_tcp(spec.addr).map(Bound::LegacyExec),
            ServiceKind::UdpEcho => bind_udp(spec.addr).map(Bound::UdpEcho),
            ServiceKind::Http => bind_tcp(spec.addr).map(|tcp| Bound::Http { tcp, tls: false }),
            ServiceKind::Https => bind_tcp(spec.addr).map(|tcp| Bound::Http { tcp, tls: true }),
        };
        bound.map_err(|source| StartError::Bind {
            service: spec.service,
            addr: spec.addr,
            source,
        })
    }

    /// What it serves.
    pub(super) fn service(&self) -> ServiceKind {
        match self {
            Bound::Framed(_) => ServiceKind::Framed,
            Bound::FramedTls(_) => ServiceKind::FramedTls,
            Bound::Chat(_) => ServiceKind::Chat,
            Bound::LegacyEcho(_) => ServiceKind::LegacyEcho,
            Bound::LegacyExec(_) => ServiceKind::LegacyExec,
            Bound::UdpEcho(_) => ServiceKind::UdpEcho,
            Bound::Http { tls: false, .. } => ServiceKind::Http,
            Bound::Http { tls: true, .. } => ServiceKind::Https,
        }
    }

    /// The address actually bound (the port the kernel picked, for port 0).
    pub(super) fn local_addr(&self) -> io::Result<SocketAddr> {
        match self {
            Bound::Framed(tcp)
            | Bound::FramedTls(tcp)
            | Bound::LegacyEcho(tcp)
            | Bound::LegacyExec(tcp)
            | Bound::Http { tcp, .. } => tcp.local_addr(),
            Bound::Chat(udp) | Bound::UdpEcho(udp) => udp.local_addr(),
        }
    }
}

/// A TCP listener with `SO_REUSEADDR`, so a restarted server can bind while old connections
/// linger in `TIME_WAIT`.
fn bind_tcp(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Receive buffer asked for on UDP sockets, so that bursts are queued rather than dropped. The
/// kernel caps it at `net.core.rmem_max`.
const UDP_RECEIVE_BUFFER: usize = 4 * 1024 * 1024;

fn bind_udp(addr: SocketAddr) -> io::Result<UdpSocket> {
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
}
