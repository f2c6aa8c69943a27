//! Resumable uploads following tus 1.0 (core protocol and the `creation` extension), so that an
//! upload cut by a network drop or a page reload goes on where it stopped, and existing tus
//! clients work:
//!
//! ```text
//! POST  /api/uploads           Upload-Length: L, Upload-Metadata: filename <base64>[, overwrite <base64 "true">]
//!                              → 201, Location: /api/uploads/<id>
//! HEAD  /api/uploads/<id>      → 200, Upload-Offset: bytes held, Upload-Length: L
//! PATCH /api/uploads/<id>      Upload-Offset: O (= what HEAD said), Content-Type: application/offset+octet-stream
//!                              → 204, Upload-Offset: O + bytes received (the file is stored once it reaches L)
//! ```
//!
//! An upload is the store's own resumable upload of `name` with length `L` (the framed `put`
//! with an `offset`): its bytes wait in a hidden partial file, and once all `L` have come the
//! file is synced, hashed and renamed under its name exactly as any other upload. The id says
//! the name, the length and whether to overwrite, so nothing is kept in memory and an upload
//! survives a restart of the server (until the partial expires, `--partial-ttl`).

use std::borrow::Cow;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use serde::Deserialize;
use sockit_proto::message::PutRequest;
use sockit_proto::ErrorCode;

use super::body::RequestBody;
use super::routes::{error_response, query_params, WebState};
use super::ConnInfo;
use crate::core::files;
use crate::core::OpError;
use crate::store::FileName;
use crate::transfer::{blocking, BodyPipeline};

/// The protocol version spoken.
const TUS_VERSION: &str = "1.0.0";
/// The media type of a `PATCH` body.
const OFFSET_STREAM: &str = "application/offset+octet-stream";

const TUS_RESUMABLE: HeaderName = HeaderName::from_static("tus-resumable");
const UPLOAD_LENGTH: HeaderName = HeaderName::from_static("upload-length");
const UPLOAD_OFFSET: HeaderName = HeaderName::from_static("upload-offset");
const UPLOAD_METADATA: HeaderName = HeaderName::from_static("upload-metadata");

/// One resumable upload: what its id says.
#[derive(Debug, Clone, PartialEq, Eq)]
struct UploadId {
    name: String,
    length: u64,
    overwrite: bool,
}

impl UploadId {
    /// `<length>-<0|1>-<name as hex>`.
    fn encode(&self) -> String {
        format!(
            "{}-{}-{}",
            self.length,
            u8::from(self.overwrite),
            hex::encode(self.name.as_bytes())
        )
    }

    fn decode(id: &str) -> Option<UploadId> {
        let mut parts = id.splitn(3, '-');
        let length = parts.next()?.parse().ok()?;
        let overwrite = match parts.next()? {
            "0" => false,
            "1" => true,
            _ => return None,
        };
        let name = String::from_utf8(hex::decode(parts.next()?).ok()?).ok()?;
        Some(UploadId {
            name,
            length,
            overwrite,
        })
    }
}

