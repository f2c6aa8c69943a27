//! `put`, `get`, `list` and `stat`: the file store over the framed protocol, and the tutorials'
//! upload (a header with `file_name` and `file_size` but no `op`).
//!
//! Bodies stream in both directions through the pipelines of [`crate::transfer`], so network,
//! hashing and disk overlap and memory stays bounded whatever the file's size. The chunked
//! form of `put`, for a file whose length is not known in advance, is in [`super::chunked`].

use std::borrow::Cow;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::value::RawValue;
use sockit_proto::{ErrorCode, Header};
use tokio::io::{AsyncRead, AsyncWrite};

use super::{chunked, quoted, refuse, Flow};
use crate::connection::{ConnError, Connection};
use crate::reply;
use crate::store::{FileInfo, FileName, Store, StoreError, MAX_LIST_ENTRIES};
use crate::transfer::{blocking, receive_body, FileReader};

/// What a `put` (or a tutorial upload) asks for.
#[derive(Deserialize)]
pub(super) struct PutRequest<'a> {
    #[serde(borrow)]
    pub(super) name: Cow<'a, str>,
    #[serde(default)]
    pub(super) offset: u64,
    #[serde(borrow, default)]
    pub(super) hash: Option<Cow<'a, str>>,
    #[serde(default)]
    pub(super) trailer: bool,
    #[serde(default)]
    pub(super) overwrite: bool,
    /// The file follows in chunk frames and an end frame (see [`super::chunked`]).
    #[serde(default)]
    pub(super) chunked: bool,
}

/// The tutorials' upload header. `file_size` is only required (it is the body length, which
/// the decoder has already taken): without it, a header is not an upload.
#[derive(Deserialize)]
struct LegacyUpload<'a> {
    #[serde(borrow)]
    file_name: Cow<'a, str>,
    #[serde(rename = "file_size")]
    _file_size: u64,
}

#[derive(Deserialize)]
struct Trailer<'a> {
    #[serde(borrow)]
    hash: Cow<'a, str>,
}

/// What a `list` asks for: the page after a name, of at most `limit` entries.
#[derive(Deserialize)]
struct ListRequest<'a> {
    #[serde(borrow, default)]
    after: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    limit: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct NameRequest<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(default)]
    offset: u64,
    #[serde(default)]
    length: Option<u64>,
    #[serde(borrow, default)]
    if_hash: Option<Cow<'a, str>>,
}

/// `put`.
pub(super) async fn put<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    header: &Header,
    store: &Arc<Store>,
) -> Result<Flow, ConnError> {
    match header.parse::<PutRequest<'_>>() {
        Ok(request) if request.chunked => chunked::put(conn, header, store, &request).await,
        Ok(request) => receive_file(conn, header, store, request).await,
        Err(err) => refuse(conn, header, ErrorCode::BadRequest, &err).await,
    }
}

/// Whether a header with no `op` is the tutorials' upload; if so, runs it as a `put`.
pub(super) async fn legacy_upload<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    header: &Header,
    store: &Arc<Store>,
) -> Option<Result<Flow, ConnError>> {
    let upload: LegacyUpload<'_> = header.parse().ok()?;
    let request = PutRequest {
        name: upload.file_name,
        offset: 0,
        hash: None,
        trailer: false,
        overwrite: false,
        chunked: false,
    };
    Some(receive_file(conn, header, store, request).await)
}

async fn receive_file<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    header: &Header,
    store: &Arc<Store>,
    params: PutRequest<'_>,
) -> Result<Flow, ConnError> {
    let trailer = params.trailer;
    let refuse = |conn, code, message| refuse_put(conn, header, trailer, code, message);
    let name = match FileName::new(&params.name) {
        Ok(name) => name,
        Err(err) => return refuse(conn, ErrorCode::BadName, &err).await,
    };
    let declared = match params.hash.as_deref().map(blake3::Hash::from_hex) {
        None => None,
        Some(Ok(hash)) => Some(hash),
        Some(Err(_)) => {
            let message = "`hash` must be 64 hexadecimal digits (BLAKE3)";
            return refuse(conn, ErrorCode::BadRequest, &message).await;
        }
    };
    if declared.is_some() && params.trailer {
        let message = "give the hash in the header or in a trailer, not both";
        return refuse(conn, ErrorCode::BadRequest, &message).await;
    }
    let Some(length) = params.offset.checked_add(header.body_len()) else {
        return refuse(conn, ErrorCode::BadRequest, &"offset + size overflows").await;
    };

    let (offset, overwrite) = (params.offset, params.overwrite);
    let _slot = store.transfer_slot().await;
    let begun = blocking({
        let store = Arc::clone(store);
        move || store.begin_upload(name, offset, length, overwrite)
    })
    .await;
    let (upload, hasher) = match begun {
        Ok(begun) => begun,
        Err(err) => return refuse(conn, err.code(), &err).await,
    };

    let (upload, hash, written) = match receive_body(conn, hasher, upload, &mut |_| {}).await {
        Ok(outcome) => outcome,
        // The client went away mid-body: what arrived stays held for a resume.
        Err(err) => return Err(err),
    };
    if let Err(err) = written {
        blocking(move || upload.discard()).await;
        return refuse(conn, err.code(), &err).await;
    }

    let declared = if params.trailer {
        match read_trailer(conn).await? {
            Ok(hash) => Some(hash),
            Err(message) => {
                reply::error(
                    conn.write_buf(),
                    header.id(),
                    ErrorCode::BadRequest,
                    &message,
                );
                return Ok(Flow::Continue);
            }
        }
    } else {
        declared
    };
    let finished = blocking(move || upload.finish(hash, declared, overwrite)).await;
    reply_stored(conn, header, finished.map(|info| (info, hash)));
    Ok(Flow::Continue)
}

