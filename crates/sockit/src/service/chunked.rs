//! The chunked form of `put`: a file whose length is not known in advance (a pipe, a device,
//! standard input) sent as a run of frames after the request (PROTOCOL.md §3.1).
//!
//! ```text
//! {"op":"put","name":N,"overwrite":false,"chunked":true}   the request, no body
//! {"size":n} + n bytes                                      a chunk frame, n >= 1, any number
//! {"end":true,"length":L,"hash":"<BLAKE3 hex>"}            the end frame, no body
//! ```
//!
//! One reply answers the whole sequence, after the end frame. The bytes stream through the
//! same pipeline as a `put` body into a partial file of their own, which is deleted unless
//! the upload completes with the announced length and hash; it then becomes visible under its
//! name exactly as a `put` does.
//!
//! When the request is refused, or the store fails while the chunks arrive, the error reply is
//! queued at once and the rest of the sequence is read and discarded if it is within the
//! in-memory limit, so the connection stays usable; beyond that, or after a frame that breaks
//! the sequence's rules, the connection closes, since what follows can no longer be told from
//! the next requests.

use std::borrow::Cow;
use std::fmt::Display;
use std::sync::Arc;

use serde::Deserialize;
use sockit_proto::{ErrorCode, Header};
use tokio::io::{AsyncRead, AsyncWrite};

use super::files::{reply_stored, PutRequest};
use super::Flow;
use crate::connection::{ConnError, Connection};
use crate::reply;
use crate::store::{FileName, Store, Upload};
use crate::transfer::{blocking, BodyPipeline};

/// The keys a frame of the sequence may have; any other key breaks the sequence.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SequenceFields<'a> {
    #[serde(default, rename = "size")]
    _size: Option<u64>,
    #[serde(default)]
    end: Option<bool>,
    #[serde(default)]
    length: Option<u64>,
    #[serde(borrow, default)]
    hash: Option<Cow<'a, str>>,
}

/// A frame after a chunked `put`, checked.
#[derive(Debug)]
enum Frame {
    /// A chunk of this many bytes (at least 1) follows.
    Chunk(u64),
    /// The end frame: the total length and hash the client declares, or why they are not
    /// valid. Either way the sequence is over and the stream in step.
    End(Result<(u64, blake3::Hash), String>),
}

impl Frame {
    /// Reads a frame of the sequence; `Err` when it is no such frame, after which the stream
    /// cannot be followed.
    fn parse(frame: &Header) -> Result<Frame, String> {
        let fields: SequenceFields<'_> = frame.parse().map_err(|err| {
            format!(
                "expected a chunk frame {{\"size\":n}} or the end frame of a chunked put: {err}"
            )
        })?;
        match fields.end {
            Some(true) => {
                if frame.body_len() > 0 {
                    return Err("the end frame of a chunked put has no body".into());
                }
                Ok(Frame::End(end_fields(
                    fields.length,
                    fields.hash.as_deref(),
                )))
            }
            Some(false) => Err("`end` is only ever true, in the end frame".into()),
            None if fields.length.is_some() || fields.hash.is_some() => {
                Err("a chunk frame has only `size`; `length` and `hash` go in the end frame".into())
            }
            None if frame.body_len() == 0 => {
                Err("a chunk frame carries at least one byte (`size` >= 1)".into())
            }
            None => Ok(Frame::Chunk(frame.body_len())),
        }
    }
}

/// The end frame's `length` and `hash`, checked.
fn end_fields(length: Option<u64>, hash: Option<&str>) -> Result<(u64, blake3::Hash), String> {
    let length = length.ok_or("the end frame needs `length`, the total of the chunks")?;
    let hash = hash.ok_or("the end frame needs `hash`, the BLAKE3 of the whole file")?;
    let hash = blake3::Hash::from_hex(hash)
        .map_err(|_| "the end frame's `hash` must be 64 hexadecimal digits (BLAKE3)")?;
    Ok((length, hash))
}

/// How receiving the chunks stopped before a complete sequence.
enum Interrupted {
    /// The connection failed or the peer left.
    Conn(ConnError),
    /// A frame broke the sequence's rules; the connection closes after the reply.
    Broken(ErrorCode, String),
    /// The store stopped taking bytes; its error comes out of the pipeline.
    StoreStopped,
}

/// `put` with `chunked`: checks the request and starts the upload.
pub(super) async fn put<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    header: &Header,
    store: &Arc<Store>,
    request: &PutRequest<'_>,
) -> Result<Flow, ConnError> {
    if let Err(message) = check_request(header, request) {
        return refuse(conn, header, ErrorCode::BadRequest, &message).await;
    }
    let name = match FileName::new(&request.name) {
        Ok(name) => name,
        Err(err) => return refuse(conn, header, ErrorCode::BadName, &err).await,
    };
    let overwrite = request.overwrite;
    let _slot = store.transfer_slot().await;
    let begun = blocking({
        let store = Arc::clone(store);
        move || store.begin_stream_upload(name, overwrite)
    })
    .await;
    match begun {
        Ok(upload) => receive_and_commit(conn, header, upload, overwrite).await,
        Err(err) => refuse(conn, header, err.code(), &err).await,
    }
}

