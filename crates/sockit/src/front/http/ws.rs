//! The chat WebSocket at `/chat`: each text message is one chat line, both ways, exactly as a
//! datagram in the UDP room, and the rooms are the same ones (through the
//! [`ChatHub`](crate::front::chat_hub::ChatHub)).
//!
//! A WebSocket member joins with its first line, named after its address (`ip:port`) like a
//! UDP member, and is held to the same rules: the chat rate limit and the line length (a longer
//! line is answered `! message too long`; a message over [`MAX_MESSAGE`] closes the socket).
//! The reflection rule's budgets do not apply: TCP has proven the address. A peer silent for
//! the idle timeout (pings answered count) is closed, and so is one that stops reading.
//!
//! Each socket has two tasks: one reads the peer and is woken only when the peer sends; the
//! other writes the room's lines, all those waiting (up to [`LINES_PER_WRITE`]) as one write,
//! so that a busy room costs one system call per batch rather than one per line. The room
//! never waits for either: a peer that does not read loses lines (see
//! [`chat_hub`](crate::front::chat_hub)).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use sockit_proto::ErrorCode;
use tokio_util::task::AbortOnDropHandle;

use super::routes::{error_response, WebState};
use super::ConnInfo;
use crate::core::OpError;
use crate::front::chat_hub::{HubMember, HubVoice};

/// The largest WebSocket message (and frame) taken: larger closes the socket. Lines between
/// the chat's line limit and this are answered by the room.
pub(crate) const MAX_MESSAGE: usize = 64 * 1024;

/// Lines written to the socket at most before it is flushed.
const LINES_PER_WRITE: usize = 256;

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
async fn relay(socket: WebSocket, member: HubMember, conn: ConnInfo, idle: Duration) {
    let HubMember { voice, mut lines } = member;
    let (mut sink, stream) = socket.split();
    // Its own task, so that the room's lines do not wake it: each read attempt costs the
    // WebSocket codec a fill of its read buffer. Ends with the relay (and the voice with it).
    let mut reading = AbortOnDropHandle::new(tokio::spawn(listen(stream, voice, idle)));
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.reset();
    let mut batch = Vec::new();
    let close = loop {
        tokio::select! {
            () = conn.stop.cancelled() => break true,
            heard = &mut reading => break matches!(heard, Ok(Heard::Silent)),
            taken = lines.recv_many(&mut batch, LINES_PER_WRITE) => {
                if taken == 0 {
                    break true; // the room is gone
                }
                if !write(&mut sink, batch.drain(..), idle).await {
                    return;
                }
            }
            _ = ping.tick() => {
                if !write_message(&mut sink, Message::Ping(Default::default()), idle).await {
                    return;
                }
            }
        }
    };
    if close {
        let _ = write_message(&mut sink, Message::Close(None), idle).await;
    }
}

/// How the peer's side of a socket ended.
enum Heard {
    /// It closed, failed, or the room is gone.
    Gone,
    /// Nothing came from it, not even a pong, for the idle timeout.
    Silent,
}

/// Hands the peer's lines to the room, and its pongs as signs of life, until it goes or is
/// silent for `idle`.
async fn listen(mut stream: SplitStream<WebSocket>, voice: HubVoice, idle: Duration) -> Heard {
    loop {
        let Ok(received) = tokio::time::timeout(idle, stream.next()).await else {
            return Heard::Silent;
        };
        let data = match received {
            Some(Ok(Message::Text(text))) => text.as_bytes().to_vec(),
            Some(Ok(Message::Binary(data))) => data.to_vec(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {
                voice.alive();
                continue;
            }
            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return Heard::Gone,
        };
        if !voice.say(data).await {
            return Heard::Gone;
        }
    }
}

/// Writes `lines` to the peer, one message each, and flushes once; `false` when the socket
/// failed or the peer did not take them within `idle`.
async fn write(
    sink: &mut SplitSink<WebSocket, Message>,
    lines: impl Iterator<Item = Arc<str>>,
    idle: Duration,
) -> bool {
    let written = tokio::time::timeout(idle, async {
        for line in lines {
            sink.feed(Message::Text(line.as_ref().into())).await?;
        }
        sink.flush().await
    });
    matches!(written.await, Ok(Ok(())))
}

/// Writes one message and flushes; `false` as [`write`].
async fn write_message(
    sink: &mut SplitSink<WebSocket, Message>,
    message: Message,
    idle: Duration,
) -> bool {
    matches!(
        tokio::time::timeout(idle, sink.send(message)).await,
        Ok(Ok(()))
    )
}
