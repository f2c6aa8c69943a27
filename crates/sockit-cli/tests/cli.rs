//! The `sockit` binary end to end: `serve` on loopback, the client commands against it, and the
//! tutorials' Python clients talking to it unchanged.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{Serve, SOCKIT};

fn sockit(args: &[&str]) -> Output {
    Command::new(SOCKIT).args(args).output().unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

#[test]
fn serve_prints_every_listener_and_exits_zero_on_sigterm() {
    let serve = Serve::start(&[
        "--udp",
        "127.0.0.1:0",
        "--legacy-echo",
        "127.0.0.1:0",
        "--udp-echo",
        "127.0.0.1:0",
    ]);
    for service in ["tcp", "udp", "legacy-echo", "udp-echo"] {
        assert!(serve.services().contains(&service), "{service} missing");
    }
    assert_eq!(serve.terminate(), Some(0));
}

#[test]
fn ping_reports_round_trips_and_statistics() {
    let serve = Serve::start(&[]);
    let server = serve.addr("tcp").to_string();
    let output = sockit(&["ping", "-n", "3", "--interval", "0.01", "--server", &server]);
    assert!(output.status.success(), "{output:?}");
    let text = stdout(&output);
    for seq in 1..=3 {
        assert!(
            text.contains(&format!("reply from {server}: seq={seq} time=")),
            "{text}"
        );
    }
    assert!(
        text.contains("3 sent, 3 received, 0% loss, min/avg/median/max = "),
        "{text}"
    );
}

#[test]
fn echo_prints_what_comes_back() {
    let serve = Serve::start(&[]);
    let server = serve.addr("tcp").to_string();
    let output = sockit(&["echo", "hello", "sticky world", "--server", &server]);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(stdout(&output), "hello sticky world\n");
}

#[test]
fn echo_sends_standard_input_unchanged_and_honours_sockit_server() {
    let serve = Serve::start(&[]);
    let body: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    let mut child = Command::new(SOCKIT)
        .arg("echo")
        .env("SOCKIT_SERVER", serve.addr("tcp").to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&body).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    assert!(output.stdout == body, "echoed bytes differ");
}

#[test]
fn refused_connection_is_one_line_and_a_failing_status() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let server = format!("127.0.0.1:{port}");
    for command in [&["ping"][..], &["echo", "hi"][..]] {
        let mut args = command.to_vec();
        args.extend(["--server", &server]);
        let output = sockit(&args);
        assert_eq!(output.status.code(), Some(1));
        assert_eq!(
            String::from_utf8(output.stderr).unwrap(),
            format!("sockit: cannot connect to {server}: connection refused\n")
        );
    }
}

#[test]
fn serve_on_a_port_in_use_fails_clearly() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let root = tempfile::tempdir().unwrap();
    let output = Command::new(SOCKIT)
        .args(["serve", "--listen", &addr, "--udp", "off", "--root"])
        .arg(root.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.starts_with(&format!("sockit: cannot listen on {addr} for tcp: ")),
        "{stderr}"
    );
}

#[test]
fn serve_takes_the_transfer_and_memory_limits_and_refuses_a_budget_too_small() {
    let serve = Serve::start(&[
        "--max-transfers",
        "2",
        "--max-transfers-per-source",
        "1",
        "--queue-timeout",
        "0.5",
        "--transfer-min-rate",
        "1024",
        "--transfer-rate-window",
        "5",
        "--memory-budget",
        "33554432",
        "--memory-budget-per-source",
        "16777216",
    ]);
    let server = serve.addr("tcp").to_string();
    let output = sockit(&["echo", "within limits", "--server", &server]);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(stdout(&output), "within limits\n");

    // One address's share cannot hold the largest body in memory (16 MiB by default).
    let root = tempfile::tempdir().unwrap();
    let output = Command::new(SOCKIT)
        .args(["serve", "--listen", "127.0.0.1:0", "--udp", "off"])
        .args(["--memory-budget-per-source", "1048576", "--root"])
        .arg(root.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains(
            "memory.per_source (--memory-budget-per-source) must be at least 16777216 bytes"
        ),
        "{stderr}"
    );
}

#[test]
fn demo_sticky_shows_glued_reads_and_whole_frames() {
    let output = sockit(&["demo", "sticky"]);
    assert!(output.status.success(), "{output:?}");
    let text = stdout(&output);
    assert!(text.contains("== 1. Raw TCP"), "{text}");
    assert!(text.contains("5 frames decoded, every one whole"), "{text}");
}

// --- The tutorials' Python clients, unchanged but for the address ---

/// `python3`, or `None` to skip outside CI (CI must have it).
fn python3() -> Option<&'static str> {
    common::tool(
        "python3",
        "python3 not found (the tutorials' clients need it)",
    )
}

