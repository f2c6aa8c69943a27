//! `sockit get` and the user's own disk: devices, FIFOs, symbolic links, planted part files,
//! concurrent downloads, replaced files, a full disk, long names, directories, stale parts,
//! holes, preserved times — each in a temp dir, against a real `sockit serve` on loopback.
//!
//! Nothing here touches anything outside its temp dirs: a device node is made with `mknod` in
//! the temp dir (root only, as in CI), never the real `/dev/null`.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, UNIX_EPOCH};

use common::{Serve, SOCKIT};

impl Serve {
    /// Stores `data` as `name` (straight into the store's directory).
    fn store(&self, name: &str, data: &[u8]) -> PathBuf {
        let path = self.root().join(name);
        std::fs::write(&path, data).unwrap();
        path
    }

    /// `sockit get` with `args`, run in `cwd`.
    fn get(&self, cwd: &Path, args: &[&str]) -> Output {
        Command::new(SOCKIT)
            .arg("get")
            .args(args)
            .args(["--server", &self.tcp()])
            .current_dir(cwd)
            .output()
            .unwrap()
    }
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) | 1)
        .collect()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Root-only tests run in CI (which is root) and say so where they are shown when skipped
/// elsewhere.
fn skip_unless_root() -> bool {
    if is_root() {
        return false;
    }
    common::skip("needs root");
    true
}

/// Names in `dir`, sorted.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn a_character_device_is_written_through_and_kept() {
    if skip_unless_root() {
        return;
    }
    let serve = Serve::start(&[]);
    serve.store("f.bin", &pattern(300_000, 1));
    let dir = tempfile::tempdir().unwrap();
    let null = dir.path().join("null");
    nix::sys::stat::mknod(
        &null,
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        nix::sys::stat::makedev(1, 3),
    )
    .unwrap();
    let output = serve.get(dir.path(), &["f.bin", "-o", "null"]);
    assert!(output.status.success(), "{output:?}");
    let meta = std::fs::symlink_metadata(&null).unwrap();
    assert!(meta.file_type().is_char_device(), "the node was replaced");
    assert_eq!(meta.rdev(), nix::sys::stat::makedev(1, 3));
    assert_eq!(entries(dir.path()), ["null"], "nothing left beside it");
}

#[test]
fn a_fifo_feeds_its_reader_and_is_kept() {
    let serve = Serve::start(&[]);
    let data = pattern(3_000_000, 2);
    serve.store("f.bin", &data);
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("pipe");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || {
            let mut got = Vec::new();
            std::fs::File::open(fifo)
                .unwrap()
                .read_to_end(&mut got)
                .unwrap();
            got
        })
    };
    let output = serve.get(dir.path(), &["f.bin", "-o", "pipe"]);
    assert!(output.status.success(), "{output:?}");
    assert!(reader.join().unwrap() == data, "the reader got other bytes");
    assert!(std::fs::symlink_metadata(&fifo)
        .unwrap()
        .file_type()
        .is_fifo());
    assert_eq!(entries(dir.path()), ["pipe"]);
}

#[test]
fn standard_output_gets_the_bytes_and_nothing_else() {
    let serve = Serve::start(&[]);
    let data = pattern(2_000_000, 3);
    serve.store("f.bin", &data);
    let dir = tempfile::tempdir().unwrap();
    let output = serve.get(dir.path(), &["f.bin", "-o", "-"]);
    assert!(output.status.success(), "{output:?}");
    assert!(output.stdout == data, "standard output differs");
    assert!(entries(dir.path()).is_empty());
}

#[test]
fn a_symlink_is_followed_and_kept_and_a_dangling_one_refused() {
    let serve = Serve::start(&[]);
    serve.store("f.txt", b"new bytes\n");
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("real")).unwrap();
    std::fs::write(dir.path().join("real/target.txt"), b"old").unwrap();
    std::os::unix::fs::symlink("real/target.txt", dir.path().join("link")).unwrap();

    let output = serve.get(dir.path(), &["f.txt", "-o", "link"]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("link: file exists (use --force"),
        "{output:?}"
    );

    let output = serve.get(dir.path(), &["f.txt", "-o", "link", "--force"]);
    assert!(output.status.success(), "{output:?}");
    let link = std::fs::symlink_metadata(dir.path().join("link")).unwrap();
    assert!(link.file_type().is_symlink(), "the link was replaced");
    assert_eq!(
        std::fs::read(dir.path().join("real/target.txt")).unwrap(),
        b"new bytes\n"
    );

    std::os::unix::fs::symlink("real/absent.txt", dir.path().join("dangling")).unwrap();
    let output = serve.get(dir.path(), &["f.txt", "-o", "dangling"]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("not writing through a dangling symbolic link"),
        "{output:?}"
    );
    assert!(!dir.path().join("real/absent.txt").exists());
}

