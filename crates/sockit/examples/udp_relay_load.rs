//! Load generator for the chat room's relay, used by `bench/udp.py`.
//!
//! ```text
//! cargo run --release --example udp_relay_load -- ROOM_ADDR RATE SECONDS [LISTENERS]
//! ```
//!
//! Joins LISTENERS (default 10) listeners and one sender to the room at ROOM_ADDR (loopback
//! only), each proving its address (`/confirm`) so that the room's budget for unproven
//! addresses does not cap what it receives, sends RATE lines per second for SECONDS, and prints
//! one line of JSON: lines sent, deliveries expected and received, and deliveries per second.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sockit::chat::confirm::{asked_token, CONFIRMED};
use tokio::net::UdpSocket;

/// A listener with a receive buffer as large as the server's, so that it is not the one that
/// drops datagrams.
fn listener_socket() -> UdpSocket {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
    let _ = socket.set_recv_buffer_size(4 * 1024 * 1024);
    socket.set_nonblocking(true).unwrap();
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    socket.bind(&any.into()).unwrap();
    UdpSocket::from_std(socket.into()).unwrap()
}

/// Proves to the room that `socket` receives, so that the budget of unproven addresses does
/// not cap what it is sent: a first datagram long enough for the ask, then its token back.
async fn confirm(socket: &UdpSocket) {
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

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: udp_relay_load ROOM_ADDR RATE SECONDS [LISTENERS]");
        std::process::exit(2);
    }
    let room: SocketAddr = args[1].parse().expect("ROOM_ADDR is host:port");
    assert!(
        room.ip().is_loopback(),
        "the load generator only targets loopback"
    );
    let rate: u64 = args[2].parse().expect("RATE is a number");
    let seconds: f64 = args[3].parse().expect("SECONDS is a number");
    let listeners: usize = args
        .get(4)
        .map_or(10, |n| n.parse().expect("LISTENERS is a number"));

    let received = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for i in 0..listeners {
        let socket = listener_socket();
        socket.connect(room).await.unwrap();
        confirm(&socket).await;
        socket.send(format!("/nick l{i}").as_bytes()).await.unwrap();
        let mut buf = [0u8; 4096];
        socket.recv(&mut buf).await.unwrap(); // "* you are now lN"
        tasks.push(socket);
    }
    let sender = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sender.connect(room).await.unwrap();
    confirm(&sender).await;
    sender.send(b"/nick sender").await.unwrap();
    let mut buf = [0u8; 4096];
    sender.recv(&mut buf).await.unwrap();
    // Let the join notices arrive, then start counting.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let counting: Vec<_> = tasks
        .into_iter()
        .map(|socket| {
            let received = Arc::clone(&received);
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while socket.try_recv(&mut buf).is_ok() {} // the join notices
                loop {
                    match tokio::time::timeout(Duration::from_millis(500), socket.recv(&mut buf))
                        .await
                    {
                        Ok(Ok(_)) => {
                            received.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => return,
                    }
                }
            })
        })
        .collect();

    let total = (rate as f64 * seconds) as u64;
    let started = Instant::now();
    let mut sent = 0u64;
    while sent < total {
        // Send what is due by now, then sleep a millisecond.
        let due = ((started.elapsed().as_secs_f64() * rate as f64) as u64).min(total);
        while sent < due {
            sender.send(format!("m{sent}").as_bytes()).await.unwrap();
            sent += 1;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let sending = started.elapsed().as_secs_f64();
    for task in counting {
        task.await.unwrap();
    }
    let received = received.load(Ordering::Relaxed);
    let expected = sent * listeners as u64;
    println!(
        "{{\"sent\":{sent},\"expected\":{expected},\"received\":{received},\"lost\":{},\"deliveries_per_second\":{:.0}}}",
        expected - received,
        received as f64 / sending
    );
}
