//! Load generator for the chat room's relay to browsers' WebSockets, used by `bench/floor.py`.
//!
//! ```text
//! cargo run --release --example ws_relay_load -- HTTP_ADDR RATE SECONDS [LISTENERS] [--udp-sender ROOM_ADDR]
//! ```
//!
//! Opens LISTENERS (default 10) WebSockets to `ws://HTTP_ADDR/chat` (loopback only), each a
//! member of the lobby named `lN`, and one sender: another WebSocket, or with `--udp-sender` a
//! UDP member of the room at ROOM_ADDR that has proven its address (`/confirm`), so that lines
//! go from the UDP room to the browsers. The sender sends RATE lines a second for SECONDS, each
//! carrying its number and the moment it was sent (a WebSocket sender writes the lines due at
//! each millisecond and flushes once). Every listener notes each line's number, so that a line
//! lost, heard twice or out of order is counted, and when it read it. Prints one line of JSON
//! with the same fields as `udp_relay_load`: lines sent, deliveries expected and received,
//! lines lost, duplicated and out of order, deliveries per second, and the latency from just
//! before a line was sent to when a listener read it (p50, p99, max, in milliseconds). The
//! listeners stop once the room has been quiet for a second, and every member leaves at the
//! end.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

#[path = "support/confirm.rs"]
mod confirm;
#[path = "support/relay.rs"]
mod relay;

use confirm::confirm;
use relay::{line, parse, since_epoch, summary, Heard, Pace};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long the room may be quiet before a listener counts its lines as all in.
const QUIET: Duration = Duration::from_secs(1);

/// A WebSocket member of the lobby, named `name`: its answer to `/nick` has come. Nagle's
/// algorithm is off, as browsers have it.
async fn member(http: SocketAddr, name: &str) -> Ws {
    let url = format!("ws://{http}/chat");
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, None, true)
        .await
        .expect("the chat WebSocket");
    ws.send(Message::text(format!("/nick {name}")))
        .await
        .unwrap();
    let renamed = format!("* you are now {name}\n");
    loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
            Ok(Some(Ok(Message::Text(text)))) if text.as_str() == renamed => return ws,
            Ok(Some(Ok(_))) => {}
            other => panic!("{name}: no answer to /nick: {other:?}"),
        }
    }
}

/// Counts the sender's lines arriving on `ws` until the room is quiet for [`QUIET`] or
/// `deadline` passes, then closes the socket (the member leaves).
async fn listen(mut ws: Ws, total: u64, deadline: tokio::time::Instant) -> Heard {
    let mut heard = Heard::new(total);
    while let Ok(Some(Ok(message))) =
        tokio::time::timeout_at(deadline.min(tokio::time::Instant::now() + QUIET), ws.next()).await
    {
        if let Message::Text(text) = message {
            let read = since_epoch();
            if let Some((seq, sent)) = parse(text.as_bytes()) {
                heard.line(seq, sent, read);
            }
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
    heard
}

/// Sends the lines due at each millisecond on a WebSocket, flushing once for all of them, and
/// reads (and drops) what the room says to the sender meanwhile. Returns the seconds it took.
async fn send_ws(ws: Ws, mut pace: Pace) -> f64 {
    let (mut sink, mut stream) = ws.split();
    let draining = tokio::spawn(async move { while let Some(Ok(_)) = stream.next().await {} });
    while !pace.done() {
        for seq in pace.due() {
            sink.feed(Message::text(line(seq))).await.unwrap();
        }
        sink.flush().await.unwrap();
        pace.wait().await;
    }
    let sending = pace.elapsed();
    let _ = tokio::time::timeout(Duration::from_secs(1), sink.close()).await;
    let _ = tokio::time::timeout(Duration::from_secs(1), draining).await;
    sending
}

/// Sends the lines due at each millisecond as datagrams from a UDP member; it leaves at the
/// end. Returns the seconds it took.
async fn send_udp(socket: UdpSocket, mut pace: Pace) -> f64 {
    while !pace.done() {
        for seq in pace.due() {
            socket.send(line(seq).as_bytes()).await.unwrap();
        }
        pace.wait().await;
    }
    let sending = pace.elapsed();
    let _ = socket.send(b"/leave").await;
    sending
}

/// A UDP member of the room at `room`, proven and named `sender`.
async fn udp_sender(room: SocketAddr) -> UdpSocket {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.connect(room).await.unwrap();
    confirm(&socket).await;
    socket.send(b"/nick sender").await.unwrap();
    let mut buf = [0u8; 4096];
    loop {
        let len = socket.recv(&mut buf).await.unwrap();
        if &buf[..len] == b"* you are now sender\n" {
            return socket;
        }
    }
}

#[tokio::main]
async fn main() {
    let mut args: Vec<String> = std::env::args().collect();
    let udp_room: Option<SocketAddr> =
        args.iter().position(|arg| arg == "--udp-sender").map(|at| {
            let addr = args.get(at + 1).expect("--udp-sender ROOM_ADDR").parse();
            args.drain(at..at + 2);
            addr.expect("ROOM_ADDR is host:port")
        });
    if args.len() < 4 {
        eprintln!(
            "usage: ws_relay_load HTTP_ADDR RATE SECONDS [LISTENERS] [--udp-sender ROOM_ADDR]"
        );
        std::process::exit(2);
    }
    let http: SocketAddr = args[1].parse().expect("HTTP_ADDR is host:port");
    assert!(
        http.ip().is_loopback() && udp_room.is_none_or(|room| room.ip().is_loopback()),
        "the load generator only targets loopback"
    );
    let relay::Load {
        rate,
        seconds,
        listeners,
    } = relay::Load::from_args(&args, 100);

    let mut members = Vec::new();
    for i in 0..listeners {
        members.push(member(http, &format!("l{i}")).await);
    }
    enum Sender {
        Ws(Box<Ws>),
        Udp(UdpSocket),
    }
    let sender = match udp_room {
        Some(room) => Sender::Udp(udp_sender(room).await),
        None => Sender::Ws(Box::new(member(http, "sender").await)),
    };
    // Let the join notices arrive before the counting starts.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let pace = Pace::new(rate, seconds);
    let total = pace.total();
    let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(seconds + 30.0);
    let listening: Vec<_> = members
        .into_iter()
        .map(|ws| tokio::spawn(listen(ws, total, deadline)))
        .collect();
    let sending = match sender {
        Sender::Ws(ws) => send_ws(*ws, pace).await,
        Sender::Udp(socket) => send_udp(socket, pace).await,
    };
    let mut heard = Vec::new();
    for task in listening {
        heard.push(task.await.unwrap());
    }
    println!("{{{}}}", summary(total, &heard, sending));
}
