//! The chunked form of `put` over raw frames on real loopback sockets: a file of unknown length
//! sent as chunk frames and an end frame, and every way a hostile or vanishing client can break
//! the sequence. Nothing may ever appear under the name unless complete and verified, and no
//! partial may be left behind.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{assert_closed, frame, read_reply, send_and_read, TestServer};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(29).wrapping_add(seed))
        .collect()
}

fn blake3_hex(data: &[u8]) -> String {
    blake3::hash(data).to_hex().to_string()
}

/// The request of a chunked put of `name`, with `extra` fields.
fn request(name: &str, extra: Value) -> Vec<u8> {
    let mut header = json!({"op": "put", "name": name, "chunked": true});
    header
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    frame(&header.to_string(), b"")
}

/// A chunk frame carrying `data`.
fn chunk(data: &[u8]) -> Vec<u8> {
    frame(&json!({"size": data.len()}).to_string(), data)
}

/// The end frame.
fn end(length: usize, hash: &str) -> Vec<u8> {
    frame(
        &json!({"end": true, "length": length, "hash": hash}).to_string(),
        b"",
    )
}

/// A whole chunked put of `data`, cut into chunks of the given sizes (the last takes the rest).
fn sequence(name: &str, data: &[u8], cuts: &[usize]) -> Vec<u8> {
    let mut bytes = request(name, json!({}));
    let mut rest = data;
    for &cut in cuts {
        let (piece, after) = rest.split_at(cut.min(rest.len()));
        if !piece.is_empty() {
            bytes.extend(chunk(piece));
        }
        rest = after;
    }
    if !rest.is_empty() {
        bytes.extend(chunk(rest));
    }
    bytes.extend(end(data.len(), &blake3_hex(data)));
    bytes
}

