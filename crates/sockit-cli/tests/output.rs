//! What the commands print and how they end when their output goes away: a reader that closes
//! early (`| head -1`) ends every command quietly with status 141, as `cat` killed by SIGPIPE.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use common::{Serve, SOCKIT};

const PASSWORD: &str = "correct horse battery";
/// What a command ends with when the reader of its output went away: 128 + SIGPIPE.
const BROKEN_PIPE: i32 = 141;

/// `sockit` with no login settings inherited (no key, password or user from the environment).
fn sockit(args: &[&str]) -> Command {
    let mut command = Command::new(SOCKIT);
    command
        .args(args)
        .env_remove("SOCKIT_PASSWORD")
        .env_remove("SOCKIT_IDENTITY")
        .env_remove("SOCKIT_USERS")
        .env_remove("SOCKIT_LOG")
        .env("SOCKIT_USER", "alice")
        .env("XDG_CONFIG_HOME", "/nonexistent");
    command
}

fn run(args: &[&str]) -> Output {
    sockit(args).stdin(Stdio::null()).output().unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Runs `command` with its output read by a reader that stops after `bytes` bytes and closes
/// the pipe (as `head -c`), feeding `stdin` meanwhile; its exit status and standard error.
fn closed_early(mut command: Command, bytes: usize, stdin: &[u8]) -> (ExitStatus, String) {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let stdin = stdin.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = input.write_all(&stdin);
    });
    let mut head = vec![0u8; bytes];
    child.stdout.take().unwrap().read_exact(&mut head).unwrap(); // and closes it
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let status = wait(&mut child);
    feeder.join().unwrap();
    (status, err)
}

fn wait(child: &mut Child) -> ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if started.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("the command did not end once its output was closed");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn assert_quiet_broken_pipe((status, err): (ExitStatus, String), what: &str) {
    assert_eq!(
        status.code(),
        Some(BROKEN_PIPE),
        "{what}: {status:?}, {err}"
    );
    assert_eq!(err, "", "{what} says nothing on a broken pipe");
}

fn users_file(dir: &Path) -> PathBuf {
    let users = dir.join("users.toml");
    let mut add = sockit(&["user", "add", "alice", "--users", users.to_str().unwrap()]);
    add.arg("--password-stdin")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = add.spawn().unwrap();
    writeln!(child.stdin.take().unwrap(), "{PASSWORD}").unwrap();
    assert!(child.wait().unwrap().success());
    users
}

#[test]
fn ping_into_a_reader_that_closes_ends_quietly() {
    let serve = Serve::start(&[]);
    let ping = sockit(&[
        "ping",
        "-n",
        "100",
        "--interval",
        "0.01",
        "--server",
        &serve.tcp(),
    ]);
    assert_quiet_broken_pipe(closed_early(ping, 4, b""), "ping");
}

#[test]
fn echo_and_get_to_stdout_into_a_reader_that_closes_end_quietly() {
    let serve = Serve::start(&[]);
    let big = vec![b'x'; 2 << 20];
    let echo = sockit(&["echo", "--server", &serve.tcp()]);
    assert_quiet_broken_pipe(closed_early(echo, 10, &big), "echo");

    std::fs::write(serve.root().join("big"), &big).unwrap();
    let get = sockit(&["get", "big", "-o", "-", "--server", &serve.tcp()]);
    assert_quiet_broken_pipe(closed_early(get, 10, b""), "get -o -");
}

#[test]
fn ls_into_a_reader_that_closes_ends_quietly() {
    let serve = Serve::start(&[]);
    // Far more than a pipe holds, so ls is still writing when the reader goes.
    for i in 0..1000 {
        std::fs::write(serve.root().join(format!("{i:0>200}")), b"").unwrap();
    }
    for json in [false, true] {
        let mut ls = sockit(&["ls", "--server", &serve.tcp()]);
        if json {
            ls.arg("--json");
        }
        assert_quiet_broken_pipe(closed_early(ls, 10, b""), "ls");
    }
}

#[test]
fn exec_and_shell_into_a_reader_that_closes_end_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let users = users_file(dir.path());
    let serve = Serve::start(&["--users", users.to_str().unwrap()]);
    let mut exec = sockit(&["exec", "--server", &serve.tcp(), "--", "yes"]);
    exec.env("SOCKIT_PASSWORD", PASSWORD);
    assert_quiet_broken_pipe(closed_early(exec, 10, b""), "exec");

    let mut shell = sockit(&["shell", "--server", &serve.tcp()]);
    shell.env("SOCKIT_PASSWORD", PASSWORD);
    assert_quiet_broken_pipe(closed_early(shell, 10, b"yes\n"), "shell");
}

