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
        while !self.recv().await.expect("a /who reply").starts_with("* ") {}
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

    b.send("/nick bob").await;
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
