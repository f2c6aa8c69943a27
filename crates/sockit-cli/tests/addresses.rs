//! Addresses as people type them: `serve --listen :PORT` listens on 127.0.0.1 (never every
//! interface), `--listen localhost:PORT` resolves the name, a missing port is named, and
//! `--server localhost:PORT` reaches the server.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

const SOCKIT: &str = env!("CARGO_BIN_EXE_sockit");

/// `sockit serve --listen <listen>`, and the address of its `listening tcp` line.
fn serve(listen: &str) -> (Child, String, tempfile::TempDir) {
    let root = tempfile::tempdir().unwrap();
    let mut child = Command::new(SOCKIT)
        .args(["serve", "--udp", "off", "--listen", listen, "--root"])
        .arg(root.path())
        .env_remove("SOCKIT_USERS")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = lines.next().expect("a listening line").unwrap();
    let addr = line
        .strip_prefix("listening tcp ")
        .unwrap_or_else(|| panic!("{line}"))
        .to_owned();
    (child, addr, root)
}

fn stop(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn listen_on_a_bare_port_means_loopback() {
    let (child, addr, _root) = serve(":0");
    stop(child);
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");
}

#[test]
fn listen_and_server_resolve_localhost() {
    let (child, addr, _root) = serve("localhost:0");
    let port = addr.rsplit_once(':').unwrap().1;
    let ping = Command::new(SOCKIT)
        .args(["ping", "-n", "1", "--server", &format!("localhost:{port}")])
        .env_remove("SOCKIT_SERVER")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    stop(child);
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");
    assert!(
        ping.status.success(),
        "{}",
        String::from_utf8_lossy(&ping.stderr)
    );
}

#[test]
fn a_listen_address_without_a_port_says_so() {
    let out = Command::new(SOCKIT)
        .args(["serve", "--udp", "off", "--listen", "localhost"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("has no port"), "{err}");
}