/// Streams the chunks into `upload` and, once the end frame agrees with what arrived, commits
/// it as `put` does; otherwise deletes it.
async fn receive_and_commit<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    header: &Header,
    upload: Upload,
    overwrite: bool,
) -> Result<Flow, ConnError> {
    let mut pipeline = BodyPipeline::start(blake3::Hasher::new(), upload);
    let received = receive_chunks(conn, &mut pipeline).await;
    let total = pipeline.received();
    let (upload, hash, written) = pipeline.finish().await;
    let end = match (received, written) {
        (Err(Interrupted::Conn(err)), _) => {
            discard(upload).await;
            return Err(err);
        }
        (Err(Interrupted::Broken(code, message)), _) => {
            discard(upload).await;
            reply::error(conn.write_buf(), header.id(), code, &message);
            return Ok(Flow::Close);
        }
        (Err(Interrupted::StoreStopped), Err(err)) => {
            discard(upload).await;
            return refuse(conn, header, err.code(), &err).await;
        }
        (Err(Interrupted::StoreStopped), Ok(())) => {
            discard(upload).await;
            let message = "the file store stopped taking the upload";
            return refuse(conn, header, ErrorCode::Internal, &message).await;
        }
        (Ok(_), Err(err)) => {
            discard(upload).await;
            reply::error(conn.write_buf(), header.id(), err.code(), &err);
            return Ok(Flow::Continue);
        }
        (Ok(end), Ok(())) => end,
    };
    let declared = match end.and_then(|(length, declared)| check_length(length, total, declared)) {
        Ok(declared) => declared,
        Err(message) => {
            discard(upload).await;
            reply::error(
                conn.write_buf(),
                header.id(),
                ErrorCode::BadRequest,
                &message,
            );
            return Ok(Flow::Continue);
        }
    };
    let finished = blocking(move || upload.finish(hash, Some(declared), overwrite)).await;
    reply_stored(conn, header, finished.map(|info| (info, hash)));
    Ok(Flow::Continue)
}

/// What a chunked `put` request may not have.
fn check_request(header: &Header, request: &PutRequest<'_>) -> Result<(), &'static str> {
    if header.body_len() > 0 {
        return Err("a chunked put has no body: its bytes follow in chunk frames");
    }
    if request.offset != 0 {
        return Err("a chunked put cannot resume: `offset` must be 0");
    }
    if request.hash.is_some() || request.trailer {
        return Err("a chunked put declares its hash in the end frame, not in `hash` or a trailer");
    }
    Ok(())
}

/// The declared hash, when the end frame's `length` is what arrived.
fn check_length(
    length: u64,
    received: u64,
    declared: blake3::Hash,
) -> Result<blake3::Hash, String> {
    if length == received {
        Ok(declared)
    } else {
        Err(format!(
            "the end frame says {length} bytes, but the chunks carried {received}; nothing was stored"
        ))
    }
}

/// Feeds chunk bodies into `pipeline` until the end frame, checking each frame and the
/// running total.
async fn receive_chunks<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    pipeline: &mut BodyPipeline<Upload>,
) -> Result<Result<(u64, blake3::Hash), String>, Interrupted> {
    let max = conn.limits().max_body_len();
    let mut total = 0u64;
    loop {
        let frame = conn.read_continuation().await.map_err(Interrupted::Conn)?;
        let size = match Frame::parse(&frame) {
            Ok(Frame::Chunk(size)) => size,
            Ok(Frame::End(end)) => return Ok(end),
            Err(message) => return Err(Interrupted::Broken(ErrorCode::BadRequest, message)),
        };
        total = match total.checked_add(size).filter(|total| *total <= max) {
            Some(total) => total,
            None => {
                let message = format!("a chunked put may carry at most {max} bytes in all");
                return Err(Interrupted::Broken(ErrorCode::TooLarge, message));
            }
        };
        if !pipeline
            .feed(conn, &mut |_| {})
            .await
            .map_err(Interrupted::Conn)?
        {
            return Err(Interrupted::StoreStopped);
        }
    }
}

/// Answers a chunked `put` with an error, then reads and discards the rest of its sequence
/// when that is within the in-memory limit; otherwise the connection closes after the reply.
async fn refuse<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    header: &Header,
    code: ErrorCode,
    message: &(dyn Display + Sync),
) -> Result<Flow, ConnError> {
    reply::error(conn.write_buf(), header.id(), code, message);
    Ok(if skip_sequence(conn).await? {
        Flow::Continue
    } else {
        Flow::Close
    })
}

/// Reads and discards the rest of a chunked `put` (the current body, chunk frames, the end
/// frame) while it stays within the in-memory limit; whether the end frame was reached.
async fn skip_sequence<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
) -> Result<bool, ConnError> {
    let mut budget = conn.limits().max_buffered_body();
    loop {
        let Some(left) = budget.checked_sub(conn.body_remaining()) else {
            return Ok(false);
        };
        budget = left;
        conn.skip_body().await?;
        match Frame::parse(&conn.read_continuation().await?) {
            Ok(Frame::Chunk(_)) => {}
            Ok(Frame::End(_)) => return Ok(true),
            Err(_) => return Ok(false),
        }
    }
}

/// Deletes an upload that will not be stored.
async fn discard(upload: Upload) {
    blocking(move || upload.discard()).await;
}
