//! Shared test helpers: a server on loopback, raw frame bytes, a raw reply reader, and a proven
//! UDP chat member.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use sockit::server::ServiceKind;
use sockit::{Server, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Says that the calling test skips, and why, where `cargo test` shows it: `SKIPPED <test>:
/// <reason>` written straight to standard error, which the test harness does not capture (the
/// test thread is named after the test). In CI (`CI` set) a skip fails the test instead: CI
/// must have everything the tests need.
pub fn skip(reason: &str) {
    use std::io::Write;
    let test = std::thread::current().name().unwrap_or("a test").to_owned();
    assert!(
        std::env::var_os("CI").is_none(),
        "{test} cannot run in CI: {reason}"
    );
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {reason}");
}

/// A server running on loopback for one test.
pub struct TestServer {
    pub addrs: Vec<(ServiceKind, SocketAddr)>,
    /// The TLS certificate's fingerprint, with a TLS listener.
    pub fingerprint: Option<sockit::tls::Fingerprint>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    root: std::path::PathBuf,
    _root_dir: tempfile::TempDir,
}

impl TestServer {
    pub async fn start() -> TestServer {
        TestServer::start_with(|_| {}).await
    }

    pub async fn start_with(configure: impl FnOnce(&mut ServerConfig)) -> TestServer {
        // The store is a folder of a private temp dir, so that a test can check that nothing
        // appeared beside it without seeing what other programs do in the system's temp dir.
        let root = tempfile::tempdir().expect("temp dir");
        let store = root.path().join("store");
        std::fs::create_dir(&store).expect("store dir");
        let mut config = ServerConfig::loopback();
        config.root = store;
        configure(&mut config);
        let root_path = config.root.clone();
        let server = Server::bind(config).await.expect("bind");
        let addrs = server.listening();
        let fingerprint = server.fingerprint();
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        TestServer {
            addrs,
            fingerprint,
            stop: Some(stop),
            task: Some(task),
            root: root_path,
            _root_dir: root,
        }
    }

    pub fn addr(&self, kind: ServiceKind) -> SocketAddr {
        self.addrs
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, addr)| *addr)
            .expect("listener present")
    }

    pub fn root(&self) -> &std::path::Path {
        &self.root
    }

    pub fn tcp(&self) -> SocketAddr {
        self.addr(ServiceKind::Framed)
    }

    pub async fn connect(&self) -> TcpStream {
        TcpStream::connect(self.tcp()).await.expect("connect")
    }

    /// Stops the server and waits for `run` to return.
    pub async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap();
    }
}

/// Encodes a frame from header JSON text and a body.
pub fn frame(json: &str, body: &[u8]) -> Vec<u8> {
    raw_frame(json.len() as i32, json.as_bytes(), body)
}

/// A frame with an arbitrary (possibly lying) header length.
pub fn raw_frame(hlen: i32, header: &[u8], body: &[u8]) -> Vec<u8> {
    let mut out = hlen.to_le_bytes().to_vec();
    out.extend_from_slice(header);
    out.extend_from_slice(body);
    out
}

/// Reads one reply frame: its header as JSON and its body.
pub async fn read_reply(stream: &mut TcpStream) -> (Value, Vec<u8>) {
    try_read_reply(stream).await.expect("a reply frame")
}

/// Reads one reply frame, or `None` if the stream ends first.
pub async fn try_read_reply(stream: &mut TcpStream) -> Option<(Value, Vec<u8>)> {
    let mut prefix = [0u8; 4];
    // Generous: a debug build on a loaded 2-core machine (CI) can be slow; a hang still fails.
    let read = tokio::time::timeout(Duration::from_secs(30), stream.read_exact(&mut prefix))
        .await
        .expect("reply within 30 s");
    read.ok()?;
    let hlen = i32::from_le_bytes(prefix);
    assert!(hlen > 0 && hlen < 65536, "reply header length {hlen}");
    let mut header = vec![0u8; hlen as usize];
    stream.read_exact(&mut header).await.unwrap();
    let header: Value = serde_json::from_slice(&header).unwrap();
    let size = header.get("size").and_then(Value::as_u64).unwrap_or(0);
    let mut body = vec![0u8; size as usize];
    stream.read_exact(&mut body).await.unwrap();
    Some((header, body))
}

/// Asserts the stream is closed by the server: end of stream (or reset) within 10 s.
pub async fn assert_closed(stream: &mut TcpStream) {
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut byte))
        .await
        .expect("closed within 10 s");
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "expected close, read {read:?}"
    );
}

/// Sends `bytes` and returns the first reply.
pub async fn send_and_read(stream: &mut TcpStream, bytes: &[u8]) -> (Value, Vec<u8>) {
    stream.write_all(bytes).await.unwrap();
    read_reply(stream).await
}

/// A raw UDP member of a chat room, proven (`/confirm`) so that no budget applies to it.
pub struct UdpMember {
    socket: tokio::net::UdpSocket,
    room: SocketAddr,
    /// How long [`UdpMember::recv`] waits for a datagram.
    wait: Duration,
}

impl UdpMember {
    /// Joins the room at `room` and proves the address; `recv` then waits up to `wait`.
    pub async fn join(room: SocketAddr, wait: Duration) -> UdpMember {
        let member = UdpMember {
            socket: tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap(),
            room,
            wait,
        };
        member.send(&format!("/confirm{}", " ".repeat(120))).await;
        let token = loop {
            let line = member.recv().await.expect("the ask");
            if let Some((_, rest)) = line.split_once("/confirm ") {
                let end = rest.find(|c: char| !c.is_ascii_alphanumeric()).unwrap();
                break rest[..end].to_owned();
            }
        };
        member.send(&format!("/confirm {token}")).await;
        while member.recv().await.expect("confirmed") != "* confirmed\n" {}
        member
    }

    /// Its name in the room until it picks one: its address.
    pub fn name(&self) -> String {
        self.socket.local_addr().unwrap().to_string()
    }

    pub async fn send(&self, line: &str) {
        self.socket
            .send_to(line.as_bytes(), self.room)
            .await
            .unwrap();
    }

    /// The next datagram, as text; `None` after the member's wait.
    pub async fn recv(&self) -> Option<String> {
        self.recv_within(self.wait).await
    }

    pub async fn recv_within(&self, wait: Duration) -> Option<String> {
        let mut buf = vec![0u8; 70_000];
        let (len, _) = tokio::time::timeout(wait, self.socket.recv_from(&mut buf))
            .await
            .ok()?
            .unwrap();
        Some(String::from_utf8(buf[..len].to_vec()).unwrap())
    }

    /// Waits for `line`, skipping others.
    pub async fn expect(&self, line: &str) {
        loop {
            let got = self.recv().await.unwrap_or_else(|| panic!("no {line:?}"));
            if got == line {
                return;
            }
        }
    }
}
