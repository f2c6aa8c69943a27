//! Client timeouts end to end: against a listener that accepts and never answers, every client
//! command gives up after `--timeout` with a clear message and exit status 1; against one
//! whose queue of pending connections is full, connecting gives up after `--connect-timeout`.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const SOCKIT: &str = env!("CARGO_BIN_EXE_sockit");

/// Runs `sockit <command> --server <server> <rest>` with no login settings inherited; how long
/// it took.
fn run(args: &[&str], server: SocketAddr) -> (Output, Duration) {
    run_with(args, server, &[])
}

/// As [`run`], with `env`.
fn run_with(args: &[&str], server: SocketAddr, env: &[(&str, &str)]) -> (Output, Duration) {
    let home = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let output = Command::new(SOCKIT)
        .arg(args[0])
        .args(["--server", &server.to_string()])
        .args(&args[1..])
        .env_remove("SOCKIT_PASSWORD")
        .env_remove("SOCKIT_IDENTITY")
        .env("SOCKIT_USER", "alice")
        .env("XDG_CONFIG_HOME", home.path())
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (output, started.elapsed())
}

/// A listener that accepts every connection, holds it open and never sends a byte.
fn silent_listener() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            held.push(stream);
        }
    });
    addr
}

#[test]
fn every_client_command_gives_up_on_a_silent_server_after_its_timeout() {
    let server = silent_listener();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f.txt");
    std::fs::write(&file, b"data").unwrap();
    let out = dir.path().join("out");
    let commands: [&[&str]; 7] = [
        &["ping"],
        &["echo", "hello"],
        &["put", file.to_str().unwrap()],
        &["get", "f.txt", "-o", out.to_str().unwrap()],
        &["ls"],
        &["rm", "f.txt"],
        &["mv", "f.txt", "g.txt"],
    ];
    for command in commands {
        let mut args = command.to_vec();
        args.extend(["--timeout", "0.5"]);
        let (output, took) = run(&args, server);
        assert_eq!(output.status.code(), Some(1), "{command:?}: {output:?}");
        assert_eq!(
            String::from_utf8_lossy(&output.stderr),
            "sockit: gave up after 0.5 s (--timeout)\n",
            "{command:?}"
        );
        assert!(took < Duration::from_secs(10), "{command:?} took {took:?}");
    }
}

#[test]
fn exec_gives_up_on_a_silent_server_a_grace_period_after_its_timeout() {
    let server = silent_listener();
    let env = [("SOCKIT_PASSWORD", "secret")];
    let (output, took) = run_with(&["exec", "--timeout", "0.5", "--", "true"], server, &env);
    assert_eq!(output.status.code(), Some(255), "{output:?}");
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        "sockit: gave up after 10.5 s (--timeout)\n"
    );
    assert!(took < Duration::from_secs(20), "took {took:?}");
}

#[test]
fn connecting_gives_up_after_the_connect_timeout() {
    // A listener that never accepts, its queue of pending connections filled: further
    // connection attempts get no answer at all.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let server = listener.local_addr().unwrap();
    let mut queued = Vec::new();
    let full =
        (0..4096).any(
            |_| match TcpStream::connect_timeout(&server, Duration::from_millis(200)) {
                Ok(stream) => {
                    queued.push(stream);
                    false
                }
                Err(_) => true,
            },
        );
    assert!(full, "the listen queue never filled");

    for command in [&["ping"][..], &["ls"], &["exec"]] {
        let mut args = command.to_vec();
        args.extend(["--connect-timeout", "0.5"]);
        if command[0] == "exec" {
            args.extend(["--", "true"]);
        }
        let (output, took) = run(&args, server);
        let expected_status = if command[0] == "exec" { 255 } else { 1 };
        assert_eq!(
            output.status.code(),
            Some(expected_status),
            "{command:?}: {output:?}"
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(
            stderr,
            format!("sockit: cannot connect to {server}: no answer within 500ms\n"),
            "{command:?}"
        );
        assert!(took < Duration::from_secs(10), "{command:?} took {took:?}");
    }
    drop(listener);
}
