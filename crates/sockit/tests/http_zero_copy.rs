//! Downloads on a plain HTTP connection, sent with `sendfile` until the first request that is
//! not a download, then served by hyper: over raw TCP, where the order and the exact bytes of
//! the answers matter.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::TestServer;
use sockit::auth::users::{hash_password, Account, UsersFile};
use sockit::server::ServiceKind;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Bytes that tell their positions apart.
fn content(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

/// One response: its status, its header fields (names in lower case) and its body.
#[derive(Debug)]
struct Answer {
    status: u16,
    fields: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(field, _)| field == name)
            .map(|(_, value)| value.as_str())
    }
}

/// Reads the next response on `stream`, whose body has a `Content-Length`.
async fn next_answer(stream: &mut BufReader<TcpStream>) -> Answer {
    let mut line = String::new();
    stream.read_line(&mut line).await.unwrap();
    let status = line
        .strip_prefix("HTTP/1.1 ")
        .unwrap_or_else(|| panic!("not a status line: {line:?}"))[..3]
        .parse()
        .unwrap();
    let mut fields = Vec::new();
    loop {
        line.clear();
        stream.read_line(&mut line).await.unwrap();
        let field = line.trim_end_matches("\r\n");
        if field.is_empty() {
            break;
        }
        let (name, value) = field.split_once(": ").unwrap();
        fields.push((name.to_ascii_lowercase(), value.to_owned()));
    }
    let mut answer = Answer {
        status,
        fields,
        body: Vec::new(),
    };
    let length: usize = answer.field("content-length").unwrap().parse().unwrap();
    answer.body = vec![0; length];
    stream.read_exact(&mut answer.body).await.unwrap();
    answer
}

async fn web_server() -> TestServer {
    TestServer::start_with(|config| {
        config.add_listener(ServiceKind::Http, "127.0.0.1:0".parse().unwrap());
    })
    .await
}

async fn connect(addr: SocketAddr) -> BufReader<TcpStream> {
    BufReader::new(TcpStream::connect(addr).await.unwrap())
}

#[tokio::test]
async fn pipelined_downloads_are_answered_in_order_then_hyper_serves_the_rest() {
    let server = web_server().await;
    let big = content(5 * 1024 * 1024 + 13);
    std::fs::write(server.root().join("big.bin"), &big).unwrap();
    std::fs::write(server.root().join("empty"), b"").unwrap();
    let mut stream = connect(server.addr(ServiceKind::Http)).await;
    let requests = concat!(
        "GET /files/big.bin HTTP/1.1\r\nHost: t\r\n\r\n",
        "GET /files/big.bin HTTP/1.1\r\nHost: t\r\nRange: bytes=1000-1009\r\n\r\n",
        "GET /files/big.bin HTTP/1.1\r\nHost: t\r\nRange: bytes=99999999-\r\n\r\n",
        "GET /files/empty HTTP/1.1\r\nHost: t\r\n\r\n",
        "GET /files/absent HTTP/1.1\r\nHost: t\r\n\r\n",
        // Not a download: hyper takes the connection here, with what is already read...
        "PUT /files/up.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello",
        // ...and serves downloads too from then on.
        "GET /files/up.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    stream
        .get_mut()
        .write_all(requests.as_bytes())
        .await
        .unwrap();

    let whole = next_answer(&mut stream).await;
    assert_eq!(whole.status, 200);
    assert_eq!(
        whole.field("content-type"),
        Some("application/octet-stream")
    );
    assert_eq!(whole.field("accept-ranges"), Some("bytes"));
    let etag = format!("\"{}\"", blake3::hash(&big).to_hex());
    assert_eq!(whole.field("etag"), Some(etag.as_str()));
    assert!(whole
        .field("date")
        .is_some_and(|date| date.ends_with(" GMT")));
    assert!(whole.body == big, "the whole file, byte for byte");

    let part = next_answer(&mut stream).await;
    assert_eq!(part.status, 206);
    assert_eq!(
        part.field("content-range"),
        Some(format!("bytes 1000-1009/{}", big.len()).as_str())
    );
    assert_eq!(part.body, big[1000..1010]);

    let beyond = next_answer(&mut stream).await;
    assert_eq!(beyond.status, 416);
    assert_eq!(
        beyond.field("content-range"),
        Some(format!("bytes */{}", big.len()).as_str())
    );
    assert!(beyond.body.is_empty());

    let empty = next_answer(&mut stream).await;
    assert_eq!((empty.status, empty.body.len()), (200, 0));

    let absent = next_answer(&mut stream).await;
    assert_eq!(absent.status, 404);
    assert_eq!(
        absent.body,
        br#"{"code":"not_found","error":"no file named \"absent\""}"#
    );

    let stored = next_answer(&mut stream).await;
    assert_eq!(
        stored.status,
        201,
        "{:?}",
        String::from_utf8_lossy(&stored.body)
    );
    let got = next_answer(&mut stream).await;
    assert_eq!((got.status, got.body.as_slice()), (200, &b"hello"[..]));

    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty(), "closed after Connection: close");
    server.shutdown().await;
}

