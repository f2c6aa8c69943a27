//! `sockit shell` and `sockit chat` as a person uses them: Ctrl-C on a terminal, `cd`, a
//! server that runs no commands, a refused chat name or room.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Serve, SOCKIT};

/// A `sockit serve` on loopback with the UDP room, and accounts from `users` when given.
fn serve(users: Option<&Path>) -> Serve {
    let users = users.map(|users| users.to_str().unwrap());
    let mut extra = vec!["--udp", "127.0.0.1:0"];
    if let Some(users) = users {
        extra.extend(["--users", users]);
    }
    Serve::start(&extra)
}

/// A users file with `alice`, password `pw`.
fn users(dir: &Path) -> std::path::PathBuf {
    let users = dir.join("users.toml");
    let mut add = Command::new(SOCKIT)
        .args(["user", "add", "alice", "--password-stdin", "--users"])
        .arg(&users)
        .stdin(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    add.stdin.take().unwrap().write_all(b"pw\n").unwrap();
    assert!(add.wait().unwrap().success());
    users
}

/// `sockit shell` as alice on `serve`, with `args` after the command's.
fn shell(serve: &Serve, home: &Path) -> Command {
    let mut command = Command::new(SOCKIT);
    command
        .args(["shell", "--user", "alice", "--server", &serve.tcp()])
        .env("SOCKIT_PASSWORD", "pw")
        .env_remove("SOCKIT_IDENTITY")
        .env("XDG_CONFIG_HOME", home);
    command
}

fn run_piped(mut command: Command, input: &str) -> Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).replace('\r', "")
}

fn script() -> Option<&'static str> {
    common::tool(
        "script",
        "no `script` (util-linux) to give the test a terminal",
    )
}

/// A command on a terminal of its own (`script`): keys typed in, the screen read back.
struct Terminal {
    child: Child,
    screen: Arc<Mutex<String>>,
}