/// Queues the reply to a `put` that reached its commit: `name`, `length` and `hash` of the
/// stored file, or why it was not stored.
pub(super) fn reply_stored<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    header: &Header,
    finished: Result<(FileInfo, blake3::Hash), StoreError>,
) {
    match finished {
        Ok((info, hash)) => {
            reply::ok(conn.write_buf(), header.id())
                .field("name", &info.name)
                .field("length", &info.length)
                .field("hash", hash.to_hex().as_str())
                .finish(0)
                .expect("a put reply always encodes");
        }
        Err(err) => reply::error(conn.write_buf(), header.id(), err.code(), &err),
    }
}

/// Refuses a put. A put with a trailer is two frames, so when the stream can be kept in step the
/// trailer is consumed too.
async fn refuse_put<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    header: &Header,
    trailer: bool,
    code: ErrorCode,
    message: &(dyn std::fmt::Display + Sync),
) -> Result<Flow, ConnError> {
    let flow = refuse(conn, header, code, message).await?;
    if flow == Flow::Continue && trailer {
        // The reply is already queued; the trailer's content no longer matters.
        let _ = read_trailer(conn).await?;
    }
    Ok(flow)
}

/// Reads the frame after a body that carries its hash: `{"hash": "<hex>"}`.
async fn read_trailer<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
) -> Result<Result<blake3::Hash, String>, ConnError> {
    let trailer = conn.read_continuation().await?;
    if trailer.body_len() > 0 {
        // A trailer never has a body; the stream cannot be trusted past this point.
        return Err(ConnError::Frame(sockit_proto::FrameError::HeaderNotJson(
            "a put trailer must not have a body".into(),
        )));
    }
    Ok(match trailer.parse::<Trailer<'_>>() {
        Ok(trailer) => blake3::Hash::from_hex(trailer.hash.as_bytes())
            .map_err(|_| "trailer `hash` must be 64 hexadecimal digits (BLAKE3)".to_owned()),
        Err(err) => Err(format!("bad put trailer: {err}")),
    })
}

/// `get`: header with `name`, `length`, `hash`, `offset`, `mode`, `modified`, then the file
/// from `offset`. With `if_hash`, a resume: served from `offset` only if the file still has that
/// hash, else from the start (`offset` 0 in the reply).
pub(super) async fn get<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    header: &Header,
    store: &Arc<Store>,
) -> Result<Flow, ConnError> {
    let (name, request) = match named_request(header, "get") {
        Ok(request) => request,
        Err((code, message)) => return refuse(conn, header, code, &message).await,
    };
    let if_hash = match request.if_hash.as_deref().map(blake3::Hash::from_hex) {
        None => None,
        Some(Ok(hash)) => Some(hash),
        Some(Err(_)) => {
            let message = "`if_hash` must be 64 hexadecimal digits (BLAKE3)";
            return refuse(conn, header, ErrorCode::BadRequest, &message).await;
        }
    };
    let _slot = store.transfer_slot().await;
    let opened = blocking({
        let store = Arc::clone(store);
        move || -> Result<_, StoreError> {
            let (file, info) = store.open_for_read(&name)?;
            let hash = store.hash_of(&name, &file)?;
            let mode = file.metadata()?.permissions().mode() & 0o777;
            Ok((file, info, hash, mode))
        }
    })
    .await;
    let (file, info, hash, mode) = match opened {
        Ok(opened) => opened,
        Err(err) => return refuse(conn, header, err.code(), &err).await,
    };
    let offset = match if_hash {
        Some(expected) if expected != hash => 0,
        _ => request.offset,
    };
    if offset > info.length {
        let err = StoreError::BadOffset {
            offset,
            held: info.length,
        };
        return refuse(conn, header, err.code(), &err).await;
    }
    let size = info.length - offset;
    reply::ok(conn.write_buf(), header.id())
        .field("name", &info.name)
        .field("length", &info.length)
        .field("hash", hash.to_hex().as_str())
        .field("offset", &offset)
        .field("mode", &mode)
        .field("modified", &info.modified)
        .finish(size)
        .expect("a get reply always encodes");
    stream_from_disk(conn, file, offset, size).await?;
    Ok(Flow::Continue)
}

