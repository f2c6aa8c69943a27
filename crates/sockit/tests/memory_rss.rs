//! The memory budget holds the server's size: many connections that send large `echo` bodies
//! and never read the replies, and many that pipeline small ones, grow the process by no more
//! than the budget and a margin, later requests get `busy`, and a well-behaved client from
//! another address is served meanwhile.
//!
//! It measures the resident memory of the whole process (`VmRSS`), so it is the only test in
//! this file: tests of one file run in one process, at once.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{frame, read_reply, send_and_read, TestServer};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const MIB: u64 = 1 << 20;
/// Each hostile `echo` body: the default largest body in memory.
const BODY: usize = 16 << 20;
/// Connections that send one and never read.
const HOSTILE: usize = 40;
/// The server's budget, and one address's share of it.
const BUDGET: u64 = 64 * MIB;
const PER_SOURCE: u64 = 32 * MIB;
/// Connections that pipeline small echoes and never read, and how many each sends.
const PIPELINERS: usize = 20;
const PIPELINED: usize = 256;
const SMALL_BODY: usize = 16 * 1024;

/// The process's resident memory in bytes, from `/proc/self/status`.
fn resident() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Samples the resident memory every 10 ms until `done`; returns the highest seen.
fn sample_peak(done: Arc<AtomicBool>) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let mut peak = 0;
        while !done.load(Ordering::Relaxed) {
            peak = peak.max(resident().unwrap_or(0));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        peak.max(resident().unwrap_or(0))
    })
}

/// Connects and sends `bytes` without reading; returns the connection once all are taken.
async fn send_unread(server: SocketAddr, bytes: Arc<Vec<u8>>) -> TcpStream {
    let mut stream = TcpStream::connect(server).await.unwrap();
    stream.write_all(&bytes).await.unwrap();
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unread_echoes_cannot_grow_the_server_past_its_memory_budget() {
    let Some(_) = resident() else {
        return common::skip("no /proc/self/status to read the resident memory from");
    };
    let server = TestServer::start_with(|config| {
        config.memory.budget = BUDGET;
        config.memory.per_source = PER_SOURCE;
        config.memory.wait = Duration::from_secs(1);
    })
    .await;
    let big = Arc::new(frame(
        &format!(r#"{{"op":"echo","size":{BODY}}}"#),
        &vec![b'e'; BODY],
    ));
    let mut pipelined = Vec::new();
    for _ in 0..PIPELINED {
        pipelined.extend(frame(
            &format!(r#"{{"op":"echo","size":{SMALL_BODY}}}"#),
            &[b's'; SMALL_BODY],
        ));
    }
    let pipelined = Arc::new(pipelined);

    // Warm up: one big echo read in full, so that the runtime and the allocator are ready.
    let mut warm = server.connect().await;
    let (reply, body) = send_and_read(&mut warm, &big).await;
    assert_eq!(reply["ok"], true);
    assert_eq!(body.len(), BODY);
    drop(body);
    let baseline = resident().unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let peak = sample_peak(Arc::clone(&done));

    // The attack: big echoes left unread, and small ones pipelined and left unread.
    let hostile: Vec<_> = (0..HOSTILE)
        .map(|_| tokio::spawn(send_unread(server.tcp(), Arc::clone(&big))))
        .collect();
    let pipeliners: Vec<_> = (0..PIPELINERS)
        .map(|_| {
            let bytes = Arc::clone(&pipelined);
            let addr = server.tcp();
            tokio::spawn(async move {
                let mut stream = TcpStream::connect(addr).await.unwrap();
                // The server stops reading once its replies back up: this never completes.
                let _ =
                    tokio::time::timeout(Duration::from_secs(3), stream.write_all(&bytes)).await;
                stream
            })
        })
        .collect();
    // Every big body is taken: two held for their replies, the rest read and skipped once
    // their wait for memory is over.
    let mut hostile_streams = Vec::new();
    for sending in hostile {
        let stream = tokio::time::timeout(Duration::from_secs(60), sending)
            .await
            .expect("every body taken within 60 s")
            .unwrap();
        hostile_streams.push(stream);
    }

    // Meanwhile, another address is served, a big echo too.
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::from((Ipv4Addr::new(127, 0, 0, 2), 0)))
        .unwrap();
    let mut other = socket.connect(server.tcp()).await.unwrap();
    let (reply, body) = send_and_read(&mut other, &big).await;
    assert_eq!(reply, json!({"ok": true, "size": BODY}));
    assert_eq!(body.len(), BODY);
    drop(body);
    let (reply, _) = send_and_read(&mut other, &frame(r#"{"op":"ping","id":1}"#, b"")).await;
    assert_eq!(reply, json!({"ok": true, "id": 1}));

    let mut pipeline_streams = Vec::new();
    for sending in pipeliners {
        pipeline_streams.push(sending.await.unwrap());
    }
    done.store(true, Ordering::Relaxed);
    let grown = peak.await.unwrap().saturating_sub(baseline);
    // The budget, the other client's own copy of its echo reply, and a margin for the
    // connections' buffers and the allocator. Without the budget: 40 × 16 MiB = 640 MiB.
    let allowed = BUDGET + BODY as u64 + 32 * MIB;
    eprintln!(
        "resident memory grew by {} MiB (allowed {} MiB)",
        grown / MIB,
        allowed / MIB
    );
    assert!(grown < allowed, "grew by {grown} bytes, allowed {allowed}");

    // Of the big echoes, as many as one address's share holds were answered; the others got
    // `busy` with `retry_after`.
    let (mut answered, mut busy) = (0, 0);
    for stream in &mut hostile_streams {
        let (reply, body) = read_reply(stream).await;
        match reply["code"].as_str() {
            None => {
                assert_eq!(reply, json!({"ok": true, "size": BODY}));
                assert_eq!(body.len(), BODY);
                answered += 1;
            }
            Some(code) => {
                assert_eq!(code, "busy", "{reply}");
                assert_eq!(reply["retry_after"], json!(1.0), "{reply}");
                busy += 1;
            }
        }
    }
    assert_eq!((answered, busy), (PER_SOURCE as usize / BODY, HOSTILE - 2));
    // The pipelined echoes come back in order, all of them, once read.
    let mut stream = pipeline_streams.swap_remove(0);
    let mut replies = 0;
    while replies < PIPELINED {
        let (reply, body) = read_reply(&mut stream).await;
        assert_eq!(reply, json!({"ok": true, "size": SMALL_BODY}));
        assert_eq!(body, [b's'; SMALL_BODY]);
        replies += 1;
    }
    let mut rest = [0u8; 1];
    let nothing = tokio::time::timeout(Duration::from_millis(100), stream.read(&mut rest)).await;
    assert!(nothing.is_err(), "no reply beyond the requests");
}
