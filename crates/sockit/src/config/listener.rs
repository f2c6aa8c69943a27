//! The listeners of `sockit serve`, each declared once: a service and the address to bind.

use std::fmt;
use std::net::SocketAddr;

/// The services `sockit serve` can listen for, named as in its `listening` lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceKind {
    /// The framed protocol, over TCP (`tcp`).
    Framed,
    /// The framed protocol, over TLS 1.3 (`tls`), with the server's
    /// [`TlsIdentity`](crate::config::TlsIdentity).
    FramedTls,
    /// The chat room, over UDP (`udp`).
    Chat,
    /// Raw TCP upper-case echo (`legacy-echo`).
    LegacyEcho,
    /// Raw TCP remote commands for the tutorials' clients (`legacy-exec`).
    LegacyExec,
    /// UDP upper-case echo (`udp-echo`).
    UdpEcho,
    /// The browser front end and its HTTP API (`http`).
    Http,
    /// The browser front end over TLS (`https`), with the server's
    /// [`TlsIdentity`](crate::config::TlsIdentity).
    Https,
}

impl ServiceKind {
    /// The service's name in `listening <service> <addr>`.
    pub fn name(self) -> &'static str {
        match self {
            ServiceKind::Framed => "tcp",
            ServiceKind::FramedTls => "tls",
            ServiceKind::Chat => "udp",
            ServiceKind::LegacyEcho => "legacy-echo",
            ServiceKind::LegacyExec => "legacy-exec",
            ServiceKind::UdpEcho => "udp-echo",
            ServiceKind::Http => "http",
            ServiceKind::Https => "https",
        }
    }
}

impl fmt::Display for ServiceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One listener: which service, on which address.
///
/// The server binds its listeners in the order they are declared and reports them in that order
/// (`listening <service> <addr>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerSpec {
    /// What it serves.
    pub service: ServiceKind,
    /// Where; port 0 lets the kernel pick a free port.
    pub addr: SocketAddr,
}

impl ListenerSpec {
    /// A listener for `service` on `addr`.
    pub fn new(service: ServiceKind, addr: SocketAddr) -> ListenerSpec {
        ListenerSpec { service, addr }
    }
}
