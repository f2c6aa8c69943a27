//! The file operations in frames: a `put` body (and its trailer, or its chunk frames), a `get`
//! body, a `list` page, a `stat`, a `delete`, a `rename`.
//!
//! ```text
//! put              {"op":"put",…,"size":n} + n bytes [+ {"hash":…} when "trailer":true]
//! chunked put      {"op":"put",…,"chunked":true}, then {"size":n} + n bytes (n >= 1, any
//!                  number), then {"end":true,"length":L,"hash":…}
//! ```
//!
//! One reply answers a `put` of either form, after its last frame. When a `put` is refused the
//! error reply is queued at once and the rest of what was announced (body, trailer, chunks) is
//! read and discarded while it is within the in-memory limit, so the connection stays usable;
//! beyond that, or after a frame that breaks the sequence, the connection closes, since what
//! follows can no longer be told from the next requests.
//!
//! A `put` body (with its trailer or chunk frames) and a `get` body are held to the transfer
//! pace (`--transfer-min-rate`) once their streaming slot is taken: a peer that sends or takes
//! them slower is cut, and an upload keeps what arrived for a resume (but the tutorials'
//! upload, a header with no `op`, whose clients never resume: its partial is deleted).
//!
//! Each `put`, `get`, `delete` and `rename` is logged at info when it ends, one line each: the
//! peer, the name, the bytes (a stored or renamed file's length, a get's bytes sent) and the
//! time it took; or that it was refused, or cut short with the connection.

use sockit_proto::message::{
    ChunkFrame, DeleteRequest, GetRequest, ListRequest, PutRequest, PutTrailer, RenameRequest,
    StatRequest,
};
use sockit_proto::{ErrorCode, FrameError, Header};
use std::net::IpAddr;
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite};

use super::{answer, queue_error, refuse, start_reply, Flow};
use crate::connection::{ConnError, Connection};
use crate::core::files::{self, PutPlan};
use crate::core::{Core, OpError};
use crate::store::Upload;
use crate::transfer::{BodyPipeline, FileReader};

/// One file operation's log line, written when it ends.
struct OpLog<'a> {
    op: &'static str,
    peer: IpAddr,
    name: &'a str,
    started: Instant,
    /// Set when the operation succeeded: the bytes it moved or the file's length.
    bytes: Option<u64>,
}

impl<'a> OpLog<'a> {
    fn start(op: &'static str, peer: IpAddr, name: &'a str) -> OpLog<'a> {
        OpLog {
            op,
            peer,
            name,
            started: Instant::now(),
            bytes: None,
        }
    }

    /// Logs why a resume (a `put` from `offset` > 0) was refused: the client then starts over
    /// from byte 0.
    fn resume_refused(&self, offset: u64, err: &OpError) {
        if offset > 0 {
            let (peer, name) = (self.peer, self.name);
            tracing::info!(%peer, name, offset, code = ?err.code, error = %err.message, "resume of a put refused");
        }
    }

    /// Logs how the operation ended and passes its outcome on.
    fn end(self, outcome: Result<Flow, ConnError>) -> Result<Flow, ConnError> {
        let OpLog { op, peer, name, .. } = self;
        let time = self.started.elapsed();
        match (&outcome, self.bytes) {
            (Ok(_), Some(bytes)) => tracing::info!(%peer, name, bytes, ?time, "{op} done"),
            (Ok(_), None) => tracing::info!(%peer, name, ?time, "{op} refused"),
            (Err(err), _) => tracing::info!(%peer, name, %err, ?time, "{op} cut short"),
        }
        outcome
    }
}

/// `put`, either form.
pub(super) async fn put<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    header: &Header,
    core: &Core,
    peer: IpAddr,
    request: &PutRequest<'_>,
) -> Result<Flow, ConnError> {
    let mut log = OpLog::start("put", peer, &request.name);
    let outcome = put_body(conn, header, core, request, &mut log).await;
    conn.set_pace(None);
    log.end(outcome)
}

