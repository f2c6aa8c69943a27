//! Ctrl-C (SIGINT) during `put` or `get` ends with status 130 and
//! `interrupted; run the same command again to resume`, and running the same command again
//! resumes, or says that it started over when the file changed meanwhile. A proxy between client and server passes the first bytes of the body, then stops
//! passing them on, so the transfer is surely in progress when the signal comes.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SOCKIT: &str = env!("CARGO_BIN_EXE_sockit");
const PASSED: u64 = 4 << 20;
const HINT: &str = "sockit: interrupted; run the same command again to resume";

fn serve(root: &Path) -> (Child, String) {
    let mut child = Command::new(SOCKIT)
        .args(["serve", "--listen", "127.0.0.1:0", "--udp", "off", "--root"])
        .arg(root)
        .env_remove("SOCKIT_USERS")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = lines.next().expect("a listening line").unwrap();
    let addr = line.strip_prefix("listening tcp ").unwrap().to_owned();
    (child, addr)
}

/// Copies `from` to `to`, passing at most `budget` bytes on and reading the rest into nothing;
/// `stalled` says when the budget ran out.
fn pump(mut from: TcpStream, mut to: TcpStream, budget: u64, stalled: Arc<AtomicBool>) {
    let mut passed = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let pass = (budget - passed).min(n as u64) as usize;
        if pass > 0 && to.write_all(&buf[..pass]).is_err() {
            break;
        }
        passed += pass as u64;
        if passed == budget {
            stalled.store(true, Ordering::SeqCst);
        }
    }
    let _ = to.shutdown(Shutdown::Both);
}

/// A proxy to `upstream` that passes everything but stops passing the upload (`up`) or the
/// download (`!up`) direction after a few MiB of it.
fn proxy(upstream: String, up: bool) -> (String, Arc<AtomicBool>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let stalled = Arc::new(AtomicBool::new(false));
    let flag = stalled.clone();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { return };
            let server = TcpStream::connect(&upstream).unwrap();
            let (up_budget, down_budget) = if up {
                (PASSED, u64::MAX)
            } else {
                (u64::MAX, PASSED)
            };
            let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            let f1 = flag.clone();
            let f2 = flag.clone();
            std::thread::spawn(move || pump(client, server, up_budget, f1));
            std::thread::spawn(move || pump(s2, c2, down_budget, f2));
        }
    });
    (addr, stalled)
}