impl Terminal {
    fn start(command: &str, env: &[(&str, &Path)], script: &str) -> Terminal {
        let mut cmd = Command::new(script);
        // `script` runs the command with $SHELL: the same shell wherever the tests run.
        cmd.args(["-qec", command, "/dev/null"])
            .env("SHELL", "/bin/sh")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        for (key, value) in env {
            cmd.env(key, value);
        }
        let mut child = cmd.spawn().unwrap();
        let screen = Arc::new(Mutex::new(String::new()));
        let mut out = child.stdout.take().unwrap();
        let shared = Arc::clone(&screen);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(len) = out.read(&mut buf) {
                if len == 0 {
                    return;
                }
                shared
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..len]));
            }
        });
        Terminal { child, screen }
    }

    fn screen(&self) -> String {
        self.screen.lock().unwrap().replace('\r', "")
    }

    /// Waits until `text` has appeared `times` times on the screen.
    fn wait_for(&self, text: &str, times: usize) {
        let started = Instant::now();
        while self.screen().matches(text).count() < times {
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "no {text:?} on the screen:\n{}",
                self.screen()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn type_keys(&mut self, keys: &str) {
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin.write_all(keys.as_bytes()).unwrap();
        stdin.flush().unwrap();
    }

    /// Waits for the command to end; its exit status.
    fn wait(mut self) -> Option<i32> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            if started.elapsed() > Duration::from_secs(20) {
                let _ = self.child.kill();
                panic!("still running:\n{}", self.screen());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn process_alive(pid: &str) -> bool {
    Command::new("kill")
        .args(["-0", pid])
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

#[test]
fn shell_ctrl_c_stops_the_running_command_and_returns_to_the_prompt() {
    let Some(script) = script() else { return };
    let dir = tempfile::tempdir().unwrap();
    let serve = serve(Some(&users(dir.path())));
    let pid_file = dir.path().join("pid");
    // Ctrl-C reaches the whole foreground group; the `sh` around sockit must outlive it to
    // report sockit's status (a trapped signal is back to its default in sockit).
    let command = format!(
        "trap : INT; '{SOCKIT}' shell --user alice --server {}; echo shell-exit=$?",
        serve.tcp()
    );
    let mut terminal = Terminal::start(
        &command,
        &[
            ("SOCKIT_PASSWORD", Path::new("pw")),
            ("XDG_CONFIG_HOME", dir.path()),
        ],
        script,
    );
    terminal.wait_for(">>: ", 1);
    terminal.type_keys(&format!(
        "echo $$ > '{}'; exec sleep 60\n",
        pid_file.display()
    ));
    let started = Instant::now();
    while std::fs::read_to_string(&pid_file).map_or(true, |pid| !pid.ends_with('\n')) {
        assert!(started.elapsed() < Duration::from_secs(10), "never ran");
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .to_owned();
    std::thread::sleep(Duration::from_millis(200));
    terminal.type_keys("\x03");
    terminal.wait_for(">>: ", 2);
    terminal.type_keys("echo after-$((40 + 2))\n");
    terminal.wait_for("after-42", 1); // the output (the typed line shows `$((40 + 2))`)
    terminal.type_keys("exit\n");
    terminal.wait_for("shell-exit=", 1);
    let screen = terminal.screen();
    assert_eq!(terminal.wait(), Some(0), "{screen}");
    assert!(screen.contains("interrupted"), "{screen}");
    assert!(screen.contains("shell-exit=0"), "{screen}");
    // The server killed the command when its connection closed.
    let started = Instant::now();
    while process_alive(&pid) {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the remote command still runs"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn shell_cd_persists_between_lines_and_a_failed_cd_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let serve = serve(Some(&users(dir.path())));
    let sub = dir.path().join("a dir");
    std::fs::create_dir(&sub).unwrap();
    let input = format!(
        "cd '{}'\npwd\ncd nowhere-at-all\npwd\ncd /\npwd\ncd .. && cd /tmp\npwd\nfalse\n",
        sub.display()
    );
    let output = run_piped(shell(&serve, dir.path()), &input);
    let real = sub.canonicalize().unwrap();
    assert_eq!(
        text(&output.stdout),
        format!("{}\n{}\n/\n/\n", real.display(), real.display())
    );
    assert!(
        text(&output.stderr).contains("nowhere-at-all"),
        "{}",
        text(&output.stderr)
    );
    // At the end of its input, the shell exits with the last command's status.
    assert_eq!(output.status.code(), Some(1));
    let output = run_piped(shell(&serve, dir.path()), "true\nsh -c 'exit 7'\n");
    assert_eq!(output.status.code(), Some(7));
    let output = run_piped(shell(&serve, dir.path()), "false\ntrue\n");
    assert_eq!(output.status.code(), Some(0));
}

#[test]
fn shell_against_a_server_that_runs_no_commands_says_so_before_any_prompt() {
    let Some(script) = script() else { return };
    let dir = tempfile::tempdir().unwrap();
    let serve = serve(None);
    let command = format!(
        "'{SOCKIT}' shell --server {}; echo shell-exit=$?",
        serve.tcp()
    );
    let terminal = Terminal::start(&command, &[("XDG_CONFIG_HOME", dir.path())], script);
    terminal.wait_for("shell-exit=", 1);
    let screen = terminal.screen();
    assert_eq!(terminal.wait(), Some(0));
    assert!(screen.contains("remote commands are off"), "{screen}");
    assert!(screen.contains("shell-exit=255"), "{screen}");
    assert!(!screen.contains(">>:"), "{screen}");
}

/// `sockit chat` in a pipe, with `input`.
fn chat(serve: &Serve, args: &[&str], input: &str) -> Output {
    let mut command = Command::new(SOCKIT);
    command
        .args([
            "chat",
            "--server",
            &serve.addr("udp").to_string(),
            "--wait",
            "0.3",
        ])
        .args(args);
    run_piped(command, input)
}

#[test]
fn chat_with_a_refused_name_or_room_ends_non_zero_and_says_nothing() {
    let serve = serve(None);
    // bob stays in the lobby, listening, while the others try.
    let mut bob = Command::new(SOCKIT)
        .args([
            "chat",
            "--name",
            "bob",
            "--server",
            &serve.addr("udp").to_string(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut bob_lines = BufReader::new(bob.stdout.take().unwrap()).lines();
    assert_eq!(bob_lines.next().unwrap().unwrap(), "* you are now bob");

    let taken = chat(&serve, &["--name", "BOB"], "not from bob\n");
    assert_eq!(taken.status.code(), Some(1));
    assert!(
        text(&taken.stderr).contains("the room refused --name BOB: the name BOB is taken"),
        "{}",
        text(&taken.stderr)
    );
    let bad_room = chat(&serve, &["--name", "carol", "--room", "no room"], "lost\n");
    assert_eq!(bad_room.status.code(), Some(1));
    assert!(
        text(&bad_room.stderr).contains("the room refused --room no room"),
        "{}",
        text(&bad_room.stderr)
    );
    let fine = chat(&serve, &["--name", "dave"], "hello bob\n");
    assert!(fine.status.success());
    assert!(text(&fine.stdout).starts_with("* you are now dave\n"));

    drop(bob.stdin.take());
    let said: Vec<String> = bob_lines.map(Result::unwrap).collect();
    assert!(said.contains(&"<dave> hello bob".to_owned()), "{said:?}");
    assert!(
        !said
            .iter()
            .any(|line| line.contains("not from bob") || line.contains("lost")),
        "{said:?}"
    );
    assert!(bob.wait().unwrap().success());
}

#[test]
fn chat_on_a_terminal_shows_its_first_line() {
    let Some(script) = script() else { return };
    let dir = tempfile::tempdir().unwrap();
    let serve = serve(None);
    for _ in 0..3 {
        let command = format!(
            "'{SOCKIT}' chat --name erin --room den --server {}; echo chat-exit=$?",
            serve.addr("udp")
        );
        let mut terminal = Terminal::start(&command, &[("XDG_CONFIG_HOME", dir.path())], script);
        terminal.wait_for("> ", 1);
        terminal.type_keys("/quit\n");
        terminal.wait_for("chat-exit=", 1);
        let screen = terminal.screen();
        assert_eq!(terminal.wait(), Some(0));
        assert!(screen.contains("* you are now erin\n"), "{screen}");
        assert!(screen.contains("* you are in den (1 here)"), "{screen}");
        assert!(screen.contains("chat-exit=0"), "{screen}");
    }
}