/// A tus response: `status` with `Tus-Resumable` and no caching.
fn tus_response(status: StatusCode) -> Response {
    let mut response = status.into_response();
    let headers = response.headers_mut();
    headers.insert(TUS_RESUMABLE, HeaderValue::from_static(TUS_VERSION));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// An error with `Tus-Resumable`.
fn tus_error(err: &OpError) -> Response {
    let mut response = error_response(err);
    response
        .headers_mut()
        .insert(TUS_RESUMABLE, HeaderValue::from_static(TUS_VERSION));
    response
}

/// A header holding a non-negative integer.
fn number(headers: &HeaderMap, name: &HeaderName) -> Result<Option<u64>, OpError> {
    headers
        .get(name)
        .map(|value| {
            value
                .to_str()
                .ok()
                .and_then(|value| value.trim().parse().ok())
                .ok_or_else(|| OpError::bad_request(format!("{name} must be a whole number")))
        })
        .transpose()
}

/// `412` when the client names a version other than ours.
fn version_refused(headers: &HeaderMap) -> Option<Response> {
    match headers.get(TUS_RESUMABLE) {
        Some(version) if version.as_bytes() != TUS_VERSION.as_bytes() => {
            let mut response = tus_response(StatusCode::PRECONDITION_FAILED);
            response
                .headers_mut()
                .insert("tus-version", HeaderValue::from_static(TUS_VERSION));
            Some(response)
        }
        _ => None,
    }
}

/// `Upload-Metadata`: comma-separated `key base64value` pairs.
fn metadata(headers: &HeaderMap) -> Vec<(String, Vec<u8>)> {
    let Some(value) = headers.get(UPLOAD_METADATA).and_then(|v| v.to_str().ok()) else {
        return Vec::new();
    };
    value
        .split(',')
        .filter_map(|pair| {
            let mut words = pair.trim().splitn(2, ' ');
            let key = words.next()?.to_owned();
            let value = words.next().map_or(Some(Vec::new()), base64_decode)?;
            Some((key, value))
        })
        .collect()
}

/// Standard base64 (with or without padding), as tus metadata carries it.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let digit = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        })
    };
    let text = text.trim().trim_end_matches('=').as_bytes();
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    for group in text.chunks(4) {
        let mut acc = 0u32;
        for &c in group {
            acc = (acc << 6) | digit(c)?;
        }
        let bits = group.len() * 6;
        acc <<= 24 - bits;
        let bytes = acc.to_be_bytes();
        match group.len() {
            4 => out.extend_from_slice(&bytes[1..4]),
            3 => out.extend_from_slice(&bytes[1..3]),
            2 => out.push(bytes[1]),
            _ => return None,
        }
    }
    Some(out)
}

/// The characters a path segment may hold as they are.
fn unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

