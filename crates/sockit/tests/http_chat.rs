//! The chat WebSocket at `/chat` over real sockets: a browser's member shares the rooms with UDP
//! members (lines both ways), and the chat's limits hold for it too (the line length, the rate).

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{TestServer, UdpMember};
use futures_util::{SinkExt, StreamExt};
use sockit::chat::room::RoomConfig;
use sockit::server::ServiceKind;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

async fn server(chat: RoomConfig) -> TestServer {
    TestServer::start_with(|config| {
        config.add_listener(ServiceKind::Chat, "127.0.0.1:0".parse().unwrap());
        config.add_listener(ServiceKind::Http, "127.0.0.1:0".parse().unwrap());
        config.chat = chat;
    })
    .await
}

async fn websocket(server: &TestServer) -> (Ws, SocketAddr) {
    let url = format!("ws://{}/chat", server.addr(ServiceKind::Http));
    let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let local = match ws.get_ref() {
        MaybeTlsStream::Plain(tcp) => tcp.local_addr().unwrap(),
        _ => unreachable!("plain"),
    };
    (ws, local)
}

async fn ws_say(ws: &mut Ws, line: &str) {
    ws.send(Message::text(line)).await.unwrap();
}

/// The next text line on the WebSocket, within 5 s.
async fn ws_line(ws: &mut Ws) -> Option<String> {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .ok()??
            .ok()?;
        if let Message::Text(text) = message {
            return Some(text.to_string());
        }
    }
}

#[tokio::test]
async fn a_line_from_the_websocket_reaches_a_udp_member_and_back() {
    let server = server(RoomConfig::default()).await;
    let udp = UdpMember::join(server.addr(ServiceKind::Chat), Duration::from_secs(5)).await;
    let (mut ws, web_addr) = websocket(&server).await;
    let web = web_addr.to_string();

    ws_say(&mut ws, "hello from the browser").await;
    assert_eq!(udp.recv().await.unwrap(), format!("* {web} joined\n"));
    assert_eq!(
        udp.recv().await.unwrap(),
        format!("<{web}> hello from the browser\n")
    );

    udp.send("hello from udp").await;
    assert_eq!(
        ws_line(&mut ws).await.unwrap(),
        format!("<{}> hello from udp\n", udp.name())
    );

    ws_say(&mut ws, "/nick webby").await;
    assert_eq!(ws_line(&mut ws).await.unwrap(), "* you are now webby\n");
    assert_eq!(udp.recv().await.unwrap(), format!("* {web} is now webby\n"));
    ws_say(&mut ws, "/who").await;
    let who = ws_line(&mut ws).await.unwrap();
    assert!(who.starts_with("* lobby: "), "{who}");
    assert!(who.contains("webby") && who.contains(&udp.name()), "{who}");

    drop(ws);
    assert_eq!(udp.recv().await.unwrap(), "* webby left\n");
    server.shutdown().await;
}

#[tokio::test]
async fn oversize_and_too_fast_lines_are_refused_as_in_the_udp_room() {
    let server = server(RoomConfig {
        rate: 5.0,
        burst: 10.0,
        ..RoomConfig::default()
    })
    .await;
    let udp = UdpMember::join(server.addr(ServiceKind::Chat), Duration::from_secs(5)).await;
    let (mut ws, _) = websocket(&server).await;
    ws_say(&mut ws, "hi").await;
    assert!(udp.recv().await.unwrap().ends_with(" joined\n"));
    assert!(udp.recv().await.unwrap().ends_with("> hi\n"));

    ws_say(&mut ws, &"x".repeat(5000)).await;
    assert_eq!(
        ws_line(&mut ws).await.unwrap(),
        "! message too long (limit 4096 bytes)\n"
    );

    for n in 0..40 {
        ws_say(&mut ws, &format!("flood {n}")).await;
    }
    let mut relayed = 0;
    while let Some(line) = udp.recv_within(Duration::from_millis(500)).await {
        assert!(line.contains("> flood "), "{line}");
        relayed += 1;
    }
    assert!(
        (9..=14).contains(&relayed),
        "{relayed} of 40 lines relayed with a burst of 10 (the oversize one took a token)"
    );
    let mut warned = false;
    while let Some(line) = ws_line_within(&mut ws, Duration::from_millis(500)).await {
        warned |= line == "! slow down: lines are being dropped\n";
    }
    assert!(warned, "the sender is told its lines are dropped");

    // A message over the WebSocket limit closes the socket.
    ws_say(&mut ws, &"y".repeat(100 * 1024)).await;
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the socket closes");
    server.shutdown().await;
}

async fn ws_line_within(ws: &mut Ws, wait: Duration) -> Option<String> {
    loop {
        let message = tokio::time::timeout(wait, ws.next()).await.ok()??.ok()?;
        if let Message::Text(text) = message {
            return Some(text.to_string());
        }
    }
}

