//! Parses arbitrary bytes as a frame header and exercises every accessor; the fast path for
//! plain headers must agree with the general parser on every input.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sockit_proto::{Header, Limits};

fuzz_target!(|data: &[u8]| {
    let limits = Limits::builder()
        .max_depth(16)
        .build()
        .expect("valid limits");
    let parsed = Header::parse_json(Bytes::copy_from_slice(data), &limits);
    let general = Header::parse_json_general(Bytes::copy_from_slice(data), &limits);
    assert_eq!(parsed, general, "the fast path and the general parser disagree");
    if let Ok(header) = parsed {
        assert!(header.body_len() <= limits.max_body_len());
        let _ = header.op();
        if let Some(id) = header.id() {
            assert!(!id.starts_with(['{', '[']));
        }
        header
            .parse::<serde::de::IgnoredAny>()
            .expect("a validated header is a JSON object");
    }
});
