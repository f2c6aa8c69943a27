//! The UDP chat room over real loopback sockets, with raw UDP clients like the tutorials'.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::TestServer;
use sockit::chat::room::RoomConfig;
use sockit::server::ServiceKind;
use tokio::net::UdpSocket;

async fn room(chat: RoomConfig) -> TestServer {
    TestServer::start_with(|config| {
        config.add_listener(ServiceKind::Chat, "127.0.0.1:0".parse().unwrap());
        config.chat = chat;
    })
    .await
}

/// A raw UDP client, as in the tutorials: `sendto` the server, `recvfrom` anything.
struct Client {
    socket: UdpSocket,
    server: SocketAddr,
}

impl Client {
    async fn new(server: &TestServer) -> Client {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        Client {
            socket,
            server: server.addr(ServiceKind::Chat),
        }
    }

    fn name(&self) -> String {
        self.socket.local_addr().unwrap().to_string()
    }

    async fn send(&self, data: impl AsRef<[u8]>) {
        self.socket
            .send_to(data.as_ref(), self.server)
            .await
            .unwrap();
    }

    /// Sends and waits until the server has surely handled it (a `/who` round trip).
    async fn say(&self, line: &str) {
        self.send(line).await;
        self.sync().await;
    }

    /// Waits until everything sent before has been handled, discarding what arrives.
    async fn sync(&self) {
        self.send("/who").await;
        while !is_who_answer(&self.recv().await.expect("a /who reply")) {}
    }

    /// Proves to the room that this client receives: asks for its token in a first datagram
    /// long enough to hold the answer, and sends it back. Lines that arrive meanwhile (other
    /// members') are returned.
    async fn confirm(&self) -> Vec<String> {
        self.send(format!("/confirm{}", " ".repeat(120))).await;
        let mut heard = Vec::new();
        let token = loop {
            let line = self.recv().await.expect("the ask");
            match token_in(&line) {
                Some(token) => break token.to_owned(),
                None => heard.push(line),
            }
        };
        self.send(format!("/confirm {token}")).await;
        loop {
            let line = self.recv().await.expect("the confirmation");
            if line == "* confirmed\n" {
                return heard;
            }
            heard.push(line);
        }
    }

    /// Bytes that arrive until the line is quiet for `quiet`.
    async fn bytes_until_quiet(&self, quiet: Duration) -> usize {
        let mut bytes = 0;
        while let Some(line) = self.recv_within(quiet).await {
            bytes += line.len();
        }
        bytes
    }

    async fn recv(&self) -> Option<String> {
        self.recv_within(Duration::from_secs(5)).await
    }

    async fn recv_within(&self, wait: Duration) -> Option<String> {
        let mut buf = vec![0u8; 70_000];
        let (len, from) = tokio::time::timeout(wait, self.socket.recv_from(&mut buf))
            .await
            .ok()?
            .unwrap();
        assert_eq!(from, self.server);
        Some(String::from_utf8(buf[..len].to_vec()).unwrap())
    }

    /// Everything that arrives until the line is quiet for a moment, and until the answer to a
    /// marker sent then: the quiet is not a dead line, and lines the room sent before it handled
    /// the marker (such as a member leaving, at any moment) are all here.
    async fn drain(&self) -> Vec<String> {
        let mut lines = Vec::new();
        while let Some(line) = self.recv_within(Duration::from_millis(300)).await {
            lines.push(line);
        }
        // Not UTF-8: answered to the sender alone, without joining, speaking or using its rate.
        self.send(b"\xff marker, not UTF-8").await;
        loop {
            let line = self.recv().await.expect("the marker's answer");
            if line == "! not UTF-8\n" {
                return lines;
            }
            lines.push(line);
        }
    }
}

/// The token in a line that asks for one, found as tools are told to: the pattern
/// `/confirm ([A-Za-z0-9]{8,32})`.
fn token_in(line: &str) -> Option<&str> {
    let (_, rest) = line.split_once("/confirm ")?;
    let end = rest
        .find(|c: char| !c.is_ascii_alphanumeric())
        .unwrap_or(rest.len());
    (8..=32).contains(&end).then(|| &rest[..end])
}

/// The answer to `/who`: `* ROOM: names` (no notice has `: ` in it).
fn is_who_answer(line: &str) -> bool {
    line.starts_with("* ") && line.contains(": ")
}

