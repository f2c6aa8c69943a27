//! A server out of file descriptors keeps running, and says so in its log once in a while,
//! not twenty times a second.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SOCKIT: &str = env!("CARGO_BIN_EXE_sockit");
/// The server's descriptor limit: its own descriptors and a few connections.
const NOFILE: u32 = 48;
/// Connections opened against it: more than it can accept.
const CONNECTIONS: usize = 80;

#[test]
fn running_out_of_descriptors_is_logged_once_in_a_while() {
    let root = tempfile::tempdir().unwrap();
    let log_path = root.path().join("serve.log");
    // `ulimit -n` in the shell that then becomes the server.
    let script = format!(
        "ulimit -n {NOFILE} && exec \"$0\" serve --listen 127.0.0.1:0 --udp off --root \"$1\""
    );
    let mut serve = Command::new("/bin/sh")
        .arg("-c")
        .arg(script)
        .arg(SOCKIT)
        .arg(root.path().join("store"))
        .env_remove("SOCKIT_USERS")
        .env("SOCKIT_LOG", "warn")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(serve.stdout.take().unwrap()).lines();
    let line = lines.next().expect("a listening line").unwrap();
    let addr = line.strip_prefix("listening tcp ").unwrap().to_owned();

    // The kernel completes every handshake; the server accepts until it has no descriptor left.
    let connections: Vec<TcpStream> = (0..CONNECTIONS)
        .map(|_| TcpStream::connect(&addr).unwrap())
        .collect();
    let started = Instant::now();
    std::thread::sleep(Duration::from_millis(1500));
    let log = std::fs::read_to_string(&log_path).unwrap();
    let failures = log
        .lines()
        .filter(|line| line.contains("accept failed"))
        .count();
    let alive = serve.try_wait().unwrap().is_none();
    drop(connections);
    let _ = serve.kill();
    let _ = serve.wait();

    assert!(alive, "the server kept running:\n{log}");
    assert!(failures >= 1, "the failure is logged:\n{log}");
    assert!(
        failures <= 2,
        "{failures} lines in {:?}, at most one every 5 s:\n{log}",
        started.elapsed()
    );
    assert!(log.contains("Too many open files"), "{log}");
}