fn client(args: &[&str], server: &str, cwd: &Path) -> Command {
    let mut command = Command::new(SOCKIT);
    command
        .args(args)
        .args(["--server", server])
        .current_dir(cwd)
        .env_remove("SOCKIT_PASSWORD")
        .env("XDG_CONFIG_HOME", cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Waits for `stalled`, then sends SIGINT to `child` and returns how it ended.
fn interrupt(child: Child, stalled: &AtomicBool) -> Output {
    let started = Instant::now();
    while !stalled.load(Ordering::SeqCst) {
        assert!(started.elapsed() < Duration::from_secs(20), "never stalled");
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(300));
    let killed = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    child.wait_with_output().unwrap()
}

fn data() -> Vec<u8> {
    (0..24u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect()
}

#[test]
fn ctrl_c_during_put_says_how_to_resume_and_the_same_command_resumes() {
    let (root, work) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (mut serve, addr) = serve(root.path());
    std::fs::write(work.path().join("big.bin"), data()).unwrap();
    let (via, stalled) = proxy(addr.clone(), true);

    let child = client(&["put", "big.bin"], &via, work.path())
        .spawn()
        .unwrap();
    let out = interrupt(child, &stalled);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(err.contains(HINT), "{err}");

    // The server lets go of the partial once it sees the connection end.
    let again = put_once_let_go(&addr, work.path());
    let _ = serve.kill();
    let _ = serve.wait();
    let said = String::from_utf8_lossy(&again.stdout);
    assert!(again.status.success(), "{again:?}");
    assert!(said.contains("(resumed at byte"), "{said}");
    assert!(std::fs::read(root.path().join("big.bin")).unwrap() == data());
}

/// `put big.bin` from `dir` to `addr`, again while the server still holds the interrupted
/// upload (`busy`: another upload of it is running), for up to 10 s: what the last one did.
fn put_once_let_go(addr: &str, dir: &Path) -> std::process::Output {
    let started = Instant::now();
    loop {
        let again = client(&["put", "big.bin"], addr, dir).output().unwrap();
        let text = String::from_utf8_lossy(&again.stderr).into_owned();
        if !text.contains("is running") || started.elapsed() > Duration::from_secs(10) {
            return again;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn ctrl_c_during_get_keeps_the_part_file_and_the_same_command_resumes() {
    let (root, work) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (mut serve, addr) = serve(root.path());
    std::fs::write(root.path().join("big.bin"), data()).unwrap();
    let (via, stalled) = proxy(addr.clone(), false);

    let child = client(&["get", "big.bin"], &via, work.path())
        .spawn()
        .unwrap();
    let out = interrupt(child, &stalled);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(err.contains(HINT), "{err}");
    assert!(!work.path().join("big.bin").exists());

    let again = client(&["get", "big.bin"], &addr, work.path())
        .output()
        .unwrap();
    let _ = serve.kill();
    let _ = serve.wait();
    let said = String::from_utf8_lossy(&again.stdout);
    assert!(again.status.success(), "{again:?}");
    assert!(said.contains("(resumed at byte"), "{said}");
    assert!(std::fs::read(work.path().join("big.bin")).unwrap() == data());
}

/// The data of [`data`], every byte changed: the same length, another file.
fn changed_data() -> Vec<u8> {
    data().iter().map(|byte| !byte).collect()
}

#[test]
fn a_put_resumed_after_the_file_changed_says_it_started_over() {
    let (root, work) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (mut serve, addr) = serve(root.path());
    std::fs::write(work.path().join("big.bin"), data()).unwrap();
    let (via, stalled) = proxy(addr.clone(), true);
    let child = client(&["put", "big.bin"], &via, work.path())
        .spawn()
        .unwrap();
    let out = interrupt(child, &stalled);
    assert_eq!(out.status.code(), Some(130), "{out:?}");
    std::fs::write(work.path().join("big.bin"), changed_data()).unwrap();

    let again = put_once_let_go(&addr, work.path());
    let _ = serve.kill();
    let _ = serve.wait();
    let said = String::from_utf8_lossy(&again.stdout);
    assert!(again.status.success(), "{again:?}");
    assert!(
        said.ends_with(" (started over: the file changed since the interrupted upload)\n"),
        "{said}"
    );
    assert!(std::fs::read(root.path().join("big.bin")).unwrap() == changed_data());
}

#[test]
fn a_get_resumed_after_the_file_changed_says_it_started_over() {
    let (root, work) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (mut serve, addr) = serve(root.path());
    std::fs::write(root.path().join("big.bin"), data()).unwrap();
    let (via, stalled) = proxy(addr.clone(), false);
    let child = client(&["get", "big.bin"], &via, work.path())
        .spawn()
        .unwrap();
    let out = interrupt(child, &stalled);
    assert_eq!(out.status.code(), Some(130), "{out:?}");
    std::fs::write(root.path().join("big.bin"), changed_data()).unwrap();

    let again = client(&["get", "big.bin"], &addr, work.path())
        .output()
        .unwrap();
    let _ = serve.kill();
    let _ = serve.wait();
    let said = String::from_utf8_lossy(&again.stdout);
    assert!(again.status.success(), "{again:?}");
    assert!(
        said.ends_with(" (started over: the file changed since the interrupted download)\n"),
        "{said}"
    );
    assert!(std::fs::read(work.path().join("big.bin")).unwrap() == changed_data());
}
