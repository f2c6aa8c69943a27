//! Load generator for the chat room's relay, used by `bench/udp.py`.
//!
//! ```text
//! cargo run --release --example udp_relay_load -- ROOM_ADDR RATE SECONDS [LISTENERS]
//! ```
//!
//! Joins LISTENERS (default 10) listeners and one sender to the room at ROOM_ADDR (loopback
//! only), each proving its address (`/confirm`) so that the room's budget for unproven
//! addresses does not cap what it receives, sends RATE lines per second for SECONDS, and prints
//! one line of JSON: lines sent, deliveries expected and received, deliveries per second, and
//! the latency of the deliveries (p50, p99, max, in milliseconds: from just before the line was
//! sent to when a listener read it; each line carries the moment it was sent), and the part of
//! it until the line was in the listener's socket (`to_listener_*`, from the kernel's receive
//! timestamp): the way through the room, without the listener's own delay. At the end every
//! member leaves, so that a later run finds the room as this one did (members of an earlier
//! run left behind would take a copy of every line, each answered by an ICMP error).

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use nix::sys::socket::{recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags};
use tokio::io::Interest;

use tokio::net::UdpSocket;

#[path = "support/confirm.rs"]
mod confirm;

use confirm::confirm;

/// A listener with a receive buffer as large as the server's, so that it is not the one that
/// drops datagrams.
fn listener_socket() -> UdpSocket {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
    let _ = socket.set_recv_buffer_size(4 * 1024 * 1024);
    socket.set_nonblocking(true).unwrap();
    setsockopt(&socket, sockopt::ReceiveTimestampns, &true).unwrap();
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    socket.bind(&any.into()).unwrap();
    UdpSocket::from_std(socket.into()).unwrap()
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
                let mut latencies = Vec::new();
                while socket.try_recv(&mut buf).is_ok() {} // the join notices
                loop {
                    let ready =
                        tokio::time::timeout(Duration::from_millis(500), socket.readable()).await;
                    if !matches!(ready, Ok(Ok(()))) {
                        // Leave, so that a later run's room is not larger by this one.
                        let _ = socket.send(b"/leave").await;
                        return latencies;
                    }
                    // Everything waiting, for one wake-up; only the sender's lines count.
                    while let Ok((len, queued)) =
                        socket.try_io(Interest::READABLE, || recv_stamped(&socket, &mut buf))
                    {
                        let read = since_epoch();
                        if let Some(sent) = sent_at(&buf[..len]) {
                            received.fetch_add(1, Ordering::Relaxed);
                            latencies.push(Stages {
                                total: read.saturating_sub(sent),
                                to_listener: queued.unwrap_or(read).saturating_sub(sent),
                            });
                        }
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
            let line = format!("m{sent} {}", since_epoch().as_nanos());
            sender.send(line.as_bytes()).await.unwrap();
            sent += 1;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let sending = started.elapsed().as_secs_f64();
    let mut latencies = Vec::new();
    for task in counting {
        latencies.extend(task.await.unwrap());
    }
    sender.send(b"/leave").await.unwrap();
    let total = quantiles(latencies.iter().map(|stages| stages.total).collect());
    let to_listener = quantiles(latencies.iter().map(|stages| stages.to_listener).collect());
    let received = received.load(Ordering::Relaxed);
    let expected = sent * listeners as u64;
    println!(
        "{{\"sent\":{sent},\"expected\":{expected},\"received\":{received},\"lost\":{},\"deliveries_per_second\":{:.0},\"p50_ms\":{:.3},\"p99_ms\":{:.3},\"max_ms\":{:.3},\"to_listener_p50_ms\":{:.3},\"to_listener_p99_ms\":{:.3}}}",
        expected.saturating_sub(received),
        received as f64 / sending,
        total[0],
        total[1],
        total[2],
        to_listener[0],
        to_listener[1],
    );
}

/// How long one delivery took: in all, from just before the sender sent the line to when a
/// listener read it; and the part until it was in the listener's socket (the kernel's receive
/// timestamp): the way through the room. The rest is the listener's own delay.
#[derive(Debug, Clone, Copy)]
struct Stages {
    total: Duration,
    to_listener: Duration,
}

/// p50, p99 and max of `latencies`, in milliseconds.
fn quantiles(mut latencies: Vec<Duration>) -> [f64; 3] {
    latencies.sort_unstable();
    let at = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(0.0, |latency| latency.as_secs_f64() * 1000.0)
    };
    [at(0.5), at(0.99), at(1.0)]
}

/// The wall clock, which the kernel's receive timestamps also use.
fn since_epoch() -> Duration {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
}

/// One datagram and the kernel's time of its arrival in the socket, without waiting.
fn recv_stamped(socket: &UdpSocket, buf: &mut [u8]) -> std::io::Result<(usize, Option<Duration>)> {
    let mut cmsgs = nix::cmsg_space!(nix::sys::time::TimeSpec);
    let mut iov = [std::io::IoSliceMut::new(buf)];
    let msg = recvmsg::<()>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut cmsgs),
        MsgFlags::MSG_DONTWAIT,
    )?;
    let mut stamp = None;
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmTimestampns(ts) = cmsg {
            stamp = Some(Duration::new(ts.tv_sec() as u64, ts.tv_nsec() as u32));
        }
    }
    Ok((msg.bytes, stamp))
}

/// When a relayed line (`<sender> mSEQ NANOS`) was sent, as time since the epoch.
fn sent_at(datagram: &[u8]) -> Option<Duration> {
    let line = std::str::from_utf8(datagram).ok()?;
    let nanos = line.trim_end().rsplit(' ').next()?.parse().ok()?;
    Some(Duration::from_nanos(nanos))
}