#[test]
fn chat_into_a_reader_that_closes_ends_quietly() {
    let serve = Serve::start(&["--udp", "127.0.0.1:0"]);
    let mut chat = sockit(&[
        "chat",
        "--name",
        "reader",
        "--server",
        &serve.addr("udp").to_string(),
    ]);
    let mut child = chat
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap(); // and closes it
    assert_eq!(first, "* you are now reader\n");
    // Each /who brings a line back, which the chat can no longer print.
    let mut input = child.stdin.take().unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "chat did not end"
        );
        let _ = input.write_all(b"/who\n");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_quiet_broken_pipe((wait(&mut child), err), "chat");
}

#[test]
fn a_closed_output_is_not_a_broken_pipe_of_the_network() {
    // A server that goes away is still an error with a message, not a quiet exit.
    let output = run(&["ping", "--server", "127.0.0.1:1"]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(stderr(&output).starts_with("sockit: "), "{output:?}");
    assert_eq!(stdout(&output), "");
}

#[test]
fn ping_counts_the_loss_when_the_server_goes_away() {
    let serve = Serve::start(&[]);
    let mut ping = sockit(&[
        "ping",
        "-n",
        "100",
        "--interval",
        "0.05",
        "--server",
        &serve.tcp(),
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let mut lines = BufReader::new(ping.stdout.take().unwrap());
    let mut text = String::new();
    while !text.contains("seq=2 ") {
        assert_ne!(lines.read_line(&mut text).unwrap(), 0, "{text}");
    }
    drop(serve);
    lines.read_to_string(&mut text).unwrap();
    let status = wait(&mut ping);
    assert_eq!(status.code(), Some(1), "{text}");
    let summary = text.lines().last().unwrap();
    let (sent, rest) = summary.split_once(" sent, ").unwrap();
    let (received, rest) = rest.split_once(" received, ").unwrap();
    let (sent, received): (u32, u32) = (sent.parse().unwrap(), received.parse().unwrap());
    assert_eq!(sent, received + 1, "{summary}");
    assert!(rest.contains("% loss, min/avg/median/max = "), "{summary}");
}

#[test]
fn quiet_prints_only_errors_and_what_the_command_is_for() {
    let serve = Serve::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("notes.txt");
    std::fs::write(&file, b"some notes\n").unwrap();
    let server = serve.tcp();

    for args in [
        vec!["-q", "put", file.to_str().unwrap(), "--server", &server],
        vec![
            "--quiet",
            "ping",
            "-n",
            "2",
            "--interval",
            "0",
            "--server",
            &server,
        ],
        vec![
            "get",
            "notes.txt",
            "-o",
            dir.path().to_str().unwrap(),
            "-f",
            "-q",
            "--server",
            &server,
        ],
    ] {
        let output = run(&args);
        assert!(output.status.success(), "{args:?}: {output:?}");
        assert_eq!(stdout(&output), "", "{args:?}");
        assert_eq!(stderr(&output), "", "{args:?}");
    }
    // What the command is for still comes out.
    let output = run(&["-q", "echo", "hi", "--server", &server]);
    assert_eq!(stdout(&output), "hi\n");
    let output = run(&["ls", "--quiet", "--json", "--server", &server]);
    assert!(stdout(&output).contains("\"notes.txt\""), "{output:?}");
    // Errors too.
    let output = run(&["-q", "get", "missing", "--server", &server]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).starts_with("sockit: "), "{output:?}");
}

#[test]
fn verbose_logs_what_the_client_does() {
    let serve = Serve::start(&[]);
    let server = serve.tcp();
    let output = run(&["-v", "ls", "--server", &server]);
    assert!(output.status.success(), "{output:?}");
    let err = stderr(&output);
    assert!(err.contains(&format!("connected to {server}")), "{err}");
    assert!(err.contains("no login"), "{err}");
    // Without it, nothing is logged.
    assert_eq!(stderr(&run(&["ls", "--server", &server])), "");
    // SOCKIT_LOG decides when set.
    let output = sockit(&["-v", "ls", "--server", &server])
        .env("SOCKIT_LOG", "error")
        .output()
        .unwrap();
    assert_eq!(stderr(&output), "", "{output:?}");
    // Quiet and verbose together make no sense.
    let output = run(&["-q", "-v", "ls", "--server", &server]);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
}

#[test]
fn no_color_keeps_logs_plain() {
    let serve = Serve::start(&[]);
    let output = sockit(&["-v", "ls", "--server", &serve.tcp()])
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(stderr(&output).contains("connected to"), "{output:?}");
    assert!(!output.stderr.contains(&0x1b), "{output:?}");
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|err| panic!("{err}: {text:?}"))
}

#[test]
fn put_and_get_json_give_one_object_per_file() {
    let serve = Serve::start(&[]);
    let server = serve.tcp();
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.txt"), dir.path().join("b.bin"));
    std::fs::write(&a, b"alpha\n").unwrap();
    std::fs::write(&b, vec![7u8; 100_000]).unwrap();

    let output = run(&[
        "put",
        "--json",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "--server",
        &server,
    ]);
    assert!(output.status.success(), "{output:?}");
    let lines: Vec<_> = stdout(&output).lines().map(json).collect();
    assert_eq!(
        lines,
        [
            serde_json::json!({"name": "a.txt", "length": 6, "hash": blake3::hash(b"alpha\n").to_hex().to_string(), "resumed_from": 0}),
            serde_json::json!({"name": "b.bin", "length": 100_000, "hash": blake3::hash(&[7u8; 100_000]).to_hex().to_string(), "resumed_from": 0}),
        ]
    );

    let out = dir.path().join("copy.bin");
    let output = run(&[
        "get",
        "b.bin",
        "-o",
        out.to_str().unwrap(),
        "--json",
        "-q",
        "--server",
        &server,
    ]);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        json(stdout(&output).trim_end()),
        serde_json::json!({
            "name": "b.bin",
            "path": out.to_str().unwrap(),
            "length": 100_000,
            "hash": blake3::hash(&[7u8; 100_000]).to_hex().to_string(),
            "resumed_from": 0,
        })
    );
    assert_eq!(stdout(&output).lines().count(), 1);

    let output = run(&["get", "b.bin", "-o", "-", "--json", "--server", &server]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(stderr(&output).contains("--json"), "{output:?}");
    assert!(output.stdout.is_empty());
}

#[test]
fn ping_json_is_the_summary_alone() {
    let serve = Serve::start(&[]);
    let output = run(&[
        "ping",
        "--json",
        "-n",
        "3",
        "--interval",
        "0",
        "--server",
        &serve.tcp(),
    ]);
    assert!(output.status.success(), "{output:?}");
    let text = stdout(&output);
    assert_eq!(text.lines().count(), 1, "{text}");
    let summary = json(text.trim_end());
    assert_eq!(summary["server"], serve.tcp());
    assert_eq!(summary["sent"], 3);
    assert_eq!(summary["received"], 3);
    assert_eq!(summary["loss_percent"], 0.0);
    let ms = |key: &str| {
        summary[key]
            .as_f64()
            .unwrap_or_else(|| panic!("{key}: {summary}"))
    };
    assert!(
        ms("min_ms") <= ms("median_ms") && ms("median_ms") <= ms("max_ms"),
        "{summary}"
    );
    assert!(
        ms("min_ms") <= ms("avg_ms") && ms("avg_ms") <= ms("max_ms"),
        "{summary}"
    );
}

#[test]
fn exec_json_ends_standard_error_with_the_status() {
    let dir = tempfile::tempdir().unwrap();
    let users = users_file(dir.path());
    let serve = Serve::start(&["--users", users.to_str().unwrap()]);
    let exec = |words: &[&str]| {
        let server = serve.tcp();
        let mut args = vec!["exec", "--json", "--server", &server];
        args.extend(words);
        sockit(&args)
            .env("SOCKIT_PASSWORD", PASSWORD)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let output = exec(&["--", "sh", "-c", "echo out; echo err >&2; exit 3"]);
    assert_eq!(output.status.code(), Some(3), "{output:?}");
    assert_eq!(stdout(&output), "out\n");
    let err = stderr(&output);
    let (remote, last) = err.trim_end().rsplit_once('\n').unwrap();
    assert_eq!(remote, "err");
    assert_eq!(
        json(last),
        serde_json::json!({"status": 3, "code": 3, "signal": null, "timed_out": false, "truncated": false})
    );
    let output = exec(&["-c", "kill -KILL $$"]);
    assert_eq!(output.status.code(), Some(137), "{output:?}");
    assert_eq!(
        json(stderr(&output).trim_end()),
        serde_json::json!({"status": 137, "code": null, "signal": 9, "timed_out": false, "truncated": false})
    );
}

/// The subcommands every generated document must name.
const SUBCOMMANDS: [&str; 9] = [
    "serve", "ping", "echo", "put", "get", "ls", "exec", "chat", "bench",
];

#[test]
fn completions_name_every_subcommand() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let output = run(&["completions", shell]);
        assert!(output.status.success(), "{shell}: {output:?}");
        let script = stdout(&output);
        for sub in SUBCOMMANDS.iter().chain(&["completions", "manpage"]) {
            assert!(script.contains(sub), "{shell} completion lacks {sub}");
        }
        assert!(script.contains("json"), "{shell} completion lacks --json");
    }
    let output = run(&["completions", "tcsh"]);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
}

#[test]
fn manpage_names_every_subcommand_and_each_has_its_own() {
    let output = run(&["manpage"]);
    assert!(output.status.success(), "{output:?}");
    let page = stdout(&output);
    assert!(page.contains(".TH sockit 1"), "{page}");
    for sub in SUBCOMMANDS {
        assert!(
            page.contains(&format!("sockit\\-{sub}(1)")),
            "{sub}: {page}"
        );
        let output = run(&["manpage", sub]);
        assert!(output.status.success(), "{sub}: {output:?}");
        let page = stdout(&output);
        assert!(page.contains(&format!(".TH sockit-{sub} 1")), "{page}");
        assert!(
            page.contains("\\-\\-quiet"),
            "{sub} page lacks the global options"
        );
    }
    let output = run(&["manpage", "nope"]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
}
