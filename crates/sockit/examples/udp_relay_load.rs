//! Load generator for the chat room's relay, used by `bench/udp.py` and `bench/floor.py`.
//!
//! ```text
//! cargo run --release --example udp_relay_load -- ROOM_ADDR RATE SECONDS [LISTENERS]
//! ```
//!
//! Joins LISTENERS (default 10) listeners and one sender to the room at ROOM_ADDR (loopback
//! only), each proving its address (`/confirm`) so that the room's budget for unproven
//! addresses does not cap what it receives, sends RATE lines per second for SECONDS, and prints
//! one line of JSON: lines sent, deliveries expected and received, lines lost, heard twice or out
//! of order (each listener keeps count of every line's number), deliveries per second, and the
//! latency of the deliveries (p50, p99, max, in milliseconds: from just before the line was
//! sent to when a listener read it; each line carries the moment it was sent), and the part of
//! it until the line was in the listener's socket (`to_listener_*`, from the kernel's receive
//! timestamp): the way through the room, without the listener's own delay. At the end every
//! member leaves, so that a later run finds the room as this one did (members of an earlier
//! run left behind would take a copy of every line, each answered by an ICMP error).

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::Duration;

use nix::sys::socket::{recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags};
use tokio::io::Interest;

use tokio::net::UdpSocket;

#[path = "support/confirm.rs"]
mod confirm;
#[path = "support/relay.rs"]
mod relay;

use confirm::confirm;
use relay::{line, parse, quantiles, since_epoch, summary, Heard, Pace};

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
    let relay::Load {
        rate,
        seconds,
        listeners,
    } = relay::Load::from_args(&args, 1000);

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
    let mut pace = Pace::new(rate, seconds);
    let total = pace.total();
    let counting: Vec<_> = tasks
        .into_iter()
        .map(|socket| tokio::spawn(listen(socket, total)))
        .collect();

    while !pace.done() {
        // Send what is due by now, then wait a millisecond.
        for seq in pace.due() {
            sender.send(line(seq).as_bytes()).await.unwrap();
        }
        pace.wait().await;
    }
    let sending = pace.elapsed();
    let mut heard = Vec::new();
    let mut to_listener = Vec::new();
    for task in counting {
        let (listener, queued) = task.await.unwrap();
        heard.push(listener);
        to_listener.extend(queued);
    }
    sender.send(b"/leave").await.unwrap();
    let to_listener = quantiles(to_listener);
    println!(
        "{{{},\"to_listener_p50_ms\":{:.3},\"to_listener_p99_ms\":{:.3}}}",
        summary(total, &heard, sending),
        to_listener[0],
        to_listener[1],
    );
}

/// Counts the sender's lines arriving on `socket` until the room is quiet for half a second,
/// then leaves the room: what was heard, and for each line the part of its latency until it
/// was in the listener's socket (the kernel's receive timestamp): the way through the room.
/// The rest is the listener's own delay.
async fn listen(socket: UdpSocket, total: u64) -> (Heard, Vec<Duration>) {
    let mut buf = [0u8; 4096];
    let mut heard = Heard::new(total);
    let mut to_listener = Vec::with_capacity(total as usize);
    while socket.try_recv(&mut buf).is_ok() {} // the join notices
    loop {
        let ready = tokio::time::timeout(Duration::from_millis(500), socket.readable()).await;
        if !matches!(ready, Ok(Ok(()))) {
            // Leave, so that a later run's room is not larger by this one.
            let _ = socket.send(b"/leave").await;
            return (heard, to_listener);
        }
        // Everything waiting, for one wake-up; only the sender's lines count.
        while let Ok((len, queued)) =
            socket.try_io(Interest::READABLE, || recv_stamped(&socket, &mut buf))
        {
            let read = since_epoch();
            if let Some((seq, sent)) = parse(&buf[..len]) {
                heard.line(seq, sent, read);
                to_listener.push(queued.unwrap_or(read).saturating_sub(sent));
            }
        }
    }
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
