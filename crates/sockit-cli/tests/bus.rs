//! Several `sockit serve` on one Redis (`--bus`), end to end: each test starts its own
//! `redis-server` on a free loopback port and two or three servers on it, and talks to them
//! as the tutorials' UDP chat clients do.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{tool, Serve, SOCKIT};

/// The presence TTL the servers of these tests use, so that a dead server's members leave
/// within TTL + TTL/3 = 2 s rather than the default 20 s.
const PRESENCE_TTL: &str = "1.5";
/// TTL + TTL/3, the documented bound.
const PRESENCE_BOUND: Duration = Duration::from_secs(2);

/// A `redis-server` of its own on a loopback port, with nothing kept on disk; killed when
/// dropped.
struct Redis {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

impl Redis {
    /// A fresh Redis, or `None` (and the test skips) when `redis-server` is not installed.
    fn start() -> Option<Redis> {
        tool("redis-server", "redis-server is not installed")?;
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut redis = Redis {
            child: None,
            port,
            dir: tempfile::tempdir().unwrap(),
        };
        redis.restart();
        Some(redis)
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts it (again) on its port and waits until it answers.
    fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let started = Instant::now();
        while !self.answers() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether it answers `PING`.
    fn answers(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(1)))
            .unwrap();
        let mut reply = [0u8; 7];
        stream.write_all(b"PING\r\n").is_ok()
            && std::io::Read::read_exact(&mut stream, &mut reply).is_ok()
            && &reply == b"+PONG\r\n"
    }

    /// Sends it `signal` (`STOP`, `CONT`).
    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Kills it with SIGKILL.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A `sockit serve` with a UDP chat room on `redis`'s bus, members allowed many lines a second,
/// with `extra` flags.
fn serve_on(redis: &Redis, extra: &[&str]) -> Serve {
    let url = redis.url();
    let mut args = vec![
        "--udp",
        "127.0.0.1:0",
        "--bus",
        &url,
        "--bus-presence-ttl",
        PRESENCE_TTL,
        "--chat-rate",
        "1000",
    ];
    args.extend_from_slice(extra);
    Serve::start(&args)
}

/// A member of a server's room: a raw UDP socket, as the tutorials' client.
struct Member {
    socket: UdpSocket,
    server: SocketAddr,
}

impl Member {
    /// Joins `serve`'s room, proves that it receives (`/confirm`) and takes `nick`.
    fn join(serve: &Serve, nick: &str) -> Member {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let member = Member {
            socket,
            server: serve.addr("udp"),
        };
        // Long enough to hold the answer that asks for the token.
        member.send(&format!("/confirm{}", " ".repeat(120)));
        let token = loop {
            let line = member.recv().expect("the ask to confirm");
            if let Some(token) = token_in(&line) {
                break token.to_owned();
            }
        };
        member.send(&format!("/confirm {token}"));
        while member.recv().expect("the confirmation") != "* confirmed\n" {}
        member.send(&format!("/nick {nick}"));
        let mine = format!("* you are now {nick}\n");
        while member.recv().expect("the new name") != mine {}
        member
    }

    fn send(&self, line: &str) {
        self.socket.send_to(line.as_bytes(), self.server).unwrap();
    }

    fn recv(&self) -> Option<String> {
        self.recv_within(Duration::from_secs(5))
    }

    fn recv_within(&self, wait: Duration) -> Option<String> {
        self.socket.set_read_timeout(Some(wait)).unwrap();
        let mut buf = [0u8; 65_536];
        let (len, from) = self.socket.recv_from(&mut buf).ok()?;
        assert_eq!(from, self.server);
        Some(String::from_utf8(buf[..len].to_vec()).unwrap())
    }

    /// The next line that is not another member's arrival or rename: those travel on the
    /// bus as lines, and presence as keys, so an arrival's line may come after `/who` already
    /// lists the member.
    fn recv_skipping_arrivals(&self) -> Option<String> {
        loop {
            let line = self.recv()?;
            let arrival = line.starts_with("* ")
                && (line.ends_with(" joined\n") || line.contains(" is now "));
            if !arrival {
                return Some(line);
            }
        }
    }

    /// Every line that arrives until the room is quiet for a second.
    fn drain(&self) -> Vec<String> {
        std::iter::from_fn(|| self.recv_within(Duration::from_secs(1))).collect()
    }

    /// The answer to `/who` (lines that arrive before it are dropped).
    fn who(&self) -> String {
        self.send("/who");
        loop {
            let line = self.recv().expect("the answer to /who");
            if line.starts_with("* ") && line.contains(": ") {
                return line;
            }
        }
    }

