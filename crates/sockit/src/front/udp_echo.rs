//! `--udp-echo`: every datagram goes back to its sender, ASCII letters upper-cased, as the
//! tutorials' `socketserver.ThreadingUDPServer` example does.

use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

/// The receive buffer's size: the largest length a UDP header can declare, so that no datagram
/// (IPv6 allows payloads up to 65,527 bytes) is truncated before it is echoed.
const RECEIVE_BUFFER: usize = 65_535;

/// Echoes datagrams until `stop`, upper-casing each in place.
pub(crate) async fn serve(socket: UdpSocket, stop: CancellationToken) {
    let mut buf = vec![0u8; RECEIVE_BUFFER];
    loop {
        let received = tokio::select! {
            () = stop.cancelled() => return,
            received = socket.recv_from(&mut buf) => received,
        };
        let (len, from) = match received {
            Ok(received) => received,
            // An ICMP error from an earlier send, or a transient shortage: keep serving.
            Err(err) => {
                tracing::debug!(%err, "udp receive failed");
                continue;
            }
        };
        buf[..len].make_ascii_uppercase();
        if let Err(err) = socket.send_to(&buf[..len], from).await {
            tracing::debug!(%err, to = %from, "udp send failed");
        }
    }
}