#[tokio::test]
async fn browsers_chat_with_each_other_without_a_udp_room() {
    let server = TestServer::start_with(|config| {
        config.add_listener(ServiceKind::Http, "127.0.0.1:0".parse().unwrap());
    })
    .await;
    let (mut alice, _) = websocket(&server).await;
    let (mut bob, bob_addr) = websocket(&server).await;
    ws_say(&mut alice, "/nick alice").await;
    assert_eq!(ws_line(&mut alice).await.unwrap(), "* you are now alice\n");
    ws_say(&mut bob, "hello alice").await;
    assert_eq!(
        ws_line(&mut alice).await.unwrap(),
        format!("* {bob_addr} joined\n")
    );
    assert_eq!(
        ws_line(&mut alice).await.unwrap(),
        format!("<{bob_addr}> hello alice\n")
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_cross_site_websocket_is_refused() {
    let server = server(RoomConfig::default()).await;
    let addr = server.addr(ServiceKind::Http);
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(format!(
            "ws://{addr}/chat"
        ))
        .unwrap();
    request
        .headers_mut()
        .insert("Origin", "http://evil.example".parse().unwrap());
    let refused = tokio_tungstenite::connect_async(request).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 403);
        }
        other => panic!("expected 403, got {other:?}"),
    }
    server.shutdown().await;
}

/// A WebSocket whose socket takes in only a few KiB before the server must wait: the server's
/// send buffer and the socket's hold what a member that stops reading leaves unread.
async fn websocket_with_small_window(server: &TestServer) -> Ws {
    let addr = server.addr(ServiceKind::Http);
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&addr.into()).unwrap();
    socket.set_nonblocking(true).unwrap();
    let stream = TcpStream::from_std(socket.into()).unwrap();
    let (ws, _) =
        tokio_tungstenite::client_async(format!("ws://{addr}/chat"), MaybeTlsStream::Plain(stream))
            .await
            .unwrap();
    ws
}

#[tokio::test]
async fn a_websocket_that_stops_reading_loses_lines_and_holds_up_no_one() {
    let server = server(RoomConfig {
        rate: 1e6,
        burst: 1e6,
        ..RoomConfig::default()
    })
    .await;
    let (mut reader, _) = websocket(&server).await;
    let mut stalled = websocket_with_small_window(&server).await;
    let (mut sender, _) = websocket(&server).await;
    for (ws, name) in [
        (&mut reader, "reader"),
        (&mut stalled, "stalled"),
        (&mut sender, "sender"),
    ] {
        ws_say(ws, &format!("/nick {name}")).await;
        while ws_line(ws).await.unwrap() != format!("* you are now {name}\n") {}
    }

    // 12 MB in bursts of 50 lines of 4,000 bytes, each burst less than a member's backlog,
    // and each taken by the reader, all of it and in order, before the next. The member that
    // stopped reading has far less room than that.
    const BURSTS: usize = 60;
    const PER_BURST: usize = 50;
    let line = |n: usize| format!("{n:05} {}", "x".repeat(3994));
    for burst in 0..BURSTS {
        for n in burst * PER_BURST..(burst + 1) * PER_BURST {
            sender.feed(Message::text(line(n))).await.unwrap();
        }
        sender.flush().await.unwrap();
        for n in burst * PER_BURST..(burst + 1) * PER_BURST {
            let heard = loop {
                let heard = ws_line(&mut reader)
                    .await
                    .expect("every line reaches the reader");
                if heard.starts_with("<sender> ") {
                    break heard;
                }
            };
            assert!(heard == format!("<sender> {}\n", line(n)), "line {n}");
        }
    }

    // What reached the member that stopped reading: lines in order, with the ones that found
    // its queue full missing, and it is still connected.
    let mut heard = Vec::new();
    while let Some(text) = ws_line_within(&mut stalled, Duration::from_millis(500)).await {
        if let Some(rest) = text.strip_prefix("<sender> ") {
            assert_eq!(rest.len(), 4001, "whole lines");
            heard.push(rest[..5].parse::<usize>().unwrap());
        }
    }
    assert!(!heard.is_empty());
    assert!(heard.len() < BURSTS * PER_BURST, "{} lines", heard.len());
    assert!(heard.windows(2).all(|pair| pair[0] < pair[1]), "in order");
    ws_say(&mut stalled, "still here").await;
    assert_eq!(
        ws_line(&mut reader).await.unwrap(),
        "<stalled> still here\n"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_silent_websocket_is_closed_after_the_idle_timeout_and_leaves_the_room() {
    let server = TestServer::start_with(|config| {
        config.add_listener(ServiceKind::Chat, "127.0.0.1:0".parse().unwrap());
        config.add_listener(ServiceKind::Http, "127.0.0.1:0".parse().unwrap());
        config.idle_timeout = Duration::from_secs(1);
    })
    .await;
    let udp = UdpMember::join(server.addr(ServiceKind::Chat), Duration::from_secs(5)).await;
    let (mut ws, web_addr) = websocket(&server).await;
    ws_say(&mut ws, "hi").await;
    assert_eq!(udp.recv().await.unwrap(), format!("* {web_addr} joined\n"));
    assert_eq!(udp.recv().await.unwrap(), format!("<{web_addr}> hi\n"));

    // Silent from now on (it would answer pings, but they come every 30 s): closed after the
    // idle timeout, not at the next ping.
    let started = std::time::Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "closed within 5 s");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(800),
        "closed after {waited:?}"
    );
    assert_eq!(udp.recv().await.unwrap(), format!("* {web_addr} left\n"));
    server.shutdown().await;
}
