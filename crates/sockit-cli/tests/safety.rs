//! The `sockit` binary where a mistake could cost data or leak a secret: `user add-key` given
//! the secret key, `exec`'s own usage errors, and a server shut down mid-upload.

use std::process::{Command, Output, Stdio};

const SOCKIT: &str = env!("CARGO_BIN_EXE_sockit");

/// Runs `sockit` with no login settings inherited and standard input empty.
fn sockit(args: &[&str]) -> Output {
    let home = tempfile::tempdir().unwrap();
    Command::new(SOCKIT)
        .args(args)
        .env_remove("SOCKIT_PASSWORD")
        .env_remove("SOCKIT_IDENTITY")
        .env_remove("SOCKIT_USERS")
        .env_remove("SOCKIT_SERVER")
        .env("XDG_CONFIG_HOME", home.path())
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn add_key_given_the_secret_key_never_prints_it() {
    let dir = tempfile::tempdir().unwrap();
    let identity = dir.path().join("id");
    let identity = identity.to_str().unwrap();
    let users = dir.path().join("users.toml");
    let users = users.to_str().unwrap();
    let made = sockit(&["keygen", "--identity", identity]);
    assert!(made.status.success(), "{made:?}");
    let secret_line = std::fs::read_to_string(identity).unwrap();
    let secret_hex = secret_line.split_whitespace().nth(1).unwrap().to_owned();

    let words: Vec<&str> = secret_line.split_whitespace().collect();
    let as_file = ["user", "add-key", "bob", identity, "--users", users];
    let as_words = [&["user", "add-key", "bob"], &words[..], &["--users", users]].concat();
    for args in [&as_file[..], &as_words[..]] {
        let output = sockit(args);
        assert_eq!(output.status.code(), Some(1), "{output:?}");
        let all = format!(
            "{}{}",
            stderr(&output),
            String::from_utf8_lossy(&output.stdout)
        );
        assert!(
            all.contains("that is a secret key; give the .pub file"),
            "{all}"
        );
        assert!(!all.contains(&secret_hex[..16]), "secret printed: {all}");
    }
    assert!(!dir.path().join("users.toml").exists(), "nothing written");

    let public = format!("{identity}.pub");
    let added = sockit(&["user", "add-key", "bob", &public, "--users", users]);
    assert!(added.status.success(), "{added:?}");
}

#[test]
fn exec_usage_errors_exit_255_and_never_reach_the_command() {
    // Nothing listens here: a usage error must be found before connecting, and anything that
    // got as far as connecting fails with "cannot connect" instead.
    let server = "127.0.0.1:1";
    let mistyped = sockit(&[
        "exec", "--server", server, "--timout", "5", "--", "echo", "hi",
    ]);
    assert_eq!(mistyped.status.code(), Some(255), "{mistyped:?}");
    assert!(stderr(&mistyped).contains("--timout"), "{mistyped:?}");
    assert!(
        !stderr(&mistyped).contains("cannot connect"),
        "{mistyped:?}"
    );

    // Options after the command words are not passed on as words, nor taken silently.
    let after = sockit(&["exec", "--server", server, "echo", "hi", "--timeout", "5"]);
    assert_eq!(after.status.code(), Some(255), "{after:?}");
    assert!(stderr(&after).contains("unexpected argument"), "{after:?}");
    assert!(!stderr(&after).contains("cannot connect"), "{after:?}");

    let nothing = sockit(&["exec", "--server", server]);
    assert_eq!(nothing.status.code(), Some(255), "{nothing:?}");

    let shell = sockit(&["shell", "--server", server, "--bogus"]);
    assert_eq!(shell.status.code(), Some(255), "{shell:?}");

    // After `--`, every word is the command's, dashes and all: this one gets to connecting.
    let words = sockit(&["exec", "--server", server, "--", "echo", "--timeout", "5"]);
    assert_eq!(words.status.code(), Some(255), "{words:?}");
    assert!(stderr(&words).contains("cannot connect"), "{words:?}");

    // Help is not a failure; other commands keep clap's usage status.
    assert_eq!(sockit(&["exec", "--help"]).status.code(), Some(0));
    assert_eq!(sockit(&["ping", "--bogus"]).status.code(), Some(2));
}

// --- SIGTERM while an upload is in flight ---

/// A `sockit serve` process on loopback over `root`, with a short shutdown timeout.
struct Serve {
    child: std::process::Child,
    addr: std::net::SocketAddr,
}

impl Serve {
    fn start(root: &std::path::Path) -> Serve {
        Serve::start_with(root, &[])
    }

    fn start_with(root: &std::path::Path, extra: &[&str]) -> Serve {
        use std::io::BufRead;
        let mut child = Command::new(SOCKIT)
            .args(["serve", "--listen", "127.0.0.1:0", "--udp", "off"])
            .args(["--shutdown-timeout", "1"])
            .args(extra)
            .arg("--root")
            .arg(root)
            .env_remove("SOCKIT_USERS")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let line = std::io::BufReader::new(stdout)
            .lines()
            .next()
            .unwrap()
            .unwrap();
        let addr = line
            .strip_prefix("listening tcp ")
            .expect(&line)
            .parse()
            .unwrap();
        Serve { child, addr }
    }

    fn terminate(&mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to end; its exit status.
    fn wait(mut self) -> Option<i32> {
        let started = std::time::Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(
                started.elapsed() < std::time::Duration::from_secs(15),
                "serve did not exit"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn send_frame(stream: &mut std::net::TcpStream, header: &serde_json::Value, body: &[u8]) {
    use std::io::Write;
    let header = header.to_string();
    let len = i32::try_from(header.len()).unwrap();
    stream.write_all(&len.to_le_bytes()).unwrap();
    stream.write_all(header.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
}

/// Reads one reply frame's header (replies here have no body).
fn read_reply(stream: &mut std::net::TcpStream) -> serde_json::Value {
    use std::io::Read;
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).unwrap();
    let mut header = vec![0u8; usize::try_from(i32::from_le_bytes(len)).unwrap()];
    stream.read_exact(&mut header).unwrap();
    serde_json::from_slice(&header).unwrap()
}

/// Asks the server at `addr` what it holds of an upload of `name` of `length` bytes.
fn stat(addr: std::net::SocketAddr, name: &str, length: usize) -> serde_json::Value {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    let request = serde_json::json!({"op": "stat", "name": name, "length": length});
    send_frame(&mut stream, &request, &[]);
    read_reply(&mut stream)
}

const LENGTH: usize = 200_000;

fn data() -> Vec<u8> {
    (0..LENGTH).map(|i| (i % 251) as u8).collect()
}

/// Starts a trailer `put` of [`data`] as `name` and sends its first `sent` bytes.
fn begin_put(addr: std::net::SocketAddr, name: &str, sent: usize) -> std::net::TcpStream {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    let request = serde_json::json!({"op": "put", "name": name, "size": LENGTH, "trailer": true});
    send_frame(&mut stream, &request, &data()[..sent]);
    // Let the server read what was sent before it is told to stop.
    std::thread::sleep(std::time::Duration::from_millis(300));
    stream
}

#[test]
fn sigterm_lets_a_complete_upload_send_its_trailer_and_commits_it() {
    let root = tempfile::tempdir().unwrap();
    let mut serve = Serve::start(root.path());
    let mut stream = begin_put(serve.addr, "whole.bin", LENGTH);
    serve.terminate();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let hash = blake3::hash(&data()).to_hex().to_string();
    send_frame(&mut stream, &serde_json::json!({"hash": hash}), &[]);
    let reply = read_reply(&mut stream);
    assert_eq!(reply["ok"], true, "{reply}");
    assert_eq!(reply["length"], LENGTH, "{reply}");
    assert_eq!(serve.wait(), Some(0));
    assert_eq!(
        std::fs::read(root.path().join("whole.bin")).unwrap(),
        data()
    );
}

#[test]
fn sigterm_cuts_an_unfinished_upload_with_shutting_down_and_keeps_it_to_resume() {
    let root = tempfile::tempdir().unwrap();
    // Mid-body, and a body complete whose trailer never comes: both are cut once the
    // shutdown timeout passes, and both keep what arrived.
    let mut serve = Serve::start(root.path());
    let mut half = begin_put(serve.addr, "half.bin", LENGTH / 2);
    let mut whole = begin_put(serve.addr, "whole.bin", LENGTH);
    serve.terminate();
    for stream in [&mut half, &mut whole] {
        let reply = read_reply(stream);
        assert_eq!(reply["ok"], false, "{reply}");
        assert_eq!(reply["code"], "shutting_down", "{reply}");
    }
    assert_eq!(serve.wait(), Some(0));
    assert!(!root.path().join("half.bin").exists());
    assert!(!root.path().join("whole.bin").exists());

    let serve = Serve::start(root.path());
    assert_eq!(stat(serve.addr, "half.bin", LENGTH)["partial"], LENGTH / 2);
    assert_eq!(stat(serve.addr, "whole.bin", LENGTH)["partial"], LENGTH);

    // The same command again resumes, and stores the whole file.
    let file = root.path().join("local.bin");
    std::fs::write(&file, data()).unwrap();
    let server = serve.addr.to_string();
    for name in ["half.bin", "whole.bin"] {
        let args = [
            "put",
            "--server",
            &server,
            file.to_str().unwrap(),
            "--as",
            name,
        ];
        let put = sockit(&args);
        assert!(put.status.success(), "{put:?}");
        assert!(
            String::from_utf8_lossy(&put.stdout).contains("resumed at byte"),
            "{put:?}"
        );
        assert_eq!(std::fs::read(root.path().join(name)).unwrap(), data());
    }
}

#[test]
fn put_cut_by_a_shutdown_says_to_run_the_command_again() {
    // A server without accounts that takes the stat, then answers the put's body with `shutting_down`.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        use std::io::Read;
        let (mut stream, _) = listener.accept().unwrap();
        let frame = |stream: &mut std::net::TcpStream| {
            let mut len = [0u8; 4];
            stream.read_exact(&mut len).unwrap();
            let mut header = vec![0u8; usize::try_from(i32::from_le_bytes(len)).unwrap()];
            stream.read_exact(&mut header).unwrap();
            serde_json::from_slice::<serde_json::Value>(&header).unwrap()
        };
        let challenge = frame(&mut stream);
        assert_eq!(challenge["op"], "challenge", "{challenge}");
        let open = serde_json::json!({"ok": false, "code": "disabled", "error": "no accounts"});
        send_frame(&mut stream, &open, &[]);
        let stat = frame(&mut stream);
        assert_eq!(stat["op"], "stat", "{stat}");
        let reply = serde_json::json!({"ok": true, "name": stat["name"], "exists": false});
        send_frame(&mut stream, &reply, &[]);
        let put = frame(&mut stream);
        assert_eq!(put["op"], "put", "{put}");
        let cut = serde_json::json!({
            "ok": false, "code": "shutting_down", "error": "the server is shutting down"
        });
        send_frame(&mut stream, &cut, &[]);
        let _ = stream.shutdown(std::net::Shutdown::Write);
        let _ = std::io::copy(&mut stream, &mut std::io::sink());
    });
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.bin");
    std::fs::write(&file, vec![7u8; 4 << 20]).unwrap();
    let put = sockit(&["put", "--server", &addr.to_string(), file.to_str().unwrap()]);
    server.join().unwrap();
    assert_eq!(put.status.code(), Some(1), "{put:?}");
    assert!(
        stderr(&put).contains("server shutting down; run the same command again to resume"),
        "{put:?}"
    );
}

// --- exec's standard input ---

#[test]
fn exec_forwards_piped_standard_input_and_n_keeps_it() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.toml");
    let users = users.to_str().unwrap();
    let mut add = Command::new(SOCKIT)
        .args(["user", "add", "alice", "--users", users, "--password-stdin"])
        .stdin(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut add.stdin.take().unwrap(), b"pw\n").unwrap();
    assert!(add.wait().unwrap().success());
    let root = tempfile::tempdir().unwrap();
    let serve = Serve::start_with(root.path(), &["--users", users]);
    let server = serve.addr.to_string();
    let exec = |args: &[&str], input: &[u8]| {
        let home = tempfile::tempdir().unwrap();
        let mut child = Command::new(SOCKIT)
            .args(["exec", "--server", &server, "--user", "alice"])
            .args(args)
            .env("SOCKIT_PASSWORD", "pw")
            .env_remove("SOCKIT_IDENTITY")
            .env("XDG_CONFIG_HOME", home.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let input = input.to_vec();
        let writer = std::thread::spawn(move || {
            let _ = std::io::Write::write_all(&mut stdin, &input);
        });
        let output = child.wait_with_output().unwrap();
        writer.join().unwrap();
        output
    };

    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
    let copied = exec(&["--", "cat"], &data);
    assert_eq!(copied.status.code(), Some(0), "{}", stderr(&copied));
    assert!(
        copied.stdout == data,
        "cat gave {} bytes",
        copied.stdout.len()
    );

    // As with ssh: a tar stream through a pipe unpacks on the other side.
    let dst = root.path().join("dst");
    let unpack = format!("mkdir {0} && tar x -C {0} && cat {0}/f", dst.display());
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("f"), "in the tarball\n").unwrap();
    let tar = Command::new("tar")
        .args(["c", "-C"])
        .arg(src.path())
        .arg("f")
        .output()
        .unwrap();
    assert!(tar.status.success());
    let unpacked = exec(&["-c", &unpack], &tar.stdout);
    assert_eq!(unpacked.status.code(), Some(0), "{}", stderr(&unpacked));
    assert_eq!(unpacked.stdout, b"in the tarball\n");

    // A command that reads a little and ends; and -n, which sends nothing.
    let head = exec(&["--", "head", "-c", "4"], &data);
    assert_eq!(head.stdout, &data[..4]);
    let kept = exec(&["-n", "--", "wc", "-c"], &data);
    assert_eq!(String::from_utf8_lossy(&kept.stdout).trim(), "0");
}
