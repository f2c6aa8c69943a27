//! `--udp-echo`: every datagram goes back to its sender, ASCII letters upper-cased, as the
//! tutorials' `socketserver.ThreadingUDPServer` example does.

use std::io;
use std::net::SocketAddr;

use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

/// Largest UDP payload over IPv4; every datagram fits the receive buffer whole.
pub(crate) const MAX_DATAGRAM: usize = 65_507;

/// Receives datagrams until `stop`, handing each to `handle` with its sender. The buffer is
/// the handler's to modify, so a reply can be built in place.
async fn receive_loop(
    socket: &UdpSocket,
    stop: &CancellationToken,
    mut handle: impl AsyncDatagramHandler,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    loop {
        let received = tokio::select! {
            () = stop.cancelled() => return,
            received = socket.recv_from(&mut buf) => received,
        };
        match received {
            Ok((len, from)) => handle.datagram(socket, &mut buf[..len], from).await,
            // An ICMP error from an earlier send, or a transient shortage: keep serving.
            Err(err) => tracing::debug!(%err, "udp receive failed"),
        }
    }
}

/// What a UDP listener does with each datagram.
trait AsyncDatagramHandler {
    async fn datagram(&mut self, socket: &UdpSocket, data: &mut [u8], from: SocketAddr);
}

/// `--udp-echo`: every datagram goes back to its sender, ASCII letters upper-cased.
struct UpperEcho;

impl AsyncDatagramHandler for UpperEcho {
    async fn datagram(&mut self, socket: &UdpSocket, data: &mut [u8], from: SocketAddr) {
        data.make_ascii_uppercase();
        if let Err(err) = socket.send_to(data, from).await {
            log_send_error(&err, from);
        }
    }
}

pub(crate) async fn serve_echo(socket: UdpSocket, stop: CancellationToken) {
    receive_loop(&socket, &stop, UpperEcho).await;
}

fn log_send_error(err: &io::Error, to: SocketAddr) {
    tracing::debug!(%err, %to, "udp send failed");
}