/// Sends `size` bytes of `file` from `offset`.
async fn stream_from_disk<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    file: std::fs::File,
    offset: u64,
    size: u64,
) -> Result<(), ConnError> {
    let mut reader = FileReader::start(&file, offset, size, false)?;
    let mut sent = 0u64;
    while let Some(chunk) = reader.next().await {
        let chunk = chunk?;
        conn.write_body(chunk.data()).await?;
        sent += chunk.data().len() as u64;
        reader.recycle(chunk);
    }
    reader.finish().await?;
    if sent < size {
        // The file shrank while it was sent: the reply cannot be completed.
        return Err(ConnError::Io(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "file shrank while being sent",
        )));
    }
    Ok(())
}

/// `list`: one page of the listing. The body is a JSON array of `{name, length, modified}`
/// sorted by name; the header's `count` is its length and `more` says whether entries follow.
/// Optional request fields: `after` (a name; only names greater are listed) and `limit` (most
/// entries, `1..=`[`MAX_LIST_ENTRIES`], larger is clamped).
pub(super) async fn list<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    header: &Header,
    store: &Arc<Store>,
) -> Result<Flow, ConnError> {
    if header.body_len() > 0 {
        return refuse(conn, header, ErrorCode::BadRequest, &"list takes no body").await;
    }
    let (after, limit) = match list_request(header) {
        Ok(request) => request,
        Err(message) => return refuse(conn, header, ErrorCode::BadRequest, &message).await,
    };
    let listed = blocking({
        let store = Arc::clone(store);
        move || store.list_page(after.as_deref(), limit)
    })
    .await;
    let page = match listed {
        Ok(page) => page,
        Err(err) => return refuse(conn, header, ErrorCode::Internal, &StoreError::from(err)).await,
    };
    reply::ok(conn.write_buf(), header.id())
        .field("count", &page.count)
        .field("more", &page.more)
        .finish(page.json.len() as u64)
        .expect("a list reply always encodes");
    conn.write_body(&page.json).await?;
    Ok(Flow::Continue)
}

/// Reads a `list` request's cursor (`after`) and page size (`limit`, [`MAX_LIST_ENTRIES`] when
/// absent). On refusal, why.
fn list_request(header: &Header) -> Result<(Option<String>, usize), String> {
    let request: ListRequest<'_> = header.parse().map_err(|err| err.to_string())?;
    let limit = match request.limit {
        None => MAX_LIST_ENTRIES,
        Some(raw) => page_limit(raw.get())?,
    };
    Ok((request.after.map(Cow::into_owned), limit))
}

/// A `limit` as JSON text: a positive integer in plain digits, clamped to
/// [`MAX_LIST_ENTRIES`].
fn page_limit(json: &str) -> Result<usize, String> {
    if json.is_empty() || !json.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "`limit` must be a positive integer, not {}",
            quoted(json)
        ));
    }
    // All digits: a number too long for u64 is simply more than the largest page.
    let limit = json.parse::<u64>().unwrap_or(u64::MAX);
    if limit == 0 {
        return Err("`limit` must be at least 1".to_owned());
    }
    Ok(usize::try_from(limit).map_or(MAX_LIST_ENTRIES, |limit| limit.min(MAX_LIST_ENTRIES)))
}

/// `stat`: whether `name` is stored (`exists`, `length`, `modified`), and with `length` given,
/// how many bytes of an upload of that length are held for resuming (`partial`).
pub(super) async fn stat<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    header: &Header,
    store: &Arc<Store>,
) -> Result<Flow, ConnError> {
    let (name, NameRequest { length, .. }) = match named_request(header, "stat") {
        Ok(request) => request,
        Err((code, message)) => return refuse(conn, header, code, &message).await,
    };
    let looked_up = blocking({
        let store = Arc::clone(store);
        move || {
            let info = store.stat(&name)?;
            let partial = length.map(|length| store.partial_held(&name, length));
            Ok::<_, std::io::Error>((name, info, partial))
        }
    })
    .await;
    let (name, info, partial) = match looked_up {
        Ok(found) => found,
        Err(err) => return refuse(conn, header, ErrorCode::Internal, &StoreError::from(err)).await,
    };
    let mut reply = reply::ok(conn.write_buf(), header.id());
    reply
        .field("name", name.as_str())
        .field("exists", &info.is_some());
    if let Some(info) = info {
        reply
            .field("length", &info.length)
            .field("modified", &info.modified);
    }
    if let Some(partial) = partial {
        reply.field("partial", &partial);
    }
    reply.finish(0).expect("a stat reply always encodes");
    Ok(Flow::Continue)
}

/// Reads a request about one stored file (`get`, `stat`): no body, a valid `name`. On refusal,
/// the code and message of the error reply.
fn named_request<'a>(
    header: &'a Header,
    op: &str,
) -> Result<(FileName, NameRequest<'a>), (ErrorCode, String)> {
    if header.body_len() > 0 {
        return Err((ErrorCode::BadRequest, format!("{op} takes no body")));
    }
    let request: NameRequest<'_> = header
        .parse()
        .map_err(|err| (ErrorCode::BadRequest, err.to_string()))?;
    let name = FileName::new(&request.name).map_err(|err| (ErrorCode::BadName, err.to_string()))?;
    Ok((name, request))
}
