//! The browser front end's limits against slow and greedy clients, over raw TCP: a head that
//! never ends, a silent connection, a body that stops, and more connections than an address
//! may hold.

mod common;

use std::time::{Duration, Instant};

use common::TestServer;
use sockit::server::ServiceKind;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn server() -> TestServer {
    TestServer::start_with(|config| {
        config.add_listener(ServiceKind::Http, "127.0.0.1:0".parse().unwrap());
        config.header_timeout = Duration::from_secs(1);
        config.idle_timeout = Duration::from_secs(2);
        config.max_conns_per_source = 3;
    })
    .await
}

/// Reads until the server closes the connection; what it sent, and how long that took.
async fn until_closed(stream: &mut TcpStream) -> (String, Duration) {
    let started = Instant::now();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(15), stream.read_to_end(&mut answer));
    assert!(read.await.is_ok(), "still open after 15 s");
    (
        String::from_utf8_lossy(&answer).into_owned(),
        started.elapsed(),
    )
}

#[tokio::test]
async fn a_head_that_never_ends_and_a_silent_connection_are_closed() {
    let server = server().await;
    let addr = server.addr(ServiceKind::Http);

    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /api/files HTTP/1.1\r\nHost: t\r\n")
        .await
        .unwrap();
    let (_, took) = until_closed(&mut slow).await;
    assert!(
        took < Duration::from_secs(5),
        "{took:?} for a head begun and never ended"
    );

    let mut silent = TcpStream::connect(addr).await.unwrap();
    let (answer, took) = until_closed(&mut silent).await;
    assert!(answer.is_empty(), "{answer}");
    assert!(
        took < Duration::from_secs(6),
        "{took:?} for a silent connection"
    );

    // A kept-alive connection that falls silent after a request is closed too.
    let mut kept = TcpStream::connect(addr).await.unwrap();
    kept.write_all(b"GET /api/files HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let (answer, took) = until_closed(&mut kept).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(took < Duration::from_secs(6), "{took:?}");
    server.shutdown().await;
}

#[tokio::test]
async fn a_body_that_stops_is_cut_and_nothing_is_stored() {
    let server = server().await;
    let addr = server.addr(ServiceKind::Http);
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            b"PUT /files/stalled.bin HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n0123456789",
        )
        .await
        .unwrap();
    let (answer, took) = until_closed(&mut stream).await;
    assert!(took < Duration::from_secs(8), "{took:?}");
    assert!(!answer.starts_with("HTTP/1.1 201"), "{answer}");
    assert!(!server.root().join("stalled.bin").exists());
    server.shutdown().await;
}

#[tokio::test]
async fn connections_past_an_address_share_are_closed_at_once() {
    let server = server().await;
    let addr = server.addr(ServiceKind::Http);
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET /api/files HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 12];
        stream.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"HTTP/1.1 200");
        held.push(stream);
    }
    let mut fourth = TcpStream::connect(addr).await.unwrap();
    let (answer, took) = until_closed(&mut fourth).await;
    assert!(answer.is_empty(), "{answer}");
    assert!(took < Duration::from_secs(1), "{took:?}");
    drop(held);
    server.shutdown().await;
}

#[tokio::test]
async fn a_download_taken_slower_than_the_transfer_pace_is_cut_and_gives_its_slot_back() {
    let server = TestServer::start_with(|config| {
        config.add_listener(ServiceKind::Http, "127.0.0.1:0".parse().unwrap());
        config.transfers.min_rate = 1024 * 1024;
        config.transfers.rate_window = Duration::from_secs(1);
        config.transfers.max_per_source = 1;
        config.transfers.wait = Duration::from_millis(300);
    })
    .await;
    let addr = server.addr(ServiceKind::Http);
    std::fs::write(server.root().join("big.bin"), vec![7u8; 64 * 1024 * 1024]).unwrap();
    std::fs::write(server.root().join("small.txt"), b"small").unwrap();
    let small = || async move {
        let request = b"GET /files/small.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(request).await.unwrap();
        until_closed(&mut stream).await.0
    };
    // A client that asks for the big file and reads none of it holds the address's one slot...
    let mut stalled = TcpStream::connect(addr).await.unwrap();
    stalled
        .write_all(b"GET /files/big.bin HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let busy = small().await;
    assert!(busy.starts_with("HTTP/1.1 503"), "{busy:.200}");
    // ...until, a window or two later, it is cut for falling behind the pace.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let served = small().await;
    assert!(served.starts_with("HTTP/1.1 200"), "{served:.200}");
    assert!(served.ends_with("small"), "{served:.200}");
    drop(stalled);
    server.shutdown().await;
}
