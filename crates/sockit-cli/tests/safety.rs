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