fn seed(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/seeds")
        .join(name)
}

fn run_python(script: &Path, port: u16, stdin: &str) -> String {
    run_python_with(script, &[&port.to_string()], stdin)
}

fn run_python_with(script: &Path, args: &[&str], stdin: &str) -> String {
    let mut python = Command::new(python3().unwrap());
    python.arg(script).args(args);
    let output = output_with_stdin(python, stdin);
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).unwrap()
}

/// Runs `command` with `stdin` as its standard input, capturing its output.
fn output_with_stdin(mut command: Command, stdin: &str) -> Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let written = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    // A command may rightly exit before reading its input (a refused argument).
    if let Err(err) = written {
        assert_eq!(err.kind(), std::io::ErrorKind::BrokenPipe, "{err}");
    }
    child.wait_with_output().unwrap()
}

#[test]
fn tutorial_tcp_echo_client_works_against_legacy_echo() {
    if python3().is_none() {
        return;
    }
    let serve = Serve::start(&["--legacy-echo", "127.0.0.1:0"]);
    let port = serve.addr("legacy-echo").port();
    let out = run_python(
        &seed("tcp_echo_client.py"),
        port,
        "hello\n\nsocket server\nquit\n",
    );
    assert_eq!(
        out,
        ">>: 收到服务端发来的消息 HELLO\n>>: >>: 收到服务端发来的消息 SOCKET SERVER\n>>: "
    );
}

#[test]
fn tutorial_udp_client_works_against_udp_echo() {
    if python3().is_none() {
        return;
    }
    let serve = Serve::start(&["--udp-echo", "127.0.0.1:0"]);
    let out = run_python(&seed("udp_client.py"), serve.addr("udp-echo").port(), "");
    assert_eq!(out, "MICHAEL\nTRACY\nSARAH\n");
}

#[test]
fn protocol_doc_python_client_works() {
    if python3().is_none() {
        return;
    }
    let doc = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/PROTOCOL.md"),
    )
    .unwrap();
    let start = doc.find("```python\n").expect("a python block") + "```python\n".len();
    let code = &doc[start..start + doc[start..].find("```").unwrap()];
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("client.py");
    std::fs::write(&script, code).unwrap();
    let serve = Serve::start(&[]);
    let out = run_python(&script, serve.addr("tcp").port(), "");
    assert_eq!(
        out,
        "({'ok': True, 'id': 1}, b'')\n({'ok': True, 'size': 5}, b'hello')\n"
    );
}

#[test]
fn tutorial_upload_clients_store_their_files() {
    if python3().is_none() {
        return;
    }
    let serve = Serve::start(&[]);
    let port = serve.addr("tcp").port().to_string();
    let dir = tempfile::tempdir().unwrap();
    let video = dir.path().join("video.mp4");
    let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 256) as u8).collect();
    std::fs::write(&video, &data).unwrap();
    let video = video.to_str().unwrap();

    run_python_with(&seed("upload_client_000.py"), &[&port, video], "");
    let out = run_python_with(&seed("upload_client_002.py"), &[&port, video], "");
    assert_eq!(out.lines().count(), 196, "one line per 1 KiB sent");

    for name in ["澳门最大线上赌场开业啦.mp4", "jason真实写真集.mp4"] {
        let stored = serve.root().join(name);
        let started = Instant::now();
        while !stored.exists() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "{name} not stored"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(std::fs::read(&stored).unwrap() == data, "{name} differs");
    }
}

#[test]
fn put_ls_get_round_trip_through_the_commands() {
    let serve = Serve::start(&[]);
    let server = serve.addr("tcp").to_string();
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.txt");
    let b = dir.path().join("b.bin");
    std::fs::write(&a, b"alpha\n").unwrap();
    std::fs::write(&b, vec![9u8; 70_000]).unwrap();

    let output = Command::new(SOCKIT)
        .args(["put", "--server", &server])
        .args([&a, &b])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let text = stdout(&output);
    assert!(text.contains("a.txt -> a.txt: 6 bytes, blake3 "), "{text}");
    assert!(
        text.contains("b.bin -> b.bin: 70000 bytes, blake3 "),
        "{text}"
    );

    let output = sockit(&["ls", "--server", &server]);
    let lines: Vec<_> = stdout(&output).lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[0].trim_start().starts_with("6  ") && lines[0].ends_with("  a.txt"),
        "{lines:?}"
    );
    assert!(
        lines[1].starts_with("70000  ") && lines[1].ends_with("  b.bin"),
        "{lines:?}"
    );

    let output = sockit(&["ls", "--json", "--server", &server]);
    let listed: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(listed[1]["name"], "b.bin");
    assert_eq!(listed[1]["length"], 70000);

    let copy = dir.path().join("copy.bin");
    let output = Command::new(SOCKIT)
        .args(["get", "b.bin", "--server", &server, "-o"])
        .arg(&copy)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    assert_eq!(std::fs::read(&copy).unwrap(), vec![9u8; 70_000]);
}