fn partials(root: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(root.join(".sockit/partial"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect()
}

async fn wait_for(mut condition: impl FnMut() -> bool) {
    for _ in 0..500 {
        if condition() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("condition not met within 5 s");
}

async fn assert_usable(stream: &mut tokio::net::TcpStream) {
    let (reply, _) = send_and_read(stream, &frame(r#"{"op":"ping"}"#, b"")).await;
    assert_eq!(reply["ok"], true, "the connection stays usable: {reply}");
}

#[tokio::test]
async fn chunks_of_any_size_are_stored_in_order_and_verified() {
    let server = TestServer::start().await;
    let data = pattern(3 * 1024 * 1024 + 11, 1);
    let mut bytes = request("s.bin", json!({"id": 7}));
    let mut rest = &data[..];
    for cut in [1, 5, 100_000, 3, 1024 * 1024 + 7, 64 * 1024] {
        let (piece, after) = rest.split_at(cut);
        bytes.extend(chunk(piece));
        rest = after;
    }
    bytes.extend(chunk(rest));
    bytes.extend(end(data.len(), &blake3_hex(&data)));
    let mut stream = server.connect().await;
    let (reply, body) = send_and_read(&mut stream, &bytes).await;
    assert_eq!(
        reply,
        json!({"ok": true, "id": 7, "name": "s.bin", "length": data.len(), "hash": blake3_hex(&data)})
    );
    assert!(body.is_empty());
    assert!(std::fs::read(server.root().join("s.bin")).unwrap() == data);
    assert!(partials(server.root()).is_empty());
    assert_usable(&mut stream).await;
}

#[tokio::test]
async fn a_stream_with_no_chunks_is_an_empty_file() {
    let server = TestServer::start().await;
    let mut stream = server.connect().await;
    let (reply, _) = send_and_read(&mut stream, &sequence("empty", b"", &[])).await;
    assert_eq!(reply["length"], 0, "{reply}");
    assert_eq!(std::fs::read(server.root().join("empty")).unwrap(), b"");
}

#[tokio::test]
async fn an_end_frame_with_the_wrong_hash_is_a_hash_mismatch_and_nothing_is_stored() {
    let server = TestServer::start().await;
    let data = pattern(200_000, 2);
    let mut bytes = request("h.bin", json!({}));
    bytes.extend(chunk(&data));
    bytes.extend(end(data.len(), &blake3_hex(b"something else")));
    let mut stream = server.connect().await;
    let (reply, _) = send_and_read(&mut stream, &bytes).await;
    assert_eq!(reply["code"], "hash_mismatch", "{reply}");
    assert!(!server.root().join("h.bin").exists());
    assert!(partials(server.root()).is_empty());
    assert_usable(&mut stream).await;
}

#[tokio::test]
async fn an_end_frame_with_the_wrong_length_or_a_bad_hash_is_refused_and_nothing_is_stored() {
    let server = TestServer::start().await;
    let data = pattern(50_000, 3);
    let hash = blake3_hex(&data);
    let ends = [
        end(data.len() - 1, &hash),
        end(data.len() + 1, &hash),
        end(data.len(), "not hex"),
        frame(&json!({"end": true, "length": data.len()}).to_string(), b""),
        frame(&json!({"end": true, "hash": hash}).to_string(), b""),
    ];
    let mut stream = server.connect().await;
    for last in ends {
        let mut bytes = request("l.bin", json!({}));
        bytes.extend(chunk(&data));
        bytes.extend(last);
        let (reply, _) = send_and_read(&mut stream, &bytes).await;
        assert_eq!(reply["code"], "bad_request", "{reply}");
        assert!(!server.root().join("l.bin").exists());
        assert!(partials(server.root()).is_empty());
        assert_usable(&mut stream).await;
    }
}

#[tokio::test]
async fn a_frame_that_breaks_the_sequence_is_refused_and_the_connection_closes() {
    let server = TestServer::start().await;
    let hash = blake3_hex(b"abc");
    let breakers = [
        frame(r#"{"size":3,"id":1}"#, b"abc"),
        frame(r#"{"size":3,"op":"put"}"#, b"abc"),
        frame(r#"{"file_size":3}"#, b"abc"),
        frame(r#"{"size":0}"#, b""),
        frame(r#"{}"#, b""),
        frame(r#"{"op":"ping"}"#, b""),
        frame(&json!({"size": 3, "hash": hash}).to_string(), b"abc"),
        frame(r#"{"end":false}"#, b""),
        frame(r#"{"end":"yes"}"#, b""),
        // An end frame with a body.
        frame(
            &json!({"end": true, "length": 6, "hash": hash, "size": 3}).to_string(),
            b"abc",
        ),
    ];
    for breaker in breakers {
        let mut stream = server.connect().await;
        let mut bytes = request("b.bin", json!({}));
        bytes.extend(chunk(b"abc"));
        bytes.extend(&breaker);
        let (reply, _) = send_and_read(&mut stream, &bytes).await;
        let shown = String::from_utf8_lossy(&breaker[4..]).into_owned();
        assert_eq!(reply["code"], "bad_request", "{shown}: {reply}");
        assert_closed(&mut stream).await;
        assert!(!server.root().join("b.bin").exists(), "{shown}");
        assert!(partials(server.root()).is_empty(), "{shown}");
    }
}

#[tokio::test]
async fn a_client_vanishing_mid_stream_leaves_nothing_behind() {
    let server = TestServer::start().await;
    let root = server.root().to_path_buf();
    // More than the server's buffer, so that some of it is on disk when the client goes.
    let data = pattern(1536 * 1024, 4);
    // Where the client stops: after whole chunks, inside a chunk's body, inside a header.
    let mut mid_body = frame(r#"{"size":100000}"#, b"");
    mid_body.extend_from_slice(&data[..40_000]);
    let cuts: [Vec<u8>; 3] = [Vec::new(), mid_body, b"\x10\x00\x00\x00{\"si".to_vec()];
    for cut in cuts {
        let mut stream = server.connect().await;
        let mut bytes = request("v.bin", json!({}));
        bytes.extend(chunk(&data));
        stream.write_all(&bytes).await.unwrap();
        // The upload is under way: its partial exists and holds some of what was sent.
        wait_for(|| {
            partials(&root).len() == 1
                && std::fs::metadata(&partials(&root)[0]).is_ok_and(|meta| meta.len() > 0)
        })
        .await;
        stream.write_all(&cut).await.unwrap();
        drop(stream);
        wait_for(|| partials(&root).is_empty()).await;
        assert!(!root.join("v.bin").exists());
    }
}

#[tokio::test]
async fn chunked_requests_with_a_body_an_offset_a_hash_or_a_trailer_are_refused() {
    let server = TestServer::start().await;
    let data = b"payload";
    let requests = [
        frame(r#"{"op":"put","name":"r","chunked":true,"size":2}"#, b"xx"),
        request("r", json!({"offset": 3})),
        request("r", json!({"hash": blake3_hex(data)})),
        request("r", json!({"trailer": true})),
    ];
    let mut stream = server.connect().await;
    for first in requests {
        let mut bytes = first.clone();
        bytes.extend(chunk(data));
        bytes.extend(end(data.len(), &blake3_hex(data)));
        let (reply, _) = send_and_read(&mut stream, &bytes).await;
        assert_eq!(reply["code"], "bad_request", "{reply}");
        // The refused sequence was read to its end frame: the next request is answered.
        assert_usable(&mut stream).await;
    }
    let (reply, _) = send_and_read(&mut stream, &sequence("../r", data, &[])).await;
    assert_eq!(reply["code"], "bad_name", "{reply}");
    assert_usable(&mut stream).await;
    assert!(!server.root().join("r").exists());
    assert!(partials(server.root()).is_empty());
}

#[tokio::test]
async fn a_taken_name_is_refused_unless_overwrite() {
    let server = TestServer::start().await;
    std::fs::write(server.root().join("t.txt"), b"old").unwrap();
    let mut stream = server.connect().await;
    let (reply, _) = send_and_read(&mut stream, &sequence("t.txt", b"new", &[1])).await;
    assert_eq!(reply["code"], "exists", "{reply}");
    assert_usable(&mut stream).await;
    assert_eq!(std::fs::read(server.root().join("t.txt")).unwrap(), b"old");

    let mut bytes = request("t.txt", json!({"overwrite": true}));
    bytes.extend(chunk(b"new"));
    bytes.extend(end(3, &blake3_hex(b"new")));
    let (reply, _) = send_and_read(&mut stream, &bytes).await;
    assert_eq!(reply["ok"], true, "{reply}");
    assert_eq!(std::fs::read(server.root().join("t.txt")).unwrap(), b"new");
}

#[tokio::test]
async fn a_refused_sequence_longer_than_the_in_memory_limit_closes_the_connection() {
    let server = TestServer::start_with(|config| {
        config.limits = sockit_proto::Limits::builder()
            .max_buffered_body(64 * 1024)
            .build()
            .unwrap();
    })
    .await;
    std::fs::write(server.root().join("taken"), b"old").unwrap();
    let data = pattern(1024 * 1024, 5);
    let mut stream = server.connect().await;
    let (mut reader, mut writer) = stream.split();
    let sending = async {
        // The server stops reading; the rest of the writes may fail.
        let _ = writer
            .write_all(&sequence("taken", &data, &[16 * 1024; 64]))
            .await;
    };
    let replying = async {
        let mut prefix = [0u8; 4];
        tokio::io::AsyncReadExt::read_exact(&mut reader, &mut prefix)
            .await
            .unwrap();
        let mut header = vec![0u8; i32::from_le_bytes(prefix) as usize];
        tokio::io::AsyncReadExt::read_exact(&mut reader, &mut header)
            .await
            .unwrap();
        serde_json::from_slice::<Value>(&header).unwrap()
    };
    let ((), reply) = tokio::join!(sending, replying);
    assert_eq!(reply["code"], "exists", "{reply}");
    drop(stream.shutdown().await);
    assert_closed(&mut stream).await;
    assert_eq!(std::fs::read(server.root().join("taken")).unwrap(), b"old");
}

#[tokio::test]
async fn chunks_over_the_body_limit_in_all_are_too_large() {
    let server = TestServer::start_with(|config| {
        config.limits = sockit_proto::Limits::builder()
            .max_body_len(1000)
            .build()
            .unwrap();
    })
    .await;
    let mut stream = server.connect().await;
    let mut bytes = request("big", json!({}));
    bytes.extend(chunk(&[1; 600]));
    bytes.extend(chunk(&[2; 600]));
    let (reply, _) = send_and_read(&mut stream, &bytes).await;
    assert_eq!(reply["code"], "too_large", "{reply}");
    assert_closed(&mut stream).await;
    assert!(!server.root().join("big").exists());
    wait_for(|| partials(server.root()).is_empty()).await;
}

#[tokio::test]
async fn a_full_disk_is_no_space_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(dir.path())
        .output()
        .is_ok_and(|out| out.status.success());
    if !mounted {
        common::skip("cannot mount a tmpfs (needs root)");
        return;
    }
    let root = dir.path().join("store");
    let server = TestServer::start_with(|config| config.root = root.clone()).await;
    let data = pattern(3 * 1024 * 1024, 6);
    let mut stream = server.connect().await;
    let (reply, _) = send_and_read(&mut stream, &sequence("full", &data, &[64 * 1024; 40])).await;
    assert_eq!(reply["code"], "no_space", "{reply}");
    assert_usable(&mut stream).await;
    assert!(!root.join("full").exists());
    assert!(partials(&root).is_empty());
    drop(server);
    let _ = Command::new("umount").arg(dir.path()).status();
}

#[tokio::test]
async fn the_reply_to_a_stored_stream_carries_the_request_id_only() {
    let server = TestServer::start().await;
    let mut stream = server.connect().await;
    let mut bytes = request("id.txt", json!({"id": "x"}));
    bytes.extend(chunk(b"hello"));
    bytes.extend(end(5, &blake3_hex(b"hello")));
    bytes.extend(frame(r#"{"op":"ping","id":"after"}"#, b""));
    stream.write_all(&bytes).await.unwrap();
    let (reply, _) = read_reply(&mut stream).await;
    assert_eq!(reply["id"], "x", "{reply}");
    assert_eq!(reply["length"], 5, "{reply}");
    let (reply, _) = read_reply(&mut stream).await;
    assert_eq!(reply, json!({"ok": true, "id": "after"}));
}