#[test]
fn links_planted_at_the_part_file_are_refused() {
    let serve = Serve::start(&[]);
    serve.store("f.txt", b"attacker's bytes");
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("victim");
    std::fs::write(&victim, b"private").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
    let part = sockit::client::part_path(&dir.path().join("out.txt"));

    std::os::unix::fs::symlink(&victim, &part).unwrap();
    let output = serve.get(dir.path(), &["f.txt", "-o", "out.txt"]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("it is a symbolic link; remove it"),
        "{output:?}"
    );
    std::fs::remove_file(&part).unwrap();

    std::fs::hard_link(&victim, &part).unwrap();
    let output = serve.get(dir.path(), &["f.txt", "-o", "out.txt"]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("it has other hard links"),
        "{output:?}"
    );

    assert_eq!(std::fs::read(&victim).unwrap(), b"private");
    assert_eq!(
        std::fs::metadata(&victim).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(!dir.path().join("out.txt").exists());
}

#[test]
fn concurrent_gets_to_one_path_leave_one_whole_file() {
    let serve = Serve::start(&[]);
    let a = pattern(8_000_000, 4);
    let b = pattern(8_000_000, 5);
    serve.store("a.bin", &a);
    serve.store("b.bin", &b);
    let dir = tempfile::tempdir().unwrap();
    for round in 0..4 {
        let out = dir.path().join(format!("out{round}"));
        let spawn = |name: &str| {
            Command::new(SOCKIT)
                .args(["get", name, "--server", &serve.tcp(), "-o"])
                .arg(&out)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        };
        let (first, second) = (spawn("a.bin"), spawn("b.bin"));
        let results = [
            ("a.bin", first.wait_with_output().unwrap()),
            ("b.bin", second.wait_with_output().unwrap()),
        ];
        let on_disk = std::fs::read(&out).unwrap();
        let winners: Vec<_> = results
            .iter()
            .filter(|(_, output)| output.status.success())
            .collect();
        assert_eq!(winners.len(), 1, "exactly one succeeds: {results:?}");
        let expected = if winners[0].0 == "a.bin" { &a } else { &b };
        assert!(
            on_disk == *expected,
            "{} claimed the file, but it is not what is on disk",
            winners[0].0
        );
        for (_, output) in &results {
            if !output.status.success() {
                let text = stderr(output);
                assert!(
                    text.contains("in progress")
                        || text.contains("file exists")
                        || text.contains("appeared"),
                    "{text}"
                );
            }
        }
    }
}

#[test]
fn force_keeps_mode_owner_and_hard_links_and_refuses_write_protected_files() {
    let serve = Serve::start(&[]);
    serve.store("f.txt", b"fresh\n");
    let dir = tempfile::tempdir().unwrap();
    let private = dir.path().join("private.txt");
    std::fs::write(&private, b"old").unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o600)).unwrap();
    if is_root() {
        std::os::unix::fs::chown(&private, Some(1234), Some(2345)).unwrap();
    }
    let output = serve.get(dir.path(), &["f.txt", "-o", "private.txt"]);
    assert!(!output.status.success(), "replaced without --force");
    assert_eq!(std::fs::read(&private).unwrap(), b"old");

    let output = serve.get(dir.path(), &["f.txt", "-o", "private.txt", "--force"]);
    assert!(output.status.success(), "{output:?}");
    let meta = std::fs::metadata(&private).unwrap();
    assert_eq!(std::fs::read(&private).unwrap(), b"fresh\n");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    if is_root() {
        assert_eq!((meta.uid(), meta.gid()), (1234, 2345), "owner lost");
    } else {
        common::skip("the owner check needs root");
    }

    let linked = dir.path().join("linked.txt");
    let other_name = dir.path().join("other-name.txt");
    std::fs::write(&linked, b"old").unwrap();
    std::fs::hard_link(&linked, &other_name).unwrap();
    let output = serve.get(dir.path(), &["f.txt", "-o", "linked.txt", "-f"]);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        std::fs::read(&other_name).unwrap(),
        b"fresh\n",
        "link broken"
    );
    assert_eq!(std::fs::metadata(&linked).unwrap().nlink(), 2);

    let protected = dir.path().join("protected.txt");
    std::fs::write(&protected, b"keep me").unwrap();
    std::fs::set_permissions(&protected, std::fs::Permissions::from_mode(0o444)).unwrap();
    let output = serve.get(dir.path(), &["f.txt", "-o", "protected.txt", "--force"]);
    assert!(!output.status.success());
    assert!(stderr(&output).contains("write-protected"), "{output:?}");
    assert_eq!(std::fs::read(&protected).unwrap(), b"keep me");
    let mut left = entries(dir.path());
    left.sort();
    assert_eq!(
        left,
        [
            "linked.txt",
            "other-name.txt",
            "private.txt",
            "protected.txt"
        ]
    );
}