#[test]
fn put_refuses_an_existing_name_without_force() {
    let serve = Serve::start(&[]);
    let server = serve.addr("tcp").to_string();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("x.txt");
    std::fs::write(&file, b"one").unwrap();
    let put = |extra: &[&str]| {
        Command::new(SOCKIT)
            .args(["put", "--server", &server])
            .arg(&file)
            .args(extra)
            .output()
            .unwrap()
    };
    assert!(put(&[]).status.success());
    std::fs::write(&file, b"two").unwrap();
    let refused = put(&[]);
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8(refused.stderr).unwrap();
    assert!(
        stderr.contains(
            "a file named \"x.txt\" already exists on the server (use --force to replace it)\n"
        ),
        "{stderr}"
    );
    assert!(put(&["--force"]).status.success());
    assert_eq!(std::fs::read(serve.root().join("x.txt")).unwrap(), b"two");

    let output = Command::new(SOCKIT)
        .args(["get", "missing", "--server", &server])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        String::from_utf8(output.stderr).unwrap(),
        "sockit: server refused: no file named \"missing\" (not_found)\n"
    );
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(
        left.len(),
        1,
        "a failed get leaves nothing behind: {left:?}"
    );
}

/// A raw UDP member of the chat room, as the tutorials' clients are.
struct Member {
    socket: std::net::UdpSocket,
    room: SocketAddr,
}

impl Member {
    /// Joins under `nick`, having proved that it receives (`/confirm`, as PROTOCOL.md tells a
    /// client to: a first datagram long enough for the answer, then the token back).
    fn join(room: SocketAddr, nick: &str) -> Member {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let member = Member { socket, room };
        member.send(format!("{:<128}", "/confirm").as_bytes());
        let ask = member.recv();
        let token = confirm_token(&ask).unwrap_or_else(|| panic!("no token in {ask:?}"));
        member.send(format!("/confirm {token}").as_bytes());
        assert_eq!(member.recv(), "* confirmed\n");
        member.send(format!("/nick {nick}").as_bytes());
        assert_eq!(member.recv(), format!("* you are now {nick}\n"));
        member
    }

    fn send(&self, data: &[u8]) {
        self.socket.send_to(data, self.room).unwrap();
    }

    /// The next line from the room.
    fn recv(&self) -> String {
        let mut buf = [0u8; 4096];
        let (len, _) = self
            .socket
            .recv_from(&mut buf)
            .expect("a line from the room");
        String::from_utf8(buf[..len].to_vec()).unwrap()
    }
}

/// The token in a line from the room, found as tools are told to: the pattern
/// `/confirm ([A-Za-z0-9]{8,32})`.
fn confirm_token(line: &str) -> Option<&str> {
    let (_, rest) = line.split_once("/confirm ")?;
    let end = rest
        .find(|c: char| !c.is_ascii_alphanumeric())
        .unwrap_or(rest.len());
    (8..=32).contains(&end).then(|| &rest[..end])
}

