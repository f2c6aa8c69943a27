//! `sockit serve` logs each put, get, delete and rename at info, one line each, with the peer,
//! the name, the bytes and the time.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

const SOCKIT: &str = env!("CARGO_BIN_EXE_sockit");

#[test]
fn file_operations_are_logged_one_line_each() {
    let root = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let log_path = work.path().join("serve.log");
    let mut serve = Command::new(SOCKIT)
        .args(["serve", "--listen", "127.0.0.1:0", "--udp", "off", "--root"])
        .arg(root.path())
        .env_remove("SOCKIT_USERS")
        .env_remove("SOCKIT_LOG")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(serve.stdout.take().unwrap()).lines();
    let line = lines.next().expect("a listening line").unwrap();
    let addr = line.strip_prefix("listening tcp ").unwrap().to_owned();

    let local = work.path().join("data.bin");
    std::fs::write(&local, vec![7u8; 1234]).unwrap();
    let got = work.path().join("back.bin");
    let client = |args: &[&str]| {
        let out = Command::new(SOCKIT)
            .args(args)
            .args(["--server", &addr])
            .env_remove("SOCKIT_PASSWORD")
            .env("XDG_CONFIG_HOME", work.path())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    client(&["put", local.to_str().unwrap(), "--as", "data.bin"]);
    client(&["get", "data.bin", "-o", got.to_str().unwrap()]);
    client(&["mv", "data.bin", "moved.bin"]);
    client(&["rm", "moved.bin"]);
    let _ = serve.kill();
    let _ = serve.wait();

    let log = std::fs::read_to_string(&log_path).unwrap();
    let line_of = |what: &str| {
        let found: Vec<&str> = log.lines().filter(|line| line.contains(what)).collect();
        assert_eq!(found.len(), 1, "one `{what}` line in:\n{log}");
        assert!(found[0].contains(" INFO "), "{}", found[0]);
        assert!(found[0].contains("peer=127.0.0.1"), "{}", found[0]);
        assert!(found[0].contains("time="), "{}", found[0]);
        found[0].to_owned()
    };
    let put = line_of("put done");
    assert!(
        put.contains("name=\"data.bin\"") && put.contains("bytes=1234"),
        "{put}"
    );
    let get = line_of("get done");
    assert!(
        get.contains("name=\"data.bin\"") && get.contains("bytes=1234"),
        "{get}"
    );
    let rename = line_of("rename done");
    assert!(
        rename.contains("to=\"moved.bin\"") && rename.contains("bytes=1234"),
        "{rename}"
    );
    let delete = line_of("delete done");
    assert!(delete.contains("name=\"moved.bin\""), "{delete}");
}
