//! `sockit ls` end to end: every entry of a store larger than one page, output unchanged for a
//! small store, and a listing cut short by the server failing with a non-zero exit.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Output};
use std::time::{Duration, UNIX_EPOCH};

use common::{Serve, SOCKIT};

impl Serve {
    /// `sockit ls` with `extra` arguments against this server.
    fn ls(&self, extra: &[&str]) -> Output {
        ls(self.addr("tcp"), extra)
    }
}

fn ls(server: SocketAddr, extra: &[&str]) -> Output {
    Command::new(SOCKIT)
        .args(["ls", "--server", &server.to_string()])
        .args(extra)
        .output()
        .unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

#[test]
fn ls_and_ls_json_list_every_one_of_100005_files() {
    let serve = Serve::start(&[]);
    let mut names: Vec<String> = (0..100_005).map(|i| format!("f{i}")).collect();
    for name in &names {
        std::fs::File::create(serve.root().join(name)).unwrap();
    }
    names.sort_unstable();

    let output = serve.ls(&[]);
    assert!(output.status.success(), "{output:?}");
    let text = stdout(&output);
    let listed: Vec<&str> = text
        .lines()
        .map(|line| line.rsplit("  ").next().unwrap())
        .collect();
    assert_eq!(listed.len(), 100_005);
    assert!(listed == names, "not every name, or not in order");

    let output = serve.ls(&["--json"]);
    assert!(output.status.success(), "{output:?}");
    assert!(output.stdout.ends_with(b"]\n"));
    let entries: Vec<serde_json::Value> = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(entries.len(), 100_005);
    assert!(
        entries
            .iter()
            .zip(&names)
            .all(|(e, name)| e["name"] == **name),
        "not every name, or not in order"
    );
}

#[test]
fn ls_of_a_small_store_prints_exactly_what_it_always_printed() {
    let serve = Serve::start(&[]);
    assert_eq!(stdout(&serve.ls(&[])), "");
    assert_eq!(stdout(&serve.ls(&["--json"])), "[]\n");

    let modified = UNIX_EPOCH + Duration::from_secs(1_795_320_267);
    for (name, length) in [("b.bin", 70_000), ("a.txt", 6), ("日本.txt", 123)] {
        let file = std::fs::File::create(serve.root().join(name)).unwrap();
        file.set_len(length).unwrap();
        file.set_modified(modified).unwrap();
    }
    let output = serve.ls(&[]);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        stdout(&output),
        concat!(
            "    6  2026-11-22T04:04:27Z  a.txt\n",
            "70000  2026-11-22T04:04:27Z  b.bin\n",
            "  123  2026-11-22T04:04:27Z  日本.txt\n",
        )
    );
    let output = serve.ls(&["--json"]);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        stdout(&output),
        concat!(
            r#"[{"name":"a.txt","length":6,"modified":1795320267},"#,
            r#"{"name":"b.bin","length":70000,"modified":1795320267},"#,
            r#"{"name":"日本.txt","length":123,"modified":1795320267}]"#,
            "\n"
        )
    );
}

/// Reads one request frame (header only) from `stream`; `None` at end of stream.
fn read_request(stream: &mut TcpStream) -> Option<serde_json::Value> {
    let mut prefix = [0u8; 4];
    stream.read_exact(&mut prefix).ok()?;
    let mut header = vec![0u8; i32::from_le_bytes(prefix) as usize];
    stream.read_exact(&mut header).ok()?;
    Some(serde_json::from_slice(&header).unwrap())
}

/// A server without accounts that answers the first `list` with one entry and `more: true`,
/// then closes the connection when asked for the next page. Returns its address.
fn server_that_fails_after_one_page() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let mut stream = stream.unwrap();
            let mut request = read_request(&mut stream).unwrap();
            if request["op"] == "challenge" {
                // The client asks whether to log in: this server has no accounts.
                let header = r#"{"ok":false,"code":"disabled","error":"no accounts"}"#;
                let mut reply = (header.len() as i32).to_le_bytes().to_vec();
                reply.extend_from_slice(header.as_bytes());
                stream.write_all(&reply).unwrap();
                request = read_request(&mut stream).unwrap();
            }
            assert_eq!(request["op"], "list", "{request}");
            let body = br#"[{"name":"a.txt","length":6,"modified":1795320267}]"#;
            let header = format!(
                r#"{{"ok":true,"count":1,"more":true,"size":{}}}"#,
                body.len()
            );
            let mut reply = (header.len() as i32).to_le_bytes().to_vec();
            reply.extend_from_slice(header.as_bytes());
            reply.extend_from_slice(body);
            stream.write_all(&reply).unwrap();
            let next = read_request(&mut stream).unwrap();
            assert_eq!(next["after"], "a.txt", "{next}");
        }
    });
    addr
}

#[test]
fn ls_cut_short_by_the_server_exits_non_zero_with_one_line() {
    let server = server_that_fails_after_one_page();
    for (extra, printed) in [
        (&[][..], "6  2026-11-22T04:04:27Z  a.txt\n"),
        (
            &["--json"][..],
            r#"[{"name":"a.txt","length":6,"modified":1795320267}"#,
        ),
    ] {
        let output = ls(server, extra);
        assert_eq!(output.status.code(), Some(1), "{extra:?}: {output:?}");
        assert_eq!(stdout(&output), printed, "the first page, as it arrived");
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.starts_with("sockit: ") && stderr.contains("closed the connection"),
            "{stderr}"
        );
    }
}