#[test]
fn chat_in_a_pipe_sends_and_receives() {
    let serve = Serve::start(&["--udp", "127.0.0.1:0"]);
    let room = serve.addr("udp");
    let watcher = Member::join(room, "watcher");
    let recv = || watcher.recv();

    let mut chat = Command::new(SOCKIT)
        .args([
            "chat",
            "--name",
            "bob",
            "--wait",
            "1",
            "--server",
            &room.to_string(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(recv().ends_with(" joined\n"));
    assert!(recv().ends_with(" is now bob\n"));

    let mut stdin = chat.stdin.take().unwrap();
    stdin.write_all(b"hello from bob\n").unwrap();
    assert_eq!(recv(), "<bob> hello from bob\n");
    watcher.send(b"hi bob");
    // Its input ends only once the chat has printed the line: what it prints does not depend
    // on the line arriving within its --wait.
    let mut printed = BufReader::new(chat.stdout.take().unwrap());
    let mut text = String::new();
    while !text.ends_with("<watcher> hi bob\n") {
        assert_ne!(printed.read_line(&mut text).unwrap(), 0, "{text}");
    }
    drop(stdin);
    assert_eq!(
        recv(),
        "* bob left\n",
        "the chat leaves once its input ends"
    );

    printed.read_to_string(&mut text).unwrap();
    let status = chat.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert_eq!(text, "* you are now bob\n<watcher> hi bob\n");
}

#[test]
fn chat_confirms_by_itself_and_hears_more_than_the_unproven_budget() {
    let serve = Serve::start(&["--udp", "127.0.0.1:0", "--chat-rate", "1000"]);
    let room = serve.addr("udp");
    let talker = Member::join(room, "talker");
    let mut chat = Command::new(SOCKIT)
        .args(["chat", "--name", "reader", "--wait", "1"])
        .args(["--server", &room.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(talker.recv().ends_with(" joined\n"));
    assert!(talker.recv().ends_with(" is now reader\n"));

    // 100 lines of a kilobyte: more than the 64 KiB an unproven address is sent in all.
    let line = "w".repeat(1000);
    for n in 0..100 {
        talker.send(format!("{n:03} {line}").as_bytes());
        if n % 10 == 9 {
            talker.send(b"/who");
            while !talker.recv().starts_with("* lobby: ") {}
        }
    }
    drop(chat.stdin.take());
    let output = chat.wait_with_output().unwrap();
    assert!(output.status.success(), "{:?}", output.status);
    let expected: Vec<String> = std::iter::once("* you are now reader".to_owned())
        .chain((0..100).map(|n| format!("<talker> {n:03} {line}")))
        .collect();
    let printed = stdout(&output);
    let printed: Vec<&str> = printed.lines().collect();
    assert_eq!(printed.len(), expected.len(), "{:?}", printed.first());
    assert_eq!(printed, expected, "the confirmation is not shown as chat");
}

#[test]
fn tutorial_qq_client_chats_in_the_room() {
    if python3().is_none() {
        return;
    }
    let serve = Serve::start(&["--udp", "127.0.0.1:0"]);
    let room = serve.addr("udp");
    let friend = Member::join(room, "friend");
    let recv = || friend.recv();

    // The tutorial client sends one line, then waits for anything to come back, and again.
    let mut qq = Command::new(python3().unwrap())
        .arg(seed("udp_qq_client.py"))
        .arg(room.port().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    qq.stdin
        .take()
        .unwrap()
        .write_all("你好\n再见\n".as_bytes())
        .unwrap();
    let joined = recv();
    let qq_name = joined
        .strip_prefix("* ")
        .and_then(|rest| rest.strip_suffix(" joined\n"))
        .expect("a join notice")
        .to_owned();
    assert_eq!(recv(), format!("<{qq_name}> 来自客户端1的消息:你好\n"));
    friend.send("欢迎".as_bytes());
    // The first line the room can send it asks it to confirm, which the person reads; then
    // the room's lines. (The client puts its prefix before whatever is typed, so it cannot
    // send the line `/confirm TOKEN`: it stays within the unproven budget, 64 KiB.)
    assert_eq!(recv(), format!("<{qq_name}> 来自客户端1的消息:再见\n"));

    // Its input has ended, so after printing the second reply its next input() fails and it
    // exits.
    let output = qq.wait_with_output().unwrap();
    let text = stdout(&output);
    let from = format!(" ('127.0.0.1', {})\n", room.port());
    let (ask, rest) = text.split_once(&from).expect("a first reply");
    let ask = ask.strip_prefix(">>>:").expect("the prompt");
    assert!(
        ask.starts_with("* send /confirm ") && confirm_token(ask).is_some(),
        "{text}"
    );
    assert!(
        rest.starts_with(&format!(">>>:<friend> 欢迎\n{from}>>>:")),
        "{text}"
    );
}

#[test]
fn chat_with_no_room_there_fails_clearly() {
    let port = {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.local_addr().unwrap().port()
    };
    let server = format!("127.0.0.1:{port}");
    let output = Command::new(SOCKIT)
        .args(["chat", "--server", &server])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        String::from_utf8(output.stderr).unwrap(),
        format!("sockit: no chat room at {server}: connection refused\n")
    );
}

// --- Accounts, exec, shell and the tutorials' remote-command clients ---

const PASSWORD: &str = "open sesame";

/// A users file with `alice` (password [`PASSWORD`]), made by `sockit user add`.
fn users_file(dir: &Path) -> PathBuf {
    let users = dir.join("users.toml");
    let output = run_with_stdin(
        &[
            "user",
            "add",
            "alice",
            "--users",
            users.to_str().unwrap(),
            "--password-stdin",
        ],
        &[],
        &format!("{PASSWORD}\n"),
    );
    assert!(output.status.success(), "{output:?}");
    users
}

/// Runs `sockit` with `stdin`, the `env` given, and no login settings inherited: no key in
/// the default place, no password or user from the environment.
fn run_with_stdin(args: &[&str], env: &[(&str, &str)], stdin: &str) -> Output {
    let home = tempfile::tempdir().unwrap();
    let mut sockit = Command::new(SOCKIT);
    sockit
        .args(args)
        .env_remove("SOCKIT_PASSWORD")
        .env_remove("SOCKIT_IDENTITY")
        .env_remove("SOCKIT_USERS")
        .env("SOCKIT_USER", "alice")
        .env("XDG_CONFIG_HOME", home.path())
        .envs(env.iter().copied());
    output_with_stdin(sockit, stdin)
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn user_commands_edit_the_users_file_without_storing_passwords() {
    let dir = tempfile::tempdir().unwrap();
    let users = users_file(dir.path());
    let file = users.to_str().unwrap();
    let text = std::fs::read_to_string(&users).unwrap();
    assert!(
        text.contains("$argon2id$") && !text.contains(PASSWORD),
        "{text}"
    );

    let again = run_with_stdin(
        &["user", "add", "alice", "--users", file, "--password-stdin"],
        &[],
        "x\n",
    );
    assert!(!again.status.success());
    assert!(stderr(&again).contains("exists"), "{again:?}");
    let bad_name = run_with_stdin(
        &["user", "add", "-x", "--users", file, "--password-stdin"],
        &[],
        "x\n",
    );
    assert!(!bad_name.status.success());

    let key = "sockit-ed25519 3b6a27bcceb6a42d62a3a8d02a6f0d73653215771de243a63ac048a18b59da29 bob@laptop";
    let words: Vec<&str> = key.split(' ').collect();
    let mut args = vec!["user", "add-key", "bob"];
    args.extend(&words);
    args.extend(["--users", file]);
    let added = run_with_stdin(&args, &[], "");
    assert!(added.status.success(), "{added:?}");
    let listed = run_with_stdin(&["user", "list", "--users", file], &[], "");
    assert_eq!(
        stdout(&listed),
        "alice\tpassword, 0 keys\nbob\tno password, 1 key\n\tkey 7a5d6d4d4ea2b0d4bd8b2d26c2e7d9f0 bob@laptop\n"
            .replace("7a5d6d4d4ea2b0d4bd8b2d26c2e7d9f0", &fingerprint(key))
    );
    let removed = run_with_stdin(&["user", "del", "bob", "--users", file], &[], "");
    assert!(removed.status.success(), "{removed:?}");
    let listed = run_with_stdin(&["user", "list", "--users", file], &[], "");
    assert_eq!(stdout(&listed), "alice\tpassword, 0 keys\n");
}

fn fingerprint(key: &str) -> String {
    key.parse::<sockit::auth::keys::PublicKey>()
        .unwrap()
        .fingerprint()
}

#[test]
fn exec_passes_output_streams_and_exit_status_through() {
    let dir = tempfile::tempdir().unwrap();
    let users = users_file(dir.path());
    let serve = Serve::start(&["--users", users.to_str().unwrap()]);
    let server = serve.addr("tcp").to_string();
    let password = [("SOCKIT_PASSWORD", PASSWORD)];
    let exec = |words: &[&str], env: &[(&str, &str)]| {
        let mut args = vec!["exec", "--server", &server, "--"];
        args.extend(words);
        run_with_stdin(&args, env, "")
    };

    let output = exec(&["sh", "-c", "echo out; echo err >&2; exit 3"], &password);
    assert_eq!(output.status.code(), Some(3), "{output:?}");
    assert_eq!(stdout(&output), "out\n");
    assert_eq!(stderr(&output), "err\n");

    let output = exec(&["sh", "-c", "kill -KILL $$"], &password);
    assert_eq!(output.status.code(), Some(128 + 9), "{output:?}");

    let output = exec(&["true"], &[("SOCKIT_PASSWORD", "wrong")]);
    assert_eq!(output.status.code(), Some(255), "{output:?}");
    assert!(
        stderr(&output).contains("wrong user name or password"),
        "{output:?}"
    );

    let output = exec(&["true"], &[]);
    assert_eq!(output.status.code(), Some(255), "{output:?}");
    assert!(stderr(&output).contains("SOCKIT_PASSWORD"), "{output:?}");
}

#[test]
fn exec_quotes_every_word_so_metacharacters_arrive_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let users = users_file(dir.path());
    let serve = Serve::start(&["--users", users.to_str().unwrap()]);
    let server = serve.addr("tcp").to_string();
    let words = [
        "a b", "$HOME", "x;y", "*", "it's", "\"q\"", "`id`", "$(id)", "a|b", "&", "", "~", "-n",
    ];
    let mut args = vec!["exec", "--server", &server, "--", "printf", "[%s]\\n"];
    args.extend(words);
    let output = run_with_stdin(&args, &[("SOCKIT_PASSWORD", PASSWORD)], "");
    assert!(output.status.success(), "{output:?}");
    let expected: String = words.iter().map(|word| format!("[{word}]\n")).collect();
    assert_eq!(stdout(&output), expected);

    // -c gives the remote shell a whole command line.
    let output = run_with_stdin(
        &[
            "exec",
            "--server",
            &server,
            "-c",
            "printf 'a\\nb\\n' | wc -l",
        ],
        &[("SOCKIT_PASSWORD", PASSWORD)],
        "",
    );
    assert_eq!(stdout(&output).trim(), "2", "{output:?}");
}

#[test]
fn keygen_and_add_key_let_exec_log_in_without_a_password() {
    let dir = tempfile::tempdir().unwrap();
    let users = users_file(dir.path());
    let identity = dir.path().join("id_ed25519");
    let identity = identity.to_str().unwrap();
    let made = run_with_stdin(&["keygen", "--identity", identity, "-C", "test"], &[], "");
    assert!(made.status.success(), "{made:?}");
    assert!(stdout(&made).starts_with("sockit-ed25519 "), "{made:?}");
    let again = run_with_stdin(&["keygen", "--identity", identity], &[], "");
    assert!(!again.status.success(), "keygen must not overwrite a key");

    let serve = Serve::start(&["--users", users.to_str().unwrap()]);
    let server = serve.addr("tcp").to_string();
    let exec = [
        "exec",
        "--server",
        &server,
        "--identity",
        identity,
        "--",
        "echo",
        "by key",
    ];
    // Not authorised yet: falls back to a password, and there is none.
    let output = run_with_stdin(&exec, &[], "");
    assert_eq!(output.status.code(), Some(255), "{output:?}");

    let public = format!("{identity}.pub");
    let users = users.to_str().unwrap();
    let added = run_with_stdin(
        &["user", "add-key", "alice", &public, "--users", users],
        &[],
        "",
    );
    assert!(added.status.success(), "{added:?}");
    let output = run_with_stdin(&exec, &[], "");
    assert!(output.status.success(), "{output:?}");
    assert_eq!(stdout(&output), "by key\n");
}

#[test]
fn shell_runs_each_line_and_ends_with_the_last_status() {
    let dir = tempfile::tempdir().unwrap();
    let users = users_file(dir.path());
    let serve = Serve::start(&["--users", users.to_str().unwrap()]);
    let server = serve.addr("tcp").to_string();
    let output = run_with_stdin(
        &["shell", "--server", &server],
        &[("SOCKIT_PASSWORD", PASSWORD)],
        "echo one\n\necho two | tr a-z A-Z\nexit 4\n",
    );
    assert_eq!(stdout(&output), "one\nTWO\n", "{output:?}");
    assert_eq!(output.status.code(), Some(4), "{output:?}");
    let output = run_with_stdin(
        &["shell", "--server", &server],
        &[("SOCKIT_PASSWORD", PASSWORD)],
        "echo before\nquit\necho after\n",
    );
    assert_eq!(stdout(&output), "before\n", "{output:?}");
    assert_eq!(output.status.code(), Some(0));
}

#[test]
fn shell_logs_in_again_when_the_server_closed_the_idle_connection() {
    let dir = tempfile::tempdir().unwrap();
    let users = users_file(dir.path());
    let users = users.to_str().unwrap();
    // The shell checks a connection before using it once it has been idle for a second; with
    // the server's idle timeout above that, a connection the server closed is always checked.
    let serve = Serve::start(&["--users", users, "--idle-timeout", "1.5"]);
    let server = serve.addr("tcp");
    let home = tempfile::tempdir().unwrap();
    let mut shell = Command::new(SOCKIT)
        .args(["shell", "--server", &server.to_string()])
        .env("SOCKIT_PASSWORD", PASSWORD)
        .env("SOCKIT_USER", "alice")
        .env("XDG_CONFIG_HOME", home.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = shell.stdin.take().unwrap();
    let mut lines = BufReader::new(shell.stdout.take().unwrap());
    stdin.write_all(b"echo a\n").unwrap();
    let mut output = String::new();
    lines.read_line(&mut output).unwrap();
    assert_eq!(output, "a\n");
    // The second line goes only after the server has closed the idle connection, which the
    // kernel shows as the shell's end of it waiting to be closed (CLOSE_WAIT).
    let started = Instant::now();
    while !closed_by_the_server(server) {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the server kept the idle connection open"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    stdin.write_all(b"echo b\n").unwrap();
    drop(stdin);
    lines.read_to_string(&mut output).unwrap();
    assert_eq!(output, "a\nb\n");
    assert!(shell.wait().unwrap().success());
}

/// Whether a TCP connection to `server` (IPv4) has been closed by the server but not yet by the
/// client: the client's end is in CLOSE_WAIT.
fn closed_by_the_server(server: SocketAddr) -> bool {
    const CLOSE_WAIT: &str = "08";
    let remote = format!(":{:04X}", server.port());
    std::fs::read_to_string("/proc/net/tcp")
        .unwrap()
        .lines()
        .skip(1)
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .any(|fields| fields[2].ends_with(&remote) && fields[3] == CLOSE_WAIT)
}

#[test]
fn exec_on_a_server_without_users_is_disabled() {
    let serve = Serve::start(&[]);
    let server = serve.addr("tcp").to_string();
    let output = run_with_stdin(&["exec", "--server", &server, "--", "true"], &[], "");
    assert_eq!(output.status.code(), Some(255), "{output:?}");
    assert!(stderr(&output).contains("disabled"), "{output:?}");
}

#[test]
fn killing_exec_mid_command_leaves_no_process_behind() {
    let dir = tempfile::tempdir().unwrap();
    let users = users_file(dir.path());
    let serve = Serve::start(&["--users", users.to_str().unwrap()]);
    let server = serve.addr("tcp").to_string();
    let marker = format!("{}.7", 6000 + std::process::id() % 1000);
    let script = format!("sleep {marker} & (sleep {marker}; true) & echo started; wait");
    let home = tempfile::tempdir().unwrap();
    let mut child = Command::new(SOCKIT)
        .args(["exec", "--server", &server, "-c", &script])
        .env("SOCKIT_PASSWORD", PASSWORD)
        .env("SOCKIT_USER", "alice")
        .env("XDG_CONFIG_HOME", home.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert_eq!(first, "started\n");
    let pattern = format!("sleep {marker}");
    assert!(processes_with(&pattern) >= 2);
    child.kill().unwrap();
    child.wait().unwrap();
    let started = Instant::now();
    while processes_with(&pattern) > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "processes left behind"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// How many processes have `pattern` in their command line.
fn processes_with(pattern: &str) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| std::fs::read(entry.path().join("cmdline")).ok())
        .filter(|cmdline| {
            String::from_utf8_lossy(cmdline)
                .replace('\0', " ")
                .contains(pattern)
        })
        .count()
}

#[test]
fn legacy_exec_refuses_a_non_loopback_address() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_str().unwrap();
    let output = sockit(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--udp",
        "off",
        "--root",
        root,
        "--legacy-exec",
        "0.0.0.0:0",
    ]);
    assert!(!output.status.success());
    assert!(stdout(&output).is_empty(), "nothing may be listening");
    let message = stderr(&output);
    assert!(
        message.contains("loopback") && message.contains("0.0.0.0:0"),
        "{message}"
    );
}

#[test]
fn tutorial_remote_command_clients_work_against_legacy_exec() {
    if python3().is_none() {
        return;
    }
    let serve = Serve::start(&["--legacy-exec", "127.0.0.1:0"]);
    let port = serve.addr("legacy-exec").port().to_string();

    let out = run_python(
        &seed("remote_command_client_003.py"),
        port.parse().unwrap(),
        "echo hello\n\necho err >&2; echo out\nquit\n",
    );
    assert_eq!(out, ">>: hello\n\n>>: >>: out\nerr\n\n>>: ");

    // The seeds/002 client loops until its input ends, then dies of EOFError.
    let mut python = Command::new(python3().unwrap());
    python.arg(seed("remote_command_client_002.py")).arg(&port);
    let output = output_with_stdin(python, "printf 'x%.0s' $(seq 3000)\necho 你好\n");
    let prompt = "please enter your cmd you want>>>";
    assert_eq!(
        stdout(&output),
        format!("{prompt}{}\n{prompt}你好\n\n{prompt}", "x".repeat(3000))
    );
    assert!(stderr(&output).contains("EOFError"));
}

// --- serve as people start it ---

#[test]
fn sockit_users_in_the_environment_is_honoured_never_open() {
    let dir = tempfile::tempdir().unwrap();
    let users = users_file(dir.path());
    let serve = Serve::start_with_env(&[], &[("SOCKIT_USERS", &users)]);
    let addr = serve.tcp();
    let output = run_with_stdin(
        &["ls", "--server", &addr],
        &[("SOCKIT_PASSWORD", "not the password")],
        "",
    );
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(
        stderr(&output).contains("login failed: server refused: wrong user name or password"),
        "a server given SOCKIT_USERS must not be open: {output:?}"
    );
}

#[test]
fn put_get_and_ls_log_in_by_password_and_by_key() {
    let dir = tempfile::tempdir().unwrap();
    let users = users_file(dir.path());
    let serve = Serve::start(&["--users", users.to_str().unwrap()]);
    let server = serve.addr("tcp").to_string();
    let file = dir.path().join("notes.txt");
    std::fs::write(&file, b"logged in\n").unwrap();
    let by_password = [("SOCKIT_PASSWORD", PASSWORD)];

    let put = ["put", file.to_str().unwrap(), "--server", &server];
    let output = run_with_stdin(&put, &by_password, "");
    assert!(output.status.success(), "{output:?}");
    let output = run_with_stdin(&["ls", "--server", &server], &by_password, "");
    assert!(stdout(&output).ends_with("  notes.txt\n"), "{output:?}");

    let identity = dir.path().join("id_ed25519");
    let identity = identity.to_str().unwrap();
    let made = run_with_stdin(&["keygen", "--identity", identity], &[], "");
    assert!(made.status.success(), "{made:?}");
    let public = format!("{identity}.pub");
    let users = users.to_str().unwrap();
    let added = run_with_stdin(
        &["user", "add-key", "alice", &public, "--users", users],
        &[],
        "",
    );
    assert!(added.status.success(), "{added:?}");
    let copy = dir.path().join("copy.txt");
    let get = [
        "get",
        "notes.txt",
        "-o",
        copy.to_str().unwrap(),
        "--identity",
        identity,
        "--server",
        &server,
    ];
    let output = run_with_stdin(&get, &[], "");
    assert!(output.status.success(), "{output:?}");
    assert_eq!(std::fs::read(&copy).unwrap(), b"logged in\n");

    // Without any way to log in, a command says how to give one, and nothing is done.
    let output = run_with_stdin(&["ls", "--server", &server], &[], "");
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(
        stderr(&output).contains("needs a password: set SOCKIT_PASSWORD"),
        "{output:?}"
    );
}

#[test]
fn a_key_refused_for_the_user_is_named_and_costs_a_password_login_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let users = users_file(dir.path());
    let users = users.to_str().unwrap();
    let carol = ["user", "add", "carol", "--users", users, "--password-stdin"];
    let added = run_with_stdin(&carol, &[], &format!("{PASSWORD}\n"));
    assert!(added.status.success(), "{added:?}");
    let identity = dir.path().join("id_ed25519");
    let identity = identity.to_str().unwrap();
    let made = run_with_stdin(&["keygen", "--identity", identity], &[], "");
    assert!(made.status.success(), "{made:?}");
    let public = format!("{identity}.pub");
    let added = run_with_stdin(
        &["user", "add-key", "alice", &public, "--users", users],
        &[],
        "",
    );
    assert!(added.status.success(), "{added:?}");
    let serve = Serve::start(&["--users", users]);
    let server = serve.addr("tcp").to_string();

    // Carol has a password only; the key (alice's) is tried first and refused each time, which
    // must not add up to a lockout of her address.
    let ls = [
        "ls",
        "-u",
        "carol",
        "--identity",
        identity,
        "--server",
        &server,
    ];
    for run in 0..8 {
        let output = run_with_stdin(&ls, &[("SOCKIT_PASSWORD", PASSWORD)], "");
        assert!(output.status.success(), "run {run}: {output:?}");
    }

    // No password to fall back on: the message names the key the server refused, and -v logs
    // the attempt.
    let ls = [
        "-v",
        "ls",
        "-u",
        "root",
        "--identity",
        identity,
        "--server",
        &server,
    ];
    let output = run_with_stdin(&ls, &[], "");
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = stderr(&output);
    assert!(
        stderr.contains(&format!("trying the key {identity}")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "{server} refused the key {identity} (fingerprint "
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(") for root: it is not authorised for that user; use --user NAME"),
        "{stderr}"
    );
    assert!(
        stderr.contains("or set SOCKIT_PASSWORD to log in as root by password"),
        "{stderr}"
    );
    assert!(!stderr.contains("needs a password"), "{stderr}");
}

/// `script`, which gives a shell a terminal of its own, when it is installed.
fn script() -> Option<&'static str> {
    common::tool(
        "script",
        "no `script` (util-linux) to give the test a terminal",
    )
}

#[test]
fn serve_in_the_background_of_a_terminal_keeps_serving() {
    let Some(script) = script() else { return };
    let dir = tempfile::tempdir().unwrap();
    let addr = dir.path().join("addr");
    let root = dir.path().join("store");
    // An interactive shell's job control (`set -m`): the server runs in a background process
    // group of a real terminal, where reading the terminal would stop it.
    let shell = format!(
        "set -m; '{SOCKIT}' serve --listen 127.0.0.1:0 --udp 127.0.0.1:0 --root '{root}' > '{addr}' & \
         for i in $(seq 100); do [ -s '{addr}' ] && break; sleep 0.05; done; \
         timeout 5 '{SOCKIT}' ping -n 1 --interval 0 --server $(head -1 '{addr}' | cut -d' ' -f3); \
         echo ping-exit=$?; kill -9 %1",
        root = root.display(),
        addr = addr.display(),
    );
    let output = Command::new(script)
        .args(["-qec", &shell, "/dev/null"])
        .env("SHELL", "/bin/sh")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = stdout(&output).replace('\r', "");
    assert!(text.contains("ping-exit=0"), "{text}");
    assert!(text.contains("1 sent, 1 received"), "{text}");
}
