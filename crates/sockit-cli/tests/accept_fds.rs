//! Descriptors: a server out of them keeps running and says so in its log once in a while, not
//! twenty times a second; and `serve` raises a low soft limit towards what its connections need.

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

/// The soft limit of open files of process `pid`, from `/proc/<pid>/limits`.
fn soft_open_files(pid: u32) -> u64 {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .expect("a Max open files line");
    line.split_whitespace().nth(3).unwrap().parse().unwrap()
}

#[test]
fn serve_raises_a_low_soft_limit_of_open_files_towards_its_connection_limit() {
    let hard: u64 = {
        let output = Command::new("/bin/sh")
            .args(["-c", "ulimit -H -n"])
            .output()
            .unwrap();
        let text = String::from_utf8(output.stdout).unwrap();
        text.trim().parse().unwrap_or(u64::MAX)
    };
    let root = tempfile::tempdir().unwrap();
    let mut serve = Command::new("/bin/sh")
        .arg("-c")
        .arg("ulimit -S -n 256 && exec \"$0\" serve --listen 127.0.0.1:0 --udp off --max-conns 4000 --root \"$1\"")
        .arg(SOCKIT)
        .arg(root.path().join("store"))
        .env_remove("SOCKIT_USERS")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(serve.stdout.take().unwrap()).lines();
    lines.next().expect("a listening line").unwrap();
    let soft = soft_open_files(serve.id());
    let _ = serve.kill();
    let _ = serve.wait();
    // 4,000 connections and 512 descriptors for the rest, within the hard limit.
    assert_eq!(soft, hard.min(4512));
}