/// `put`, either form, noting a stored file's length in `log`. Once the upload is begun, the
/// connection keeps the transfer pace; the caller ends it.
async fn put_body<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    header: &Header,
    core: &Core,
    request: &PutRequest<'_>,
    log: &mut OpLog<'_>,
) -> Result<Flow, ConnError> {
    let begun = files::begin_put(core, log.peer, request, header.body_len()).await;
    let (mut upload, hasher, plan) = match begun {
        Ok(begun) => begun,
        Err(err) if request.chunked => return refuse_chunked(conn, header, &err).await,
        Err(err) => {
            log.resume_refused(request.offset, &err);
            return refuse_put(conn, header, request.trailer, &err).await;
        }
    };
    if matches!(header.op(), Ok(None)) {
        // The tutorials' upload: its clients never resume, so a partial they leave would only
        // count against their address's cap until it expired.
        upload.not_resumable();
    }
    conn.set_pace(core.min_rate);
    if plan.chunked() {
        return receive_chunked(conn, header, upload, plan, log).await;
    }

    let mut pipeline = BodyPipeline::start(hasher, upload);
    // The client going away mid-body is an error of the connection: what arrived stays held
    // for a resume.
    let fed = pipeline.feed(conn, &mut |_| {}).await;
    let (upload, hash, written) = pipeline.finish().await;
    fed?;
    if let Err(err) = written {
        files::discard(upload).await;
        return refuse_put(conn, header, request.trailer, &err.into()).await;
    }
    let trailer = if request.trailer {
        match read_trailer(conn).await? {
            Trailer::Hash(hash) => Some(hash),
            Trailer::Bad(message) => {
                queue_error(conn, header, &OpError::bad_request(message));
                return Ok(Flow::Continue);
            }
        }
    } else {
        None
    };
    match plan.finish(upload, hash, trailer).await {
        Ok(reply) => {
            log.bytes = Some(reply.length);
            answer(conn, header, &reply);
        }
        Err(err) => {
            log.resume_refused(request.offset, &err);
            queue_error(conn, header, &err);
        }
    }
    Ok(Flow::Continue)
}

/// Refuses a `put`. A put with a trailer is two frames, so when the stream can be kept in
/// step the trailer is consumed too.
async fn refuse_put<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    header: &Header,
    trailer: bool,
    err: &OpError,
) -> Result<Flow, ConnError> {
    let flow = refuse(conn, header, err).await?;
    if flow == Flow::Continue && trailer {
        // The reply is already queued; the trailer's content no longer matters.
        let _ = read_trailer(conn).await?;
    }
    Ok(flow)
}

/// What a `put` trailer said.
enum Trailer {
    /// The whole file's hash.
    Hash(blake3::Hash),
    /// Not a valid trailer (why, in words); the stream is still in step.
    Bad(String),
}

/// Reads the frame after a body that carries its hash: `{"hash": "<hex>"}`.
async fn read_trailer<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
) -> Result<Trailer, ConnError> {
    let trailer = conn.read_continuation().await?;
    if trailer.body_len() > 0 {
        // A trailer never has a body; the stream cannot be trusted past this point.
        return Err(ConnError::Frame(FrameError::UnexpectedBody(
            "a put trailer has no body",
        )));
    }
    Ok(match trailer.parse::<PutTrailer<'_>>() {
        Ok(trailer) => match blake3::Hash::from_hex(trailer.hash.as_bytes()) {
            Ok(hash) => Trailer::Hash(hash),
            Err(_) => Trailer::Bad("trailer `hash` must be 64 hexadecimal digits (BLAKE3)".into()),
        },
        Err(err) => Trailer::Bad(format!("bad put trailer: {err}")),
    })
}

/// How receiving a chunked `put`'s frames stopped before a complete sequence.
enum Interrupted {
    /// The connection failed or the peer left.
    Conn(ConnError),
    /// A frame broke the sequence's rules; the connection closes after the reply.
    Broken(OpError),
    /// The store stopped taking bytes; its error comes out of the pipeline.
    StoreStopped,
}