    /// Asks `/who` until the answer is `expected`, within `limit`; how long that took.
    fn who_until(&self, expected: &str, limit: Duration) -> Duration {
        let started = Instant::now();
        loop {
            let who = self.who();
            if who == expected {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < limit,
                "/who still says {who:?}, not {expected:?}, after {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The token in a line that asks for one: the pattern `/confirm ([A-Za-z0-9]{8,32})`.
fn token_in(line: &str) -> Option<&str> {
    let (_, rest) = line.split_once("/confirm ")?;
    let end = rest
        .find(|c: char| !c.is_ascii_alphanumeric())
        .unwrap_or(rest.len());
    (8..=32).contains(&end).then(|| &rest[..end])
}

#[test]
fn lines_reach_every_server_once_in_order_per_sender() {
    let Some(redis) = Redis::start() else { return };
    let (a, b, c) = (
        serve_on(&redis, &[]),
        serve_on(&redis, &[]),
        serve_on(&redis, &[]),
    );
    let alice = Member::join(&a, "alice");
    let dave = Member::join(&a, "dave");
    let bob = Member::join(&b, "bob");
    let carol = Member::join(&c, "carol");
    let everyone = "* lobby: alice, bob, carol, dave\n";
    for member in [&alice, &dave, &bob, &carol] {
        member.who_until(everyone, Duration::from_secs(10));
        member.drain();
    }

    for i in 0..40 {
        alice.send(&format!("alice {i}"));
        bob.send(&format!("bob {i}"));
    }
    let from = |heard: &[String], who: &str| -> Vec<String> {
        let prefix = format!("<{who}> ");
        heard
            .iter()
            .filter(|line| line.starts_with(&prefix))
            .cloned()
            .collect()
    };
    let said =
        |who: &str| -> Vec<String> { (0..40).map(|i| format!("<{who}> {who} {i}\n")).collect() };
    let (heard_dave, heard_carol, heard_bob, heard_alice) =
        (dave.drain(), carol.drain(), bob.drain(), alice.drain());
    for heard in [&heard_dave, &heard_carol] {
        assert_eq!(heard.len(), 80, "{heard:?}");
        assert_eq!(from(heard, "alice"), said("alice"));
        assert_eq!(from(heard, "bob"), said("bob"));
    }
    assert_eq!(heard_bob, said("alice"), "never their own lines back");
    assert_eq!(heard_alice, said("bob"));
}

#[test]
fn who_lists_every_server_names_stay_unique_and_a_killed_servers_members_leave() {
    let Some(redis) = Redis::start() else { return };
    let mut a = serve_on(&redis, &[]);
    let b = serve_on(&redis, &[]);
    let _alice = Member::join(&a, "alice");
    let bob = Member::join(&b, "bob");
    bob.who_until("* lobby: alice, bob\n", Duration::from_secs(10));

    bob.send("/nick ALICE");
    assert_eq!(
        bob.recv_skipping_arrivals().unwrap(),
        "! the name ALICE is taken\n",
        "taken on another server"
    );

    a.kill(); // SIGKILL: no goodbye to the bus
    let gone = bob.who_until("* lobby: bob\n", Duration::from_secs(30));
    // The bound, with a second for a loaded machine and the polling.
    assert!(
        gone <= PRESENCE_BOUND + Duration::from_secs(1),
        "alice left /who after {gone:?}"
    );
    bob.send("/nick alice");
    assert_eq!(bob.recv().unwrap(), "* you are now alice\n");
}

#[test]
fn redis_killed_and_restarted_local_delivery_goes_on_and_the_bus_comes_back() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let a = serve_on(&redis, &[]);
    let b = serve_on(&redis, &[]);
    let alice = Member::join(&a, "alice");
    let dave = Member::join(&a, "dave");
    let bob = Member::join(&b, "bob");
    bob.who_until("* lobby: alice, bob, dave\n", Duration::from_secs(10));
    for member in [&alice, &dave, &bob] {
        member.drain();
    }

    redis.kill();
    alice.send("while redis is down");
    assert_eq!(dave.drain(), ["<alice> while redis is down\n"]);
    // The others cannot be reached: /who says so.
    bob.who_until("* lobby: bob\n", Duration::from_secs(10));
    bob.send("alone on b");
    assert!(alice.drain().is_empty());

    redis.restart();
    // Back by itself (the backoff is at most 5 s), presence first.
    bob.who_until("* lobby: alice, bob, dave\n", Duration::from_secs(20));
    for member in [&alice, &dave, &bob] {
        member.drain();
    }
    alice.send("after redis came back");
    assert_eq!(dave.drain(), ["<alice> after redis came back\n"]);
    assert_eq!(bob.drain(), ["<alice> after redis came back\n"]);
    bob.send("hello again");
    assert_eq!(alice.drain(), ["<bob> hello again\n"]);
}

#[test]
fn a_stopped_redis_holds_up_nothing_and_the_bus_comes_back_when_it_goes_on() {
    let Some(redis) = Redis::start() else { return };
    let a = serve_on(&redis, &["--bus-timeout", "0.5"]);
    let b = serve_on(&redis, &["--bus-timeout", "0.5"]);
    let alice = Member::join(&a, "alice");
    let dave = Member::join(&a, "dave");
    let bob = Member::join(&b, "bob");
    bob.who_until("* lobby: alice, bob, dave\n", Duration::from_secs(10));
    for member in [&alice, &dave, &bob] {
        member.drain();
    }

    redis.signal("STOP"); // slow as can be: connected, never answering
    let started = Instant::now();
    for i in 0..50 {
        alice.send(&format!("line {i}"));
    }
    let heard = dave.drain();
    assert_eq!(heard.len(), 50, "{heard:?}");
    assert_eq!(heard[49], "<alice> line 49\n");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "local delivery waited on redis: {:?}",
        started.elapsed()
    );

    redis.signal("CONT");
    for member in [&alice, &dave, &bob] {
        member.drain();
    }
    bob.who_until("* lobby: alice, bob, dave\n", Duration::from_secs(20));
    bob.drain();
    alice.send("redis goes on");
    assert_eq!(bob.drain(), ["<alice> redis goes on\n"]);
}

#[test]
fn a_server_starts_and_serves_its_room_with_redis_down() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    redis.kill();
    let a = serve_on(&redis, &[]);
    let alice = Member::join(&a, "alice");
    let dave = Member::join(&a, "dave");
    alice.drain();
    dave.send("no bus here");
    assert_eq!(alice.drain(), ["<dave> no bus here\n"]);
    assert_eq!(alice.who(), "* lobby: alice, dave\n");
}

const PASSWORD: &str = "open sesame";

/// A users file with `alice`, made by `sockit user add`.
fn users_file(dir: &Path) -> PathBuf {
    let users = dir.join("users.toml");
    let mut child = Command::new(SOCKIT)
        .args(["user", "add", "alice", "--users"])
        .arg(&users)
        .arg("--password-stdin")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{PASSWORD}").unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{output:?}");
    users
}

/// `sockit ls` on `serve` as alice with `password`: its exit status and standard error.
fn ls_as_alice(serve: &Serve, password: &str) -> (Option<i32>, String) {
    let home = tempfile::tempdir().unwrap();
    let output = Command::new(SOCKIT)
        .args(["ls", "--server", &serve.tcp()])
        .env_remove("SOCKIT_IDENTITY")
        .env("SOCKIT_USER", "alice")
        .env("SOCKIT_PASSWORD", password)
        .env("XDG_CONFIG_HOME", home.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = BufReader::new(&output.stderr[..])
        .lines()
        .map(Result::unwrap)
        .collect::<Vec<_>>()
        .join("\n");
    (output.status.code(), stderr)
}

#[test]
fn lockouts_hit_on_one_server_hold_on_another() {
    let Some(redis) = Redis::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let users = users_file(dir.path());
    let users = users.to_str().unwrap();
    let flags = [
        "--users",
        users,
        "--login-free-failures",
        "2",
        "--login-backoff",
        "60",
    ];
    let a = serve_on(&redis, &flags);
    let b = serve_on(&redis, &flags);
    let alone = Serve::start(&flags);

    for _ in 0..3 {
        let (status, stderr) = ls_as_alice(&a, "a guess");
        assert_eq!(status, Some(1), "{stderr}");
        assert!(stderr.contains("wrong user name or password"), "{stderr}");
    }
    let (status, stderr) = ls_as_alice(&a, PASSWORD);
    assert_eq!(status, Some(1), "{stderr}");
    assert!(stderr.contains("too many failed logins"), "{stderr}");
    let (status, stderr) = ls_as_alice(&b, PASSWORD);
    assert_eq!(status, Some(1), "{stderr}");
    assert!(
        stderr.contains("too many failed logins"),
        "locked out on b as well: {stderr}"
    );
    let (status, stderr) = ls_as_alice(&alone, PASSWORD);
    assert_eq!(
        status,
        Some(0),
        "a server off the bus counts alone: {stderr}"
    );
}

#[test]
fn lockouts_are_counted_on_the_server_alone_while_redis_is_down() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    redis.kill();
    let dir = tempfile::tempdir().unwrap();
    let users = users_file(dir.path());
    let a = serve_on(
        &redis,
        &[
            "--users",
            users.to_str().unwrap(),
            "--login-free-failures",
            "1",
            "--login-backoff",
            "60",
        ],
    );
    for _ in 0..2 {
        let (status, stderr) = ls_as_alice(&a, "a guess");
        assert_eq!(status, Some(1), "{stderr}");
        assert!(stderr.contains("wrong user name or password"), "{stderr}");
    }
    let (status, stderr) = ls_as_alice(&a, PASSWORD);
    assert_eq!(status, Some(1), "{stderr}");
    assert!(
        stderr.contains("too many failed logins"),
        "never open: {stderr}"
    );
}

#[test]
fn a_bus_that_is_not_redis_is_refused_at_start() {
    let output = Command::new(SOCKIT)
        .args(["serve", "--listen", "127.0.0.1:0", "--udp", "off"])
        .args(["--bus", "http://127.0.0.1:1"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--bus http://127.0.0.1:1: a bus is redis://HOST:PORT[/DB]"),
        "{stderr}"
    );
}
