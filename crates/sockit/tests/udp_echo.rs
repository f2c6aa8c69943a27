//! `--udp-echo` under abuse, over real loopback sockets: it never loops with another echo
//! service and never answers its own port.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::TestServer;
use sockit::defaults;
use sockit::server::ServiceKind;
use tokio::net::UdpSocket;

async fn echo() -> TestServer {
    TestServer::start_with(|config| {
        config.add_listener(ServiceKind::UdpEcho, "127.0.0.1:0".parse().unwrap());
    })
    .await
}

/// The next datagram on `socket` within `wait`, with its sender.
async fn recv_within(socket: &UdpSocket, wait: Duration) -> Option<(Vec<u8>, SocketAddr)> {
    let mut buf = vec![0u8; 2048];
    let (len, from) = tokio::time::timeout(wait, socket.recv_from(&mut buf))
        .await
        .ok()?
        .unwrap();
    Some((buf[..len].to_vec(), from))
}

/// Sends `data` to the echo and returns its answer, if one comes within half a second.
async fn ask(socket: &UdpSocket, echo: SocketAddr, data: &[u8]) -> Option<Vec<u8>> {
    socket.send_to(data, echo).await.unwrap();
    let (reply, from) = recv_within(socket, Duration::from_millis(500)).await?;
    assert_eq!(from, echo);
    Some(reply)
}

#[tokio::test]
async fn an_echo_facing_another_echo_stops_within_its_burst() {
    let server = echo().await;
    let echo = server.addr(ServiceKind::UdpEcho);
    // Another echo service, as naive as they come: it sends every datagram back as it is.
    let other = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let datagram = [b'x'; 100];
    let started = Instant::now();
    other.send_to(&datagram, echo).await.unwrap();
    let mut bounces = 0u64;
    while let Some((data, from)) = recv_within(&other, Duration::from_millis(500)).await {
        assert_eq!((data.as_slice(), from), (&[b'X'; 100][..], echo));
        bounces += 1;
        assert!(bounces < 10_000, "the echo still answers");
        other.send_to(&data, echo).await.unwrap();
    }
    let looped = started.elapsed().as_secs_f64();
    // A quarter second's worth of the source's rate at once, and the rate for as long as the
    // loop ran (at least 500 ms of it the quiet that ended it).
    let rate = defaults::UDP_ECHO_SOURCE_RATE as f64;
    let burst = (rate / 4.0 / 100.0) as u64;
    let most = ((rate / 4.0 + rate * looped) / 100.0) as u64 + 1;
    assert!(
        (burst..=most).contains(&bounces),
        "{bounces} bounces in {looped:.3} s, expected {burst}..={most}"
    );

    // The loop is over; others from the same host are answered, and so is the source once its
    // bucket has refilled.
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    assert_eq!(ask(&client, echo, b"hello").await.unwrap(), b"HELLO");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(ask(&other, echo, b"again").await.unwrap(), b"AGAIN");
}

#[tokio::test]
async fn a_datagram_from_the_echos_own_port_is_not_answered() {
    let server = echo().await;
    let echo = server.addr(ServiceKind::UdpEcho);
    // The echo's own address cannot be borrowed without raw sockets; its port on another
    // loopback address can, where the system routes all of 127.0.0.0/8 to loopback.
    let Ok(same_port) = UdpSocket::bind(("127.0.0.2", echo.port())).await else {
        common::skip("no 127.0.0.2 to send from the echo's own port");
        return;
    };
    assert_eq!(ask(&same_port, echo, b"are you there").await, None);
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    assert_eq!(
        ask(&client, echo, b"still serving").await.unwrap(),
        b"STILL SERVING"
    );
}

/// Every datagram that arrived on `socket` until it has been quiet for a moment.
async fn all_replies(socket: &UdpSocket) -> Vec<Vec<u8>> {
    let mut replies = Vec::new();
    while let Some((data, _)) = recv_within(socket, Duration::from_millis(300)).await {
        replies.push(data);
    }
    replies
}

#[tokio::test]
async fn a_burst_is_answered_once_in_order_and_a_source_over_its_rate_is_cut_mid_burst() {
    // A source's bucket holds a quarter second of its rate: ten datagrams of at most 64 bytes.
    let server = TestServer::start_with(|config| {
        config.add_listener(ServiceKind::UdpEcho, "127.0.0.1:0".parse().unwrap());
        config.udp_echo.source_rate = 64 * 40;
    })
    .await;
    let echo = server.addr(ServiceKind::UdpEcho);
    let greedy = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let Ok(modest) = UdpSocket::bind("127.0.0.2:0").await else {
        common::skip("no 127.0.0.2 for a second source address");
        return;
    };
    // Sent back to back, so that the echo finds many waiting at once.
    for n in 0..30 {
        greedy
            .send_to(format!("greedy {n:02}").as_bytes(), echo)
            .await
            .unwrap();
        if n % 3 == 0 {
            modest
                .send_to(format!("modest {n:02}").as_bytes(), echo)
                .await
                .unwrap();
        }
    }
    let greedy_heard = all_replies(&greedy).await;
    let expected: Vec<Vec<u8>> = (0..greedy_heard.len())
        .map(|n| format!("GREEDY {n:02}").into_bytes())
        .collect();
    assert_eq!(
        greedy_heard, expected,
        "the first ones, each once, in order"
    );
    assert!(
        (10..=11).contains(&greedy_heard.len()),
        "{} answered: a burst and no more",
        greedy_heard.len()
    );
    let modest_heard = all_replies(&modest).await;
    let expected: Vec<Vec<u8>> = (0..30)
        .step_by(3)
        .map(|n| format!("MODEST {n:02}").into_bytes())
        .collect();
    assert_eq!(modest_heard, expected, "another source is not held back");
}
