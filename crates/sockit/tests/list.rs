//! `list` page by page over real loopback sockets: every entry of a store larger than one page,
//! in name order; exact pages after a cursor; the 8 MiB cap on a page's body; refused fields; and
//! the reply of a request that knows nothing of paging.

mod common;

use std::fs::File;
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use common::{frame, send_and_read, TestServer};
use serde_json::{json, Value};
use sockit::{Client, ClientError};

/// The most entries in one page, and the default page size.
const MAX_LIST_ENTRIES: usize = 100_000;
/// The most bytes in one page's body: 8 MiB.
const MAX_LIST_PAGE_BYTES: usize = 8 * 1024 * 1024;

/// Creates an empty file for each name, straight in the store's root.
fn create_files(root: &Path, names: &[String]) {
    for name in names {
        File::create(root.join(name)).unwrap();
    }
}

/// The names, sorted as `list` sorts them: by the bytes of their UTF-8.
fn sorted(mut names: Vec<String>) -> Vec<String> {
    names.sort_unstable();
    names
}

fn names_of(entries: &[Value]) -> Vec<String> {
    entries
        .iter()
        .map(|entry| entry["name"].as_str().unwrap().to_owned())
        .collect()
}

async fn client(server: &TestServer) -> Client {
    Client::connect(&server.tcp().to_string()).await.unwrap()
}

/// Sends one `list` request with `fields` as a raw frame; returns the reply header and the
/// entries of its body.
async fn raw_list(stream: &mut tokio::net::TcpStream, fields: Value) -> (Value, Vec<Value>) {
    let mut header = json!({"op": "list"});
    header
        .as_object_mut()
        .unwrap()
        .extend(fields.as_object().unwrap().clone());
    let (reply, body) = send_and_read(stream, &frame(&header.to_string(), b"")).await;
    assert_eq!(reply["ok"], true, "{reply}");
    assert_eq!(reply["size"], body.len(), "{reply}");
    let entries: Vec<Value> = serde_json::from_slice(&body).unwrap();
    assert_eq!(reply["count"], entries.len(), "{reply}");
    (reply, entries)
}

#[tokio::test]
async fn client_list_returns_every_one_of_100005_files_in_name_order() {
    let server = TestServer::start().await;
    // Unpadded numbers, so name order is not number order ("f10" < "f2").
    let names: Vec<String> = (0..100_005).map(|i| format!("f{i}")).collect();
    create_files(server.root(), &names);
    let expected = sorted(names);

    let mut stream = server.connect().await;
    let (reply, entries) = raw_list(&mut stream, json!({})).await;
    assert_eq!(
        (reply["count"].clone(), reply["more"].clone()),
        (json!(100_000), json!(true))
    );
    assert_eq!(names_of(&entries), expected[..MAX_LIST_ENTRIES]);

    let (reply, _) = raw_list(&mut stream, json!({"limit": 250_000})).await;
    assert_eq!(reply["count"], 100_000, "a larger limit is clamped");

    let after = &expected[MAX_LIST_ENTRIES - 1];
    let (reply, entries) = raw_list(&mut stream, json!({"after": after})).await;
    assert_eq!(reply["more"], false);
    assert_eq!(names_of(&entries), expected[MAX_LIST_ENTRIES..]);

    let listed = client(&server).await.list().await.unwrap();
    let listed: Vec<String> = listed.into_iter().map(|file| file.name).collect();
    assert_eq!(listed.len(), 100_005);
    assert!(listed == expected, "not every name, or not in order");
}

#[tokio::test]
async fn pages_after_a_name_hold_exactly_limit_entries_and_say_whether_more_follow() {
    let server = TestServer::start().await;
    let names: Vec<String> = ["b", "a", "é", "Z", "d", "c", "f", "e"]
        .map(str::to_owned)
        .to_vec();
    create_files(server.root(), &names);
    // Neither a link nor a directory is listed, nor counts as more to come.
    std::os::unix::fs::symlink(server.root().join("a"), server.root().join("zz-link")).unwrap();
    std::fs::create_dir(server.root().join("zz-dir")).unwrap();
    let expected = sorted(names);
    assert_eq!(expected, ["Z", "a", "b", "c", "d", "e", "f", "é"]);

    let mut client = client(&server).await;
    let page_names = |page: &sockit::client::FilePage| -> Vec<String> {
        page.files.iter().map(|file| file.name.clone()).collect()
    };
    let page = client.list_page(None, Some(3)).await.unwrap();
    assert_eq!(
        (page_names(&page), page.more),
        (vec!["Z".into(), "a".into(), "b".into()], true)
    );
    let page = client.list_page(Some("b"), Some(3)).await.unwrap();
    assert_eq!(
        (page_names(&page), page.more),
        (vec!["c".into(), "d".into(), "e".into()], true)
    );
    let page = client.list_page(Some("e"), Some(3)).await.unwrap();
    assert_eq!(
        (page_names(&page), page.more),
        (vec!["f".into(), "é".into()], false)
    );
    // A page that takes exactly what is left says nothing more follows.
    let page = client.list_page(Some("d"), Some(3)).await.unwrap();
    assert_eq!(
        (page_names(&page), page.more),
        (vec!["e".into(), "f".into(), "é".into()], false)
    );
    // The cursor need not be a stored name, and "" is before every name.
    let page = client.list_page(Some("c5"), Some(1)).await.unwrap();
    assert_eq!((page_names(&page), page.more), (vec!["d".into()], true));
    let page = client.list_page(Some(""), None).await.unwrap();
    assert_eq!((page_names(&page), page.more), (expected.clone(), false));
    let page = client.list_page(Some("é"), None).await.unwrap();
    assert_eq!((page.files.len(), page.more), (0, false));

    let mut walked = Vec::new();
    let mut pages = client.list_pages(Some(2));
    while let Some(page) = pages.next().await.unwrap() {
        assert!(!page.is_empty() && page.len() <= 2, "{page:?}");
        walked.extend(page.into_iter().map(|file| file.name));
    }
    assert_eq!(walked, expected);
}

