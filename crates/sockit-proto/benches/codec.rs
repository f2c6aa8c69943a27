#![allow(missing_docs)] // criterion's macros define functions without docs
//! The codec's speed, beside tokio-util's `LengthDelimitedCodec` on the same bytes.
//!
//! `cargo bench -p sockit-proto --bench codec`. Each group encodes or decodes one batch of
//! frames of the tutorials' shape — a 4-byte little-endian length, a JSON header, a body — with
//! 32-byte and 1 MiB bodies, and reports frames/s (small bodies) or bytes/s (large ones).
//! `LengthDelimitedCodec` (4-byte little-endian length) is given each frame's header and body as
//! one payload: it only cuts a stream at lengths, so it is the floor for what any framing
//! costs; sockit's decoder also validates the JSON header, finds `op`, `id` and the body
//! length in it, and checks them against its limits.

use bytes::{BufMut, BytesMut};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sockit_proto::{Decoder, Event, HeaderWriter, Limits};
use std::hint::black_box;
use tokio_util::codec::{Decoder as _, Encoder as _, LengthDelimitedCodec};

/// Frames in one batch of small bodies.
const SMALL_BATCH: usize = 1024;
/// Frames in one batch of 1 MiB bodies.
const LARGE_BATCH: usize = 16;

fn length_delimited() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .little_endian()
        .length_field_length(4)
        .max_frame_length(usize::MAX)
        .new_codec()
}

/// `frames` requests of `body_len` bytes, as a client sends them.
fn sockit_stream(frames: usize, body: &[u8]) -> BytesMut {
    let mut buf = BytesMut::new();
    for id in 0..frames {
        let mut header = HeaderWriter::new(&mut buf);
        header.field("op", "echo").field("id", &id);
        header.finish(body.len() as u64).unwrap();
        buf.put_slice(body);
    }
    buf
}

/// The same frames as length-delimited payloads of header and body together.
fn delimited_stream(frames: usize, body: &[u8]) -> BytesMut {
    let sockit = sockit_stream(1, body);
    let payload = &sockit[4..];
    let mut buf = BytesMut::new();
    let mut codec = length_delimited();
    for _ in 0..frames {
        codec
            .encode(bytes::Bytes::copy_from_slice(payload), &mut buf)
            .unwrap();
    }
    buf
}

fn sockit_decode_all(stream: &BytesMut, limits: Limits) -> usize {
    let mut buf = stream.clone();
    let mut decoder = Decoder::new(limits);
    let mut frames = 0;
    while let Some(event) = decoder.decode(&mut buf).unwrap() {
        if let Event::Header(header) = &event {
            black_box(header.op().unwrap());
            if header.body_len() == 0 {
                frames += 1;
            }
        } else if decoder.body_remaining() == 0 {
            frames += 1;
        }
        black_box(event);
    }
    frames
}

fn delimited_decode_all(stream: &BytesMut) -> usize {
    let mut buf = stream.clone();
    let mut codec = length_delimited();
    let mut frames = 0;
    while let Some(frame) = codec.decode(&mut buf).unwrap() {
        black_box(frame);
        frames += 1;
    }
    frames
}

fn decode(c: &mut Criterion) {
    for (name, body_len, frames) in [("32 B", 32, SMALL_BATCH), ("1 MiB", 1 << 20, LARGE_BATCH)] {
        let body = vec![b'x'; body_len];
        let sockit = sockit_stream(frames, &body);
        let delimited = delimited_stream(frames, &body);
        let limits = Limits::default();
        let mut group = c.benchmark_group(format!("decode {name} bodies"));
        if body_len < 1024 {
            group.throughput(Throughput::Elements(frames as u64));
        } else {
            group.throughput(Throughput::Bytes(sockit.len() as u64));
        }
        group.bench_function(BenchmarkId::new("sockit", frames), |b| {
            b.iter(|| assert_eq!(sockit_decode_all(&sockit, limits), frames))
        });
        group.bench_function(BenchmarkId::new("LengthDelimitedCodec", frames), |b| {
            b.iter(|| assert_eq!(delimited_decode_all(&delimited), frames))
        });
        group.finish();
    }
}

fn encode(c: &mut Criterion) {
    for (name, body_len, frames) in [("32 B", 32, SMALL_BATCH), ("1 MiB", 1 << 20, LARGE_BATCH)] {
        let body = bytes::Bytes::from(vec![b'x'; body_len]);
        let header_and_body = bytes::Bytes::from(sockit_stream(1, &body)[4..].to_vec());
        let mut group = c.benchmark_group(format!("encode {name} bodies"));
        if body_len < 1024 {
            group.throughput(Throughput::Elements(frames as u64));
        } else {
            group.throughput(Throughput::Bytes((header_and_body.len() * frames) as u64));
        }
        let mut out = BytesMut::with_capacity(frames * (header_and_body.len() + 4));
        group.bench_function(BenchmarkId::new("sockit", frames), |b| {
            b.iter(|| {
                out.clear();
                for id in 0..frames {
                    let mut header = HeaderWriter::new(&mut out);
                    header.field("op", "echo").field("id", &id);
                    header.finish(body.len() as u64).unwrap();
                    out.put_slice(&body);
                }
                black_box(&out);
            })
        });
        let mut codec = length_delimited();
        group.bench_function(BenchmarkId::new("LengthDelimitedCodec", frames), |b| {
            b.iter(|| {
                out.clear();
                for _ in 0..frames {
                    codec.encode(header_and_body.clone(), &mut out).unwrap();
                }
                black_box(&out);
            })
        });
        group.finish();
    }
}

criterion_group!(benches, decode, encode);
criterion_main!(benches);
