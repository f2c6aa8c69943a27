//! Limits that hold under attack: the streaming slots are shared fairly between addresses, a
//! request waits for a slot or for memory a bounded time and is then answered `busy` with
//! `retry_after`, a transfer slower than the minimum pace is cut (in either direction) and its
//! slot freed, bodies held in memory count against the memory budget, and password checks
//! run one at a time per address, waiting a bounded time.
//!
//! Every client connects to the server on 127.0.0.1; a second source address is 127.0.0.2,
//! which is loopback too.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use common::{frame, read_reply, send_and_read, TestServer};
use serde_json::{json, Value};
use sockit::auth::users::{hash_password, Account, UsersFile};
use sockit::ServerConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinHandle;

/// The address of a second client machine, as far as the server can tell.
const OTHER_SOURCE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

/// Connects to the server from `source` (a loopback address).
async fn connect_from(server: &TestServer, source: Ipv4Addr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((source, 0))).unwrap();
    socket.connect(server.tcp()).await.unwrap()
}

/// Settings with small numbers, no minimum pace unless a test asks for one.
fn small(config: &mut ServerConfig, slots: usize, per_source: usize, wait_ms: u64) {
    config.transfers.max_running = slots;
    config.transfers.max_per_source = per_source;
    config.transfers.wait = Duration::from_millis(wait_ms);
    config.transfers.min_rate = 0;
    config.memory.wait = Duration::from_millis(wait_ms);
}