#[tokio::test]
async fn three_clients_each_hear_the_others_once_and_never_themselves() {
    let server = room(RoomConfig::default()).await;
    let (a, b, c) = (
        Client::new(&server).await,
        Client::new(&server).await,
        Client::new(&server).await,
    );
    a.say("/nick alice").await;
    b.say("/nick bob").await;
    c.say("/nick carol").await;
    a.drain().await;
    b.drain().await;
    c.drain().await;

    a.send("hi from alice").await;
    b.send("hi from bob").await;
    c.send("hi from carol").await;
    let (heard_a, heard_b, heard_c) = (a.drain().await, b.drain().await, c.drain().await);
    assert_eq!(heard_a, ["<bob> hi from bob\n", "<carol> hi from carol\n"]);
    assert_eq!(
        heard_b,
        ["<alice> hi from alice\n", "<carol> hi from carol\n"]
    );
    assert_eq!(heard_c, ["<alice> hi from alice\n", "<bob> hi from bob\n"]);
}

#[tokio::test]
async fn joining_nick_who_and_rooms() {
    let server = room(RoomConfig::default()).await;
    let (a, b) = (Client::new(&server).await, Client::new(&server).await);
    a.say("hello").await;
    b.send("first words").await;
    assert_eq!(a.recv().await.unwrap(), format!("* {} joined\n", b.name()));
    assert_eq!(
        a.recv().await.unwrap(),
        format!("<{}> first words\n", b.name())
    );

    // The first line the room can send b asks it to confirm; a raw client need not.
    b.send("/nick bob").await;
    let ask = b.recv().await.unwrap();
    assert!(
        ask.starts_with("* send /confirm ") && token_in(&ask).is_some(),
        "{ask}"
    );
    assert_eq!(b.recv().await.unwrap(), "* you are now bob\n");
    assert_eq!(
        a.recv().await.unwrap(),
        format!("* {} is now bob\n", b.name())
    );
    b.send("/who").await;
    let mut names = [a.name(), "bob".to_owned()];
    names.sort();
    assert_eq!(
        b.recv().await.unwrap(),
        format!("* lobby: {}\n", names.join(", "))
    );

    b.send("/join kitchen").await;
    assert_eq!(b.recv().await.unwrap(), "* you are in kitchen (1 here)\n");
    assert_eq!(a.recv().await.unwrap(), "* bob left\n");
    a.send("anyone?").await;
    assert!(b.drain().await.is_empty(), "rooms are separate");
}

#[tokio::test]
async fn silent_members_are_dropped() {
    let server = room(RoomConfig {
        idle: Duration::from_millis(600),
        ..RoomConfig::default()
    })
    .await;
    let (a, b) = (Client::new(&server).await, Client::new(&server).await);
    a.say("/nick quiet").await;
    b.say("/nick chatty").await;
    // chatty keeps talking; quiet says nothing and is dropped.
    let mut heard = Vec::new();
    for _ in 0..8 {
        b.send("/who").await;
        heard.extend(b.drain().await);
    }
    assert!(heard.contains(&"* quiet left\n".to_owned()), "{heard:?}");
    assert!(
        heard.last().unwrap().starts_with("* lobby: chatty"),
        "{heard:?}"
    );
}

#[tokio::test]
async fn a_flood_is_throttled_while_others_get_through() {
    let server = room(RoomConfig {
        rate: 10.0,
        burst: 20.0,
        ..RoomConfig::default()
    })
    .await;
    let (listener, flooder, polite) = (
        Client::new(&server).await,
        Client::new(&server).await,
        Client::new(&server).await,
    );
    listener.say("/nick listener").await;
    flooder.say("/nick flooder").await;
    polite.say("/nick polite").await;
    listener.drain().await;
    for i in 0..500 {
        flooder.send(format!("spam {i}")).await;
    }
    polite.send("the polite line").await;
    let heard = listener.drain().await;
    let spam = heard.iter().filter(|l| l.starts_with("<flooder>")).count();
    assert!(spam <= 25, "{spam} of 500 flood lines relayed");
    assert!(
        heard.contains(&"<polite> the polite line\n".to_owned()),
        "{heard:?}"
    );
    let warned = flooder.drain().await;
    assert_eq!(
        warned
            .iter()
            .filter(|l| l.starts_with("! slow down"))
            .count(),
        1,
        "{warned:?}"
    );
}