/// Streams a chunked `put`'s chunk frames into `upload` and, once the end frame agrees with
/// what arrived, stores it; otherwise deletes it.
async fn receive_chunked<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    header: &Header,
    upload: Upload,
    plan: PutPlan,
    log: &mut OpLog<'_>,
) -> Result<Flow, ConnError> {
    let mut pipeline = BodyPipeline::start(blake3::Hasher::new(), upload);
    let received = receive_chunks(conn, &mut pipeline).await;
    let total = pipeline.received();
    let (upload, hash, written) = pipeline.finish().await;
    let end = match (received, written) {
        (Ok(end), Ok(())) => end,
        (received, written) => {
            files::discard(upload).await;
            return match received {
                Err(Interrupted::Conn(err)) => Err(err),
                Err(Interrupted::Broken(err)) => {
                    queue_error(conn, header, &err);
                    Ok(Flow::Close)
                }
                // The store stopped taking bytes: its own error says why.
                Err(Interrupted::StoreStopped) => {
                    let err = written.err().map_or_else(
                        || {
                            OpError::new(
                                ErrorCode::Internal,
                                "the file store stopped taking the upload",
                            )
                        },
                        OpError::from,
                    );
                    refuse_chunked(conn, header, &err).await
                }
                // Every frame arrived, but writing failed.
                Ok(_) => {
                    let err = written.expect_err("one side failed");
                    queue_error(conn, header, &err.into());
                    Ok(Flow::Continue)
                }
            };
        }
    };
    let stored = match end {
        ChunkFrame::End(end) => plan.finish_chunked(upload, hash, total, &end).await,
        ChunkFrame::BadEnd(message) => {
            files::discard(upload).await;
            Err(OpError::bad_request(message))
        }
        ChunkFrame::Chunk(_) => unreachable!("the chunks are received up to the end frame"),
    };
    match stored {
        Ok(reply) => {
            log.bytes = Some(reply.length);
            answer(conn, header, &reply);
        }
        Err(err) => queue_error(conn, header, &err),
    }
    Ok(Flow::Continue)
}

/// Feeds chunk bodies into `pipeline` until the end frame, checking each frame and the
/// running total; returns the end frame (valid or not).
async fn receive_chunks<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    pipeline: &mut BodyPipeline<Upload>,
) -> Result<ChunkFrame, Interrupted> {
    let max = conn.limits().max_body_len();
    let mut total = 0u64;
    loop {
        let frame = conn.read_continuation().await.map_err(Interrupted::Conn)?;
        let size = match ChunkFrame::parse(&frame) {
            Ok(ChunkFrame::Chunk(size)) => size,
            Ok(end @ (ChunkFrame::End(_) | ChunkFrame::BadEnd(_))) => return Ok(end),
            Err(message) => return Err(Interrupted::Broken(OpError::bad_request(message))),
        };
        total = match total.checked_add(size).filter(|total| *total <= max) {
            Some(total) => total,
            None => {
                let message = format!("a chunked put may carry at most {max} bytes in all");
                return Err(Interrupted::Broken(OpError::new(
                    ErrorCode::TooLarge,
                    message,
                )));
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
async fn refuse_chunked<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    header: &Header,
    err: &OpError,
) -> Result<Flow, ConnError> {
    queue_error(conn, header, err);
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
        match ChunkFrame::parse(&conn.read_continuation().await?) {
            Ok(ChunkFrame::Chunk(_)) => {}
            Ok(ChunkFrame::End(_) | ChunkFrame::BadEnd(_)) => return Ok(true),
            Err(_) => return Ok(false),
        }
    }
}

/// `get`: the reply header, then the file from the offset.
pub(super) async fn get<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    header: &Header,
    core: &Core,
    peer: IpAddr,
    request: &GetRequest<'_>,
) -> Result<Flow, ConnError> {
    let mut log = OpLog::start("get", peer, &request.name);
    let outcome = get_body(conn, header, core, request, &mut log).await;
    conn.set_pace(None);
    log.end(outcome)
}

/// `get`, noting the bytes sent in `log`. Once the file is open, the connection keeps the
/// transfer pace; the caller ends it.
async fn get_body<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    header: &Header,
    core: &Core,
    request: &GetRequest<'_>,
    log: &mut OpLog<'_>,
) -> Result<Flow, ConnError> {
    let (reply, download) = match files::open_get(core, log.peer, request).await {
        Ok(opened) => opened,
        Err(err) => return refuse(conn, header, &err).await,
    };
    conn.set_pace(core.min_rate);
    start_reply(conn, header)
        .fields(&reply)
        .finish(download.size)
        .expect("a get reply always encodes");
    let mut reader = FileReader::start(&download.file, download.offset, download.size, false)?;
    let mut sent = 0u64;
    while let Some(chunk) = reader.next().await {
        let chunk = chunk?;
        conn.write_body(chunk.data()).await?;
        sent += chunk.data().len() as u64;
        reader.recycle(chunk);
    }
    reader.finish().await?;
    if sent < download.size {
        // The file shrank while it was sent: the reply cannot be completed.
        return Err(ConnError::Io(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "file shrank while being sent",
        )));
    }
    log.bytes = Some(sent);
    Ok(Flow::Continue)
}

