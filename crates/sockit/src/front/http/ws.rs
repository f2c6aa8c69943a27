//! The chat WebSocket at `/chat`: each text message is one chat line, both ways, exactly as a
//! datagram in the UDP room, and the rooms are the same ones (through the
//! [`ChatHub`](crate::front::chat_hub::ChatHub)).
//!
//! A WebSocket member joins with its first line, named after its address (`ip:port`) like a
//! UDP member, and is held to the same rules: the chat rate limit and the line length (a longer
//! line is answered `! message too long`; a message over [`MAX_MESSAGE`] closes the socket).
//! The reflection rule's budgets do not apply: TCP has proven the address. A peer silent for
//! the idle timeout (pings answered count) is closed, and so is one that stops reading.

use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use sockit_proto::ErrorCode;
use tokio::time::Instant;

use super::routes::{error_response, WebState};
use super::ConnInfo;
use crate::core::OpError;
use crate::front::chat_hub::HubMember;

/// The largest WebSocket message (and frame) taken: larger closes the socket. Lines between
/// the chat's line limit and this are answered by the room.
pub(crate) const MAX_MESSAGE: usize = 64 * 1024;

/// How often a quiet socket is pinged, so that a live browser is never taken for a silent one.
const PING_EVERY: Duration = Duration::from_secs(30);

/// `GET /chat` with a WebSocket upgrade.
pub(super) async fn chat(
    State(web): WebState,
    Extension(conn): Extension<ConnInfo>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let Some(member) = web.hub.connect(conn.peer.to_string()).await else {
        return error_response(&OpError::new(
            ErrorCode::Disabled,
            "the chat room is closed",
        ));
    };
    let idle = web.idle_timeout;
    let token = conn.upgraded.token();
    upgrade
        .max_message_size(MAX_MESSAGE)
        .max_frame_size(MAX_MESSAGE)
        .on_upgrade(move |socket| async move {
            let _token = token;
            relay(socket, member, conn, idle).await;
        })
        .into_response()
}

/// Carries lines between the socket and the room until either side goes, the peer falls
/// silent for `idle`, or the server stops.
async fn relay(mut socket: WebSocket, mut member: HubMember, conn: ConnInfo, idle: Duration) {
    let mut heard = Instant::now();
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.reset();
    loop {
        let send = tokio::select! {
            () = conn.stop.cancelled() => Message::Close(None),
            line = member.lines.recv() => match line {
                Some(line) => Message::Text(line.as_ref().into()),
                None => Message::Close(None),
            },
            received = socket.recv() => {
                let data = match received {
                    Some(Ok(Message::Text(text))) => text.as_bytes().to_vec(),
                    Some(Ok(Message::Binary(data))) => data.to_vec(),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {
                        heard = Instant::now();
                        member.alive();
                        continue;
                    }
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                };
                heard = Instant::now();
                if !member.say(data).await {
                    return;
                }
                continue;
            }
            _ = ping.tick() => {
                if heard.elapsed() > idle {
                    Message::Close(None)
                } else {
                    Message::Ping(Default::default())
                }
            }
        };
        let closing = matches!(send, Message::Close(_));
        match tokio::time::timeout(idle, socket.send(send)).await {
            Ok(Ok(())) if !closing => {}
            _ => return,
        }
    }
}
