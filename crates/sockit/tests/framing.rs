//! The framed protocol over real loopback sockets: frames glued, dribbled, pipelined, and many
//! clients at once.

mod common;

use std::time::Duration;

use common::{frame, read_reply, send_and_read, TestServer};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn ping_reply_is_exact_bytes() {
    let server = TestServer::start().await;
    let mut stream = server.connect().await;
    stream
        .write_all(&frame(r#"{"op":"ping","id":42}"#, b""))
        .await
        .unwrap();
    let expected = br#"{"ok":true,"id":42}"#;
    let mut reply = vec![0u8; 4 + expected.len()];
    stream.read_exact(&mut reply).await.unwrap();
    assert_eq!(&reply[..4], &(expected.len() as i32).to_le_bytes());
    assert_eq!(&reply[4..], expected);
}

#[tokio::test]
async fn echo_returns_the_body_and_the_id() {
    let server = TestServer::start().await;
    let mut stream = server.connect().await;
    let (header, body) = send_and_read(
        &mut stream,
        &frame(r#"{"op":"echo","id":"a-1","size":5}"#, b"hello"),
    )
    .await;
    assert_eq!(header, json!({"ok": true, "id": "a-1", "size": 5}));
    assert_eq!(body, b"hello");
}

#[tokio::test]
async fn several_frames_in_one_write_get_one_reply_each() {
    let server = TestServer::start().await;
    let mut stream = server.connect().await;
    let mut glued = Vec::new();
    for (i, word) in ["alpha", "be", "", "gamma-delta"].iter().enumerate() {
        let json = format!(r#"{{"op":"echo","id":{i},"size":{}}}"#, word.len());
        glued.extend(frame(&json, word.as_bytes()));
    }
    stream.write_all(&glued).await.unwrap();
    for (i, word) in ["alpha", "be", "", "gamma-delta"].iter().enumerate() {
        let (header, body) = read_reply(&mut stream).await;
        assert_eq!(header["id"], i);
        assert_eq!(body, word.as_bytes());
    }
}

#[tokio::test]
async fn frame_dribbled_one_byte_at_a_time_is_decoded_whole() {
    let server = TestServer::start().await;
    let mut stream = server.connect().await;
    let bytes = frame(r#"{"op":"echo","id":1,"size":11}"#, b"hello world");
    for byte in &bytes {
        stream.write_all(std::slice::from_ref(byte)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let (header, body) = read_reply(&mut stream).await;
    assert_eq!(header, json!({"ok": true, "id": 1, "size": 11}));
    assert_eq!(body, b"hello world");
}

#[tokio::test]
async fn seed_size_keys_declare_the_body() {
    let server = TestServer::start().await;
    let mut stream = server.connect().await;
    for key in ["file_size", "total_size", "data_size"] {
        let json = format!(r#"{{"op":"echo","{key}":3}}"#);
        let (header, body) = send_and_read(&mut stream, &frame(&json, b"abc")).await;
        assert_eq!(header["ok"], true, "{key}");
        assert_eq!(body, b"abc", "{key}");
    }
}

#[tokio::test]
async fn two_thousand_pipelined_requests_are_answered_in_order() {
    const REQUESTS: usize = 2000;
    let server = TestServer::start().await;
    let stream = server.connect().await;
    let (mut reader, mut writer) = stream.into_split();
    let send = tokio::spawn(async move {
        let mut all = Vec::new();
        for i in 0..REQUESTS {
            if i % 2 == 0 {
                all.extend(frame(&format!(r#"{{"op":"ping","id":{i}}}"#), b""));
            } else {
                let body = i.to_string();
                let json = format!(r#"{{"op":"echo","id":{i},"size":{}}}"#, body.len());
                all.extend(frame(&json, body.as_bytes()));
            }
        }
        writer.write_all(&all).await.unwrap();
        writer
    });
    let mut replies = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut decoder = sockit_proto::Decoder::new(sockit_proto::Limits::default());
    let mut pending = bytes::BytesMut::new();
    while replies.len() < REQUESTS {
        let n = tokio::time::timeout(Duration::from_secs(10), reader.read(&mut buf))
            .await
            .expect("replies keep coming")
            .unwrap();
        assert!(n > 0, "server closed after {} replies", replies.len());
        pending.extend_from_slice(&buf[..n]);
        while let Some(event) = decoder.decode(&mut pending).unwrap() {
            match event {
                sockit_proto::Event::Header(header) => {
                    let value: serde_json::Value = header.parse().unwrap();
                    replies.push((value, Vec::new()));
                }
                sockit_proto::Event::Body(chunk) => {
                    replies.last_mut().unwrap().1.extend_from_slice(&chunk)
                }
            }
        }
    }
    send.await.unwrap();
    for (i, (header, body)) in replies.iter().enumerate() {
        assert_eq!(header["ok"], true);
        assert_eq!(header["id"], i, "reply {i} out of order");
        if i % 2 == 1 {
            assert_eq!(body, i.to_string().as_bytes());
        }
    }
}

#[tokio::test]
async fn hundred_concurrent_clients_are_all_served() {
    let server = TestServer::start().await;
    let addr = server.tcp();
    let clients: Vec<_> = (0..100)
        .map(|i| {
            tokio::spawn(async move {
                let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
                for round in 0..5 {
                    let body = format!("client {i} round {round}");
                    let json = format!(r#"{{"op":"echo","id":{i},"size":{}}}"#, body.len());
                    let (header, reply) =
                        send_and_read(&mut stream, &frame(&json, body.as_bytes())).await;
                    assert_eq!(header["id"], i);
                    assert_eq!(reply, body.as_bytes());
                }
            })
        })
        .collect();
    for client in clients {
        client.await.unwrap();
    }
}

#[tokio::test]
async fn large_echo_within_the_limit_streams_back() {
    let server = TestServer::start().await;
    let stream = server.connect().await;
    let (mut reader, mut writer) = stream.into_split();
    let body: Vec<u8> = (0..4 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let sent = body.clone();
    let send = tokio::spawn(async move {
        let json = format!(r#"{{"op":"echo","size":{}}}"#, sent.len());
        writer.write_all(&frame(&json, &sent)).await.unwrap();
        writer
    });
    let mut prefix = [0u8; 4];
    reader.read_exact(&mut prefix).await.unwrap();
    let mut header = vec![0u8; i32::from_le_bytes(prefix) as usize];
    reader.read_exact(&mut header).await.unwrap();
    let header: serde_json::Value = serde_json::from_slice(&header).unwrap();
    assert_eq!(header["size"], body.len());
    let mut echoed = vec![0u8; body.len()];
    reader.read_exact(&mut echoed).await.unwrap();
    assert!(echoed == body, "echoed body differs");
    send.await.unwrap();
}

#[tokio::test]
async fn client_library_pings_and_echoes() {
    let server = TestServer::start().await;
    let mut client = sockit::Client::connect(&server.tcp().to_string())
        .await
        .unwrap();
    client.ping().await.unwrap();
    assert_eq!(
        &client.echo(b"round trip").await.unwrap()[..],
        b"round trip"
    );
    // An error reply is an error of the request, not of the connection.
    let err = client.stat("../escape", None).await.unwrap_err();
    assert_eq!(
        err.remote_code(),
        Some(sockit::proto::ErrorCode::BadName),
        "{err}"
    );
    client.ping().await.unwrap();

    // An op the server does not know (the typed client cannot even say one).
    let mut raw = server.connect().await;
    let (reply, _) = send_and_read(&mut raw, &frame(r#"{"op":"nope"}"#, b"")).await;
    assert_eq!(reply["code"], "unknown_op");
    let (reply, _) = send_and_read(&mut raw, &frame(r#"{"op":"ping"}"#, b"")).await;
    assert_eq!(reply, json!({"ok": true}));
}

#[tokio::test]
async fn connect_refused_is_one_clear_line() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    drop(listener);
    let err = sockit::Client::connect(&addr).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("cannot connect to {addr}: connection refused")
    );
}

#[tokio::test]
async fn shutdown_lets_the_request_in_flight_finish() {
    let server = TestServer::start().await;
    let mut idle = server.connect().await;
    let (header, _) = send_and_read(&mut idle, &frame(r#"{"op":"ping"}"#, b"")).await;
    assert_eq!(header["ok"], true);
    let mut stream = server.connect().await;
    // Half a request is in flight when shutdown begins; the rest arrives afterwards.
    let bytes = frame(r#"{"op":"echo","id":9,"size":4}"#, b"late");
    // A ping and the first bytes of the echo in one write: the ping's reply proves the server
    // has read them too, and is waiting for the rest of the echo's header.
    let mut ping_and_half = frame(r#"{"op":"ping","id":8}"#, b"");
    ping_and_half.extend_from_slice(&bytes[..10]);
    let (header, _) = send_and_read(&mut stream, &ping_and_half).await;
    assert_eq!(header["id"], 8);
    let shutdown = tokio::spawn(server.shutdown());
    // Shutdown has begun once the idle connection is closed.
    common::assert_closed(&mut idle).await;
    drop(idle);
    stream.write_all(&bytes[10..]).await.unwrap();
    let (header, body) = read_reply(&mut stream).await;
    common::assert_closed(&mut stream).await;
    drop(stream);
    shutdown.await.unwrap();
    assert_eq!(header["id"], 9);
    assert_eq!(body, b"late");
}

#[tokio::test]
async fn shutdown_closes_idle_connections_promptly() {
    let server = TestServer::start().await;
    let mut idle = server.connect().await;
    let (header, _) = send_and_read(&mut idle, &frame(r#"{"op":"ping"}"#, b"")).await;
    assert_eq!(header["ok"], true);
    let started = std::time::Instant::now();
    let shutdown = tokio::spawn(server.shutdown());
    common::assert_closed(&mut idle).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    // The server waits (briefly) for the client's end of a closed connection before it is done.
    drop(idle);
    shutdown.await.unwrap();
}
