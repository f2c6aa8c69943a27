//! Feeds arbitrary bytes to the frame decoder, cut into reads at points taken from the input.
//!
//! Checks: no panic; every byte is accounted for (consumed as prefix, header or body, or left
//! buffered); bodies never exceed what their header declared; and a stream fed whole decodes to
//! the same events as the same stream fed in pieces.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use sockit_proto::{Decoder, Event, Limits};

fn decode_all(data: &[u8], piece: usize) -> (Vec<Event>, Option<String>) {
    let limits = Limits::builder()
        .max_header_len(4096)
        .max_depth(16)
        .build()
        .expect("valid limits");
    let mut decoder = Decoder::new(limits);
    let mut buf = BytesMut::new();
    let mut events = Vec::new();
    let mut body_left = 0u64;
    for chunk in data.chunks(piece.max(1)) {
        buf.extend_from_slice(chunk);
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(Event::Header(header))) => {
                    assert_eq!(body_left, 0, "a header arrived mid-body");
                    body_left = header.body_len();
                    assert_eq!(decoder.body_remaining(), body_left);
                    events.push(Event::Header(header));
                }
                Ok(Some(Event::Body(chunk))) => {
                    assert!(!chunk.is_empty() && chunk.len() as u64 <= body_left);
                    body_left -= chunk.len() as u64;
                    assert_eq!(decoder.body_remaining(), body_left);
                    events.push(Event::Body(chunk));
                }
                Ok(None) => break,
                Err(err) => return (events, Some(err.to_string())),
            }
        }
    }
    (events, None)
}

/// Joins adjacent body chunks so that event lists from different cuts compare equal.
fn normalise(events: Vec<Event>) -> Vec<Event> {
    let mut out: Vec<Event> = Vec::new();
    for event in events {
        match (out.last_mut(), event) {
            (Some(Event::Body(previous)), Event::Body(chunk)) => {
                let mut joined = BytesMut::from(&previous[..]);
                joined.extend_from_slice(&chunk);
                *previous = joined.freeze();
            }
            (_, event) => out.push(event),
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&piece, stream)) = data.split_first() else {
        return;
    };
    let (whole, whole_err) = decode_all(stream, stream.len());
    let (pieces, pieces_err) = decode_all(stream, usize::from(piece % 64) + 1);
    assert_eq!(whole_err, pieces_err);
    assert_eq!(normalise(whole), normalise(pieces));
});
