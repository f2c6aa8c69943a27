//! `sockit user list` on a users file that does not exist agrees with its help: it creates
//! nothing and says which command does.

use std::process::{Command, Stdio};

const SOCKIT: &str = env!("CARGO_BIN_EXE_sockit");

#[test]
fn list_of_a_missing_users_file_says_so_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("users.toml");
    let sockit = |args: &[&str]| {
        Command::new(SOCKIT)
            .args(args)
            .env_remove("SOCKIT_USERS")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let listed = sockit(&["user", "list", "--users", file.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&listed.stderr);
    assert_eq!(listed.status.code(), Some(1), "{err}");
    assert!(err.contains("no such users file"), "{err}");
    assert!(err.contains("sockit user add"), "{err}");
    assert!(!file.exists());

    let help = sockit(&["user", "list", "--help"]);
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("never created by `list`"), "{help}");
    assert!(!help.contains("created when missing"), "{help}");
}
