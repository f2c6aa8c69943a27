//! The fast path for plain headers and the general parser give the same answer for any header
//! text: the same header (op, id, body length, envelope error) or the same error.

use bytes::Bytes;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use sockit_proto::{Header, Limits};

/// Keys, envelope and not, spelled plainly and otherwise.
const KEYS: &[&str] = &[
    "ok",
    "op",
    "id",
    "size",
    "file_size",
    "total_size",
    "data_size",
    "name",
    "x",
    "",
    "o\\u0070",
    "op ",
    "siz\\u0065",
    "é",
];

/// Values of every JSON kind, plain and otherwise, good and bad.
const VALUES: &[&str] = &[
    "\"echo\"",
    "\"ping\"",
    "\"\"",
    "7",
    "0",
    "-0",
    "-1",
    "007",
    "1.5",
    "1e3",
    "1E3",
    "-",
    "true",
    "false",
    "null",
    "tru",
    "nulls",
    "\"a\\\"b\"",
    "\"é\"",
    "\"\\u0041\"",
    "[]",
    "[1]",
    "{}",
    "{\"a\":1}",
    "18446744073709551615",
    "18446744073709551616",
    "99999999999999999999999",
    "\"\u{7f}\"",
    "\"tab\there\"",
    "\"x",
    "",
];

/// Whitespace, JSON's and not.
const SPACES: &[&str] = &["", "", "", " ", "\n", "\t", "\r", "\u{a0}", "\u{b}"];

fn pick(options: &'static [&'static str]) -> impl Strategy<Value = &'static str> {
    proptest::sample::select(options)
}

/// One `key: value` member, with whitespace around each token.
fn member() -> impl Strategy<Value = String> {
    (
        pick(KEYS),
        pick(VALUES),
        proptest::collection::vec(pick(SPACES), 4),
        "[a-z0-9]{0,300}",
    )
        .prop_map(|(key, value, spaces, long)| {
            let value = match value {
                // Now and then an id or string around the length limit of an id.
                "\"\"" if long.len() > 200 => format!("\"{long}\""),
                other => other.to_owned(),
            };
            format!(
                "{}\"{key}\"{}:{}{value}{}",
                spaces[0], spaces[1], spaces[2], spaces[3]
            )
        })
}

/// A header text: mostly objects of such members, sometimes cut, glued or mutated.
fn header_text() -> impl Strategy<Value = Vec<u8>> {
    (
        proptest::collection::vec(member(), 0..7),
        pick(SPACES),
        pick(SPACES),
        pick(&["{", "{", "{", "[", ""]),
        pick(&["}", "}", "}", "}}", "} x", "", ",}"]),
        proptest::option::of((any::<prop::sample::Index>(), any::<u8>())),
    )
        .prop_map(|(members, lead, trail, open, close, mutation)| {
            let mut text = format!("{lead}{open}{}{close}{trail}", members.join(",")).into_bytes();
            if let Some((at, byte)) = mutation {
                if !text.is_empty() {
                    let at = at.index(text.len());
                    text[at] = byte;
                }
            }
            text
        })
}

fn limits() -> impl Strategy<Value = Limits> {
    (1usize..3, prop_oneof![Just(u64::MAX), 0u64..100]).prop_map(|(depth, body)| {
        Limits::builder()
            .max_depth(depth)
            .max_body_len(body)
            .build()
            .expect("valid limits")
    })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 4096,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("regressions"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_fast_path_and_the_general_parser_agree(text in header_text(), limits in limits()) {
        let json = Bytes::from(text);
        let fast = Header::parse_json(json.clone(), &limits);
        let general = Header::parse_json_general(json, &limits);
        prop_assert_eq!(&fast, &general);
        // What the fast path says of a reply's `ok`, serde says too.
        if let Some(ok) = fast.as_ref().ok().and_then(Header::plain_ok) {
            let status: sockit_proto::message::ReplyStatus =
                general.unwrap().parse().expect("a plain ok reads as a status");
            prop_assert_eq!(status.ok, ok);
        }
    }
}

#[test]
fn the_tutorials_headers_and_our_own_agree() {
    let limits = Limits::default();
    for text in [
        r#"{"op":"echo","id":7,"size":32}"#,
        r#"{"op": "put", "filename": "a.txt", "file_size": 12}"#,
        r#"{"cmd": "dir", "data_size": 0}"#,
        r#"{"op":"ping","id":"x-1"}"#,
        "{}",
        " { } ",
    ] {
        let json = Bytes::from_static(text.as_bytes());
        let fast = Header::parse_json(json.clone(), &limits).unwrap();
        let general = Header::parse_json_general(json, &limits).unwrap();
        assert_eq!(fast, general, "{text}");
    }
}
