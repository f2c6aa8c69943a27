//! `sockit put` of what is not a plain, still file: `/proc` files, FIFOs, character devices,
//! standard input, directories, files that grow while they are read, and a name lost to
//! another upload. Real `sockit serve` processes on loopback; every local file in a temp dir
//! (the only outside file read is `/proc/self/status`).

mod common;

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use nix::sys::stat::{makedev, mknod, Mode, SFlag};

use common::{Serve, SOCKIT};

impl Serve {
    fn server(&self) -> String {
        self.tcp()
    }

    fn stored(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.root().join(name)).unwrap()
    }

    fn partials(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.root().join(".sockit/partial"))
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .collect()
    }

    /// Waits until an upload has begun on the server: a partial file exists.
    fn wait_for_partial(&self) {
        let started = Instant::now();
        while self.partials().is_empty() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "no upload began"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// `sockit put ARGS... --server ADDR`, not yet waited for.
fn spawn_put(serve: &Serve, args: &[&Path]) -> Child {
    Command::new(SOCKIT)
        .arg("put")
        .args(args)
        .args(["--server", &serve.server()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for `child` at most `limit`, killing it (and failing) past that.
fn finish_within(mut child: Child, limit: Duration) -> Output {
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            let output = child.wait_with_output().unwrap();
            panic!("still running after {limit:?}: {output:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn put(serve: &Serve, args: &[&Path]) -> Output {
    finish_within(spawn_put(serve, args), Duration::from_secs(30))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(41).wrapping_add(seed))
        .collect()
}

fn blake3_hex(data: &[u8]) -> String {
    blake3::hash(data).to_hex().to_string()
}

/// The `N bytes, blake3 H` of a result line.
fn length_and_hash(line: &str) -> (u64, String) {
    let (_, after) = line
        .trim_end()
        .split_once(": ")
        .unwrap_or_else(|| panic!("{line}"));
    let mut words = after.split(' ');
    let length = words.next().unwrap().parse().unwrap();
    assert_eq!(words.next(), Some("bytes,"), "{line}");
    assert_eq!(words.next(), Some("blake3"), "{line}");
    (length, words.next().unwrap().to_owned())
}

fn path(text: &str) -> PathBuf {
    PathBuf::from(text)
}

/// A FIFO in `dir`.
fn fifo(dir: &Path) -> PathBuf {
    let fifo = dir.join("fifo");
    nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o600)).unwrap();
    fifo
}

#[test]
fn put_of_a_proc_file_stores_what_it_holds() {
    let serve = Serve::start(&[]);
    let output = put(
        &serve,
        &[&path("/proc/self/status"), &path("--as"), &path("status")],
    );
    assert!(output.status.success(), "{output:?}");
    let stored = serve.stored("status");
    assert!(stored.starts_with(b"Name:"), "{}", text(&stored));
    let line = text(&output.stdout);
    assert!(
        line.starts_with("/proc/self/status -> status: ")
            && line.ends_with(" (a stream, read to its end)\n"),
        "{line}"
    );
    assert_eq!(
        length_and_hash(&line),
        (stored.len() as u64, blake3_hex(&stored))
    );
}

#[test]
fn put_of_a_fifo_waits_for_its_writer_and_stores_every_byte() {
    let serve = Serve::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let fifo = fifo(dir.path());
    let data = pattern(1024 * 1024 + 7, 1);
    let child = spawn_put(&serve, &[&fifo, &path("--as"), &path("piped.bin")]);
    // The writer comes a second later; it writes in small pieces.
    std::thread::sleep(Duration::from_secs(1));
    let mut writer = OpenOptions::new().write(true).open(&fifo).unwrap();
    for piece in data.chunks(10_000) {
        writer.write_all(piece).unwrap();
    }
    drop(writer);
    let output = finish_within(child, Duration::from_secs(30));
    assert!(output.status.success(), "{output:?}");
    assert!(serve.stored("piped.bin") == data, "stored bytes differ");
    assert_eq!(
        length_and_hash(&text(&output.stdout)),
        (data.len() as u64, blake3_hex(&data))
    );
}

#[test]
fn put_of_a_character_device_is_an_empty_stream_not_a_hang() {
    let dir = tempfile::tempdir().unwrap();
    let null = dir.path().join("null");
    if let Err(err) = mknod(
        &null,
        SFlag::S_IFCHR,
        Mode::from_bits_truncate(0o600),
        makedev(1, 3),
    ) {
        common::skip(&format!("mknod: {err} (needs root)"));
        return;
    }
    let serve = Serve::start(&[]);
    let output = finish_within(
        spawn_put(&serve, &[&null, &path("--as"), &path("empty")]),
        Duration::from_secs(20),
    );
    assert!(output.status.success(), "{output:?}");
    assert_eq!(serve.stored("empty"), b"");
    assert!(
        text(&output.stdout).contains(" -> empty: 0 bytes, blake3 "),
        "{output:?}"
    );
}

#[test]
fn put_dash_uploads_standard_input_exactly() {
    let serve = Serve::start(&[]);
    let data = pattern(3 * 1024 * 1024 + 5, 2);
    let mut child = Command::new(SOCKIT)
        .args(["put", "-", "--as", "in.bin", "--server", &serve.server()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn({
        let data = data.clone();
        move || {
            for piece in data.chunks(64 * 1024 + 3) {
                stdin.write_all(piece).unwrap();
            }
        }
    });
    let output = finish_within(child, Duration::from_secs(30));
    writer.join().unwrap();
    assert!(output.status.success(), "{output:?}");
    assert!(serve.stored("in.bin") == data, "stored bytes differ");
    let line = text(&output.stdout);
    assert!(line.starts_with("standard input -> in.bin: "), "{line}");
    assert_eq!(
        length_and_hash(&line),
        (data.len() as u64, blake3_hex(&data))
    );
}

#[test]
fn put_dash_without_a_name_is_refused_before_reading() {
    let serve = Serve::start(&[]);
    let output = put(&serve, &[&path("-")]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert_eq!(
        text(&output.stderr),
        "sockit: standard input has no name: give it one with --as NAME\n"
    );
    assert!(std::fs::read_dir(serve.root())
        .unwrap()
        .all(|entry| entry.unwrap().file_name() == ".sockit"));
}

#[test]
fn put_of_a_directory_or_a_missing_file_says_so_naming_it_once() {
    let serve = Serve::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let output = put(&serve, &[dir.path()]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert_eq!(
        text(&output.stderr),
        format!(
            "sockit: {}: is a directory (upload the files in it one by one)\n",
            dir.path().display()
        )
    );
    let missing = dir.path().join("missing.txt");
    let output = put(&serve, &[&missing]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert_eq!(
        text(&output.stderr),
        format!("sockit: {}: no such file or directory\n", missing.display())
    );
}

#[test]
fn put_of_a_growing_file_warns_like_tar_and_stores_exactly_what_it_read() {
    let serve = Serve::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("growing.log");
    let initial = pattern(16 * 1024 * 1024, 3);
    std::fs::write(&log, &initial).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let appender = std::thread::spawn({
        let (log, stop) = (log.clone(), Arc::clone(&stop));
        move || {
            let mut file = OpenOptions::new().append(true).open(&log).unwrap();
            let line = pattern(4096, 4);
            while !stop.load(Ordering::Relaxed) {
                file.write_all(&line).unwrap();
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    });
    let output = put(&serve, &[&log]);
    stop.store(true, Ordering::Relaxed);
    appender.join().unwrap();

    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stored = serve.stored("growing.log");
    let stderr = text(&output.stderr);
    assert_eq!(
        stderr,
        format!(
            "sockit: {}: file changed as we read it; stored the first {} bytes\n",
            log.display(),
            stored.len()
        )
    );
    let now = std::fs::read(&log).unwrap();
    assert!(stored.len() >= initial.len() && stored.len() < now.len());
    assert!(
        stored == now[..stored.len()],
        "stored bytes are not the file's first bytes"
    );
    assert_eq!(
        length_and_hash(&text(&output.stdout)),
        (stored.len() as u64, blake3_hex(&stored))
    );
}

#[test]
fn put_that_loses_the_name_to_another_upload_points_at_force() {
    let serve = Serve::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let fifo = fifo(dir.path());
    let loser = spawn_put(&serve, &[&fifo, &path("--as"), &path("race")]);
    let mut writer = OpenOptions::new().write(true).open(&fifo).unwrap();
    writer.write_all(b"the loser's bytes").unwrap();
    serve.wait_for_partial();

    let winner = dir.path().join("winner");
    std::fs::write(&winner, b"the winner's bytes").unwrap();
    let output = put(&serve, &[&winner, &path("--as"), &path("race")]);
    assert!(output.status.success(), "{output:?}");
    drop(writer);

    let output = finish_within(loser, Duration::from_secs(30));
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert_eq!(
        text(&output.stderr),
        format!(
            "sockit: {}: a file named \"race\" already exists on the server (use --force to replace it)\n",
            fifo.display()
        )
    );
    assert_eq!(serve.stored("race"), b"the winner's bytes");
}

#[test]
fn put_of_a_stream_that_fails_does_not_wait_for_the_streams_end() {
    let mut serve = Serve::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let fifo = fifo(dir.path());
    let child = spawn_put(&serve, &[&fifo, &path("--as"), &path("cut")]);
    let (done, finished) = mpsc::channel::<()>();
    // The writer writes, and keeps the FIFO open until the test ends.
    let writer = std::thread::spawn({
        let fifo = fifo.clone();
        move || {
            let mut writer = OpenOptions::new().write(true).open(&fifo).unwrap();
            writer.write_all(b"first").unwrap();
            finished.recv().unwrap();
            writer.write_all(b"second").unwrap();
            let _ = finished.recv();
        }
    });
    serve.wait_for_partial();
    serve.kill();
    done.send(()).unwrap();
    let output = finish_within(child, Duration::from_secs(10));
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(
        text(&output.stderr).starts_with(&format!("sockit: {}: ", fifo.display())),
        "{output:?}"
    );
    drop(done);
    writer.join().unwrap();
}

#[test]
fn put_of_an_empty_regular_file_is_a_file_not_a_stream() {
    let serve = Serve::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::write(&empty, b"").unwrap();
    let output = put(&serve, &[&empty]);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(serve.stored("empty"), b"");
    assert_eq!(
        text(&output.stdout),
        format!(
            "{} -> empty: 0 bytes, blake3 {}\n",
            empty.display(),
            blake3_hex(b"")
        )
    );
}

#[test]
fn put_checks_the_name_of_as_before_it_sends_anything_and_takes_dash_f() {
    let serve = Serve::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("data");
    std::fs::write(&file, b"one").unwrap();
    // No server listens there: the name is refused before a connection is tried.
    let output = Command::new(SOCKIT)
        .args(["put", file.to_str().unwrap(), "--as", "../x"])
        .args(["--server", "127.0.0.1:1"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = text(&output.stderr);
    assert!(
        stderr.starts_with("sockit: --as \"../x\": not a valid name: ") && stderr.contains('/'),
        "{stderr}"
    );

    let output = put(&serve, &[&file]);
    assert!(output.status.success(), "{output:?}");
    std::fs::write(&file, b"two").unwrap();
    let output = put(&serve, &[&file, &path("-f")]);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(serve.stored("data"), b"two");
}

#[test]
fn an_identity_file_that_is_missing_or_no_file_is_named_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("data");
    std::fs::write(&file, b"one").unwrap();
    let missing = dir.path().join("nonexist");
    // Both are refused before a connection is tried: no server listens there.
    for (args, expected) in [
        (
            vec!["put", file.to_str().unwrap(), "-i", "/dev/null"],
            "sockit: identity file /dev/null: is a device, not a key file (make one with \
             `sockit keygen`)\n"
                .to_owned(),
        ),
        (
            vec!["ls", "-i", missing.to_str().unwrap()],
            format!(
                "sockit: identity file {}: no such file or directory\n",
                missing.display()
            ),
        ),
    ] {
        let output = Command::new(SOCKIT)
            .args(&args)
            .args(["--server", "127.0.0.1:1", "--user", "u"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(1), "{output:?}");
        assert_eq!(text(&output.stderr), expected, "{args:?}");
    }
}
