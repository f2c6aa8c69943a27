//! `delete` and `rename` over real loopback sockets: the wire format, hostile names, missing
//! and taken names, renaming onto itself, a name taken while a rename runs, links in the root,
//! partial uploads left alone, and a server with accounts refusing until login.

mod common;

use std::path::Path;

use common::{frame, send_and_read, TestServer};
use serde_json::json;
use sockit::auth::users::{hash_password, Account, UsersFile};
use sockit::{Client, ClientError};

fn remote_code<T: std::fmt::Debug>(result: Result<T, ClientError>) -> String {
    match result {
        Err(ClientError::Remote { code, .. }) => code.to_string(),
        other => panic!("expected an error reply, got {other:?}"),
    }
}

async fn client(server: &TestServer) -> Client {
    Client::connect(&server.tcp().to_string()).await.unwrap()
}

fn hex(data: &[u8]) -> String {
    blake3::hash(data).to_hex().to_string()
}

fn names_in(root: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|name| name != ".sockit")
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn delete_and_rename_on_the_wire() {
    let server = TestServer::start().await;
    std::fs::write(server.root().join("a.txt"), b"hello").unwrap();
    let mut stream = server.connect().await;

    let rename = json!({"op": "rename", "id": 1, "name": "a.txt", "to": "b.txt"}).to_string();
    let (reply, body) = send_and_read(&mut stream, &frame(&rename, b"")).await;
    assert_eq!(
        reply,
        json!({"ok": true, "id": 1, "name": "b.txt", "length": 5, "hash": hex(b"hello")})
    );
    assert!(body.is_empty());

    let delete = json!({"op": "delete", "id": 2, "name": "b.txt"}).to_string();
    let (reply, _) = send_and_read(&mut stream, &frame(&delete, b"")).await;
    assert_eq!(reply, json!({"ok": true, "id": 2, "name": "b.txt"}));
    assert!(names_in(server.root()).is_empty());

    let (reply, _) = send_and_read(&mut stream, &frame(&delete, b"")).await;
    assert_eq!(reply["ok"], json!(false));
    assert_eq!(reply["code"], json!("not_found"));
    assert_eq!(reply["id"], json!(2));
    // The connection is still in step.
    let (reply, _) = send_and_read(&mut stream, &frame(r#"{"op":"ping"}"#, b"")).await;
    assert_eq!(reply, json!({"ok": true}));
}

#[tokio::test]
async fn hostile_names_are_refused_and_nothing_outside_the_root_is_touched() {
    let outside = tempfile::tempdir().unwrap();
    let server = TestServer::start().await;
    let victim = outside.path().join("victim");
    std::fs::write(&victim, b"keep me").unwrap();
    std::fs::write(server.root().join("ok.txt"), b"ok").unwrap();
    let escape = format!("../../../../..{}", victim.display());
    let hostile = [
        "",
        ".",
        "..",
        "../ok.txt",
        "a/b",
        "a\\b",
        "bad\u{1b}[31m",
        "nul\0x",
        ".sockit",
        ".sockit/partial",
        escape.as_str(),
    ];
    let mut client = client(&server).await;
    for name in hostile {
        assert_eq!(
            remote_code(client.delete(name).await),
            "bad_name",
            "{name:?}"
        );
        assert_eq!(
            remote_code(client.rename("ok.txt", name, true).await),
            "bad_name",
            "to {name:?}"
        );
        assert_eq!(
            remote_code(client.rename(name, "new", true).await),
            "bad_name",
            "from {name:?}"
        );
    }
    assert_eq!(std::fs::read(&victim).unwrap(), b"keep me");
    assert_eq!(names_in(server.root()), ["ok.txt"]);
    assert!(server.root().join(".sockit/partial").is_dir());
}

#[tokio::test]
async fn missing_names_are_not_found() {
    let server = TestServer::start().await;
    let mut client = client(&server).await;
    assert_eq!(remote_code(client.delete("nope").await), "not_found");
    assert_eq!(
        remote_code(client.rename("nope", "other", false).await),
        "not_found"
    );
    assert_eq!(
        remote_code(client.rename("nope", "other", true).await),
        "not_found"
    );
    assert!(names_in(server.root()).is_empty());
}

#[tokio::test]
async fn rename_onto_a_taken_name_needs_overwrite() {
    let server = TestServer::start().await;
    std::fs::write(server.root().join("new"), b"new data").unwrap();
    std::fs::write(server.root().join("old"), b"old").unwrap();
    let mut client = client(&server).await;

    assert_eq!(
        remote_code(client.rename("new", "old", false).await),
        "exists"
    );
    assert_eq!(std::fs::read(server.root().join("old")).unwrap(), b"old");
    assert_eq!(
        std::fs::read(server.root().join("new")).unwrap(),
        b"new data"
    );

    let reply = client.rename("new", "old", true).await.unwrap();
    assert_eq!(
        (reply.name.as_str(), reply.length, reply.hash),
        ("old", 8, hex(b"new data"))
    );
    assert_eq!(names_in(server.root()), ["old"]);
    assert_eq!(
        std::fs::read(server.root().join("old")).unwrap(),
        b"new data"
    );
    // What `get` says of it agrees: the hash moved with the file.
    let stat = client.stat("old", None).await.unwrap();
    assert_eq!(stat.length, Some(8));
}

#[tokio::test]
async fn rename_onto_itself_changes_nothing() {
    let server = TestServer::start().await;
    std::fs::write(server.root().join("same"), b"contents").unwrap();
    let mut client = client(&server).await;
    for overwrite in [false, true] {
        let reply = client.rename("same", "same", overwrite).await.unwrap();
        assert_eq!((reply.name.as_str(), reply.length), ("same", 8));
        assert_eq!(reply.hash, hex(b"contents"));
        assert_eq!(
            std::fs::read(server.root().join("same")).unwrap(),
            b"contents"
        );
    }
    assert_eq!(names_in(server.root()), ["same"]);
}

#[tokio::test]
async fn a_name_taken_while_a_rename_runs_is_never_replaced() {
    let server = TestServer::start().await;
    let mut renamer = client(&server).await;
    let mut uploader = client(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let theirs = dir.path().join("theirs");
    std::fs::write(&theirs, b"theirs").unwrap();
    for round in 0..60 {
        let (from, to) = (format!("mine-{round}"), format!("target-{round}"));
        std::fs::write(server.root().join(&from), b"mine").unwrap();
        let mut progress = |_| {};
        let (renamed, put) = tokio::join!(
            renamer.rename(&from, &to, false),
            uploader.put_file(&theirs, &to, false, &mut progress),
        );
        let target = std::fs::read(server.root().join(&to)).unwrap();
        match (renamed, put) {
            (Ok(_), Err(err)) => {
                assert_eq!(remote_code::<()>(Err(err)), "exists", "round {round}");
                assert_eq!(target, b"mine", "round {round}");
                assert!(!server.root().join(&from).exists());
            }
            (Err(err), Ok(_)) => {
                assert_eq!(remote_code::<()>(Err(err)), "exists", "round {round}");
                assert_eq!(target, b"theirs", "round {round}");
                assert_eq!(std::fs::read(server.root().join(&from)).unwrap(), b"mine");
            }
            (renamed, put) => panic!("round {round}: one must win: {renamed:?} / {put:?}"),
        }
    }
}

#[tokio::test]
async fn links_in_the_root_are_not_stored_files_and_partials_are_left_alone() {
    let outside = tempfile::tempdir().unwrap();
    let server = TestServer::start().await;
    let secret = outside.path().join("secret");
    std::fs::write(&secret, b"secret").unwrap();
    std::os::unix::fs::symlink(&secret, server.root().join("link")).unwrap();
    std::fs::write(server.root().join("plain"), b"plain").unwrap();
    let mut client = client(&server).await;

    assert_eq!(remote_code(client.delete("link").await), "not_found");
    assert_eq!(
        remote_code(client.rename("link", "x", true).await),
        "not_found"
    );
    assert_eq!(
        remote_code(client.rename("plain", "link", true).await),
        "exists"
    );
    assert_eq!(std::fs::read(&secret).unwrap(), b"secret");
    assert_eq!(
        std::fs::read(server.root().join("plain")).unwrap(),
        b"plain"
    );
    assert!(std::fs::symlink_metadata(server.root().join("link"))
        .unwrap()
        .file_type()
        .is_symlink());

    // An interrupted upload of a name survives the name's delete and rename.
    let partial = server.root().join(".sockit/partial/held-10");
    std::fs::write(&partial, b"part").unwrap();
    client.rename("plain", "other", false).await.unwrap();
    client.delete("other").await.unwrap();
    assert_eq!(std::fs::read(&partial).unwrap(), b"part");
}

#[tokio::test]
async fn a_server_with_accounts_refuses_delete_and_rename_until_login() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.toml");
    let mut file = UsersFile::default();
    file.users.insert(
        "alice".into(),
        Account {
            password: Some(hash_password("pass phrase here").unwrap()),
            keys: Vec::new(),
        },
    );
    file.save(&users).unwrap();
    let server = TestServer::start_with(|config| config.users = Some(users)).await;
    std::fs::write(server.root().join("kept"), b"kept").unwrap();

    let mut client = client(&server).await;
    assert_eq!(remote_code(client.delete("kept").await), "unauthorized");
    assert_eq!(
        remote_code(client.rename("kept", "moved", true).await),
        "unauthorized"
    );
    assert_eq!(names_in(server.root()), ["kept"]);

    client
        .login_password("alice", "pass phrase here")
        .await
        .unwrap();
    client.rename("kept", "moved", false).await.unwrap();
    client.delete("moved").await.unwrap();
    assert!(names_in(server.root()).is_empty());
}