#[tokio::test]
async fn empty_oversize_and_invalid_datagrams_are_handled() {
    let server = room(RoomConfig::default()).await;
    let (a, b) = (Client::new(&server).await, Client::new(&server).await);
    a.say("member").await;
    b.send(b"").await;
    assert!(b.drain().await.is_empty());
    b.send(vec![b'x'; 65_507]).await;
    assert_eq!(
        b.recv().await.unwrap(),
        "! message too long (limit 4096 bytes)\n"
    );
    b.send(b"\xff\xfe not utf-8 at all").await;
    assert_eq!(b.recv().await.unwrap(), "! not UTF-8\n");
    assert!(
        a.drain().await.is_empty(),
        "nothing invalid reaches the room, nobody joined"
    );
    a.say("still serving").await;
}

#[tokio::test]
async fn a_name_with_an_escape_sequence_arrives_sanitised() {
    let server = room(RoomConfig::default()).await;
    let (a, b) = (Client::new(&server).await, Client::new(&server).await);
    a.say("watching").await;
    b.say("x").await;
    a.drain().await;
    b.send("/nick \x1b]0;pwned\x07\x1b[31mmallory").await;
    b.send("\x1b[2Jcleared your screen?").await;
    let heard = a.drain().await;
    assert_eq!(
        heard,
        [
            format!("* {} is now ]0;pwned[31mmallory\n", b.name()),
            "<]0;pwned[31mmallory> [2Jcleared your screen?\n".to_owned()
        ]
    );
    assert!(heard
        .iter()
        .all(|l| !l.contains('\x1b') && !l.contains('\x07')));
}

// --- The reflection rule: a forged source address gains nothing ---

/// A room where one member may talk as fast as a test needs.
fn busy(chat: RoomConfig) -> RoomConfig {
    RoomConfig {
        rate: 1e6,
        burst: 1e6,
        ..chat
    }
}

