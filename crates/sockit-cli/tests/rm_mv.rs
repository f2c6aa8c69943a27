//! `sockit rm` and `sockit mv` end to end against a `sockit serve` process: each name of `rm`
//! on its own, failures reported per name with exit status 1, `mv` replacing only with
//! `--force`, hostile names, and a server with accounts (login as `put` does).

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{Serve, SOCKIT};

const PASSWORD: &str = "open sesame";

impl Serve {
    /// `sockit <args> --server <this>` with `env`, and no login settings inherited.
    fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let home = tempfile::tempdir().unwrap();
        Command::new(SOCKIT)
            .args(args)
            .args(["--server", &self.tcp()])
            .env_remove("SOCKIT_PASSWORD")
            .env_remove("SOCKIT_IDENTITY")
            .env("SOCKIT_USER", "alice")
            .env("XDG_CONFIG_HOME", home.path())
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn write(&self, name: &str, data: &[u8]) {
        std::fs::write(self.root().join(name), data).unwrap();
    }

    fn read(&self, name: &str) -> Option<Vec<u8>> {
        std::fs::read(self.root().join(name)).ok()
    }
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A users file with `alice` (password [`PASSWORD`]), made by `sockit user add`.
fn users_file(dir: &Path) -> PathBuf {
    let users = dir.join("users.toml");
    let mut child = Command::new(SOCKIT)
        .args(["user", "add", "alice", "--users"])
        .arg(&users)
        .arg("--password-stdin")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{PASSWORD}").unwrap();
    assert!(child.wait().unwrap().success());
    users
}

#[test]
fn rm_removes_every_name_it_can_and_reports_each_one_it_cannot() {
    let serve = Serve::start(&[]);
    serve.write("a", b"a");
    serve.write("b", b"b");

    let output = serve.run(&["rm", "a"], &[]);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        (stdout(&output), stderr(&output)),
        (String::new(), String::new())
    );
    assert_eq!(serve.read("a"), None);

    serve.write("a", b"a");
    let output = serve.run(&["rm", "a", "nope", "../b", "b"], &[]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let err = stderr(&output);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 3, "{err}");
    assert!(
        lines[0].starts_with("sockit: cannot remove nope: "),
        "{err}"
    );
    assert!(lines[0].contains("not_found"), "{err}");
    assert!(
        lines[1].starts_with("sockit: cannot remove ../b: "),
        "{err}"
    );
    assert!(lines[1].contains("bad_name"), "{err}");
    assert_eq!(lines[2], "sockit: 2 of 4 names could not be removed");
    assert_eq!((serve.read("a"), serve.read("b")), (None, None));

    let output = serve.run(&["rm", "nope"], &[]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert_eq!(stderr(&output).lines().count(), 1, "{output:?}");
    assert!(stderr(&output).contains("cannot remove nope"), "{output:?}");
}

#[test]
fn mv_renames_and_replaces_only_with_force() {
    let serve = Serve::start(&[]);
    serve.write("old", b"old data");
    serve.write("taken", b"taken");
    let hash = blake3::hash(b"old data").to_hex().to_string();

    let output = serve.run(&["mv", "old", "taken"], &[]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(stderr(&output).contains("--force"), "{output:?}");
    assert_eq!(serve.read("taken").as_deref(), Some(&b"taken"[..]));
    assert_eq!(serve.read("old").as_deref(), Some(&b"old data"[..]));

    let output = serve.run(&["mv", "old", "taken", "--force"], &[]);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        stdout(&output),
        format!("old -> taken: 8 bytes, blake3 {hash}\n")
    );
    assert_eq!(serve.read("taken").as_deref(), Some(&b"old data"[..]));
    assert_eq!(serve.read("old"), None);

    let output = serve.run(&["mv", "taken", "taken", "-q"], &[]);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(stdout(&output), "", "-q prints no result line");
    assert_eq!(serve.read("taken").as_deref(), Some(&b"old data"[..]));

    for (from, to, code) in [
        ("nope", "x", "not_found"),
        ("taken", "../escape", "bad_name"),
        ("taken", ".sockit", "bad_name"),
    ] {
        let output = serve.run(&["mv", from, to], &[]);
        assert_eq!(output.status.code(), Some(1), "{output:?}");
        assert!(stderr(&output).contains(code), "{output:?}");
    }
    assert_eq!(serve.read("taken").as_deref(), Some(&b"old data"[..]));
    assert!(!serve.root().parent().unwrap().join("escape").exists());
}

#[test]
fn rm_and_mv_log_in_on_a_server_with_accounts() {
    let dir = tempfile::tempdir().unwrap();
    let users = users_file(dir.path());
    let serve = Serve::start(&["--users", users.to_str().unwrap()]);
    serve.write("kept", b"kept");

    for args in [&["rm", "kept"][..], &["mv", "kept", "moved"]] {
        let output = serve.run(args, &[]);
        assert_eq!(output.status.code(), Some(1), "{output:?}");
        assert!(stderr(&output).contains("SOCKIT_PASSWORD"), "{output:?}");
        let output = serve.run(args, &[("SOCKIT_PASSWORD", "wrong")]);
        assert_eq!(output.status.code(), Some(1), "{output:?}");
        assert!(stderr(&output).contains("login failed"), "{output:?}");
    }
    assert_eq!(serve.read("kept").as_deref(), Some(&b"kept"[..]));

    let password = [("SOCKIT_PASSWORD", PASSWORD)];
    let output = serve.run(&["mv", "kept", "moved"], &password);
    assert!(output.status.success(), "{output:?}");
    let output = serve.run(&["rm", "moved"], &password);
    assert!(output.status.success(), "{output:?}");
    assert_eq!((serve.read("kept"), serve.read("moved")), (None, None));
}
