//! Front ends: the ways in, each a thin adapter between a transport's grammar and what the
//! server does. The rules they apply live below them: the operations in [`crate::core`], the
//! chat room's in [`crate::chat`], remote commands in [`crate::command`]. The server binds
//! each listener and hands its socket to the front end; a front end never reaches back into
//! the server.
//!
//! - [`framed`]: the framed protocol (length-prefixed JSON headers and bodies) over any
//!   stream: TCP, or TLS through [`tls`].
//! - [`tls`]: the framed protocol over TLS, an acceptor in front of [`framed`].
//! - [`legacy`]: the tutorials' raw TCP services, upper-case echo and remote commands.
//! - [`udp_chat`]: the chat room over UDP: addresses to members, datagrams to lines.
//! - [`udp_echo`]: UDP upper-case echo.
//! - [`http`]: the browser front end: the page, the file store over HTTP, logins, and the chat
//!   rooms over a WebSocket.
//! - [`chat_hub`]: chat members reached through streams (WebSockets) rather than addresses, for
//!   the room task.
//! - [`udp_batch`]: what both UDP front ends receive and send with: many datagrams a system
//!   call.
//!
//! A TCP front end implements [`TcpService`] and is driven by the server's accept loop, which
//! owns the connection limits and shutdown.

pub(crate) mod chat_hub;
pub(crate) mod framed;
pub(crate) mod http;
pub(crate) mod legacy;
pub(crate) mod tls;
pub(crate) mod udp_batch;
pub(crate) mod udp_chat;
pub(crate) mod udp_echo;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// What a TCP listener serves.
pub(crate) trait TcpService: Send + Sync + 'static {
    /// Serves one connection until it ends or `stop` fires between requests.
    fn serve(
        self: Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
        stop: CancellationToken,
    ) -> impl Future<Output = ()> + Send;

    /// Turns away a connection whose source already has its share of connections.
    fn refuse_busy(self: Arc<Self>, stream: TcpStream) -> impl Future<Output = ()> + Send;
}