#[tokio::test]
async fn connection_close_ends_the_connection_after_a_download() {
    let server = web_server().await;
    std::fs::write(server.root().join("a.txt"), b"abc").unwrap();
    let mut stream = connect(server.addr(ServiceKind::Http)).await;
    let request = "GET /files/a.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n\
                   GET /files/a.txt HTTP/1.1\r\nHost: t\r\n\r\n";
    stream
        .get_mut()
        .write_all(request.as_bytes())
        .await
        .unwrap();
    let answer = next_answer(&mut stream).await;
    assert_eq!((answer.status, answer.body.as_slice()), (200, &b"abc"[..]));
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest));
    // Closed with the second request unread: an end of stream or a reset, and no answer.
    let _ = read.await.expect("closed");
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
    server.shutdown().await;
}

#[tokio::test]
async fn heads_this_path_does_not_take_are_answered_by_hyper() {
    let server = web_server().await;
    std::fs::write(server.root().join("a.txt"), b"abc").unwrap();
    let addr = server.addr(ServiceKind::Http);
    let exchange = |request: String| async move {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let _ = stream.write_all(request.as_bytes()).await;
        let mut answer = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer));
        let _ = read.await;
        String::from_utf8_lossy(&answer).into_owned()
    };
    // A head too large for the download path, and over the limit: 431 from hyper.
    let huge = exchange(format!(
        "GET /files/a.txt HTTP/1.1\r\nHost: t\r\nX-Filler: {}\r\n\r\n",
        "a".repeat(70 * 1024)
    ))
    .await;
    assert!(huge.starts_with("HTTP/1.1 431"), "{huge:.200}");
    // Too large for the download path but within the limit: served.
    let large = exchange(format!(
        "GET /files/a.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\nX-Filler: {}\r\n\r\n",
        "a".repeat(20 * 1024)
    ))
    .await;
    assert!(large.starts_with("HTTP/1.1 200"), "{large:.200}");
    assert!(large.ends_with("\r\n\r\nabc"), "{large:.200}");
    // HTTP/1.0, HEAD and a malformed head.
    let old = exchange("GET /files/a.txt HTTP/1.0\r\n\r\n".into()).await;
    assert!(old.starts_with("HTTP/1.0 200"), "{old:.200}");
    assert!(old.ends_with("abc"), "{old:.200}");
    let head =
        exchange("HEAD /files/a.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".into()).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head:.200}");
    assert!(head.contains("content-length: 3\r\n"), "{head:.200}");
    assert!(head.ends_with("\r\n\r\n"), "no body: {head:.200}");
    let bad = exchange("GET /files/a.txt HTTP/1.1\r\nBad Field\r\n\r\n".into()).await;
    assert!(bad.starts_with("HTTP/1.1 400"), "{bad:.200}");
    server.shutdown().await;
}