#[tokio::test]
async fn a_fresh_address_gets_back_no_more_than_its_datagram_however_big_the_room() {
    // The window over all unproven addresses is another test's: here it must not interfere.
    let server = room(RoomConfig {
        unconfirmed_rate: usize::MAX,
        ..RoomConfig::default()
    })
    .await;
    let mut members = Vec::new();
    for n in 0..190 {
        let member = Client::new(&server).await;
        member.send(format!("/nick member-{n:03}")).await;
        members.push(member);
    }
    members[189].sync().await;
    // A 4-byte `/who` once drew the 190 names back (4,965 bytes): now nothing, as the answer
    // and the ask are both longer than 4 bytes.
    let fresh = Client::new(&server).await;
    fresh.send("/who").await;
    assert_eq!(fresh.bytes_until_quiet(Duration::from_millis(500)).await, 0);
    // It did join; its next datagram is no longer its first, and it is asked to confirm.
    fresh.send("/who").await;
    let ask = fresh.recv().await.unwrap();
    assert!(token_in(&ask).is_some(), "{ask}");
    let names = fresh.recv().await.unwrap();
    assert!(names.starts_with("* lobby: 127.0.0.1:"), "{names}");
    assert_eq!(names.matches(", ").count(), 190);
    // A stranger that does not join gets only what fits in its datagram.
    let stranger = Client::new(&server).await;
    stranger.send(b"\xff\xff\xff\xff").await;
    assert_eq!(
        stranger.bytes_until_quiet(Duration::from_millis(300)).await,
        0
    );
    stranger
        .send(b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff")
        .await;
    assert_eq!(stranger.recv().await.unwrap(), "! not UTF-8\n");
}

#[tokio::test]
async fn an_unproven_member_receives_64_kib_at_most_until_it_confirms() {
    let server = room(busy(RoomConfig::default())).await;
    let (talker, listener) = (Client::new(&server).await, Client::new(&server).await);
    talker.confirm().await;
    // It joins, and is asked to confirm, which it does not do yet.
    listener.send("listening").await;
    listener.send("/who").await;
    let ask = listener.recv().await.unwrap();
    assert!(token_in(&ask).is_some(), "{ask}");
    let names = listener.recv().await.unwrap();
    assert!(is_who_answer(&names), "{names}");
    let line = "y".repeat(1000);
    for _ in 0..10 {
        for _ in 0..10 {
            talker.send(&line).await;
        }
        talker.sync().await;
    }
    // 100 lines of 1,013 bytes were said; the listener gets 64 KiB in all, what it was sent
    // before included, and nothing more.
    let heard =
        ask.len() + names.len() + listener.bytes_until_quiet(Duration::from_millis(500)).await;
    assert!(heard <= 64 * 1024, "{heard} bytes");
    assert!(
        heard > 64 * 1024 - 1013,
        "{heard} bytes: the budget is used"
    );

    // It confirms with the token it was asked with, and hears everything from then on.
    let heard_before = listener.confirm().await;
    assert!(heard_before.is_empty(), "{heard_before:?}");
    for _ in 0..10 {
        talker.send(&line).await;
    }
    talker.sync().await;
    let heard = listener.drain().await;
    assert_eq!(heard.len(), 10);
    assert!(heard
        .iter()
        .all(|l| *l == format!("<{}> {line}\n", talker.name())));
}

#[tokio::test]
async fn all_unproven_addresses_together_get_256_kib_a_second_at_most() {
    const RATE: usize = 256 * 1024;
    let server = room(busy(RoomConfig::default())).await;
    let talker = Client::new(&server).await;
    talker.confirm().await;
    let started = std::time::Instant::now();
    let mut listeners = Vec::new();
    for n in 0..40 {
        let listener = Client::new(&server).await;
        listener.send(format!("listener {n:02} here")).await;
        listeners.push(listener);
    }
    let counting: Vec<_> = listeners
        .into_iter()
        .map(|listener| {
            tokio::spawn(async move {
                listener
                    .bytes_until_quiet(Duration::from_millis(1500))
                    .await
            })
        })
        .collect();
    // 40 lines of 1,013 bytes to 40 unproven listeners over two seconds: 1.6 MB offered.
    let line = "z".repeat(1000);
    for _ in 0..40 {
        talker.send(&line).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    talker.sync().await;
    let span = started.elapsed().as_secs_f64();
    let mut heard = 0;
    for count in counting {
        heard += count.await.unwrap();
    }
    // Everything sent to them was sent within `span`, and no second holds more than RATE.
    let most = RATE * span.ceil() as usize;
    assert!(heard <= most, "{heard} bytes in {span:.2} s");
    assert!(
        heard > RATE,
        "{heard} bytes in {span:.2} s: the window moves on"
    );
}

#[tokio::test]
async fn a_burst_from_several_members_reaches_each_other_member_once_in_order_per_sender() {
    // Each member may send 30 lines, and earns hardly any more during the test.
    let server = room(RoomConfig {
        rate: 0.01,
        burst: 30.0,
        ..RoomConfig::default()
    })
    .await;
    let (listener, a, b) = (
        Client::new(&server).await,
        Client::new(&server).await,
        Client::new(&server).await,
    );
    for (client, name) in [(&listener, "listener"), (&a, "a"), (&b, "b")] {
        client.confirm().await; // two lines of each one's 30
        client.say(&format!("/nick {name}")).await; // and two more
    }
    listener.drain().await;
    a.drain().await;
    b.drain().await;
    // Sent back to back, so that the room finds many waiting at once: a within its rate,
    // b past it half way, and the burst ends in a datagram that is not UTF-8.
    for n in 0..20 {
        a.send(format!("a{n:02}")).await;
        b.send(format!("b{n:02}")).await;
        b.send(format!("b{n:02}+")).await;
    }
    a.send(b"\xff\xfe\xfd\xfc\xfb\xfa\xf9\xf8\xf7\xf6\xf5\xf4")
        .await;
    let heard = listener.drain().await;
    let from = |who: &str| -> Vec<String> {
        heard
            .iter()
            .filter(|line| line.starts_with(&format!("<{who}> ")))
            .cloned()
            .collect()
    };
    let a_lines: Vec<String> = (0..20).map(|n| format!("<a> a{n:02}\n")).collect();
    assert_eq!(from("a"), a_lines, "every line of a, once, in order");
    let b_lines: Vec<String> = (0..13)
        .flat_map(|n| [format!("<b> b{n:02}\n"), format!("<b> b{n:02}+\n")])
        .take(26)
        .collect();
    assert_eq!(
        from("b"),
        b_lines,
        "b's first 26, once, in order, then none"
    );
    assert_eq!(heard.len(), 20 + 26, "nothing else: {heard:?}");
    let told_a = a.drain().await;
    assert!(told_a.contains(&"! not UTF-8\n".to_owned()), "{told_a:?}");
    let told_b = b.drain().await;
    let slow_downs = told_b
        .iter()
        .filter(|l| l.starts_with("! slow down"))
        .count();
    assert_eq!(slow_downs, 1, "{told_b:?}");
}
