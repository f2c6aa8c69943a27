//! Resumable uploads over HTTP (tus 1.0 core with creation) over real sockets: an upload cut
//! half-way resumes where it stopped and lands through the store's atomic, verified path, and
//! nothing shows under the name until it is whole.

mod common;

use std::time::Duration;

use common::TestServer;
use reqwest::StatusCode;
use sockit::server::ServiceKind;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

async fn web_server() -> TestServer {
    TestServer::start_with(|config| {
        config.add_listener(ServiceKind::Http, "127.0.0.1:0".parse().unwrap());
    })
    .await
}

fn content(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 13 % 253) as u8).collect()
}

/// Standard base64, as tus metadata carries values.
fn base64(data: &[u8]) -> String {
    const DIGITS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for group in data.chunks(3) {
        let mut acc = 0u32;
        for (i, &byte) in group.iter().enumerate() {
            acc |= u32::from(byte) << (16 - 8 * i);
        }
        for i in 0..4 {
            if i <= group.len() {
                out.push(char::from(DIGITS[(acc >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

async fn create(
    client: &reqwest::Client,
    base: &str,
    name: &str,
    length: u64,
) -> reqwest::Response {
    client
        .post(format!("{base}/api/uploads"))
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Length", length.to_string())
        .header(
            "Upload-Metadata",
            format!("filename {}", base64(name.as_bytes())),
        )
        .send()
        .await
        .unwrap()
}

async fn offset(client: &reqwest::Client, url: &str) -> u64 {
    let response = client
        .head(url)
        .header("Tus-Resumable", "1.0.0")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["tus-resumable"], "1.0.0");
    response.headers()["upload-offset"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

async fn patch(client: &reqwest::Client, url: &str, at: u64, body: Vec<u8>) -> reqwest::Response {
    client
        .patch(url)
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Offset", at.to_string())
        .header("Content-Type", "application/offset+octet-stream")
        .body(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn an_upload_cut_half_way_resumes_where_it_stopped_and_is_stored_verified() {
    let server = web_server().await;
    let addr = server.addr(ServiceKind::Http);
    let base = format!("http://{addr}");
    let client = reqwest::Client::new();
    let data = content(3_000_000);

    let options = client
        .request(reqwest::Method::OPTIONS, format!("{base}/api/uploads"))
        .send()
        .await
        .unwrap();
    assert_eq!(options.headers()["tus-version"], "1.0.0");
    assert_eq!(options.headers()["tus-extension"], "creation");

    let created = create(&client, &base, "big file.bin", data.len() as u64).await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let location = created.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.starts_with("/api/uploads/"), "{location}");
    let url = format!("{base}{location}");
    assert_eq!(offset(&client, &url).await, 0);

    // Half the body, then the connection drops.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "PATCH {location} HTTP/1.1\r\nHost: {addr}\r\nTus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\n\
         Content-Type: application/offset+octet-stream\r\nContent-Length: {}\r\n\r\n",
        data.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&data[..1_500_000]).await.unwrap();
    stream.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(stream);

    // What arrived is held, out of sight.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let held = loop {
        let first = offset(&client, &url).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let second = offset(&client, &url).await;
        if first > 0 && first == second {
            break second;
        }
        assert!(tokio::time::Instant::now() < deadline, "nothing held");
    };
    assert!(held <= 1_500_000, "{held}");
    let hidden = client
        .get(format!("{base}/files/big%20file.bin"))
        .send()
        .await
        .unwrap();
    assert_eq!(hidden.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        client
            .get(format!("{base}/api/files"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "[]"
    );

    // A PATCH at another offset is refused; at the held one, it completes the file.
    let wrong = patch(&client, &url, held + 1, data[held as usize + 1..].to_vec()).await;
    assert_eq!(wrong.status(), StatusCode::CONFLICT);
    let done = patch(&client, &url, held, data[held as usize..].to_vec()).await;
    assert_eq!(done.status(), StatusCode::NO_CONTENT);
    assert_eq!(done.headers()["upload-offset"], data.len().to_string());
    assert_eq!(
        std::fs::read(server.root().join("big file.bin")).unwrap(),
        data
    );
    assert_eq!(offset(&client, &url).await, data.len() as u64);

    // The stored file's hash is the one recorded, as for any upload.
    let got = client
        .get(format!("{base}/files/big%20file.bin"))
        .send()
        .await
        .unwrap();
    let etag = got.headers()["etag"].to_str().unwrap().to_owned();
    assert_eq!(etag, format!("\"{}\"", blake3::hash(&data).to_hex()));
    assert_eq!(got.bytes().await.unwrap(), data);
    server.shutdown().await;
}

#[tokio::test]
async fn uploads_in_pieces_names_taken_bad_names_and_wrong_bodies() {
    let server = web_server().await;
    let base = format!("http://{}", server.addr(ServiceKind::Http));
    let client = reqwest::Client::new();

    let created = create(&client, &base, "pieces.txt", 11).await;
    let url = format!("{base}{}", created.headers()["location"].to_str().unwrap());
    let first = patch(&client, &url, 0, b"hello".to_vec()).await;
    assert_eq!(first.status(), StatusCode::NO_CONTENT);
    assert_eq!(first.headers()["upload-offset"], "5");
    assert!(!server.root().join("pieces.txt").exists());
    let second = patch(&client, &url, 5, b" world".to_vec()).await;
    assert_eq!(second.headers()["upload-offset"], "11");
    assert_eq!(
        std::fs::read(server.root().join("pieces.txt")).unwrap(),
        b"hello world"
    );

    let taken = create(&client, &base, "pieces.txt", 3).await;
    assert_eq!(taken.status(), StatusCode::CONFLICT);
    let bad = create(&client, &base, "../escape", 3).await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let nameless = client
        .post(format!("{base}/api/uploads"))
        .header("Upload-Length", "3")
        .send()
        .await
        .unwrap();
    assert_eq!(nameless.status(), StatusCode::BAD_REQUEST);

    let created = create(&client, &base, "typed.txt", 3).await;
    let url = format!("{base}{}", created.headers()["location"].to_str().unwrap());
    let untyped = client
        .patch(&url)
        .header("Upload-Offset", "0")
        .body("abc")
        .send()
        .await
        .unwrap();
    assert_eq!(untyped.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let too_long = patch(&client, &url, 0, b"abcd".to_vec()).await;
    assert_eq!(too_long.status(), StatusCode::BAD_REQUEST);
    let old_version = client
        .head(&url)
        .header("Tus-Resumable", "0.2.2")
        .send()
        .await
        .unwrap();
    assert_eq!(old_version.status(), StatusCode::PRECONDITION_FAILED);

    let empty = create(&client, &base, "empty.txt", 0).await;
    assert_eq!(empty.status(), StatusCode::CREATED);
    assert_eq!(std::fs::read(server.root().join("empty.txt")).unwrap(), b"");
    server.shutdown().await;
}
