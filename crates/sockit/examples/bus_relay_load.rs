//! Load generator for chat rooms shared by several servers over a bus, used by `bench/bus.py`.
//!
//! ```text
//! cargo run --release --example bus_relay_load -- ROOM_ADDRS RATE SECONDS [MEMBERS]
//! ```
//!
//! ROOM_ADDRS is a comma-separated list of chat room addresses (loopback only), one per
//! server. MEMBERS (default 30) members join, spread over the servers in turn, each proving
//! its address (`/confirm`); the first, on the first server, sends RATE lines a second for
//! SECONDS, each carrying its sequence number and the time it was sent, and the others record
//! when each line arrives. Prints one line of JSON: lines sent, deliveries expected and
//! received, lines that arrived twice or out of order, and the latency from sending to
//! arriving (p50, p99, max, in milliseconds) for members on the sender's server (`local`) and
//! on the others (`remote`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;

#[path = "support/confirm.rs"]
mod confirm;

use confirm::confirm;

/// A socket with a receive buffer as large as the server's, so that it is not the one that
/// drops datagrams.
fn member_socket() -> UdpSocket {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
    let _ = socket.set_recv_buffer_size(4 * 1024 * 1024);
    socket.set_nonblocking(true).unwrap();
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    socket.bind(&any.into()).unwrap();
    UdpSocket::from_std(socket.into()).unwrap()
}

/// What one member heard of the sender's lines.
#[derive(Default)]
struct Heard {
    received: u64,
    twice_or_late: u64,
    latencies_us: Vec<u32>,
}

/// Counts the sender's lines arriving on `socket` until the room is quiet for a second, then
/// leaves the room.
async fn listen(socket: UdpSocket, start: Instant) -> Heard {
    let mut buf = [0u8; 4096];
    let mut heard = Heard::default();
    let mut next = 0u64;
    while let Ok(Ok(len)) =
        tokio::time::timeout(Duration::from_secs(1), socket.recv(&mut buf)).await
    {
        let arrived = start.elapsed().as_micros() as u64;
        let line = String::from_utf8_lossy(&buf[..len]);
        let Some(rest) = line.strip_prefix("<sender> m") else {
            continue;
        };
        let mut words = rest.trim_end().split(' ');
        let (Some(seq), Some(sent)) = (words.next(), words.next()) else {
            continue;
        };
        let (seq, sent): (u64, u64) = (seq.parse().unwrap(), sent.parse().unwrap());
        heard.received += 1;
        if seq < next {
            heard.twice_or_late += 1;
        }
        next = next.max(seq + 1);
        heard
            .latencies_us
            .push(u32::try_from(arrived.saturating_sub(sent)).unwrap_or(u32::MAX));
    }
    // Out of the room, so that a next run does not relay to this socket too.
    let _ = socket.send(b"/leave").await;
    heard
}

/// `[p50, p99, max]` of `latencies`, in milliseconds.
fn percentiles(latencies: &mut [u32]) -> [f64; 3] {
    if latencies.is_empty() {
        return [0.0; 3];
    }
    latencies.sort_unstable();
    let at = |q: f64| {
        let index = ((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len()) - 1;
        f64::from(latencies[index]) / 1000.0
    };
    [at(0.50), at(0.99), at(1.0)]
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: bus_relay_load ROOM_ADDRS RATE SECONDS [MEMBERS]");
        std::process::exit(2);
    }
    let rooms: Vec<SocketAddr> = args[1]
        .split(',')
        .map(|addr| addr.parse().expect("ROOM_ADDRS are host:port"))
        .collect();
    assert!(
        rooms.iter().all(|room| room.ip().is_loopback()),
        "the load generator only targets loopback"
    );
    let rate: u64 = args[2].parse().expect("RATE is a number");
    let seconds: f64 = args[3].parse().expect("SECONDS is a number");
    assert!(seconds <= 120.0, "at most two minutes");
    let members: usize = args
        .get(4)
        .map_or(30, |n| n.parse().expect("MEMBERS is a number"));
    assert!((2..=1000).contains(&members), "2 to 1000 members");

    let sender = member_socket();
    sender.connect(rooms[0]).await.unwrap();
    confirm(&sender).await;
    sender.send(b"/nick sender").await.unwrap();
    let mut listeners = Vec::new();
    for i in 1..members {
        let server = i % rooms.len();
        let socket = member_socket();
        socket.connect(rooms[server]).await.unwrap();
        confirm(&socket).await;
        socket.send(format!("/nick m{i}").as_bytes()).await.unwrap();
        listeners.push((server, socket));
    }
    // Let the join notices and the presence settle, then drop what arrived.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut buf = [0u8; 4096];
    while sender.try_recv(&mut buf).is_ok() {}
    for (_, socket) in &listeners {
        while socket.try_recv(&mut buf).is_ok() {}
    }

    let start = Instant::now();
    let listening: Vec<_> = listeners
        .into_iter()
        .map(|(server, socket)| (server, tokio::spawn(listen(socket, start))))
        .collect();
    let total = (rate as f64 * seconds) as u64;
    let sender = Arc::new(sender);
    let mut sent = 0u64;
    while sent < total {
        // Send what is due by now, then sleep a millisecond.
        let due = ((start.elapsed().as_secs_f64() * rate as f64) as u64).min(total);
        while sent < due {
            let now = start.elapsed().as_micros();
            sender
                .send(format!("m{sent} {now}").as_bytes())
                .await
                .unwrap();
            sent += 1;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }

    let _ = sender.send(b"/leave").await;
    let (mut local, mut remote) = (Vec::new(), Vec::new());
    let (mut received, mut twice_or_late) = (0, 0);
    for (server, task) in listening {
        let heard = task.await.unwrap();
        received += heard.received;
        twice_or_late += heard.twice_or_late;
        if server == 0 {
            local.extend(heard.latencies_us);
        } else {
            remote.extend(heard.latencies_us);
        }
    }
    let expected = sent * (members as u64 - 1);
    let [l50, l99, lmax] = percentiles(&mut local);
    let [r50, r99, rmax] = percentiles(&mut remote);
    println!(
        "{{\"sent\":{sent},\"expected\":{expected},\"received\":{received},\"lost\":{},\"twice_or_late\":{twice_or_late},\
         \"local_ms\":[{l50:.3},{l99:.3},{lmax:.3}],\"remote_ms\":[{r50:.3},{r99:.3},{rmax:.3}]}}",
        expected.saturating_sub(received)
    );
}