/// A temp dir with a small tmpfs mounted on it, unmounted when dropped (root only).
struct SmallDisk(tempfile::TempDir);

impl SmallDisk {
    fn mount(options: &str) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(dir.path())
            .output()
            .is_ok_and(|out| out.status.success());
        mounted.then_some(SmallDisk(dir))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

/// A peer that answers one `get` with a header declaring `declared` bytes, then sends data
/// until the client hangs up (or `declared` is reached); returns how many body bytes it sent.
fn endless_get_server(declared: u64) -> (SocketAddr, std::thread::JoinHandle<u64>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let sender = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        // The client first asks whether it must log in: this server has no accounts.
        loop {
            let mut len = [0u8; 4];
            stream.read_exact(&mut len).unwrap();
            let mut request = vec![0; i32::from_le_bytes(len) as usize];
            stream.read_exact(&mut request).unwrap();
            if !request.windows(11).any(|w| w == b"\"challenge\"") {
                break;
            }
            let refusal = r#"{"ok":false,"code":"disabled","error":"no accounts"}"#;
            stream
                .write_all(&(refusal.len() as i32).to_le_bytes())
                .unwrap();
            stream.write_all(refusal.as_bytes()).unwrap();
        }
        let header = format!(
            r#"{{"ok":true,"name":"big.bin","length":{declared},"hash":"{}","offset":0,"size":{declared}}}"#,
            "0".repeat(64)
        );
        stream
            .write_all(&(header.len() as i32).to_le_bytes())
            .unwrap();
        stream.write_all(header.as_bytes()).unwrap();
        let chunk = pattern(1 << 20, 9);
        let mut sent = 0u64;
        while sent < declared {
            match stream.write(&chunk) {
                Ok(n) => sent += n as u64,
                Err(_) => break,
            }
        }
        sent
    });
    (addr, sender)
}

#[test]
fn a_full_local_disk_stops_at_once_and_says_what_is_kept() {
    if skip_unless_root() {
        return;
    }
    let Some(disk) = SmallDisk::mount("size=4m") else {
        panic!("root cannot mount a tmpfs");
    };
    let declared = 1u64 << 30;
    let (addr, sender) = endless_get_server(declared);
    let started = Instant::now();
    let output = Command::new(SOCKIT)
        .args(["get", "big.bin", "--server", &addr.to_string()])
        .current_dir(disk.0.path())
        .output()
        .unwrap();
    let took = started.elapsed();
    let sent = sender.join().unwrap();
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let text = stderr(&output);
    assert!(text.contains("big.bin: no space left on device"), "{text}");
    assert!(
        text.contains("bytes are kept in ./.big.bin.sockit-part"),
        "{text}"
    );
    assert!(
        text.contains("run the same command again to resume"),
        "{text}"
    );
    assert!(
        sent < 256 << 20,
        "the client read {sent} bytes of a download it could not save"
    );
    assert!(took < Duration::from_secs(20), "took {took:?}");
    assert!(!disk.0.path().join("big.bin").exists());
}

#[test]
fn an_unwritable_directory_is_named_with_the_real_cause() {
    if skip_unless_root() {
        return;
    }
    let serve = Serve::start(&[]);
    serve.store("f.txt", b"bytes");
    let Some(disk) = SmallDisk::mount("size=1m,ro") else {
        panic!("root cannot mount a tmpfs");
    };
    let output = serve.get(disk.0.path(), &["f.txt"]);
    assert!(!output.status.success());
    assert_eq!(
        stderr(&output),
        "sockit: f.txt: cannot create a file in .: read-only file system\n"
    );
}

#[test]
fn a_name_of_250_bytes_downloads_under_its_own_name() {
    let serve = Serve::start(&[]);
    let name = format!("{}ab", "文".repeat(83)); // 249 + 2 = 251 bytes
    assert!(name.len() > 244 && name.len() <= 255);
    serve.store(&name, b"long name");
    let dir = tempfile::tempdir().unwrap();
    let output = serve.get(dir.path(), &[&name]);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(std::fs::read(dir.path().join(&name)).unwrap(), b"long name");
    assert_eq!(entries(dir.path()), [name]);
}