#[tokio::test]
async fn a_page_stops_before_8_mib_and_the_next_page_goes_on() {
    let server = TestServer::start().await;
    // 40,000 entries of about 290 bytes: some 11 MiB of JSON, more than one page.
    let names: Vec<String> = (0..40_000)
        .map(|i| format!("{i:05}{}", "n".repeat(245)))
        .collect();
    assert_eq!(names[0].len(), 250);
    create_files(server.root(), &names);
    let expected = sorted(names);

    let mut stream = server.connect().await;
    let mut walked = Vec::new();
    let mut pages = 0;
    let mut after: Option<String> = None;
    loop {
        let fields = after
            .as_ref()
            .map_or(json!({}), |after| json!({"after": after}));
        let (reply, entries) = raw_list(&mut stream, fields).await;
        let size = reply["size"].as_u64().unwrap();
        assert!(size <= MAX_LIST_PAGE_BYTES as u64, "page of {size} bytes");
        pages += 1;
        walked.extend(names_of(&entries));
        after = walked.last().cloned();
        if reply["more"] == false {
            break;
        }
        // A full page ends near the cap, not far below it.
        assert!(
            size > MAX_LIST_PAGE_BYTES as u64 - 1024,
            "page of {size} bytes"
        );
    }
    assert!(pages >= 2, "{pages} page(s)");
    assert!(walked == expected, "not every entry exactly once, in order");

    let listed = client(&server).await.list().await.unwrap();
    assert_eq!(listed.len(), 40_000);
}

#[tokio::test]
async fn a_zero_or_non_integer_limit_and_a_non_string_after_are_bad_request() {
    let server = TestServer::start().await;
    create_files(server.root(), &["a".to_owned()]);
    let mut stream = server.connect().await;
    let refused = [
        json!({"limit": 0}),
        json!({"limit": -1}),
        json!({"limit": 1.5}),
        json!({"limit": 1e3}),
        json!({"limit": "3"}),
        json!({"limit": true}),
        json!({"limit": [1]}),
        json!({"after": 5}),
        json!({"after": true}),
        json!({"after": ["a"]}),
        json!({"after": {"name": "a"}}),
    ];
    for fields in refused {
        let mut header = json!({"op": "list", "id": "x"});
        header
            .as_object_mut()
            .unwrap()
            .extend(fields.as_object().unwrap().clone());
        let (reply, body) = send_and_read(&mut stream, &frame(&header.to_string(), b"")).await;
        assert_eq!(reply["code"], "bad_request", "{fields}: {reply}");
        assert_eq!(reply["id"], "x", "{fields}: {reply}");
        assert!(body.is_empty());
    }
    // A limit past any integer type is simply more than a page holds.
    let huge = frame(
        r#"{"op":"list","limit":123456789012345678901234567890}"#,
        b"",
    );
    let (reply, _) = send_and_read(&mut stream, &huge).await;
    assert_eq!(
        (reply["ok"].clone(), reply["count"].clone()),
        (json!(true), json!(1)),
        "{reply}"
    );
    // The connection is still in step; null counts as absent.
    let (reply, entries) = raw_list(&mut stream, json!({"after": null, "limit": null})).await;
    assert_eq!(
        (reply["more"].clone(), names_of(&entries)),
        (json!(false), vec!["a".to_owned()])
    );

    let err = client(&server)
        .await
        .list_page(None, Some(0))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ClientError::Remote { code, .. } if *code == sockit::proto::ErrorCode::BadRequest),
        "{err}"
    );
}

#[tokio::test]
async fn a_list_without_paging_fields_gets_one_json_array_as_before() {
    let server = TestServer::start().await;
    let root = server.root();
    let modified = UNIX_EPOCH + Duration::from_secs(1_795_320_267);
    for (name, length) in [("b.bin", 70_000), ("a.txt", 6)] {
        let file = File::create(root.join(name)).unwrap();
        file.set_len(length).unwrap();
        file.set_modified(modified).unwrap();
    }
    std::os::unix::fs::symlink(root.join("a.txt"), root.join("c-link")).unwrap();
    std::fs::create_dir(root.join("d-dir")).unwrap();

    let mut stream = server.connect().await;
    let request = frame(r#"{"op":"list","id":7}"#, b"");
    let (reply, body) = send_and_read(&mut stream, &request).await;
    assert_eq!(
        reply,
        json!({"ok": true, "id": 7, "count": 2, "more": false, "size": body.len()})
    );
    assert_eq!(
        String::from_utf8(body).unwrap(),
        r#"[{"name":"a.txt","length":6,"modified":1795320267},{"name":"b.bin","length":70000,"modified":1795320267}]"#
    );
}
