//! The sticky-packet property: however a stream of frames is cut into reads — one byte at a
//! time, everything glued together, or at random points — it decodes to exactly the same frames.

use bytes::BytesMut;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use sockit_proto::{Decoder, Event, HeaderWriter, Limits};

/// A frame as a test generates it and as it must come out again.
#[derive(Debug, Clone, PartialEq)]
struct TestFrame {
    op: String,
    id: Option<i64>,
    note: Option<String>,
    body: Vec<u8>,
}

fn test_frame() -> impl Strategy<Value = TestFrame> {
    (
        "[a-z_]{1,12}|\\PC{0,8}",
        proptest::option::of(any::<i64>()),
        proptest::option::of("\\PC{0,40}|[\"\\\\\\[\\]{}]{0,20}"),
        proptest::collection::vec(any::<u8>(), 0..600),
    )
        .prop_map(|(op, id, note, body)| TestFrame { op, id, note, body })
}

fn encode(frames: &[TestFrame]) -> Vec<u8> {
    let mut buf = BytesMut::new();
    for frame in frames {
        let mut header = HeaderWriter::new(&mut buf);
        header.field("op", &frame.op);
        if let Some(id) = frame.id {
            header.field("id", &id);
        }
        if let Some(note) = &frame.note {
            header.field("note", note);
        }
        header.finish(frame.body.len() as u64).unwrap();
        buf.extend_from_slice(&frame.body);
    }
    buf.to_vec()
}

/// Feeds `stream` to a decoder in pieces ending at `cuts`, and rebuilds the frames it yields.
fn decode_in_pieces(stream: &[u8], cuts: &[usize]) -> Vec<TestFrame> {
    #[derive(serde::Deserialize)]
    struct Fields {
        note: Option<String>,
    }
    let mut decoder = Decoder::new(Limits::default());
    let mut buf = BytesMut::new();
    let mut frames: Vec<TestFrame> = Vec::new();
    let mut fed = 0;
    for &cut in cuts.iter().chain(std::iter::once(&stream.len())) {
        buf.extend_from_slice(&stream[fed..cut]);
        fed = cut;
        while let Some(event) = decoder.decode(&mut buf).expect("valid stream") {
            match event {
                Event::Header(header) => {
                    let fields: Fields = header.parse().unwrap();
                    frames.push(TestFrame {
                        op: header.op().unwrap().unwrap().to_owned(),
                        id: header.id().map(|id| id.parse().unwrap()),
                        note: fields.note,
                        body: Vec::with_capacity(header.body_len() as usize),
                    });
                }
                Event::Body(chunk) => frames.last_mut().unwrap().body.extend_from_slice(&chunk),
            }
        }
    }
    assert!(buf.is_empty(), "bytes left over");
    assert_eq!(decoder.body_remaining(), 0, "stream ended mid-body");
    frames
}

fn random_cuts(len: usize, seeds: &[usize]) -> Vec<usize> {
    let mut cuts: Vec<usize> = seeds.iter().map(|s| s % (len + 1)).collect();
    cuts.sort_unstable();
    cuts
}

/// The property's configuration: 256 novel cases, after the checked-in regressions.
///
/// Failures persist in `any_split.proptest-regressions` beside this file, which is checked in:
/// proptest replays every seed in it before generating new cases. `WithSource` names that file
/// directly (the default, `SourceParallel`, finds no `lib.rs` above `tests/`, warns and falls
/// back to the same file). A new failure is appended to it, never written anywhere else; that is
/// the point on a developer's machine, where the line is then committed with the fix, and harmless
/// in CI: the checkout is thrown away, proptest also prints the line to copy, and an append to a
/// read-only checkout only prints a warning, it never changes the test's result.
fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..ProptestConfig::default()
    }
}

/// The regressions file is found and read: a renamed file or a persistence switched off would
/// otherwise replay nothing, silently.
#[test]
fn checked_in_regressions_are_replayed() {
    let persistence = config()
        .failure_persistence
        .expect("failure persistence is on");
    let seeds = persistence.load_persisted_failures2(Some(file!()));
    assert!(
        !seeds.is_empty(),
        "no seeds read from any_split.proptest-regressions"
    );
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_split_decodes_to_the_same_frames(
        frames in proptest::collection::vec(test_frame(), 1..24),
        seeds in proptest::collection::vec(any::<usize>(), 0..64),
    ) {
        let stream = encode(&frames);
        let glued = decode_in_pieces(&stream, &[]);
        prop_assert_eq!(&glued, &frames);
        let byte_at_a_time: Vec<usize> = (1..stream.len()).collect();
        prop_assert_eq!(&decode_in_pieces(&stream, &byte_at_a_time), &frames);
        prop_assert_eq!(&decode_in_pieces(&stream, &random_cuts(stream.len(), &seeds)), &frames);
    }
}