/// `list`: one page; the body is its JSON array of entries, which holds its share of the
/// memory budget until it is sent, at the transfer pace.
pub(super) async fn list<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    header: &Header,
    core: &Core,
    peer: IpAddr,
    request: &ListRequest<'_>,
) -> Result<Flow, ConnError> {
    match files::list(core, peer, request).await {
        Ok((reply, body)) => {
            start_reply(conn, header)
                .fields(&reply)
                .finish(body.json.len() as u64)
                .expect("a list reply always encodes");
            conn.set_pace(core.min_rate);
            let sent = conn.write_body(&body.json).await;
            conn.set_pace(None);
            sent?;
            Ok(Flow::Continue)
        }
        Err(err) => refuse(conn, header, &err).await,
    }
}

/// `stat`.
pub(super) async fn stat<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    header: &Header,
    core: &Core,
    request: &StatRequest<'_>,
) -> Result<Flow, ConnError> {
    match files::stat(&core.store, request).await {
        Ok(reply) => {
            answer(conn, header, &reply);
            Ok(Flow::Continue)
        }
        Err(err) => refuse(conn, header, &err).await,
    }
}

/// `delete`.
pub(super) async fn delete<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    header: &Header,
    core: &Core,
    peer: IpAddr,
    request: &DeleteRequest<'_>,
) -> Result<Flow, ConnError> {
    let started = Instant::now();
    let name: &str = &request.name;
    match files::delete(&core.store, request).await {
        Ok(reply) => {
            tracing::info!(%peer, name, time = ?started.elapsed(), "delete done");
            answer(conn, header, &reply);
            Ok(Flow::Continue)
        }
        Err(err) => {
            tracing::info!(%peer, name, time = ?started.elapsed(), "delete refused");
            refuse(conn, header, &err).await
        }
    }
}

/// `rename`.
pub(super) async fn rename<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    header: &Header,
    core: &Core,
    peer: IpAddr,
    request: &RenameRequest<'_>,
) -> Result<Flow, ConnError> {
    let started = Instant::now();
    let (name, to): (&str, &str) = (&request.name, &request.to);
    match files::rename(core, peer, request).await {
        Ok(reply) => {
            let bytes = reply.length;
            tracing::info!(%peer, name, to, bytes, time = ?started.elapsed(), "rename done");
            answer(conn, header, &reply);
            Ok(Flow::Continue)
        }
        Err(err) => {
            tracing::info!(%peer, name, to, time = ?started.elapsed(), "rename refused");
            refuse(conn, header, &err).await
        }
    }
}