/// A `put` of `size` bytes whose body comes one byte every 50 ms after the first, so that it
/// holds its slot: the read half, and the task that writes, which ends when the server stops
/// taking the bytes.
async fn trickling_put(
    server: &TestServer,
    name: &str,
    size: u64,
) -> (OwnedReadHalf, JoinHandle<()>) {
    let mut stream = server.connect().await;
    let json = format!(r#"{{"op":"put","name":"{name}","size":{size}}}"#);
    stream.write_all(&frame(&json, b"x")).await.unwrap();
    let (reader, mut writer) = stream.into_split();
    let trickle = tokio::spawn(async move {
        for _ in 1..size.min(600) {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if writer.write_all(b"x").await.is_err() {
                return;
            }
        }
    });
    (reader, trickle)
}

/// Reads one reply frame's header from a read half, within 10 s; `None` at the end of the
/// stream.
async fn reply_from(reader: &mut OwnedReadHalf) -> Option<Value> {
    let mut prefix = [0u8; 4];
    let read = tokio::time::timeout(Duration::from_secs(10), reader.read_exact(&mut prefix))
        .await
        .expect("a reply or the end within 10 s");
    read.ok()?;
    let mut header = vec![0u8; i32::from_le_bytes(prefix) as usize];
    reader.read_exact(&mut header).await.unwrap();
    Some(serde_json::from_slice(&header).unwrap())
}

/// Stores `body` as `name` over a fresh connection.
async fn store(server: &TestServer, name: &str, body: &[u8]) {
    let mut stream = server.connect().await;
    let json = format!(r#"{{"op":"put","name":"{name}","size":{}}}"#, body.len());
    let (reply, _) = send_and_read(&mut stream, &frame(&json, body)).await;
    assert_eq!(reply["ok"], true, "{reply}");
}

/// Asserts `reply` is `busy` with `retry_after` 1 s, the request's `id` (null for none), and
/// `what` in its words.
fn assert_busy(reply: &Value, id: &Value, what: &str) {
    assert_eq!(reply["ok"], false, "{reply}");
    assert_eq!(reply["code"], "busy", "{reply}");
    assert_eq!(reply["retry_after"], json!(1.0), "{reply}");
    assert_eq!(&reply["id"], id, "{reply}");
    let error = reply["error"].as_str().unwrap();
    assert!(error.contains(what), "{error}");
}

/// Sends `bytes` on `stream` from a task of its own (the server may take them only later), and
/// returns the read half.
fn send_in_background(stream: TcpStream, bytes: Vec<u8>) -> (OwnedReadHalf, JoinHandle<()>) {
    let (reader, mut writer) = stream.into_split();
    let sending = tokio::spawn(async move {
        let _ = writer.write_all(&bytes).await;
        // Keep the write half, and so the connection, open until the test drops the task.
        std::future::pending::<()>().await;
    });
    (reader, sending)
}

#[tokio::test]
async fn one_address_holding_its_share_of_slots_leaves_the_rest_to_others() {
    let server = TestServer::start_with(|config| small(config, 4, 2, 2000)).await;
    // Eight uploads from one address that trickle their bodies: two take its share of the
    // slots, six wait for it.
    let mut hostile = Vec::new();
    for i in 0..8 {
        hostile.push(trickling_put(&server, &format!("t{i}"), 64 << 20).await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Another address is served at once, upload and download, while they trickle.
    let started = Instant::now();
    let mut other = connect_from(&server, OTHER_SOURCE).await;
    let put = frame(r#"{"op":"put","name":"mine","size":5}"#, b"hello");
    let (reply, _) = send_and_read(&mut other, &put).await;
    assert_eq!(reply["ok"], true, "{reply}");
    let (reply, body) =
        send_and_read(&mut other, &frame(r#"{"op":"get","name":"mine"}"#, b"")).await;
    assert_eq!(reply["ok"], true, "{reply}");
    assert_eq!(body, b"hello");
    let served_in = started.elapsed();
    assert!(served_in < Duration::from_millis(1500), "{served_in:?}");

    // Those beyond the share are told `busy` once the wait is over, and closed, since their
    // bodies are too long to skip; the two holding slots hear nothing.
    let (mut busy, mut holding) = (0, 0);
    for (reader, _) in &mut hostile {
        match tokio::time::timeout(Duration::from_secs(3), reply_from(reader)).await {
            Ok(Some(reply)) => {
                assert_busy(&reply, &Value::Null, "streaming slot");
                assert_eq!(reply_from(reader).await, None, "closed after the reply");
                busy += 1;
            }
            Ok(None) => panic!("closed without a reply"),
            Err(_) => holding += 1,
        }
    }
    assert_eq!((busy, holding), (6, 2));
    for (_, trickle) in hostile {
        trickle.abort();
    }
}

#[tokio::test]
async fn a_request_that_waits_too_long_for_a_slot_is_busy_with_retry_after() {
    let server = TestServer::start_with(|config| small(config, 1, 1, 500)).await;
    store(&server, "file", b"content").await;
    let (holder, trickle) = trickling_put(&server, "held", 64 << 20).await;
    tokio::time::sleep(Duration::from_millis(100)).await;

    let mut stream = connect_from(&server, OTHER_SOURCE).await;
    let started = Instant::now();
    let get = frame(r#"{"op":"get","name":"file","id":7}"#, b"");
    let (reply, body) = send_and_read(&mut stream, &get).await;
    let waited = started.elapsed();
    assert_busy(&reply, &json!(7), "streaming slot");
    assert!(body.is_empty());
    assert!(
        waited >= Duration::from_millis(500) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    // The connection stays usable, also after a refused upload whose body is skipped.
    let put = frame(r#"{"op":"put","name":"other","size":5,"id":8}"#, b"hello");
    let (reply, _) = send_and_read(&mut stream, &put).await;
    assert_busy(&reply, &json!(8), "streaming slot");
    let (reply, _) = send_and_read(&mut stream, &frame(r#"{"op":"ping","id":9}"#, b"")).await;
    assert_eq!(reply, json!({"ok": true, "id": 9}));

    // Once the holder is gone, its slot serves the next request.
    trickle.abort();
    drop(holder);
    let (reply, body) =
        send_and_read(&mut stream, &frame(r#"{"op":"get","name":"file"}"#, b"")).await;
    assert_eq!(reply["ok"], true, "{reply}");
    assert_eq!(body, b"content");
}

#[tokio::test]
async fn an_upload_slower_than_the_minimum_pace_is_cut_and_keeps_what_arrived() {
    let server = TestServer::start_with(|config| {
        small(config, 1, 1, 5000);
        config.transfers.min_rate = 64 * 1024;
        config.transfers.rate_window = Duration::from_secs(1);
    })
    .await;
    let started = Instant::now();
    let (mut reader, trickle) = trickling_put(&server, "slow", 1 << 20).await;
    let reply = reply_from(&mut reader).await.expect("a reply");
    let cut_after = started.elapsed();
    assert_eq!(reply["ok"], false, "{reply}");
    assert_eq!(reply["code"], "timeout", "{reply}");
    let error = reply["error"].as_str().unwrap();
    assert!(
        error.contains("slower than 65536 bytes a second over 1 s"),
        "{error}"
    );
    assert!(
        cut_after >= Duration::from_secs(1) && cut_after < Duration::from_secs(3),
        "{cut_after:?}"
    );
    assert_eq!(
        reply_from(&mut reader).await,
        None,
        "closed after the reply"
    );
    trickle.abort();

    // The slot is free at once: without the cut this would wait 5 s and be busy.
    let started = Instant::now();
    store(&server, "fast", b"quick").await;
    assert!(started.elapsed() < Duration::from_secs(2));
    // What arrived is kept for a resume.
    let mut stream = server.connect().await;
    let stat = frame(r#"{"op":"stat","name":"slow","length":1048576}"#, b"");
    let (reply, _) = send_and_read(&mut stream, &stat).await;
    let partial = reply["partial"].as_u64().expect("partial held");
    assert!((1..100).contains(&partial), "{reply}");
}

#[tokio::test]
async fn a_download_whose_client_stops_reading_is_cut_and_its_slot_freed() {
    let server = TestServer::start_with(|config| {
        small(config, 1, 1, 8000);
        config.transfers.min_rate = 64 * 1024;
        config.transfers.rate_window = Duration::from_secs(1);
    })
    .await;
    // Far more than the socket buffers on both sides take.
    let big = vec![7u8; 32 << 20];
    store(&server, "big", &big).await;
    store(&server, "small", b"tiny").await;

    let mut stalled = server.connect().await;
    stalled
        .write_all(&frame(r#"{"op":"get","name":"big"}"#, b""))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Waits for the one slot until the download that is not read is cut, then is served:
    // without the cut this would be busy after 8 s.
    let mut stream = connect_from(&server, OTHER_SOURCE).await;
    let started = Instant::now();
    let get = frame(r#"{"op":"get","name":"small"}"#, b"");
    let (reply, body) = send_and_read(&mut stream, &get).await;
    let waited = started.elapsed();
    assert_eq!(reply["ok"], true, "{reply}");
    assert_eq!(body, b"tiny");
    assert!(
        waited >= Duration::from_millis(500) && waited < Duration::from_secs(5),
        "{waited:?}"
    );

    // The stalled client finds its download cut short.
    let mut received = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stalled.read_to_end(&mut received))
        .await
        .expect("closed")
        .ok();
    assert!(received.len() < big.len(), "{} bytes", received.len());
}

#[tokio::test]
async fn bodies_in_memory_share_the_budget_fairly_and_the_rest_get_busy() {
    const BODY: usize = 16 << 20;
    let server = TestServer::start_with(|config| {
        small(config, 4, 4, 500);
        config.memory.budget = 48 << 20;
        config.memory.per_source = 32 << 20;
    })
    .await;
    let echo = |id: u64| {
        frame(
            &format!(r#"{{"op":"echo","id":{id},"size":{BODY}}}"#),
            &vec![b'e'; BODY],
        )
    };

    // Two echoes whose replies are never read hold this address's share.
    let mut holders = Vec::new();
    for id in 1..=2 {
        holders.push(send_in_background(server.connect().await, echo(id)));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    // A third from the same address waits, then is busy, and its body is skipped.
    let (mut third, _sending) = send_in_background(server.connect().await, echo(3));
    let reply = reply_from(&mut third).await.expect("a reply");
    assert_busy(&reply, &json!(3), "memory");
    // Another address still has its share.
    let mut other = connect_from(&server, OTHER_SOURCE).await;
    let (reply, body) = send_and_read(&mut other, &echo(4)).await;
    assert_eq!(reply, json!({"ok": true, "id": 4, "size": BODY}));
    assert_eq!(body.len(), BODY);

    // A small echo is served from the connection's own buffers; a `list` page needs memory.
    let mut stream = server.connect().await;
    let small_echo = frame(r#"{"op":"echo","id":5,"size":2}"#, b"hi");
    let (reply, body) = send_and_read(&mut stream, &small_echo).await;
    assert_eq!((reply["ok"].clone(), body), (json!(true), b"hi".to_vec()));
    let list = frame(r#"{"op":"list","id":6}"#, b"");
    let (reply, _) = send_and_read(&mut stream, &list).await;
    assert_busy(&reply, &json!(6), "memory");

    // Once a holder's reply is read, its memory serves the next request.
    let (mut reader, _) = holders.remove(0);
    let reply = reply_from(&mut reader).await.expect("the echo reply");
    assert_eq!(reply, json!({"ok": true, "id": 1, "size": BODY}));
    let mut body = vec![0u8; BODY];
    reader.read_exact(&mut body).await.unwrap();
    let (reply, body) = send_and_read(&mut stream, &frame(r#"{"op":"list","id":7}"#, b"")).await;
    assert_eq!(
        reply,
        json!({"ok": true, "id": 7, "count": 0, "more": false, "size": 2})
    );
    assert_eq!(body, b"[]");
}

#[tokio::test]
async fn an_echo_reply_left_unread_gives_its_memory_back_within_a_rate_window() {
    const BODY: usize = 16 << 20;
    let server = TestServer::start_with(|config| {
        small(config, 4, 4, 8000);
        config.memory.budget = 32 << 20;
        config.memory.per_source = 32 << 20;
        config.transfers.min_rate = 64 * 1024;
        config.transfers.rate_window = Duration::from_secs(1);
    })
    .await;
    let echo = |id: u64| {
        frame(
            &format!(r#"{{"op":"echo","id":{id},"size":{BODY}}}"#),
            &vec![b'e'; BODY],
        )
    };
    let mut holders = Vec::new();
    for id in 1..=2 {
        holders.push(send_in_background(server.connect().await, echo(id)));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The budget is taken until the unread replies are cut; without the pace this would be
    // busy after 8 s.
    let mut stream = server.connect().await;
    let started = Instant::now();
    let (reply, body) = send_and_read(&mut stream, &echo(3)).await;
    let waited = started.elapsed();
    assert_eq!(reply, json!({"ok": true, "id": 3, "size": BODY}));
    assert_eq!(body.len(), BODY);
    assert!(
        waited >= Duration::from_millis(500) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    // The holders' replies were cut short.
    for (mut reader, _) in holders {
        let mut received = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), reader.read_to_end(&mut received))
            .await
            .expect("closed");
        assert!(received.len() < BODY, "{} bytes", received.len());
    }
}

#[tokio::test]
async fn a_chunked_upload_that_stops_sending_frames_is_cut_at_the_pace() {
    let server = TestServer::start_with(|config| {
        small(config, 1, 1, 5000);
        config.transfers.min_rate = 64 * 1024;
        config.transfers.rate_window = Duration::from_secs(1);
    })
    .await;
    let mut stream = server.connect().await;
    let started = Instant::now();
    let mut bytes = frame(r#"{"op":"put","name":"c","chunked":true,"id":1}"#, b"");
    bytes.extend(frame(r#"{"size":10}"#, b"0123456789"));
    // Silence after the first chunk: the idle deadline (300 s) is far, the pace's window is not.
    let (reply, _) = send_and_read(&mut stream, &bytes).await;
    let cut_after = started.elapsed();
    assert_eq!(reply["code"], "timeout", "{reply}");
    assert!(
        cut_after >= Duration::from_secs(1) && cut_after < Duration::from_secs(3),
        "{cut_after:?}"
    );
    let started = Instant::now();
    store(&server, "next", b"free slot").await;
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_password_guesses_waits_its_turn_and_never_delays_another_address() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.toml");
    let mut file = UsersFile::default();
    let account = Account {
        password: Some(hash_password("the right one").unwrap()),
        keys: vec![],
    };
    file.users.insert("alice".into(), account);
    file.save(&users).unwrap();
    let server = TestServer::start_with(|config| {
        config.users = Some(users);
        config.login.penalties.free_failures = u32::MAX;
        config.transfers.wait = Duration::from_secs(3);
        config.max_conns_per_source = 400;
    })
    .await;
    let login = |password: &str| {
        let request = json!({"op": "login", "user": "alice", "password": password});
        frame(&request.to_string(), b"")
    };
    // 200 guesses at once from 127.0.0.1: checked one at a time (some tens of ms each), so those
    // still waiting after 3 s are answered busy instead of queueing.
    let mut guesses = Vec::new();
    for _ in 0..200 {
        let mut stream = server.connect().await;
        stream.write_all(&login("guess")).await.unwrap();
        guesses.push(tokio::spawn(async move { read_reply(&mut stream).await.0 }));
    }
    // Meanwhile another address logs in without waiting behind the flood, which holds one
    // check at a time (in one queue, it would wait for a hundred checks or more).
    let started = Instant::now();
    let mut other = connect_from(&server, OTHER_SOURCE).await;
    let (reply, _) = send_and_read(&mut other, &login("the right one")).await;
    assert_eq!(reply["ok"], true, "{reply}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );

    let (mut refused, mut busy) = (0, 0);
    for guess in guesses {
        let reply = guess.await.unwrap();
        match reply["code"].as_str() {
            Some("unauthorized") => refused += 1,
            Some("busy") => {
                assert!(reply["retry_after"].as_f64().unwrap() > 0.0, "{reply}");
                busy += 1;
            }
            _ => panic!("{reply}"),
        }
    }
    assert!(refused >= 1 && busy >= 1, "{refused} checked, {busy} busy");
    // A busy guess counted nothing: the right password still works from the flooding address.
    let mut stream = server.connect().await;
    let (reply, _) = send_and_read(&mut stream, &login("the right one")).await;
    assert_eq!(reply["ok"], true, "{reply}");
    server.shutdown().await;
}