#[test]
fn directories_receive_the_file_under_its_name() {
    let serve = Serve::start(&[]);
    serve.store("f.txt", b"into a directory");
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    for (output, saved) in [("sub/", "sub/f.txt"), (".", "f.txt"), ("sub", "sub/f.txt")] {
        let _ = std::fs::remove_file(dir.path().join(saved));
        let result = serve.get(dir.path(), &["f.txt", "-o", output]);
        assert!(result.status.success(), "{output}: {result:?}");
        assert!(
            String::from_utf8_lossy(&result.stdout).contains(&format!("f.txt -> {output}")),
            "{result:?}"
        );
        assert_eq!(
            std::fs::read(dir.path().join(saved)).unwrap(),
            b"into a directory"
        );
    }
    let result = serve.get(dir.path(), &["f.txt", "-o", "missing/"]);
    assert!(!result.status.success());
    assert!(
        stderr(&result).contains("missing/f.txt: no such directory missing"),
        "{result:?}"
    );
    assert_eq!(entries(dir.path()), ["f.txt", "sub"]);
    assert_eq!(entries(&dir.path().join("sub")), ["f.txt"]);
}

#[test]
fn a_bad_name_says_so_without_pointing_at_output() {
    let serve = Serve::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let output = serve.get(dir.path(), &["../etc/passwd"]);
    assert!(!output.status.success());
    let text = stderr(&output);
    assert!(
        text.contains("\"../etc/passwd\" is not a valid file name"),
        "{text}"
    );
    assert!(!text.contains("-o"), "{text}");

    let output = serve.get(dir.path(), &["absent.txt"]);
    assert!(
        stderr(&output).contains("no file named \"absent.txt\""),
        "{output:?}"
    );
    assert!(entries(dir.path()).is_empty(), "debris left behind");
}

#[test]
fn a_stale_part_of_another_file_is_discarded() {
    let serve = Serve::start(&[]);
    let old = pattern(3_000_000, 6);
    let new = pattern(3_000_000, 7);
    serve.store("f.bin", &new);
    let dir = tempfile::tempdir().unwrap();
    let part = sockit::client::part_path(&dir.path().join("f.bin"));
    std::fs::write(&part, &old[..1_000_000]).unwrap();
    let mut record = part.clone().into_os_string();
    record.push(".json");
    let old_record = format!(
        r#"{{"name":"f.bin","length":{},"hash":"{}"}}"#,
        old.len(),
        blake3::hash(&old).to_hex()
    );
    std::fs::write(&record, old_record).unwrap();

    let output = serve.get(dir.path(), &["f.bin"]);
    assert!(output.status.success(), "{output:?}");
    assert!(
        !String::from_utf8_lossy(&output.stdout).contains("resumed"),
        "{output:?}"
    );
    assert!(std::fs::read(dir.path().join("f.bin")).unwrap() == new);
    assert_eq!(entries(dir.path()), ["f.bin"], "part and record are gone");
}

#[test]
fn zero_blocks_become_holes_and_preserve_keeps_time_and_mode() {
    let serve = Serve::start(&[]);
    let mut data = pattern(64 * 1024, 8);
    data.resize(16 << 20, 0);
    data.extend_from_slice(&pattern(64 * 1024, 9));
    data.resize(24 << 20, 0); // ends in a hole
    let stored = serve.store("sparse.bin", &data);
    std::fs::set_permissions(&stored, std::fs::Permissions::from_mode(0o750)).unwrap();
    let modified = UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    std::fs::File::options()
        .write(true)
        .open(&stored)
        .unwrap()
        .set_modified(modified)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();

    let output = serve.get(dir.path(), &["sparse.bin", "-p"]);
    assert!(output.status.success(), "{output:?}");
    let saved = dir.path().join("sparse.bin");
    assert!(std::fs::read(&saved).unwrap() == data);
    let meta = std::fs::metadata(&saved).unwrap();
    assert!(
        meta.blocks() * 512 < 4 << 20,
        "{} bytes allocated for 128 KiB of data",
        meta.blocks() * 512
    );
    assert_eq!(meta.permissions().mode() & 0o777, 0o750);
    assert_eq!(meta.modified().unwrap(), modified);

    // Without -p: a new file is executable where the stored one is, within the umask.
    let output = serve.get(dir.path(), &["sparse.bin", "-o", "plain.bin"]);
    assert!(output.status.success(), "{output:?}");
    let meta = std::fs::metadata(dir.path().join("plain.bin")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o100, 0o100);
    assert_ne!(meta.modified().unwrap(), modified);
}
