//! Failed logins cost memory only while they are checked: the server does not grow for good
//! with them. One test in its own binary, so that the process's resident size is the server's.

mod common;

use std::time::Duration;

use common::{frame, read_reply, send_and_read, TestServer};
use serde_json::json;
use sockit::auth::users::{hash_password, Account, UsersFile};
use tokio::io::AsyncWriteExt;

const PASSWORD: &str = "correct horse battery staple";
const FAILED_LOGINS: usize = 150;
/// How much the resident size may have grown after the failed logins: the argon2 memory of
/// the logins checked at once (19 MiB each, one per core) and some slack, far less than one
/// argon2 run's memory per failed login (150 × 19 MiB).
const MAX_GROWTH_KIB: u64 = 96 * 1024;

/// This process's resident set size, in KiB (`VmRSS` of `/proc/self/status`).
fn resident_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().strip_suffix("kB"))
        .and_then(|kib| kib.trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

async fn login(server: &TestServer, password: &str) -> serde_json::Value {
    let mut stream = server.connect().await;
    let request = json!({"op": "login", "user": "alice", "password": password}).to_string();
    send_and_read(&mut stream, &frame(&request, b"")).await.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_do_not_grow_the_server_for_good() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.toml");
    let mut file = UsersFile::default();
    file.users.insert(
        "alice".into(),
        Account {
            password: Some(hash_password(PASSWORD).unwrap()),
            keys: vec![],
        },
    );
    file.save(&users).unwrap();
    let server = TestServer::start_with(|config| {
        config.users = Some(users);
        config.login.penalties.free_failures = u32::MAX;
        // Every guess comes from 127.0.0.1, and many are open at once.
        config.max_conns_per_source = 4 * FAILED_LOGINS;
    })
    .await;
    // Warm up: the first checks allocate what every check reuses.
    for _ in 0..4 {
        assert_eq!(login(&server, PASSWORD).await["ok"], true);
    }
    let before = resident_kib();

    // Half the guesses wait for their answer; the other half leave as soon as they have asked,
    // with their checks queued or running.
    let wrong = frame(
        &json!({"op": "login", "user": "alice", "password": "guess"}).to_string(),
        b"",
    );
    let mut waiting = Vec::new();
    for guess in 0..FAILED_LOGINS {
        let mut stream = server.connect().await;
        stream.write_all(&wrong).await.unwrap();
        if guess % 2 == 0 {
            waiting.push(tokio::spawn(async move {
                let (reply, _) = read_reply(&mut stream).await;
                assert_eq!(reply["code"], "unauthorized", "{reply}");
            }));
        }
    }
    for answer in waiting {
        tokio::time::timeout(Duration::from_secs(120), answer)
            .await
            .expect("every guess answered within 120 s")
            .unwrap();
    }
    // Checks are answered in turn: once a last one is, those before it are done.
    assert_eq!(login(&server, PASSWORD).await["ok"], true);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = resident_kib();
    server.shutdown().await;
    eprintln!(
        "resident size: {before} KiB before {FAILED_LOGINS} failed logins, {after} KiB after"
    );
    assert!(
        after < before + MAX_GROWTH_KIB,
        "grew from {before} KiB to {after} KiB"
    );
}
