//! Hostile input: each case gets an error reply with a `code` (then a close where the stream
//! cannot be resynchronised), while the server keeps serving everyone else.

mod common;

use std::time::{Duration, Instant};

use common::{
    assert_closed, frame, raw_frame, read_reply, send_and_read, try_read_reply, TestServer,
};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A connection opened before the hostile one and used after it: proves the server kept
/// serving others.
struct Bystander(TcpStream);

impl Bystander {
    async fn new(server: &TestServer) -> Bystander {
        let mut stream = server.connect().await;
        let (header, _) = send_and_read(&mut stream, &frame(r#"{"op":"ping"}"#, b"")).await;
        assert_eq!(header["ok"], true);
        Bystander(stream)
    }

    async fn still_served(mut self) {
        self.echo().await;
    }

    async fn echo(&mut self) {
        let (header, body) =
            send_and_read(&mut self.0, &frame(r#"{"op":"echo","size":2}"#, b"ok")).await;
        assert_eq!(header["ok"], true);
        assert_eq!(body, b"ok");
    }
}

/// Sends `bytes`, expects one error reply with `code`, then the close.
async fn expect_error_then_close(server: &TestServer, bytes: &[u8], code: &str) -> Value {
    let bystander = Bystander::new(server).await;
    let mut stream = server.connect().await;
    let _ = stream.write_all(bytes).await;
    let (header, body) = read_reply(&mut stream).await;
    assert_eq!(header["ok"], false, "{header}");
    assert_eq!(header["code"], code, "{header}");
    assert!(header["error"].as_str().is_some_and(|e| !e.is_empty()));
    assert!(body.is_empty());
    assert_closed(&mut stream).await;
    bystander.still_served().await;
    header
}

#[tokio::test]
async fn header_length_zero_or_negative_is_bad_frame() {
    let server = TestServer::start().await;
    for hlen in [0, -1, i32::MIN] {
        expect_error_then_close(&server, &hlen.to_le_bytes(), "bad_frame").await;
    }
}

#[tokio::test]
async fn header_length_over_the_limit_is_too_large() {
    let server = TestServer::start().await;
    for hlen in [64 * 1024 + 1, i32::MAX] {
        let header = expect_error_then_close(&server, &hlen.to_le_bytes(), "too_large").await;
        assert!(header["error"]
            .as_str()
            .unwrap()
            .contains(&hlen.to_string()));
    }
}

#[tokio::test]
async fn headers_that_are_not_json_objects_are_bad_frame() {
    let server = TestServer::start().await;
    let deep = format!("{{\"a\":{}0{}}}", "[".repeat(10_000), "]".repeat(10_000));
    let cases: [&[u8]; 6] = [
        b"not json at all",
        b"[1,2,3]",
        b"\"just a string\"",
        b"{\"op\":\"\xff\xfe\"}",
        b"{\"op\":\"ping\"",
        deep.as_bytes(),
    ];
    for header in cases {
        let bytes = raw_frame(header.len() as i32, header, b"");
        expect_error_then_close(&server, &bytes, "bad_frame").await;
    }
}

#[tokio::test]
async fn bad_sizes_are_bad_frame() {
    let server = TestServer::start().await;
    for size in ["-1", "2.5", "\"10\"", "1e2", "null"] {
        let json = format!(r#"{{"op":"echo","size":{size},"file_size":-3}}"#);
        expect_error_then_close(&server, &frame(&json, b""), "bad_frame").await;
    }
}

#[tokio::test]
async fn echo_over_the_in_memory_limit_is_too_large_and_nothing_is_read() {
    let server = TestServer::start_with(|config| {
        config.limits = sockit_proto::Limits::builder()
            .max_buffered_body(1024)
            .build()
            .unwrap();
    })
    .await;
    let header = expect_error_then_close(
        &server,
        &frame(r#"{"op":"echo","id":3,"size":1025}"#, b"x"),
        "too_large",
    )
    .await;
    assert_eq!(header["id"], 3);
}

#[tokio::test]
async fn stream_ending_mid_header_or_mid_body_gets_a_reply() {
    let server = TestServer::start().await;
    let whole = frame(r#"{"op":"echo","size":10}"#, b"0123456789");
    for cut in [2, 9, whole.len() - 4] {
        let bystander = Bystander::new(&server).await;
        let mut stream = server.connect().await;
        stream.write_all(&whole[..cut]).await.unwrap();
        stream.shutdown().await.unwrap();
        let (header, _) = read_reply(&mut stream).await;
        assert_eq!(header["code"], "bad_frame", "cut at {cut}: {header}");
        assert!(header["error"]
            .as_str()
            .unwrap()
            .contains("middle of a frame"));
        assert_closed(&mut stream).await;
        bystander.still_served().await;
    }
}

#[tokio::test]
async fn silent_peer_is_closed_by_the_header_deadline() {
    let server = TestServer::start_with(|config| {
        config.header_timeout = Duration::from_millis(300);
    })
    .await;
    let bystander = Bystander::new(&server).await;
    let started = Instant::now();
    let mut silent = server.connect().await;
    let (header, _) = read_reply(&mut silent).await;
    assert_eq!(header["code"], "timeout");
    assert_closed(&mut silent).await;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(250),
        "closed too early: {waited:?}"
    );
    assert!(
        waited < Duration::from_secs(3),
        "closed too late: {waited:?}"
    );
    bystander.still_served().await;
}

#[tokio::test]
async fn byte_every_so_often_is_closed_by_the_header_deadline() {
    let server = TestServer::start_with(|config| {
        config.header_timeout = Duration::from_millis(400);
        config.idle_timeout = Duration::from_secs(60);
    })
    .await;
    let bystander = Bystander::new(&server).await;
    let mut slow = server.connect().await;
    // A first, complete request, so that the slow one is not the connection's first header.
    let (header, _) = send_and_read(&mut slow, &frame(r#"{"op":"ping"}"#, b"")).await;
    assert_eq!(header["ok"], true);
    let bytes = frame(r#"{"op":"ping","padding":"................"}"#, b"");
    let started = Instant::now();
    let mut sent = 0;
    let reply = loop {
        if slow.write_all(&bytes[sent..=sent]).await.is_err() {
            break try_read_reply(&mut slow).await;
        }
        sent += 1;
        assert!(
            sent < bytes.len(),
            "the whole frame was accepted at one byte per 100 ms"
        );
        tokio::select! {
            reply = try_read_reply(&mut slow) => break reply,
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    };
    let (header, _) = reply.expect("a timeout reply");
    assert_eq!(header["code"], "timeout");
    assert!(started.elapsed() < Duration::from_secs(2));
    bystander.still_served().await;
}

#[tokio::test]
async fn idle_connection_is_closed_after_the_idle_timeout() {
    let server = TestServer::start_with(|config| {
        config.idle_timeout = Duration::from_millis(300);
    })
    .await;
    let mut stream = server.connect().await;
    // The server's wait begins after it has answered the ping: no sooner than this.
    let started = Instant::now();
    let (header, _) = send_and_read(&mut stream, &frame(r#"{"op":"ping"}"#, b"")).await;
    assert_eq!(header["ok"], true);
    let (header, _) = read_reply(&mut stream).await;
    let waited = started.elapsed();
    assert_eq!(header["code"], "timeout");
    assert_closed(&mut stream).await;
    assert!(
        waited >= Duration::from_millis(300),
        "closed too early: {waited:?}"
    );
    assert!(
        waited < Duration::from_secs(3),
        "closed too late: {waited:?}"
    );
}

#[tokio::test]
async fn unknown_op_is_refused_and_the_connection_stays_usable() {
    let server = TestServer::start().await;
    let mut stream = server.connect().await;
    let (header, _) = send_and_read(
        &mut stream,
        &frame(r#"{"op":"launch_missiles","id":5,"size":3}"#, b"abc"),
    )
    .await;
    assert_eq!(header["ok"], false);
    assert_eq!(header["code"], "unknown_op");
    assert_eq!(header["id"], 5);
    assert_eq!(header["error"], "unknown op \"launch_missiles\"");
    let (header, body) = send_and_read(
        &mut stream,
        &frame(r#"{"op":"echo","id":6,"size":2}"#, b"hi"),
    )
    .await;
    assert_eq!(header, json!({"ok": true, "id": 6, "size": 2}));
    assert_eq!(body, b"hi");
}

#[tokio::test]
async fn malformed_envelopes_are_bad_request_and_recoverable() {
    let server = TestServer::start().await;
    let mut stream = server.connect().await;
    for json in [
        r#"{"op":7,"size":1}"#,
        r#"{"op":"ping","id":{"nested":true},"size":1}"#,
        r#"{"size":1}"#,
    ] {
        let (header, _) = send_and_read(&mut stream, &frame(json, b"x")).await;
        assert_eq!(header["code"], "bad_request", "{json}: {header}");
    }
    let (header, _) = send_and_read(&mut stream, &frame(r#"{"op":"ping"}"#, b"")).await;
    assert_eq!(header["ok"], true);
}

/// Reads one reply's header as raw bytes (a reply that is not valid JSON shows as it is).
async fn read_raw_header(stream: &mut TcpStream) -> Vec<u8> {
    let mut prefix = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut prefix))
        .await
        .expect("a reply within 10 s")
        .unwrap();
    let mut header = vec![0u8; i32::from_le_bytes(prefix) as usize];
    stream.read_exact(&mut header).await.unwrap();
    header
}

#[tokio::test]
async fn ids_too_long_or_not_unicode_are_bad_request_and_never_echoed() {
    let server = TestServer::start().await;
    let mut stream = server.connect().await;
    let long = format!(r#""{}""#, "x".repeat(300));
    for (id, error) in [
        (
            r#""\ud800""#,
            "`id` must be a valid JSON scalar: a string of Unicode text, or a number in range",
        ),
        (
            r#""a\udc00b""#,
            "`id` must be a valid JSON scalar: a string of Unicode text, or a number in range",
        ),
        (long.as_str(), "`id` must be at most 256 bytes of JSON"),
    ] {
        let request = format!(r#"{{"op":"echo","id":{id},"size":1}}"#);
        stream.write_all(&frame(&request, b"x")).await.unwrap();
        let header = read_raw_header(&mut stream).await;
        let expected = json!({"ok": false, "code": "bad_request", "error": error});
        assert_eq!(
            serde_json::from_slice::<Value>(&header).ok(),
            Some(expected),
            "{id}: {}",
            String::from_utf8_lossy(&header)
        );
    }
    // The longest id allowed is echoed as it came.
    let longest = format!(r#""{}""#, "y".repeat(254));
    let request = format!(r#"{{"op":"ping","id":{longest}}}"#);
    let (header, _) = send_and_read(&mut stream, &frame(&request, b"")).await;
    assert_eq!(header["ok"], true, "{header}");
    assert_eq!(header["id"], "y".repeat(254));
}

/// A connection from `source` (a loopback address) that has been served a `ping`.
async fn served_from(server: &TestServer, source: std::net::Ipv4Addr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind((source, 0).into()).unwrap();
    let mut stream = socket.connect(server.tcp()).await.unwrap();
    let (header, _) = send_and_read(&mut stream, &frame(r#"{"op":"ping"}"#, b"")).await;
    assert_eq!(header["ok"], true, "{source}: {header}");
    stream
}

#[tokio::test]
async fn by_default_four_sources_at_their_limit_leave_room_for_others() {
    let per_source = sockit::defaults::MAX_CONNS_PER_SOURCE;
    let server = TestServer::start().await;
    let mut idle = Vec::with_capacity(4 * per_source);
    for source in 1..=4 {
        for _ in 0..per_source {
            idle.push(served_from(&server, std::net::Ipv4Addr::new(127, 0, 0, source)).await);
        }
    }
    // Every one of them is still open, and a fifth address is served at once.
    let started = Instant::now();
    let _other = served_from(&server, std::net::Ipv4Addr::new(127, 0, 0, 5)).await;
    assert!(started.elapsed() < Duration::from_secs(2));
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(([127, 0, 0, 1], 0).into()).unwrap();
    let mut past = socket.connect(server.tcp()).await.unwrap();
    let (header, _) = read_reply(&mut past).await;
    assert_eq!(
        header["code"], "busy",
        "past its own limit, a source is refused: {header}"
    );
    drop(idle);
}

#[tokio::test]
async fn per_source_limit_refuses_with_busy() {
    let server = TestServer::start_with(|config| config.max_conns_per_source = 2).await;
    let _a = Bystander::new(&server).await;
    let b = Bystander::new(&server).await;
    let mut third = server.connect().await;
    let (header, _) = read_reply(&mut third).await;
    assert_eq!(header["code"], "busy");
    assert_closed(&mut third).await;
    b.still_served().await;
}

#[tokio::test]
async fn total_limit_holds_new_clients_until_a_slot_frees() {
    let server = TestServer::start_with(|config| config.max_conns = 1).await;
    let mut first = Bystander::new(&server).await;
    let mut waiting = server.connect().await; // queued by the kernel, not yet accepted
    waiting
        .write_all(&frame(r#"{"op":"ping","id":2}"#, b""))
        .await
        .unwrap();
    // Nothing comes back for a while (a one-byte read loses nothing when it times out) ...
    let mut byte = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_millis(200), waiting.read(&mut byte)).await;
    assert!(
        early.is_err(),
        "second client served while the only slot was taken"
    );
    // ... though the server answers the slot's holder, later, and still nothing has come (a
    // peek at the socket itself, not at what the runtime has noticed so far).
    first.echo().await;
    let mut peeked = [std::mem::MaybeUninit::new(0u8)];
    let peek = socket2::SockRef::from(&waiting).peek(&mut peeked);
    assert!(
        peek.as_ref()
            .is_err_and(|err| err.kind() == std::io::ErrorKind::WouldBlock),
        "second client served while the only slot was taken: {peek:?}"
    );
    drop(first);
    let (header, _) = read_reply(&mut waiting).await;
    assert_eq!(header["id"], 2);
}