/// `name` percent-encoded for a path segment.
pub(super) fn percent_encode(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for &byte in name.as_bytes() {
        if unreserved(byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The query of `POST /api/uploads`.
#[derive(Debug, Deserialize)]
pub(super) struct CreateQuery {
    #[serde(default)]
    overwrite: bool,
}

/// `OPTIONS /api/uploads[/<id>]`: what this server speaks.
pub(super) async fn options() -> Response {
    let mut response = tus_response(StatusCode::NO_CONTENT);
    let headers = response.headers_mut();
    headers.insert("tus-version", HeaderValue::from_static(TUS_VERSION));
    headers.insert("tus-extension", HeaderValue::from_static("creation"));
    response
}

/// `POST /api/uploads`: a new upload of `Upload-Length` bytes named by the `filename` (or
/// `name`) metadata; `409` if the name is taken (unless `overwrite`), `400` for a bad name.
pub(super) async fn create(
    State(web): WebState,
    Extension(conn): Extension<ConnInfo>,
    query: Result<Query<CreateQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Response {
    let query = match query_params(query) {
        Ok(query) => query,
        Err(refused) => return *refused,
    };
    if let Some(refused) = version_refused(&headers) {
        return refused;
    }
    let Some(length) = (match number(&headers, &UPLOAD_LENGTH) {
        Ok(length) => length,
        Err(err) => return tus_error(&err),
    }) else {
        return tus_error(&OpError::bad_request(
            "Upload-Length is required (deferred lengths are not supported)",
        ));
    };
    let meta = metadata(&headers);
    let field = |key: &str| {
        meta.iter()
            .find(|(k, _)| k == key)
            .map(|(_, value)| String::from_utf8_lossy(value).into_owned())
    };
    let Some(name) = field("filename").or_else(|| field("name")) else {
        return tus_error(&OpError::bad_request(
            "Upload-Metadata must give the file's name (filename)",
        ));
    };
    let overwrite = query.overwrite || field("overwrite").as_deref() == Some("true");
    if let Err(err) = check_free(&web, &name, overwrite).await {
        return tus_error(&err);
    }
    if length == 0 {
        let body = RequestBody::new(Body::empty(), Some(0), web.idle_timeout, None);
        let stored = super::files::store_body(&web.core, conn.peer.ip(), &name, overwrite, body);
        if let Err(err) = stored.await {
            return tus_error(&err);
        }
    }
    let id = UploadId {
        name,
        length,
        overwrite,
    };
    let mut response = tus_response(StatusCode::CREATED);
    let location = format!("/api/uploads/{}", id.encode());
    let headers = response.headers_mut();
    headers.insert(
        header::LOCATION,
        HeaderValue::from_str(&location).expect("hex and digits"),
    );
    headers.insert(UPLOAD_OFFSET, HeaderValue::from(0u64));
    response
}

/// Checks that `name` is a good name, free unless `overwrite`.
async fn check_free(web: &super::Web, name: &str, overwrite: bool) -> Result<(), OpError> {
    let name = FileName::new(name)?;
    if overwrite {
        return Ok(());
    }
    let store = Arc::clone(&web.core.store);
    let taken = blocking(move || store.stat(&name).map(|info| info.map(|_| name)))
        .await
        .map_err(|err| OpError::new(ErrorCode::Internal, err))?;
    match taken {
        Some(name) => Err(OpError::new(
            ErrorCode::Exists,
            format!(
                "a file named {:?} already exists (ask to overwrite to replace it)",
                name.as_str()
            ),
        )),
        None => Ok(()),
    }
}

/// How much of upload `id` the store holds: the partial's bytes, or the whole length once the
/// file is stored (a new upload over nothing else of that length).
async fn held(web: &super::Web, id: &UploadId) -> Result<u64, OpError> {
    let name = FileName::new(&id.name)?;
    let store = Arc::clone(&web.core.store);
    let (length, overwrite) = (id.length, id.overwrite);
    blocking(move || {
        let partial = store.partial_held(&name, length);
        if partial > 0 || overwrite {
            return Ok(partial);
        }
        let stored = store.stat(&name)?;
        Ok(match stored {
            Some(info) if info.length == length => length,
            _ => 0,
        })
    })
    .await
    .map_err(|err: std::io::Error| OpError::new(ErrorCode::Internal, err))
}

/// `404` for a path that names no upload.
fn no_such_upload() -> Response {
    tus_error(&OpError::new(ErrorCode::NotFound, "no such upload"))
}

/// `HEAD /api/uploads/<id>`: `Upload-Offset` (bytes held) and `Upload-Length`.
pub(super) async fn offset(
    State(web): WebState,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = version_refused(&headers) {
        return refused;
    }
    let Some(id) = UploadId::decode(&id) else {
        return no_such_upload();
    };
    match held(&web, &id).await {
        Ok(held) => {
            let mut response = tus_response(StatusCode::OK);
            let headers = response.headers_mut();
            headers.insert(UPLOAD_OFFSET, HeaderValue::from(held));
            headers.insert(UPLOAD_LENGTH, HeaderValue::from(id.length));
            response
        }
        Err(err) => tus_error(&err),
    }
}

/// `PATCH /api/uploads/<id>`: appends the body at `Upload-Offset`, which must be what is held
/// (`409` otherwise); once the upload has all its bytes, the file is stored.
pub(super) async fn append(
    State(web): WebState,
    Extension(conn): Extension<ConnInfo>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if let Some(refused) = version_refused(&headers) {
        return refused;
    }
    let Some(id) = UploadId::decode(&id) else {
        return no_such_upload();
    };
    if headers.get(header::CONTENT_TYPE).map(HeaderValue::as_bytes)
        != Some(OFFSET_STREAM.as_bytes())
    {
        return tus_error(&OpError::bad_request(format!(
            "a PATCH body must be {OFFSET_STREAM}"
        )))
        .map_unsupported();
    }
    let (offset, length) = match (
        number(&headers, &UPLOAD_OFFSET),
        number(&headers, &header::CONTENT_LENGTH),
    ) {
        (Ok(Some(offset)), Ok(length)) => (offset, length),
        (Err(err), _) | (_, Err(err)) => return tus_error(&err),
        (Ok(None), _) => return tus_error(&OpError::bad_request("Upload-Offset is required")),
    };
    match append_at(&web, &conn, &id, offset, length, body).await {
        Ok(now) => {
            let mut response = tus_response(StatusCode::NO_CONTENT);
            response
                .headers_mut()
                .insert(UPLOAD_OFFSET, HeaderValue::from(now));
            response
        }
        Err(err) => tus_error(&err),
    }
}

/// Appends `body` (`length` bytes, when said) to upload `id` at `offset`; the bytes held
/// after it. Stores the file once all its bytes have come.
async fn append_at(
    web: &super::Web,
    conn: &ConnInfo,
    id: &UploadId,
    offset: u64,
    length: Option<u64>,
    body: Body,
) -> Result<u64, OpError> {
    let held = held(web, id).await?;
    if offset != held {
        return Err(OpError::new(
            ErrorCode::BadOffset,
            format!("Upload-Offset is {offset}, but {held} bytes are held"),
        ));
    }
    let left = id.length - offset;
    if length.is_some_and(|length| length > left) {
        return Err(OpError::bad_request(format!(
            "the body is longer than the {left} bytes the upload still needs"
        )));
    }
    let request = PutRequest {
        name: Cow::Borrowed(&id.name),
        offset,
        hash: None,
        trailer: false,
        overwrite: id.overwrite,
        chunked: false,
    };
    let peer = conn.peer.ip();
    let (upload, hasher, plan) = files::begin_put(&web.core, peer, &request, left).await?;
    let mut body = RequestBody::new(
        body,
        Some(length.unwrap_or(left)),
        web.idle_timeout,
        web.core.min_rate,
    );
    let mut pipeline = BodyPipeline::start(hasher, upload);
    let fed = pipeline.feed(&mut body, &mut |_| {}).await;
    let received = pipeline.received();
    let (upload, hash, written) = pipeline.finish().await;
    if let Err(err) = written {
        files::discard(upload).await;
        return Err(err.into());
    }
    if let Err(err) = fed {
        // What arrived is held for the next PATCH.
        tracing::info!(%peer, name = id.name, %err, "tus upload cut; held for a resume");
        return Err(OpError::new(ErrorCode::BadRequest, err));
    }
    let now = offset + received;
    if now == id.length {
        let reply = plan.finish(upload, hash, None).await?;
        tracing::info!(%peer, name = reply.name, bytes = reply.length, "tus upload stored");
    }
    Ok(now)
}

/// `415` for a body of the wrong type.
trait Unsupported {
    fn map_unsupported(self) -> Self;
}

impl Unsupported for Response {
    fn map_unsupported(mut self) -> Response {
        *self.status_mut() = StatusCode::UNSUPPORTED_MEDIA_TYPE;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_says_the_name_the_length_and_whether_to_overwrite() {
        let id = UploadId {
            name: "a b-ç.txt".into(),
            length: 1234,
            overwrite: true,
        };
        assert_eq!(UploadId::decode(&id.encode()), Some(id));
        assert_eq!(UploadId::decode("12-2-61"), None);
        assert_eq!(UploadId::decode("x-0-61"), None);
        assert_eq!(UploadId::decode("12-0-zz"), None);
    }

    #[test]
    fn metadata_is_base64_with_or_without_padding() {
        assert_eq!(base64_decode("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(base64_decode("aGVsbG8").unwrap(), b"hello");
        assert_eq!(base64_decode("dHJ1ZQ==").unwrap(), b"true");
        assert_eq!(base64_decode("YQ").unwrap(), b"a");
        assert_eq!(base64_decode("a"), None);
        assert_eq!(base64_decode("a*b="), None);
    }

    #[test]
    fn names_are_percent_encoded_for_a_path() {
        assert_eq!(percent_encode("a b/ç.txt"), "a%20b%2F%C3%A7.txt");
    }
}
