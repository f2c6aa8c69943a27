//! The file store over real loopback sockets: uploads (the tutorials' and sockit's), downloads,
//! listing, resume, integrity, atomicity, hostile names, a full disk.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{frame, read_reply, send_and_read, TestServer};
use serde_json::{json, Value};
use sockit::{Client, ClientError};
use tokio::io::AsyncWriteExt;

fn root_of(server: &TestServer) -> PathBuf {
    server.root().to_path_buf()
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn blake3_hex(data: &[u8]) -> String {
    blake3::hash(data).to_hex().to_string()
}

fn partials(root: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(root.join(".sockit/partial"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect()
}

async fn client(server: &TestServer) -> Client {
    Client::connect(&server.tcp().to_string()).await.unwrap()
}

fn put_header(name: &str, size: usize, extra: Value) -> Vec<u8> {
    let mut header = json!({"op": "put", "name": name, "size": size});
    header
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    frame(&header.to_string(), b"")
}

#[tokio::test]
async fn tutorial_upload_in_1k_pieces_is_stored() {
    let server = TestServer::start().await;
    let data = pattern(300_000, 1);
    let name = "澳门最大线上赌场开业啦.mp4";
    let mut stream = server.connect().await;
    // Exactly the tutorial client: struct.pack('i', len(header)), the header, then 1024-byte sends.
    let header = json!({"file_name": name, "file_size": data.len()}).to_string();
    stream
        .write_all(&(header.len() as i32).to_le_bytes())
        .await
        .unwrap();
    stream.write_all(header.as_bytes()).await.unwrap();
    for piece in data.chunks(1024) {
        stream.write_all(piece).await.unwrap();
    }
    let (reply, _) = read_reply(&mut stream).await;
    assert_eq!(
        reply,
        json!({"ok": true, "name": name, "length": data.len(), "hash": blake3_hex(&data)})
    );
    assert!(std::fs::read(root_of(&server).join(name)).unwrap() == data);
    assert!(partials(&root_of(&server)).is_empty());
}

#[tokio::test]
async fn put_get_and_list_round_trip() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source.bin");
    let data = pattern(3 * 1024 * 1024 + 17, 2);
    std::fs::write(&source, &data).unwrap();

    let mut client = client(&server).await;
    let put = client
        .put_file(&source, "data.bin", false, &mut |_| {})
        .await
        .unwrap();
    assert_eq!(put.hash, blake3_hex(&data));
    assert_eq!((put.length, put.resumed_from), (data.len() as u64, 0));

    let listed = client.list().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].name.as_str(), listed[0].length),
        ("data.bin", data.len() as u64)
    );

    let out = dir.path().join("copy.bin");
    let mut seen = 0;
    let got = client
        .get_file("data.bin", &out, &mut |done, _| seen = done)
        .await
        .unwrap();
    assert_eq!(got.hash, blake3_hex(&data));
    assert_eq!(seen, data.len() as u64);
    assert!(std::fs::read(&out).unwrap() == data);
    assert!(!sockit::client::part_path(&out).exists());
}

#[tokio::test]
async fn hostile_names_are_refused_and_nothing_escapes_the_root() {
    let server = TestServer::start().await;
    let outside = root_of(&server).parent().unwrap().to_path_buf();
    let before: Vec<_> = std::fs::read_dir(&outside)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let long = "x".repeat(256);
    let names = [
        "",
        ".",
        "..",
        "../escape",
        "a/b",
        "/etc/passwd",
        "..\\escape",
        "nul\0byte",
        "\x1b[31mred",
        "bell\x07",
        ".sockit",
        long.as_str(),
    ];
    let mut stream = server.connect().await;
    for name in names {
        let mut bytes = put_header(name, 3, json!({}));
        bytes.extend_from_slice(b"abc");
        let (reply, _) = send_and_read(&mut stream, &bytes).await;
        assert_eq!(reply["code"], "bad_name", "{name:?}: {reply}");
        for op in ["get", "stat"] {
            let json = json!({"op": op, "name": name}).to_string();
            let (reply, _) = send_and_read(&mut stream, &frame(&json, b"")).await;
            assert_eq!(reply["code"], "bad_name", "{op} {name:?}: {reply}");
        }
    }
    let after: Vec<_> = std::fs::read_dir(&outside)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(before, after, "something was written beside the root");
    assert!(client(&server).await.list().await.unwrap().is_empty());
}

