//! The `sockit` binary where a mistake could cost data or leak a secret.

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
