//! The browser front end's HTTP API over real sockets (reqwest, and raw TCP where the bytes on
//! the wire matter): upload, list, download, `Range`, `409` and overwrite, bad names, a body
//! cut off half-way, an oversized head, logins and the session cookie.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use common::TestServer;
use reqwest::StatusCode;
use serde_json::{json, Value};
use sockit::auth::users::{hash_password, Account, UsersFile};
use sockit::server::ServiceKind;
use sockit::ServerConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PASSWORD: &str = "correct horse battery staple";

async fn web_server_with(configure: impl FnOnce(&mut ServerConfig)) -> TestServer {
    TestServer::start_with(|config| {
        config.add_listener(ServiceKind::Http, "127.0.0.1:0".parse().unwrap());
        configure(config);
    })
    .await
}

async fn web_server() -> TestServer {
    web_server_with(|_| {}).await
}

fn base(server: &TestServer) -> String {
    format!("http://{}", server.addr(ServiceKind::Http))
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Bytes that tell their positions apart.
fn content(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

/// What `request` is answered: the status and the JSON body.
async fn answer(request: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

async fn put(client: &reqwest::Client, url: &str, body: Vec<u8>) -> (StatusCode, Value) {
    answer(client.put(url).body(body)).await
}

#[tokio::test]
async fn an_upload_is_stored_verified_listed_and_downloaded_whole_or_by_range() {
    let server = web_server().await;
    let (base, client) = (base(&server), client());
    let data = content(300_000);
    let (status, reply) = put(
        &client,
        &format!("{base}/files/report%201.bin"),
        data.clone(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let hash = blake3::hash(&data).to_hex().to_string();
    assert_eq!(
        reply,
        json!({"name": "report 1.bin", "length": 300_000, "hash": hash})
    );
    assert_eq!(
        std::fs::read(server.root().join("report 1.bin")).unwrap(),
        data
    );

    let listed: Value = client
        .get(format!("{base}/api/files"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let entries = listed.as_array().unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["name"], "report 1.bin");
    assert_eq!(entries[0]["length"], 300_000);
    assert!(entries[0]["modified"].as_u64().unwrap() > 1_600_000_000);

    let whole = client
        .get(format!("{base}/files/report%201.bin"))
        .send()
        .await
        .unwrap();
    assert_eq!(whole.status(), StatusCode::OK);
    assert_eq!(whole.headers()["accept-ranges"], "bytes");
    assert_eq!(whole.bytes().await.unwrap(), data);

    let part = client
        .get(format!("{base}/files/report%201.bin"))
        .header("Range", "bytes=1000-1999")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(part.headers()["content-range"], "bytes 1000-1999/300000");
    assert_eq!(part.bytes().await.unwrap(), data[1000..2000]);

    let tail = client
        .get(format!("{base}/files/report%201.bin"))
        .header("Range", "bytes=-10")
        .send()
        .await
        .unwrap();
    assert_eq!(tail.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(tail.bytes().await.unwrap(), data[300_000 - 10..]);

    let beyond = client
        .get(format!("{base}/files/report%201.bin"))
        .header("Range", "bytes=300000-")
        .send()
        .await
        .unwrap();
    assert_eq!(beyond.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(beyond.headers()["content-range"], "bytes */300000");

    let missing = client
        .get(format!("{base}/files/nothing.txt"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let body: Value = missing.json().await.unwrap();
    assert_eq!(body["code"], "not_found");
    server.shutdown().await;
}

#[tokio::test]
async fn a_taken_name_is_409_unless_overwrite_and_bad_names_are_400() {
    let server = web_server().await;
    let (base, client) = (base(&server), client());
    let url = format!("{base}/files/notes.txt");
    assert_eq!(
        put(&client, &url, b"first".to_vec()).await.0,
        StatusCode::CREATED
    );
    let (status, body) = put(&client, &url, b"second".to_vec()).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["code"], "exists");
    assert_eq!(
        std::fs::read(server.root().join("notes.txt")).unwrap(),
        b"first"
    );
    let (status, body) = put(
        &client,
        &format!("{url}?overwrite=true"),
        b"second".to_vec(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(body["length"], 6);
    assert_eq!(
        std::fs::read(server.root().join("notes.txt")).unwrap(),
        b"second"
    );

    // Raw, since a URL library would resolve the dots itself.
    let addr = server.addr(ServiceKind::Http);
    let dots =
        b"PUT /files/%2E%2E HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx";
    let answer = raw_exchange(addr, dots).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("\"bad_name\""), "{answer}");
    for bad in [".sockit", "a%2Fb", "x%2F..%2Fescape", "nul%00"] {
        let (status, body) = put(&client, &format!("{base}/files/{bad}"), b"x".to_vec()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(body["code"], "bad_name", "{bad}");
        let got = client
            .get(format!("{base}/files/{bad}"))
            .send()
            .await
            .unwrap();
        assert_eq!(got.status(), StatusCode::BAD_REQUEST, "{bad}");
    }
    assert!(!server.root().join("escape").exists());
    assert!(!server.root().parent().unwrap().join("escape").exists());
    server.shutdown().await;
}

#[tokio::test]
async fn bad_queries_and_bodies_get_the_framed_error_reply_and_limit_reads_as_in_list() {
    let server = web_server().await;
    let (base, client) = (base(&server), client());
    for name in ["a", "b", "c"] {
        std::fs::write(server.root().join(name), name).unwrap();
    }
    let list = |query: &str| answer(client.get(format!("{base}/api/files{query}")));
    for query in ["?limit=abc", "?limit=-1", "?limit=0", "?limit=1.5"] {
        let (status, body) = list(query).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(body["code"], "bad_request", "{query}: {body}");
    }
    let (status, body) = list("?limit=2").await;
    assert_eq!(
        (status, body.as_array().unwrap().len()),
        (StatusCode::OK, 2)
    );
    let (status, body) = list("?limit=999999999999999999999").await;
    assert_eq!(
        (status, body.as_array().unwrap().len()),
        (StatusCode::OK, 3),
        "past u64: all"
    );

    let response = client
        .put(format!("{base}/files/x?overwrite=perhaps"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        response.json::<Value>().await.unwrap()["code"],
        "bad_request"
    );
    assert!(!server.root().join("x").exists());

    let login = |content_type: Option<&str>, body: &'static str| {
        let mut request = client.post(format!("{base}/api/login")).body(body);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        answer(request)
    };
    let (status, body) = login(None, r#"{"user":"a","password":"b"}"#).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(body["code"], "bad_request");
    let (status, body) = login(Some("application/json"), "{not json").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["code"], "bad_request");
    server.shutdown().await;
}

/// Every file under `dir`, recursively.
fn files_under(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files_under(&path));
        } else {
            found.push(path);
        }
    }
    found
}

#[tokio::test]
async fn a_body_cut_off_half_way_leaves_nothing_under_the_name_nor_a_partial() {
    let server = web_server().await;
    let mut stream = TcpStream::connect(server.addr(ServiceKind::Http))
        .await
        .unwrap();
    let head = "PUT /files/cut.bin HTTP/1.1\r\nHost: test\r\nContent-Length: 1000000\r\n\r\n";
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&content(500_000)).await.unwrap();
    stream.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(stream);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left = files_under(server.root());
        if left.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still there after the cut: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let got = client()
        .get(format!("{}/files/cut.bin", base(&server)))
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), StatusCode::NOT_FOUND);
    server.shutdown().await;
}

/// What the server answers to `request`, up to its closing the connection (or 10 s).
async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    // The server may answer and close before taking everything: a failed write is fine.
    let _ = stream.write_all(request).await;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer));
    let _ = read.await;
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn a_request_head_over_64_kib_gets_431_and_the_connection_closes() {
    let server = web_server().await;
    let addr = server.addr(ServiceKind::Http);
    let big = format!(
        "GET /api/files HTTP/1.1\r\nHost: test\r\nX-Filler: {}\r\n\r\n",
        "a".repeat(70 * 1024)
    );
    let answer = raw_exchange(addr, big.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:.200}");

    // Just under the limit is served.
    let fits = format!(
        "GET /api/files HTTP/1.1\r\nHost: test\r\nConnection: close\r\nX-Filler: {}\r\n\r\n",
        "a".repeat(60 * 1024)
    );
    let answer = raw_exchange(addr, fits.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:.200}");
    server.shutdown().await;
}

#[tokio::test]
async fn curl_style_uploads_without_a_length_are_stored_too() {
    let server = web_server().await;
    let addr = server.addr(ServiceKind::Http);
    let request = b"PUT /files/chunked.txt HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
    let answer = raw_exchange(addr, request).await;
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    assert!(answer.contains(&blake3::hash(b"hello world").to_hex().to_string()));
    assert_eq!(
        std::fs::read(server.root().join("chunked.txt")).unwrap(),
        b"hello world"
    );
    server.shutdown().await;
}

/// A users file with `alice` in a temporary directory.
fn users_file() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let mut file = UsersFile::default();
    file.users.insert(
        "alice".into(),
        Account {
            password: Some(hash_password(PASSWORD).unwrap()),
            keys: Vec::new(),
        },
    );
    let path = dir.path().join("users.toml");
    file.save(&path).unwrap();
    (dir, path)
}

#[tokio::test]
async fn with_accounts_everything_but_the_page_and_login_is_401_until_logged_in() {
    let (_dir, users) = users_file();
    let server = web_server_with(|config| config.users = Some(users)).await;
    let (base, client) = (base(&server), client());

    let page = client.get(format!("{base}/")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.text().await.unwrap().contains("<title>sockit</title>"));
    let script = client
        .get(format!("{base}/assets/app.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(script.status(), StatusCode::OK);
    for path in ["/api/files", "/files/x.txt", "/chat"] {
        let got = client.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(got.status(), StatusCode::UNAUTHORIZED, "{path}");
    }
    let (status, _) = put(&client, &format!("{base}/files/x.txt"), b"x".to_vec()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(!server.root().join("x.txt").exists());

    let wrong = client
        .post(format!("{base}/api/login"))
        .json(&json!({"user": "alice", "password": "wrong"}))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert!(wrong.headers().get("set-cookie").is_none());
    let body: Value = wrong.json().await.unwrap();
    assert_eq!(body["code"], "unauthorized");

    let login = client
        .post(format!("{base}/api/login"))
        .json(&json!({"user": "alice", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), StatusCode::OK);
    let cookie = login.headers()["set-cookie"].to_str().unwrap().to_owned();
    let (token, flags) = cookie.split_once(';').unwrap();
    let token = token.strip_prefix("sockit_session=").unwrap();
    assert_eq!(token.len(), 64, "256 random bits, hex");
    let flags: Vec<&str> = flags.split(';').map(str::trim).collect();
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"] {
        assert!(flags.contains(&flag), "{flag} in {cookie}");
    }
    assert!(!flags.contains(&"Secure"), "plain HTTP: {cookie}");

    let (status, _) = put(&client, &format!("{base}/files/x.txt"), b"x".to_vec()).await;
    assert_eq!(status, StatusCode::CREATED);
    let listed = client
        .get(format!("{base}/api/files"))
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), StatusCode::OK);

    // A cookie the server did not make opens nothing.
    let forged = reqwest::Client::new()
        .get(format!("{base}/api/files"))
        .header("Cookie", format!("sockit_session={}", "0".repeat(64)))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::UNAUTHORIZED);

    let out = client
        .post(format!("{base}/api/logout"))
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), StatusCode::NO_CONTENT);
    let after = client
        .get(format!("{base}/api/files"))
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), StatusCode::UNAUTHORIZED);
    server.shutdown().await;
}

