//! `--tls` as a person uses it: `serve --tls` and its lines, the identity it keeps, trust on
//! first use with the known-servers file, `--fingerprint`, plain and TLS meeting each other,
//! key login and `exec` over TLS, and the tutorials' Python client over TLS.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{Serve, SOCKIT};

/// Runs `sockit args` with its configuration (and so its known-servers file) under `home`.
fn sockit(args: &[&str], home: &Path, env: &[(&str, &str)]) -> Output {
    Command::new(SOCKIT)
        .args(args)
        .env("XDG_CONFIG_HOME", home)
        .env_remove("SOCKIT_KNOWN_SERVERS")
        .env_remove("SOCKIT_TLS")
        .env_remove("SOCKIT_IDENTITY")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn known_servers(home: &Path) -> PathBuf {
    home.join("sockit").join("known_servers")
}

/// The lines `sockit serve --tls` prints with its store in `root`, and the server stopped.
fn serve_lines(root: &Path) -> Vec<String> {
    let mut child = Command::new(SOCKIT)
        .args([
            "serve",
            "--tls",
            "--listen",
            "127.0.0.1:0",
            "--udp",
            "off",
            "--root",
        ])
        .arg(root)
        .env_remove("SOCKIT_USERS")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .take(2)
        .map(Result::unwrap)
        .collect();
    child.kill().unwrap();
    child.wait().unwrap();
    lines
}

#[test]
fn serve_tls_announces_its_listener_and_fingerprint_and_keeps_its_identity() {
    let dir = tempfile::tempdir().unwrap();
    let first = serve_lines(dir.path());
    assert!(
        first[0].starts_with("listening tls 127.0.0.1:"),
        "{first:?}"
    );
    let fingerprint = first[1].strip_prefix("fingerprint sha256:").unwrap();
    assert_eq!(fingerprint.len(), 64, "{first:?}");
    assert!(fingerprint
        .chars()
        .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)));
    // Restarted on the same store: the same identity.
    let again = serve_lines(dir.path());
    assert_eq!(again[1], first[1]);
    use std::os::unix::fs::PermissionsExt;
    let key = dir.path().join(".sockit/tls/key.pem");
    let mode = std::fs::metadata(key).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    // Never listed.
    let serve = Serve::start(&["--tls"]);
    let home = tempfile::tempdir().unwrap();
    let pin = serve.fingerprint();
    let ls = sockit(
        &[
            "ls",
            "--fingerprint",
            pin,
            "--server",
            &serve.addr("tls").to_string(),
        ],
        home.path(),
        &[],
    );
    assert!(ls.status.success(), "{ls:?}");
    assert_eq!(stdout(&ls), "");
}

#[test]
fn first_use_is_recorded_with_a_notice_and_a_changed_certificate_is_refused() {
    let serve = Serve::start(&["--tls"]);
    let home = tempfile::tempdir().unwrap();
    let addr = serve.addr("tls").to_string();
    let ping = ["ping", "-n", "1", "--tls", "--server", &addr];

    let first = sockit(&ping, home.path(), &[]);
    assert!(first.status.success(), "{first:?}");
    let file = known_servers(home.path());
    assert!(
        stderr(&first).contains(&format!(
            "first TLS connection to {addr}: trusting its certificate {}, now recorded in {}",
            serve.fingerprint(),
            file.display()
        )),
        "{first:?}"
    );
    let recorded = std::fs::read_to_string(&file).unwrap();
    assert_eq!(recorded, format!("{addr} {}\n", serve.fingerprint()));

    // Known now: no notice. SOCKIT_TLS=1 is --tls.
    let again = sockit(
        &["ping", "-n", "1", "--server", &addr],
        home.path(),
        &[("SOCKIT_TLS", "1")],
    );
    assert!(again.status.success(), "{again:?}");
    assert!(
        !stderr(&again).contains("first TLS connection"),
        "{again:?}"
    );

    // Another certificate at the same address.
    let other = format!("{addr} sha256:{}\n", "ab".repeat(32));
    std::fs::write(&file, format!("# mine\n{other}")).unwrap();
    let changed = sockit(&ping, home.path(), &[]);
    assert_eq!(changed.status.code(), Some(1), "{changed:?}");
    let message = stderr(&changed);
    assert!(message.contains("has changed"), "{message}");
    assert!(
        message.contains(&format!("remove line 2 of {}", file.display())),
        "{message}"
    );
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        format!("# mine\n{other}")
    );
}