#[tokio::test]
async fn symlinks_in_the_root_are_never_followed() {
    let server = TestServer::start().await;
    let secret_dir = tempfile::tempdir().unwrap();
    let secret = secret_dir.path().join("secret");
    std::fs::write(&secret, b"top secret").unwrap();
    std::os::unix::fs::symlink(&secret, root_of(&server).join("link")).unwrap();

    let mut stream = server.connect().await;
    let (reply, _) = send_and_read(&mut stream, &frame(r#"{"op":"get","name":"link"}"#, b"")).await;
    assert_eq!(reply["code"], "not_found");
    assert!(client(&server).await.list().await.unwrap().is_empty());

    let mut bytes = put_header("link", 3, json!({"overwrite": true}));
    bytes.extend_from_slice(b"new");
    let (reply, _) = send_and_read(&mut stream, &bytes).await;
    assert_eq!(reply["ok"], true, "{reply}");
    assert_eq!(
        std::fs::read(&secret).unwrap(),
        b"top secret",
        "wrote through the link"
    );
    assert_eq!(
        std::fs::read(root_of(&server).join("link")).unwrap(),
        b"new"
    );
}

#[tokio::test]
async fn interrupted_put_resumes_to_an_identical_file() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("video.mp4");
    let data = pattern(5 * 1024 * 1024, 3);
    std::fs::write(&source, &data).unwrap();

    // A sockit put that dies part-way: header, 2 MiB of body, then the connection is gone.
    let mut stream = server.connect().await;
    let header = put_header("video.mp4", data.len(), json!({"trailer": true}));
    stream.write_all(&header).await.unwrap();
    stream.write_all(&data[..2 * 1024 * 1024]).await.unwrap();
    drop(stream);
    let root = root_of(&server);
    wait_for(|| {
        partials(&root)
            .first()
            .is_some_and(|p| p.metadata().unwrap().len() == 2 * 1024 * 1024)
    })
    .await;
    assert!(!root.join("video.mp4").exists());

    // The server lets go of the partial when it has seen the connection end, which may come a
    // moment after the bytes reached the disk: until then a resume is `busy`.
    let started = std::time::Instant::now();
    let put = loop {
        match client(&server)
            .await
            .put_file(&source, "video.mp4", false, &mut |_| {})
            .await
        {
            Err(err) if err.remote_code() == Some(sockit::proto::ErrorCode::Busy) => {
                assert!(
                    started.elapsed() < std::time::Duration::from_secs(10),
                    "{err}"
                );
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            outcome => break outcome.unwrap(),
        }
    };
    assert_eq!(put.resumed_from, 2 * 1024 * 1024);
    assert_eq!(put.hash, blake3_hex(&data));
    assert!(std::fs::read(root.join("video.mp4")).unwrap() == data);
    assert!(partials(&root).is_empty());
}

#[tokio::test]
async fn resume_of_a_different_file_is_caught_and_restarted() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("f");
    let old = pattern(1_000_000, 4);
    let new = pattern(1_000_000, 5); // same length, other content
    std::fs::write(&source, &new).unwrap();
    let mut stream = server.connect().await;
    stream
        .write_all(&put_header("f", old.len(), json!({"trailer": true})))
        .await
        .unwrap();
    stream.write_all(&old[..400_000]).await.unwrap();
    drop(stream);
    let root = root_of(&server);
    wait_for(|| {
        partials(&root)
            .first()
            .is_some_and(|p| p.metadata().unwrap().len() == 400_000)
    })
    .await;

    let put = client(&server)
        .await
        .put_file(&source, "f", false, &mut |_| {})
        .await
        .unwrap();
    assert_eq!(
        put.resumed_from, 0,
        "the mismatched resume was retried from the start"
    );
    assert!(std::fs::read(root.join("f")).unwrap() == new);
}

#[tokio::test]
async fn truncated_body_leaves_nothing_under_the_name() {
    let server = TestServer::start().await;
    let mut stream = server.connect().await;
    stream
        .write_all(&put_header("cut.bin", 1000, json!({})))
        .await
        .unwrap();
    stream.write_all(&[7u8; 500]).await.unwrap();
    stream.shutdown().await.unwrap();
    let (reply, _) = read_reply(&mut stream).await;
    assert_eq!(reply["code"], "bad_frame");
    let root = root_of(&server);
    assert!(!root.join("cut.bin").exists());
    let held = partials(&root);
    assert_eq!(held.len(), 1, "the part that arrived is kept for resuming");
    assert_eq!(held[0].metadata().unwrap().len(), 500);
}

#[tokio::test]
async fn bytes_beyond_the_declared_size_are_never_written() {
    let server = TestServer::start().await;
    let mut stream = server.connect().await;
    let mut bytes = put_header("exact.txt", 10, json!({}));
    bytes.extend_from_slice(b"0123456789EXTRA");
    stream.write_all(&bytes).await.unwrap();
    let (reply, _) = read_reply(&mut stream).await;
    assert_eq!(reply["length"], 10, "{reply}");
    let (reply, _) = read_reply(&mut stream).await;
    // The excess is read as the next frame: "EXTR" is a header length of 1,381,259,333.
    assert_eq!(reply["code"], "too_large", "{reply}");
    assert_eq!(
        std::fs::read(root_of(&server).join("exact.txt")).unwrap(),
        b"0123456789"
    );
}

#[tokio::test]
async fn one_flipped_byte_is_a_hash_mismatch_and_nothing_is_stored() {
    let server = TestServer::start().await;
    let data = pattern(100_000, 6);
    let mut flipped = data.clone();
    flipped[54_321] ^= 0x01;
    let mut stream = server.connect().await;

    // Hash declared in the header.
    let mut bytes = put_header("h.bin", data.len(), json!({"hash": blake3_hex(&data)}));
    bytes.extend_from_slice(&flipped);
    let (reply, _) = send_and_read(&mut stream, &bytes).await;
    assert_eq!(reply["code"], "hash_mismatch", "{reply}");

    // Hash declared in a trailer after the body.
    let mut bytes = put_header("h.bin", data.len(), json!({"trailer": true}));
    bytes.extend_from_slice(&flipped);
    bytes.extend(frame(&json!({"hash": blake3_hex(&data)}).to_string(), b""));
    let (reply, _) = send_and_read(&mut stream, &bytes).await;
    assert_eq!(reply["code"], "hash_mismatch", "{reply}");

    let root = root_of(&server);
    assert!(!root.join("h.bin").exists());
    assert!(partials(&root).is_empty());
    let (reply, _) = send_and_read(&mut stream, &frame(r#"{"op":"ping"}"#, b"")).await;
    assert_eq!(reply["ok"], true, "the connection stays usable");
}

#[tokio::test]
async fn existing_name_is_refused_without_overwrite() {
    let server = TestServer::start().await;
    let mut stream = server.connect().await;
    for (body, overwrite, expected) in [
        (&b"first"[..], false, json!(true)),
        (&b"second"[..], false, json!(false)),
        (&b"third"[..], true, json!(true)),
    ] {
        let mut bytes = put_header("same.txt", body.len(), json!({"overwrite": overwrite}));
        bytes.extend_from_slice(body);
        let (reply, _) = send_and_read(&mut stream, &bytes).await;
        assert_eq!(reply["ok"], expected, "{reply}");
        if expected == json!(false) {
            assert_eq!(reply["code"], "exists");
        }
    }
    assert_eq!(
        std::fs::read(root_of(&server).join("same.txt")).unwrap(),
        b"third"
    );

    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("same.txt");
    std::fs::write(&source, b"fourth").unwrap();
    let err = client(&server)
        .await
        .put_file(&source, "same.txt", false, &mut |_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ClientError::Remote { code, .. } if *code == sockit::proto::ErrorCode::Exists),
        "{err}"
    );
}

#[tokio::test]
async fn concurrent_uploads_of_one_name_end_with_one_whole_file() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let sources: Vec<(PathBuf, Vec<u8>)> = (0..4)
        .map(|i| {
            let data = pattern(2_000_000 + i * 1000, i as u8);
            let path = dir.path().join(format!("src{i}"));
            std::fs::write(&path, &data).unwrap();
            (path, data)
        })
        .collect();
    let addr = server.tcp().to_string();
    let uploads: Vec<_> = sources
        .iter()
        .map(|(path, _)| {
            let (path, addr) = (path.clone(), addr.clone());
            tokio::spawn(async move {
                let mut client = Client::connect(&addr).await.unwrap();
                client
                    .put_file(&path, "shared.bin", true, &mut |_| {})
                    .await
            })
        })
        .collect();
    for upload in uploads {
        upload.await.unwrap().unwrap();
    }
    let stored = std::fs::read(root_of(&server).join("shared.bin")).unwrap();
    assert!(
        sources.iter().any(|(_, data)| *data == stored),
        "the stored file is a mix of uploads"
    );
}

#[tokio::test]
async fn a_second_upload_of_the_same_file_at_once_is_busy_and_its_connection_stays_usable() {
    let server = TestServer::start().await;
    let root = root_of(&server);
    let (first_data, second_data) = (pattern(100_000, 10), pattern(100_000, 11));
    let mut first = server.connect().await;
    first
        .write_all(&put_header("busy.bin", first_data.len(), json!({})))
        .await
        .unwrap();
    first.write_all(&first_data[..1000]).await.unwrap();
    // The partial file appears once the first upload has begun and holds its claim.
    wait_for(|| partials(&root).len() == 1).await;

    // The same name and length while the first runs: refused, its body skipped.
    let mut second = server.connect().await;
    let mut bytes = put_header("busy.bin", second_data.len(), json!({"id": 2}));
    bytes.extend_from_slice(&second_data);
    let (reply, _) = send_and_read(&mut second, &bytes).await;
    assert_eq!(
        reply,
        json!({"ok": false, "id": 2, "code": "busy",
               "error": "another upload of \"busy.bin\" is running; try again when it ends"})
    );
    let (reply, _) = send_and_read(&mut second, &frame(r#"{"op":"ping","id":3}"#, b"")).await;
    assert_eq!(
        reply,
        json!({"ok": true, "id": 3}),
        "the connection stays usable"
    );

    first.write_all(&first_data[1000..]).await.unwrap();
    let (reply, _) = read_reply(&mut first).await;
    assert_eq!(reply["hash"], blake3_hex(&first_data), "{reply}");
    assert!(
        std::fs::read(root.join("busy.bin")).unwrap() == first_data,
        "the refused upload reached the file"
    );
    assert!(partials(&root).is_empty());

    // Once the first is over, the same upload goes through.
    let mut bytes = put_header("busy.bin", second_data.len(), json!({"overwrite": true}));
    bytes.extend_from_slice(&second_data);
    let (reply, _) = send_and_read(&mut second, &bytes).await;
    assert_eq!(reply["hash"], blake3_hex(&second_data), "{reply}");
}

/// Leaves what an interrupted download of `data` (stored as `name`) to `out` leaves behind: the
/// first `held` bytes in the part file, and the record of what they belong to.
fn leave_part(out: &Path, name: &str, data: &[u8], held: &[u8]) {
    let part = sockit::client::part_path(out);
    std::fs::write(&part, held).unwrap();
    let mut record = part.into_os_string();
    record.push(".json");
    let record_json = json!({"name": name, "length": data.len(), "hash": blake3_hex(data)});
    std::fs::write(record, record_json.to_string()).unwrap();
}

#[tokio::test]
async fn interrupted_get_resumes_and_a_bad_partial_is_replaced() {
    let server = TestServer::start().await;
    let data = pattern(2_500_000, 7);
    std::fs::write(root_of(&server).join("g.bin"), &data).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("g.bin");
    let mut client = client(&server).await;

    leave_part(&out, "g.bin", &data, &data[..1_000_000]);
    let got = client
        .get_file("g.bin", &out, &mut |_, _| {})
        .await
        .unwrap();
    assert_eq!(got.resumed_from, 1_000_000);
    assert!(std::fs::read(&out).unwrap() == data);
    std::fs::remove_file(&out).unwrap();

    let mut wrong = data[..1_000_000].to_vec();
    wrong[10] ^= 0xff;
    leave_part(&out, "g.bin", &data, &wrong);
    let got = client
        .get_file("g.bin", &out, &mut |_, _| {})
        .await
        .unwrap();
    assert_eq!(
        got.resumed_from, 0,
        "a corrupt partial is discarded and fetched again"
    );
    assert!(std::fs::read(&out).unwrap() == data);
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "only the file is left"
    );
}

#[tokio::test]
async fn get_and_stat_report_what_is_stored() {
    let server = TestServer::start().await;
    std::fs::write(root_of(&server).join("s.txt"), b"hello").unwrap();
    let meta = std::fs::metadata(root_of(&server).join("s.txt")).unwrap();
    let mode = std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777;
    let modified = meta
        .modified()
        .unwrap()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut stream = server.connect().await;
    let (reply, body) = send_and_read(
        &mut stream,
        &frame(r#"{"op":"get","name":"s.txt","offset":2,"id":1}"#, b""),
    )
    .await;
    assert_eq!(
        reply,
        json!({"ok": true, "id": 1, "name": "s.txt", "length": 5, "hash": blake3_hex(b"hello"), "offset": 2,
               "mode": mode, "modified": modified, "size": 3})
    );
    assert_eq!(body, b"llo");
    // A resume offers the hash of what it holds: a changed file is sent from the start.
    let resume = |if_hash: &str| {
        frame(
            &format!(r#"{{"op":"get","name":"s.txt","offset":2,"if_hash":"{if_hash}"}}"#),
            b"",
        )
    };
    let (reply, body) = send_and_read(&mut stream, &resume(&blake3_hex(b"hello"))).await;
    assert_eq!(
        (reply["offset"].as_u64(), body.as_slice()),
        (Some(2), &b"llo"[..])
    );
    let (reply, body) = send_and_read(&mut stream, &resume(&blake3_hex(b"help!"))).await;
    assert_eq!(
        (reply["offset"].as_u64(), body.as_slice()),
        (Some(0), &b"hello"[..])
    );
    let (reply, _) = send_and_read(&mut stream, &resume("not hex")).await;
    assert_eq!(reply["code"], "bad_request");
    let (reply, _) = send_and_read(
        &mut stream,
        &frame(r#"{"op":"get","name":"s.txt","offset":6}"#, b""),
    )
    .await;
    assert_eq!(reply["code"], "bad_offset");
    assert_eq!(
        reply["error"], "offset 6 is past the end of the 5-byte file",
        "{reply}"
    );
    let (reply, _) = send_and_read(&mut stream, &frame(r#"{"op":"get","name":"none"}"#, b"")).await;
    assert_eq!(reply["code"], "not_found");
    let stat = client(&server)
        .await
        .stat("s.txt", Some(100))
        .await
        .unwrap();
    assert!(stat.exists);
    assert_eq!((stat.length, stat.partial), (Some(5), Some(0)));
}

/// A store on a 1 MiB tmpfs (needs root, as CI has; skipped elsewhere).
struct SmallDisk(tempfile::TempDir);

impl SmallDisk {
    fn mount() -> Option<SmallDisk> {
        let dir = tempfile::tempdir().unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
            .arg(dir.path())
            .output()
            .is_ok_and(|out| out.status.success());
        if !mounted {
            common::skip("cannot mount a tmpfs (needs root)");
            return None;
        }
        Some(SmallDisk(dir))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

#[tokio::test]
async fn full_disk_is_a_clean_error_with_no_leftover() {
    let Some(disk) = SmallDisk::mount() else {
        return;
    };
    let root = disk.0.path().join("store");
    let server = TestServer::start_with(|config| {
        config.root = root.clone();
        // Small enough that the unread rest of a failed upload is never skipped: the server
        // answers and closes, and the client must carry on with a new connection.
        config.limits = sockit_proto::Limits::builder()
            .max_buffered_body(256 * 1024)
            .build()
            .unwrap();
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("huge.bin");
    std::fs::write(&source, pattern(3 * 1024 * 1024, 8)).unwrap();

    let mut client = client(&server).await;
    let err = client
        .put_file(&source, "huge.bin", false, &mut |_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ClientError::Remote { code, .. } if *code == sockit::proto::ErrorCode::NoSpace),
        "{err}"
    );
    assert!(!root.join("huge.bin").exists());
    assert!(partials(&root).is_empty(), "temporary file left behind");
    client.ping().await.unwrap();

    // Out of space with far more than the in-memory limit still unsent: the server answers at
    // once and closes; the client reports the refusal and carries on with a new connection.
    let larger = dir.path().join("larger.bin");
    std::fs::write(&larger, pattern(48 * 1024 * 1024, 9)).unwrap();
    let err = client
        .put_file(&larger, "larger.bin", false, &mut |_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ClientError::Remote { code, .. } if *code == sockit::proto::ErrorCode::NoSpace),
        "{err}"
    );
    assert!(partials(&root).is_empty(), "temporary file left behind");

    let small = dir.path().join("small.txt");
    std::fs::write(&small, b"still works").unwrap();
    client
        .put_file(&small, "small.txt", false, &mut |_| {})
        .await
        .unwrap();
    assert_eq!(
        std::fs::read(root.join("small.txt")).unwrap(),
        b"still works"
    );
    drop(server);
}

async fn wait_for(mut condition: impl FnMut() -> bool) {
    for _ in 0..200 {
        if condition() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("condition not met within 2 s");
}

#[tokio::test]
async fn busy_refusal_that_closes_says_so_without_byte_counts() {
    let server = TestServer::start_with(|config| {
        // The second put's body is too long to skip: the server answers and closes.
        config.limits = sockit_proto::Limits::builder()
            .max_buffered_body(1024)
            .build()
            .unwrap();
    })
    .await;
    let size = 987_654;
    let mut first = server.connect().await;
    first
        .write_all(&put_header("taken.bin", size, json!({})))
        .await
        .unwrap();
    first.write_all(&[1u8; 10]).await.unwrap();
    let started = std::time::Instant::now();
    while std::fs::read_dir(server.root().join(".sockit/partial"))
        .map_or(true, |mut dir| dir.next().is_none())
    {
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }

    let mut second = server.connect().await;
    let (reply, _) = send_and_read(&mut second, &put_header("taken.bin", size, json!({}))).await;
    assert_eq!(reply["code"], "busy", "{reply}");
    let error = reply["error"].as_str().unwrap();
    assert!(
        error.contains("is running; try again when it ends"),
        "{error}"
    );
    assert!(error.contains("connection closes"), "{error}");
    assert!(!error.chars().any(|c| c.is_ascii_digit()), "{error}");
    common::assert_closed(&mut second).await;
    drop(first);
}