#[tokio::test]
async fn a_client_gone_mid_download_gives_its_slot_back() {
    let server = TestServer::start_with(|config| {
        config.add_listener(ServiceKind::Http, "127.0.0.1:0".parse().unwrap());
        config.transfers.max_per_source = 1;
        config.transfers.wait = Duration::from_millis(200);
    })
    .await;
    let addr = server.addr(ServiceKind::Http);
    std::fs::write(server.root().join("big.bin"), content(64 * 1024 * 1024)).unwrap();
    let mut gone = connect(addr).await;
    gone.get_mut()
        .write_all(b"GET /files/big.bin HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let mut some = vec![0; 1024 * 1024];
    gone.read_exact(&mut some).await.unwrap();
    drop(gone);
    // The sending thread finds the socket closed, ends, and the address's one slot is free.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let mut stream = connect(addr).await;
        stream
            .get_mut()
            .write_all(b"GET /files/big.bin HTTP/1.1\r\nHost: t\r\nRange: bytes=0-1\r\n\r\n")
            .await
            .unwrap();
        let answer = next_answer(&mut stream).await;
        if answer.status == 206 {
            break;
        }
        assert_eq!(answer.status, 503);
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slot never came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.shutdown().await;
}

#[tokio::test]
async fn with_accounts_a_download_needs_the_session_cookie() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.toml");
    let mut file = UsersFile::default();
    let account = Account {
        password: Some(hash_password("pw-for-ann-123").unwrap()),
        keys: Vec::new(),
    };
    file.users.insert("ann".into(), account);
    file.save(&users).unwrap();
    let server = TestServer::start_with(|config| {
        config.add_listener(ServiceKind::Http, "127.0.0.1:0".parse().unwrap());
        config.users = Some(users.clone());
    })
    .await;
    std::fs::write(server.root().join("a.txt"), b"abc").unwrap();
    let mut stream = connect(server.addr(ServiceKind::Http)).await;
    stream
        .get_mut()
        .write_all(b"GET /files/a.txt HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let refused = next_answer(&mut stream).await;
    assert_eq!(refused.status, 401);
    assert!(refused.body.starts_with(br#"{"code":"unauthorized""#));
    let body = r#"{"user":"ann","password":"pw-for-ann-123"}"#;
    let login = format!(
        "POST /api/login HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.get_mut().write_all(login.as_bytes()).await.unwrap();
    let logged_in = next_answer(&mut stream).await;
    assert_eq!(logged_in.status, 200);
    let cookie = logged_in.field("set-cookie").unwrap();
    let cookie = cookie.split(';').next().unwrap();
    // A new connection, so that the download path answers it.
    let mut stream = connect(server.addr(ServiceKind::Http)).await;
    let request = format!("GET /files/a.txt HTTP/1.1\r\nHost: t\r\nCookie: {cookie}\r\n\r\n");
    stream
        .get_mut()
        .write_all(request.as_bytes())
        .await
        .unwrap();
    let served = next_answer(&mut stream).await;
    assert_eq!((served.status, served.body.as_slice()), (200, &b"abc"[..]));
    server.shutdown().await;
}

#[tokio::test]
async fn a_resume_of_a_file_replaced_meanwhile_gets_the_whole_new_file() {
    let server = web_server().await;
    let addr = server.addr(ServiceKind::Http);
    std::fs::write(server.root().join("doc.bin"), content(10_000)).unwrap();
    let get = |extra: String| async move {
        let mut stream = connect(addr).await;
        let request = format!("GET /files/doc.bin HTTP/1.1\r\nHost: t\r\n{extra}\r\n");
        stream
            .get_mut()
            .write_all(request.as_bytes())
            .await
            .unwrap();
        next_answer(&mut stream).await
    };
    let first = get(String::new()).await;
    let etag = first.field("etag").unwrap().to_owned();
    let date = first.field("last-modified").unwrap().to_owned();
    assert!(date.ends_with(" GMT"), "{date}");

    // The same file: the range, by its tag or its date.
    for validator in [&etag, &date] {
        let part = get(format!("Range: bytes=100-\r\nIf-Range: {validator}\r\n")).await;
        assert_eq!(part.status, 206, "{validator}");
        assert_eq!(part.body, content(10_000)[100..]);
    }

    // Replaced (another length and content, a later date): the whole new file, not its tail.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let new: Vec<u8> = content(12_000).into_iter().map(|b| b ^ 0x5a).collect();
    std::fs::write(server.root().join("doc.bin"), &new).unwrap();
    for validator in [&etag, &date, &format!("W/{etag}")] {
        let whole = get(format!("Range: bytes=100-\r\nIf-Range: {validator}\r\n")).await;
        assert_eq!(whole.status, 200, "{validator}");
        assert!(whole.body == new, "{validator}: the whole new file");
    }
    server.shutdown().await;
}
