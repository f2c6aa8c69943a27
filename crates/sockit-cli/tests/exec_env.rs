//! Remote commands get a clean, documented environment: none of the server's own variables
//! (secrets included) reach them, through `exec` or `--legacy-exec`.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Serve, SOCKIT};

const PASSWORD: &str = "a password for the environment test";
const SECRET: &str = "s3cr3t-value-never-shown";

/// A users file with `alice`, made by `sockit user add`.
fn users_file(dir: &Path) -> PathBuf {
    let users = dir.join("users.toml");
    let mut add = Command::new(SOCKIT)
        .args(["user", "add", "alice", "--users"])
        .arg(&users)
        .arg("--password-stdin")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    writeln!(add.stdin.take().unwrap(), "{PASSWORD}").unwrap();
    assert!(add.wait().unwrap().success());
    users
}

/// The server's environment for these tests: a secret, and a home the commands should see.
fn server_env(home: &Path) -> [(&'static str, &Path); 3] {
    [
        ("SECRET_TOKEN", Path::new(SECRET)),
        ("HOME", home),
        ("LC_ALL", Path::new("C")),
    ]
}

/// The variables' names in `env` output, sorted, without the ones `sh` sets itself.
fn names(env_output: &str) -> Vec<&str> {
    let mut names: Vec<&str> = env_output
        .lines()
        .filter_map(|line| line.split_once('=').map(|(name, _)| name))
        .filter(|name| !["PWD", "SHLVL", "_", "OLDPWD"].contains(name))
        .collect();
    names.sort_unstable();
    names
}

/// The documented set, as the server passes it in these tests.
fn expected_names(extra: &[&'static str]) -> Vec<&'static str> {
    let mut expected = vec!["HOME", "LC_ALL", "PATH", "SHELL"];
    // Passed through when the test runner has them.
    for name in ["USER", "LOGNAME", "LANG", "LC_CTYPE", "TZ"] {
        if std::env::var_os(name).is_some() {
            expected.push(name);
        }
    }
    expected.extend(extra);
    expected.sort_unstable();
    expected
}

fn assert_clean(env_output: &str, home: &Path, extra: &[&'static str]) {
    assert!(!env_output.contains(SECRET), "{env_output}");
    assert!(!env_output.contains("SECRET_TOKEN"), "{env_output}");
    assert_eq!(names(env_output), expected_names(extra), "{env_output}");
    for line in [
        "PATH=/usr/local/bin:/usr/bin:/bin".to_owned(),
        "SHELL=/bin/sh".to_owned(),
        "LC_ALL=C".to_owned(),
        format!("HOME={}", home.display()),
    ] {
        assert!(
            env_output.lines().any(|l| l == line),
            "{line} in {env_output}"
        );
    }
}

#[test]
fn exec_commands_get_the_documented_environment_and_no_server_secret() {
    let dir = tempfile::tempdir().unwrap();
    let users = users_file(dir.path());
    let serve = Serve::start_with_env(
        &["--users", users.to_str().unwrap()],
        &server_env(dir.path()),
    );
    let output = Command::new(SOCKIT)
        .args([
            "exec",
            "--user",
            "alice",
            "--server",
            &serve.tcp(),
            "--",
            "env",
        ])
        .env("SOCKIT_PASSWORD", PASSWORD)
        .env_remove("SOCKIT_IDENTITY")
        .env("XDG_CONFIG_HOME", dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let env_output = String::from_utf8(output.stdout).unwrap();
    assert_clean(&env_output, dir.path(), &["SOCKIT_USER"]);
    assert!(
        env_output.lines().any(|l| l == "SOCKIT_USER=alice"),
        "{env_output}"
    );
}

#[test]
fn legacy_exec_commands_get_the_documented_environment_and_no_server_secret() {
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start_with_env(&["--legacy-exec", "127.0.0.1:0"], &server_env(dir.path()));
    let mut stream = TcpStream::connect(serve.addr("legacy-exec")).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(b"env").unwrap();
    let mut prefix = [0u8; 4];
    stream.read_exact(&mut prefix).unwrap();
    let mut header = vec![0u8; i32::from_le_bytes(prefix) as usize];
    stream.read_exact(&mut header).unwrap();
    let header: serde_json::Value = serde_json::from_slice(&header).unwrap();
    let mut body = vec![0u8; header["size"].as_u64().unwrap() as usize];
    stream.read_exact(&mut body).unwrap();
    assert_eq!(header["exit_code"], 0, "{header}");
    assert_clean(&String::from_utf8(body).unwrap(), dir.path(), &[]);
}
