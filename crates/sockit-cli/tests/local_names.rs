//! Local file names with control characters are printed safely by `put` and `get`, in their
//! result lines and in their errors: an escape sequence in a name never reaches the terminal.

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};

const SOCKIT: &str = env!("CARGO_BIN_EXE_sockit");
const EVIL: &str = "evil\u{1b}[2J\u{7}name.txt";

fn run(addr: &str, cwd: &std::path::Path, args: &[&str]) -> Output {
    Command::new(SOCKIT)
        .args(args)
        .args(["--server", addr])
        .current_dir(cwd)
        .env_remove("SOCKIT_PASSWORD")
        .env("XDG_CONFIG_HOME", cwd)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn assert_safe(output: &Output) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        !text.contains('\u{1b}') && !text.contains('\u{7}'),
        "{text:?}"
    );
    assert!(text.contains("evil\u{FFFD}[2J\u{FFFD}name.txt"), "{text:?}");
    text
}

#[test]
fn put_and_get_print_local_names_safely() {
    let root = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let mut serve = Command::new(SOCKIT)
        .args(["serve", "--listen", "127.0.0.1:0", "--udp", "off", "--root"])
        .arg(root.path())
        .env_remove("SOCKIT_USERS")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(serve.stdout.take().unwrap()).lines();
    let line = lines.next().expect("a listening line").unwrap();
    let addr = line.strip_prefix("listening tcp ").unwrap().to_owned();

    std::fs::write(work.path().join(EVIL), b"payload").unwrap();
    let put = run(&addr, work.path(), &["put", EVIL, "--as", "clean.txt"]);
    assert!(put.status.success(), "{put:?}");
    assert_safe(&put);

    let missing = format!("missing-{EVIL}");
    let failed = run(&addr, work.path(), &["put", &missing, "--as", "other.txt"]);
    assert_eq!(failed.status.code(), Some(1));
    assert_safe(&failed);

    let out = format!("out-{EVIL}");
    let get = run(&addr, work.path(), &["get", "clean.txt", "-o", &out]);
    assert!(get.status.success(), "{get:?}");
    assert_safe(&get);
    let refused = run(&addr, work.path(), &["get", "clean.txt", "-o", &out]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(assert_safe(&refused).contains("file exists"));

    let _ = serve.kill();
    let _ = serve.wait();
}
