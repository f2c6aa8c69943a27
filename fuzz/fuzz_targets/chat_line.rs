//! The chat room's lines, as members send them: any bytes parse to a line or a typed refusal
//! without panicking, and a room fed a sequence of them from a few members sends out only
//! single lines, each ending in `\n`, with no control character that could reach a terminal.
//!
//! The input is cut at each zero byte into datagrams; the first byte of each picks which of
//! three members sends it.
#![no_main]

use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use sockit::chat::line::{parse_line, Line, LineError, MAX_LINE};
use sockit::chat::room::{RoomConfig, Rooms};

fuzz_target!(|data: &[u8]| {
    check_parse(data);
    let now = Instant::now();
    let mut rooms = Rooms::new(RoomConfig::default(), now);
    let members = [
        rooms.new_member_id(),
        rooms.new_member_id(),
        rooms.new_member_id(),
    ];
    for datagram in data.split(|byte| *byte == 0) {
        let Some((&who, line)) = datagram.split_first() else {
            continue;
        };
        check_parse(line);
        let member = members[usize::from(who) % members.len()];
        let fx = if rooms.is_member(member) {
            rooms.receive(member, line, now)
        } else {
            rooms.arrive(member, format!("127.0.0.1:{who}"), line, now)
        };
        for out in &fx.out {
            let text = out
                .line
                .strip_suffix('\n')
                .expect("every line ends in a newline");
            assert!(
                !text.chars().any(char::is_control),
                "a control character goes out: {text:?}"
            );
        }
    }
});

/// One datagram parses as the grammar says.
fn check_parse(data: &[u8]) {
    match parse_line(data) {
        Ok(Line::Empty) => assert!(data.is_empty()),
        Ok(Line::Text(text)) => {
            assert!(data.len() <= MAX_LINE);
            assert!(!text.starts_with('/'));
        }
        Ok(Line::Command { verb, arg }) => {
            assert!(data.len() <= MAX_LINE);
            assert!(!verb.contains(char::is_whitespace));
            assert_eq!(arg, arg.trim());
        }
        Err(LineError::TooLong) => assert!(data.len() > MAX_LINE),
        Err(LineError::NotUtf8) => assert!(std::str::from_utf8(data).is_err()),
    }
}
