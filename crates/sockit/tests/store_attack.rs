//! The file store under attack, over real loopback sockets: refused resumes and uploads that
//! end before their first byte leave no partial, partials are capped per source address and in
//! all, links planted in the bookkeeping directory are never written through, a FIFO in the
//! root is refused at once, a file rewritten behind the server's back with its length and
//! modification time put back gets its new hash, confusable names are refused by code point,
//! and a directory is never replaced.

mod common;

use std::fs::FileTimes;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{frame, read_reply, send_and_read, TestServer};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};

fn partials(root: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(root.join(".sockit/partial"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect()
}

fn blake3_hex(data: &[u8]) -> String {
    blake3::hash(data).to_hex().to_string()
}

/// The key the store files a name's bookkeeping under.
fn bookkeeping_key(name: &str) -> String {
    blake3::hash(name.as_bytes()).to_hex()[..32].to_owned()
}

/// A `put` frame with its whole body.
fn put(name: &str, body: &[u8], extra: Value) -> Vec<u8> {
    let mut header = json!({"op": "put", "name": name, "size": body.len()});
    header
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    frame(&header.to_string(), body)
}

fn request(header: Value) -> Vec<u8> {
    frame(&header.to_string(), b"")
}

async fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !condition() {
        assert!(Instant::now() < deadline, "{what}: not within 5 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn assert_ping(stream: &mut TcpStream) {
    let (reply, _) = send_and_read(stream, &request(json!({"op": "ping", "id": "p"}))).await;
    assert_eq!(
        reply,
        json!({"ok": true, "id": "p"}),
        "the connection stays usable"
    );
}

/// A connection to `server` from the loopback address `from` (any of 127.0.0.0/8).
async fn connect_from(server: SocketAddr, from: &str) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    socket.connect(server).await.unwrap()
}

/// Begins a `put` of `name` (10 bytes) from `from`, sends 4 of them and goes away: what
/// arrived is kept as a partial.
async fn leave_partial(server: &TestServer, from: &str, name: &str) {
    let mut stream = connect_from(server.tcp(), from).await;
    let mut bytes = put(name, b"0123456789", json!({}));
    bytes.truncate(bytes.len() - 6);
    stream.write_all(&bytes).await.unwrap();
    stream.flush().await.unwrap();
    drop(stream);
}

#[tokio::test]
async fn refused_resumes_and_uploads_gone_before_their_first_byte_leave_no_partial() {
    let server = TestServer::start().await;
    let root = server.root().to_path_buf();
    let mut stream = server.connect().await;
    // The attack of the issue, bounded: a pipelined burst of resumes the server refuses.
    const ROUNDS: usize = 2000;
    let started = Instant::now();
    let mut burst = Vec::new();
    for round in 0..ROUNDS {
        burst.extend(put(
            &format!("f{round}"),
            b"x",
            json!({"offset": 5, "id": round}),
        ));
    }
    stream.write_all(&burst).await.unwrap();
    for round in 0..ROUNDS {
        let (reply, _) = read_reply(&mut stream).await;
        assert_eq!(reply["code"], "bad_offset", "{reply}");
        assert_eq!(reply["id"], round);
    }
    let refused = started.elapsed();
    assert!(
        partials(&root).is_empty(),
        "{} partials after {ROUNDS} refused resumes in {refused:?}",
        partials(&root).len()
    );
    assert_ping(&mut stream).await;

    // A put whose client goes away before the first byte of its body.
    for round in 0..20 {
        let mut gone = server.connect().await;
        let bytes = put(&format!("g{round}"), b"0123456789", json!({}));
        gone.write_all(&bytes[..bytes.len() - 10]).await.unwrap();
        drop(gone);
    }
    // One that leaves data shows when the server has seen the others go.
    leave_partial(&server, "127.0.0.1", "with-data").await;
    wait_for("the partial with data", || partials(&root).len() == 1).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let left = partials(&root);
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(left[0]
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with(&bookkeeping_key("with-data")));
    assert_eq!(std::fs::metadata(&left[0]).unwrap().len(), 4);

    // A resume beyond what is held is refused and leaves the partial as it was.
    let (reply, _) =
        send_and_read(&mut stream, &put("with-data", b"789", json!({"offset": 7}))).await;
    assert_eq!(reply["code"], "bad_offset", "{reply}");
    assert_eq!(std::fs::metadata(&left[0]).unwrap().len(), 4);
    eprintln!("{ROUNDS} refused resumes answered in {refused:?}, no partial left");
}

/// Sets the modification time of the partial of `name` (10 bytes) to `ago` in the past.
fn age_partial(root: &Path, name: &str, ago: Duration) {
    let path = root.join(format!(".sockit/partial/{}-10", bookkeeping_key(name)));
    let file = std::fs::File::options().write(true).open(path).unwrap();
    file.set_times(FileTimes::new().set_modified(std::time::SystemTime::now() - ago))
        .unwrap();
}

#[tokio::test]
async fn at_its_cap_an_address_replaces_its_oldest_idle_partial_and_past_the_total_is_busy() {
    let server = TestServer::start_with(|config| {
        config.max_partials_per_source = 3;
        config.max_partials = 5;
    })
    .await;
    let root = server.root().to_path_buf();
    for name in ["a", "b", "c"] {
        leave_partial(&server, "127.0.0.1", name).await;
    }
    // Each partial gets its bytes when its upload ends: only then is its time set for good.
    wait_for("three partials of 4 bytes", || {
        ["a", "b", "c"].iter().all(|name| {
            let path = root.join(format!(".sockit/partial/{}-10", bookkeeping_key(name)));
            std::fs::metadata(path).is_ok_and(|meta| meta.len() == 4)
        })
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    // `b` is the one written to longest ago.
    age_partial(&root, "a", Duration::from_secs(60));
    age_partial(&root, "b", Duration::from_secs(3600));
    age_partial(&root, "c", Duration::from_secs(30));

    // A new upload from the same address is not refused: the oldest idle partial makes room.
    let mut stream = connect_from(server.tcp(), "127.0.0.1").await;
    let (reply, _) = send_and_read(&mut stream, &put("d", b"0123456789", json!({"id": 1}))).await;
    assert_eq!(reply["ok"], true, "{reply}");
    let stat = |name: &str| request(json!({"op": "stat", "name": name, "length": 10}));
    let (reply, _) = send_and_read(&mut stream, &stat("b")).await;
    assert_eq!(reply["partial"], 0, "{reply}");
    for name in ["a", "c"] {
        let (reply, _) = send_and_read(&mut stream, &stat(name)).await;
        assert_eq!(reply["partial"], 4, "{name}: {reply}");
    }

    // Three uploads from the address being written: they take the room of `a` and `c`, and a
    // fourth has nothing to replace.
    let mut writing = Vec::new();
    for name in ["x", "y", "z"] {
        let mut upload = connect_from(server.tcp(), "127.0.0.1").await;
        let mut bytes = put(name, b"0123456789", json!({}));
        bytes.truncate(bytes.len() - 6);
        upload.write_all(&bytes).await.unwrap();
        writing.push(upload);
    }
    wait_for("the three uploads being written", || {
        ["x", "y", "z"].iter().all(|name| {
            let path = root.join(format!(".sockit/partial/{}-10", bookkeeping_key(name)));
            // Its bytes wait in the upload's buffer: the file is there, still empty.
            path.exists()
        }) && partials(&root).len() == 3
    })
    .await;
    let (reply, _) = send_and_read(&mut stream, &put("w", b"0123456789", json!({"id": 2}))).await;
    assert_eq!(
        reply,
        json!({"ok": false, "id": 2, "code": "busy",
               "error": "3 uploads from your address are being written now, its limit: \
                         try again when one ends"})
    );
    assert_ping(&mut stream).await;
    assert_eq!(partials(&root).len(), 3, "a refused upload left a file");

    // The total counts every address; past it, an upload is busy, and no other address's
    // partial is taken.
    leave_partial(&server, "127.0.0.2", "e").await;
    leave_partial(&server, "127.0.0.3", "f").await;
    wait_for("five partials", || partials(&root).len() == 5).await;
    let mut other = connect_from(server.tcp(), "127.0.0.4").await;
    let (reply, _) = send_and_read(&mut other, &put("g", b"0123456789", json!({}))).await;
    assert_eq!(reply["code"], "busy", "{reply}");
    assert_eq!(
        reply["error"],
        "the server holds 5 unfinished uploads, its limit: try again later"
    );

    // At the cap, what is held can still be resumed and stored; then there is room again.
    let mut resumer = connect_from(server.tcp(), "127.0.0.2").await;
    let (reply, _) = send_and_read(
        &mut resumer,
        &put(
            "e",
            b"456789",
            json!({"offset": 4, "hash": blake3_hex(b"0123456789")}),
        ),
    )
    .await;
    assert_eq!(reply["ok"], true, "{reply}");
    assert_eq!(std::fs::read(root.join("e")).unwrap(), b"0123456789");
    let (reply, _) = send_and_read(&mut other, &put("g", b"whole", json!({}))).await;
    assert_eq!(reply["ok"], true, "{reply}");
    drop(writing);
}

#[tokio::test]
async fn cut_tutorial_uploads_leave_no_partial_and_never_block_the_address() {
    let server = TestServer::start().await;
    let root = server.root().to_path_buf();
    // More cut uploads than one address may hold partials (32): the tutorials' header, a
    // thousand of the million bytes it announces, then the client goes away.
    let cap = sockit::defaults::MAX_PARTIALS_PER_SOURCE;
    for round in 0..=cap {
        let mut stream = server.connect().await;
        let header = json!({"file_name": format!("澳门最大线上赌场开业啦-{round}.mp4"), "file_size": 1_000_000});
        stream
            .write_all(&frame(&header.to_string(), &[7u8; 1000]))
            .await
            .unwrap();
        stream.flush().await.unwrap();
        drop(stream);
    }
    // The server deletes each as its connection ends.
    wait_for("no partial left by the cut uploads", || {
        partials(&root).is_empty()
    })
    .await;
    let mut stream = server.connect().await;
    let (reply, _) = send_and_read(&mut stream, &put("n.txt", b"0123456789", json!({}))).await;
    assert_eq!(reply["ok"], true, "{reply}");
    // A complete tutorial upload is still stored.
    let header = json!({"file_name": "whole.mp4", "file_size": 10}).to_string();
    let (reply, _) = send_and_read(&mut stream, &frame(&header, b"0123456789")).await;
    assert_eq!(reply["ok"], true, "{reply}");
    assert_eq!(
        std::fs::read(root.join("whole.mp4")).unwrap(),
        b"0123456789"
    );
}

#[tokio::test]
async fn links_planted_in_the_bookkeeping_directory_are_never_written_through() {
    let server = TestServer::start().await;
    let root = server.root().to_path_buf();
    let outside = tempfile::tempdir().unwrap();
    let victim = outside.path().join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    let data = b"stored data";
    let key = bookkeeping_key("f");
    // Where the hash record of `f` is written, and where its partial upload goes.
    let record = root.join(format!(".sockit/meta/{key}.json"));
    let partial = root.join(format!(".sockit/partial/{key}-{}", data.len()));
    std::os::unix::fs::symlink(&victim, &record).unwrap();
    std::os::unix::fs::symlink(&victim, &partial).unwrap();
    // And where a record used to be written before it was renamed into place.
    let old_tmp = root.join(format!(".sockit/meta/{key}.tmp"));
    std::os::unix::fs::symlink(&victim, &old_tmp).unwrap();

    let mut stream = server.connect().await;
    let (reply, _) = send_and_read(&mut stream, &put("f", data, json!({}))).await;
    assert_eq!(reply["hash"], blake3_hex(data), "{reply}");
    let (reply, body) =
        send_and_read(&mut stream, &request(json!({"op": "get", "name": "f"}))).await;
    assert_eq!(
        (reply["hash"].clone(), body.as_slice()),
        (json!(blake3_hex(data)), &data[..])
    );
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    assert!(!std::fs::symlink_metadata(&record).unwrap().is_symlink());
    assert!(partials(&root).is_empty());

    // A link where a record goes, to a file that reads as a record with a forged hash: not
    // believed.
    let forged = std::fs::read(&record)
        .map(|bytes| {
            String::from_utf8(bytes)
                .unwrap()
                .replace(&blake3_hex(data), &blake3_hex(b"forged"))
        })
        .unwrap();
    std::fs::write(&victim, &forged).unwrap();
    std::fs::remove_file(&record).unwrap();
    std::os::unix::fs::symlink(&victim, &record).unwrap();
    let (reply, _) = send_and_read(&mut stream, &request(json!({"op": "get", "name": "f"}))).await;
    assert_eq!(reply["hash"], blake3_hex(data), "{reply}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), forged);
}

#[tokio::test]
async fn a_fifo_in_the_root_is_refused_at_once_and_every_other_client_is_served() {
    // All the clients come from one address: let it open them all.
    let server = TestServer::start_with(|config| config.max_conns_per_source = 1024).await;
    let root = server.root().to_path_buf();
    nix::unistd::mkfifo(
        &root.join("pipe"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    std::fs::write(root.join("real"), b"real data").unwrap();

    // More gets of the FIFO at once than the server has transfer slots (128): had any of
    // them hung, holding its slot, the get after them would wait forever.
    const CLIENTS: usize = 200;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let addr = server.tcp();
        tasks.push(tokio::spawn(async move {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            send_and_read(&mut stream, &request(json!({"op": "get", "name": "pipe"}))).await
        }));
    }
    for task in tasks {
        let (reply, body) = task.await.unwrap();
        assert_eq!(
            reply,
            json!({"ok": false, "code": "not_found",
                   "error": "\"pipe\" is a FIFO, not a stored file: only regular files are served"})
        );
        assert!(body.is_empty());
    }
    let refused = started.elapsed();
    assert!(refused < Duration::from_secs(10), "{refused:?}");

    let mut stream = server.connect().await;
    let (reply, body) =
        send_and_read(&mut stream, &request(json!({"op": "get", "name": "real"}))).await;
    assert_eq!(
        (reply["ok"].clone(), body.as_slice()),
        (json!(true), &b"real data"[..])
    );
    let (reply, body) = send_and_read(&mut stream, &request(json!({"op": "list"}))).await;
    assert_eq!(reply["count"], 1, "{reply}");
    let entries: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(entries[0]["name"], "real");
    for op in [
        json!({"op": "delete", "name": "pipe"}),
        json!({"op": "rename", "name": "pipe", "to": "other"}),
    ] {
        let (reply, _) = send_and_read(&mut stream, &request(op)).await;
        assert_eq!(reply["code"], "not_found", "{reply}");
    }
    let (reply, _) = send_and_read(
        &mut stream,
        &put("pipe", b"new", json!({"overwrite": true})),
    )
    .await;
    assert_eq!(reply["code"], "exists", "{reply}");
    assert!(partials(&root).is_empty());
    assert!(nix::sys::stat::lstat(&root.join("pipe")).is_ok());
    eprintln!("{CLIENTS} gets of a FIFO refused in {refused:?}");
}

#[tokio::test]
async fn content_rewritten_with_its_size_and_modification_time_put_back_gets_its_new_hash() {
    let server = TestServer::start().await;
    let path = server.root().join("same.txt");
    let mut stream = server.connect().await;
    let (reply, _) = send_and_read(&mut stream, &put("same.txt", b"version one", json!({}))).await;
    assert_eq!(reply["hash"], blake3_hex(b"version one"), "{reply}");
    let get = request(json!({"op": "get", "name": "same.txt"}));
    let (reply, _) = send_and_read(&mut stream, &get).await;
    assert_eq!(reply["hash"], blake3_hex(b"version one"), "{reply}");

    // Out of band: same length, same inode, modification time put back.
    let modified = std::fs::metadata(&path).unwrap().modified().unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    std::fs::write(&path, b"version two").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_times(FileTimes::new().set_modified(modified))
        .unwrap();
    assert_eq!(
        std::fs::metadata(&path).unwrap().modified().unwrap(),
        modified
    );

    let (reply, body) = send_and_read(&mut stream, &get).await;
    assert_eq!(body, b"version two");
    assert_eq!(
        reply["hash"],
        blake3_hex(b"version two"),
        "a stale hash was served: {reply}"
    );
    // A rename carries the fresh hash along and still answers it.
    let (reply, _) = send_and_read(
        &mut stream,
        &request(json!({"op": "rename", "name": "same.txt", "to": "moved.txt"})),
    )
    .await;
    assert_eq!(reply["hash"], blake3_hex(b"version two"), "{reply}");
    let (reply, _) = send_and_read(
        &mut stream,
        &request(json!({"op": "get", "name": "moved.txt"})),
    )
    .await;
    assert_eq!(reply["hash"], blake3_hex(b"version two"), "{reply}");
}

#[tokio::test]
async fn confusable_names_are_bad_name_with_the_character_named() {
    let server = TestServer::start().await;
    let mut stream = server.connect().await;
    let cases = [
        (
            "report\u{200B}.pdf",
            "U+200B, an invisible or formatting character",
        ),
        (
            "\u{FEFF}notes.txt",
            "U+FEFF, an invisible or formatting character",
        ),
        (
            "invoice\u{202E}fdp.exe",
            "U+202E, an invisible or formatting character",
        ),
        ("a\u{200D}b", "U+200D, an invisible or formatting character"),
        (
            "..\u{2215}..\u{2215}etc\u{2215}passwd",
            "U+2215, which looks like `/` but is not",
        ),
        (
            "etc\u{2044}passwd",
            "U+2044, which looks like `/` but is not",
        ),
        (
            "etc\u{FF0F}passwd",
            "U+FF0F, which looks like `/` but is not",
        ),
        (
            "etc\u{29F8}passwd",
            "U+29F8, which looks like `/` but is not",
        ),
    ];
    for (name, why) in cases {
        let expected = format!("file name may not contain {why}");
        let (reply, _) = send_and_read(&mut stream, &put(name, b"abc", json!({}))).await;
        assert_eq!(
            reply,
            json!({"ok": false, "code": "bad_name", "error": expected}),
            "put {name:?}"
        );
        for op in [
            json!({"op": "get", "name": name}),
            json!({"op": "stat", "name": name}),
            json!({"op": "delete", "name": name}),
            json!({"op": "rename", "name": "plain", "to": name}),
        ] {
            let (reply, _) = send_and_read(&mut stream, &request(op.clone())).await;
            assert_eq!(reply["code"], "bad_name", "{op}: {reply}");
            assert_eq!(reply["error"], expected.as_str(), "{op}");
        }
    }
    let (reply, _) = send_and_read(&mut stream, &request(json!({"op": "list"}))).await;
    assert_eq!(reply["count"], 0, "{reply}");
    assert!(partials(server.root()).is_empty());
}

#[tokio::test]
async fn a_directory_is_never_replaced_deleted_or_served_and_no_partial_is_left() {
    let server = TestServer::start().await;
    let root = server.root().to_path_buf();
    std::fs::create_dir(root.join("dir")).unwrap();
    std::fs::write(root.join("dir/inside"), b"kept").unwrap();
    let mut stream = server.connect().await;
    let occupied = "\"dir\" is a directory on the server, not a regular file: it is never replaced";

    for overwrite in [true, false] {
        let (reply, _) = send_and_read(
            &mut stream,
            &put(
                "dir",
                b"new bytes",
                json!({"overwrite": overwrite, "id": 1}),
            ),
        )
        .await;
        assert_eq!(
            reply,
            json!({"ok": false, "id": 1, "code": "exists", "error": occupied}),
            "overwrite {overwrite}"
        );
    }
    let (reply, _) = send_and_read(&mut stream, &put("file", b"data", json!({}))).await;
    assert_eq!(reply["ok"], true, "{reply}");
    let (reply, _) = send_and_read(
        &mut stream,
        &request(json!({"op": "rename", "name": "file", "to": "dir", "overwrite": true})),
    )
    .await;
    assert_eq!(reply["code"], "exists", "{reply}");
    assert_eq!(reply["error"], occupied);
    let not_a_file = "\"dir\" is a directory, not a stored file: only regular files are served";
    for op in ["delete", "get"] {
        let (reply, _) =
            send_and_read(&mut stream, &request(json!({"op": op, "name": "dir"}))).await;
        assert_eq!(
            reply,
            json!({"ok": false, "code": "not_found", "error": not_a_file}),
            "{op}"
        );
    }
    assert_ping(&mut stream).await;
    assert!(partials(&root).is_empty());
    assert_eq!(std::fs::read(root.join("dir/inside")).unwrap(), b"kept");
    assert_eq!(std::fs::read(root.join("file")).unwrap(), b"data");
}