#[test]
fn a_pinned_fingerprint_is_required_exactly() {
    let serve = Serve::start(&["--tls"]);
    let home = tempfile::tempdir().unwrap();
    let addr = serve.addr("tls").to_string();
    let right = sockit(
        &[
            "echo",
            "pinned",
            "--fingerprint",
            serve.fingerprint(),
            "--server",
            &addr,
        ],
        home.path(),
        &[],
    );
    assert!(right.status.success(), "{right:?}");
    assert_eq!(stdout(&right), "pinned\n");
    assert!(
        !known_servers(home.path()).exists(),
        "a pin records nothing"
    );

    let wrong = format!("sha256:{}", "0".repeat(64));
    let refused = sockit(
        &["echo", "x", "--fingerprint", &wrong, "--server", &addr],
        home.path(),
        &[],
    );
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    assert!(stderr(&refused).contains("not the pinned"), "{refused:?}");

    let malformed = sockit(
        &["echo", "x", "--fingerprint", "sha256:12", "--server", &addr],
        home.path(),
        &[],
    );
    assert_eq!(malformed.status.code(), Some(2), "{malformed:?}");
}

#[test]
fn plain_and_tls_meeting_each_other_fail_at_once_saying_why() {
    let tls = Serve::start(&["--tls"]);
    let plain = Serve::start(&[]);
    let home = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let plain_at_tls = sockit(
        &["ping", "-n", "1", "--server", &tls.addr("tls").to_string()],
        home.path(),
        &[],
    );
    assert_eq!(plain_at_tls.status.code(), Some(1), "{plain_at_tls:?}");
    assert!(
        stderr(&plain_at_tls).contains("(tls_required)"),
        "{plain_at_tls:?}"
    );

    let tls_at_plain = sockit(
        &["ping", "-n", "1", "--tls", "--server", &plain.tcp()],
        home.path(),
        &[],
    );
    assert_eq!(tls_at_plain.status.code(), Some(1), "{tls_at_plain:?}");
    assert!(
        stderr(&tls_at_plain).contains("does not speak TLS"),
        "{tls_at_plain:?}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}

#[test]
fn key_login_and_exec_over_tls_and_a_changed_identity_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let users = dir.path().join("users.toml");
    let identity = dir.path().join("id");
    let keygen = sockit(
        &["keygen", "-q", "--identity", identity.to_str().unwrap()],
        &home,
        &[],
    );
    assert!(keygen.status.success(), "{keygen:?}");
    let public = format!("{}.pub", identity.display());
    let add = sockit(
        &[
            "user",
            "add-key",
            "alice",
            &public,
            "--users",
            users.to_str().unwrap(),
        ],
        &home,
        &[],
    );
    assert!(add.status.success(), "{add:?}");
    let serve = Serve::start(&["--tls", "--users", users.to_str().unwrap()]);
    let addr = serve.addr("tls").to_string();
    let exec = [
        "exec",
        "--tls",
        "--user",
        "alice",
        "--identity",
        identity.to_str().unwrap(),
        "--server",
        &addr,
        "--",
        "echo",
        "over",
        "tls",
    ];
    let ran = sockit(&exec, &home, &[]);
    assert!(ran.status.success(), "{ran:?}");
    assert_eq!(stdout(&ran), "over tls\n");

    std::fs::write(
        known_servers(&home),
        format!("{addr} sha256:{}\n", "cd".repeat(32)),
    )
    .unwrap();
    let refused = sockit(&exec, &home, &[]);
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    assert_eq!(stdout(&refused), "");
}

#[test]
fn protocol_doc_python_tls_client_works() {
    let Some(python) = common::tool("python3", "no python3 to run the documented client") else {
        return;
    };
    let doc = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/PROTOCOL.md"),
    )
    .unwrap();
    let block = doc
        .split("```python\n")
        .skip(1)
        .map(|rest| &rest[..rest.find("```").unwrap()])
        .find(|code| code.contains("ssl.SSLContext"))
        .expect("a python block with ssl");
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("tls_client.py");
    std::fs::write(&script, block).unwrap();
    let serve = Serve::start(&["--tls"]);
    let output = Command::new(python)
        .arg(&script)
        .arg(serve.addr("tls").port().to_string())
        .arg(serve.fingerprint())
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        stdout(&output),
        "({'ok': True, 'id': 1}, b'')\n({'ok': True, 'size': 5}, b'hello')\n"
    );
    // A wrong pin stops the client before it sends anything.
    let wrong = format!("sha256:{}", "0".repeat(64));
    let refused = Command::new(python)
        .arg(&script)
        .arg(serve.addr("tls").port().to_string())
        .arg(&wrong)
        .output()
        .unwrap();
    assert!(!refused.status.success(), "{refused:?}");
    assert!(stderr(&refused).contains("fingerprint"), "{refused:?}");
}
