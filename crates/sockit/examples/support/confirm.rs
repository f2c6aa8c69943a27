//! What the chat load generators share: a member proving its address to the room.

use sockit::chat::confirm::{asked_token, CONFIRMED};
use tokio::net::UdpSocket;

/// Proves to the room that `socket` receives, so that the budget of unproven addresses does
/// not cap what it is sent: a first datagram long enough for the ask, then its token back.
pub(crate) async fn confirm(socket: &UdpSocket) {
    socket
        .send(format!("{:<128}", "/confirm").as_bytes())
        .await
        .unwrap();
    let mut buf = [0u8; 4096];
    let token = loop {
        let len = socket.recv(&mut buf).await.unwrap();
        let line = String::from_utf8_lossy(&buf[..len]);
        if let Some(token) = asked_token(&line) {
            break token.to_owned();
        }
    };
    socket
        .send(format!("/confirm {token}").as_bytes())
        .await
        .unwrap();
    loop {
        let len = socket.recv(&mut buf).await.unwrap();
        if buf[..len].starts_with(CONFIRMED.as_bytes()) {
            return;
        }
    }
}