#[tokio::test]
async fn cross_site_requests_that_change_things_are_refused() {
    let server = web_server().await;
    let (base, client) = (base(&server), client());
    let host = server.addr(ServiceKind::Http);
    let foreign = client
        .put(format!("{base}/files/csrf.txt"))
        .header("Origin", "http://evil.example")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), StatusCode::FORBIDDEN);
    let fetch_site = client
        .put(format!("{base}/files/csrf.txt"))
        .header("Sec-Fetch-Site", "cross-site")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(fetch_site.status(), StatusCode::FORBIDDEN);
    assert!(!server.root().join("csrf.txt").exists());
    let same = client
        .put(format!("{base}/files/csrf.txt"))
        .header("Origin", format!("http://{host}"))
        .header("Sec-Fetch-Site", "same-origin")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(same.status(), StatusCode::CREATED);
    server.shutdown().await;
}

#[tokio::test]
async fn https_serves_the_same_api_with_secure_cookies() {
    let (_dir, users) = users_file();
    let server = TestServer::start_with(|config| {
        config.add_listener(ServiceKind::Https, "127.0.0.1:0".parse().unwrap());
        config.users = Some(users);
    })
    .await;
    let base = format!("https://{}", server.addr(ServiceKind::Https));
    let client = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .cookie_store(true)
        .build()
        .unwrap();
    let login = client
        .post(format!("{base}/api/login"))
        .json(&json!({"user": "alice", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), StatusCode::OK);
    let cookie = login.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cookie.split(';').any(|flag| flag.trim() == "Secure"),
        "{cookie}"
    );
    let (status, reply) = put(
        &client,
        &format!("{base}/files/tls.txt"),
        b"secret".to_vec(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{reply}");
    let got = client
        .get(format!("{base}/files/tls.txt"))
        .send()
        .await
        .unwrap();
    assert_eq!(got.bytes().await.unwrap(), &b"secret"[..]);
    server.shutdown().await;
}
