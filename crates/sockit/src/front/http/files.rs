//! The file store over HTTP: `GET /api/files` (a `list` page's body, as is), `GET
//! /files/<name>` (the file, or a `Range` of it), `PUT /files/<name>` (stored atomically and
//! verified, as a framed `put`).
//!
//! Each download and upload holds one of the streaming slots the framed port's transfers take
//! ([`files::open_get`], [`files::begin_put`]), and a listing its share of the memory budget.
//! An upload streams through [`BodyPipeline`] into a partial file of the store that nobody
//! sees; only a body that arrived whole is synced and renamed under its name. A body cut off
//! leaves nothing, not even a partial.

use std::borrow::Cow;
use std::time::{Duration, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use bytes::Bytes;
use serde::Deserialize;
use sockit_proto::message::{list_limit, GetRequest, ListRequest, PutReply, PutRequest};
use sockit_proto::ErrorCode;

use super::body::RequestBody;
use super::guard::Sending;
use super::routes::{error_response, query_params, WebState};
use super::zero_copy::{FileSpan, ZeroCopy};
use super::ConnInfo;
use crate::core::files::{self, Download, ListBody};
use crate::core::OpError;
use crate::transfer::{BodyPipeline, FileReader};

/// The query of `GET /api/files`: the `list` op's `after` and `limit` (read as the framed
/// `list` reads it).
#[derive(Debug, Deserialize)]
pub(super) struct ListQuery {
    after: Option<String>,
    limit: Option<String>,
}

/// `GET /api/files`: one page of the listing, exactly the body of the `list` op (a JSON array
/// of `name`, `length`, `modified`). `Sockit-More: true` says that more follow the last name.
pub(super) async fn list(
    State(web): WebState,
    Extension(conn): Extension<ConnInfo>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Response {
    let query = match query_params(query) {
        Ok(query) => query,
        Err(refused) => return *refused,
    };
    let limit = match query.limit.as_deref().map(list_limit).transpose() {
        Ok(limit) => limit,
        Err(why) => return error_response(&OpError::bad_request(why)),
    };
    let request = ListRequest {
        after: query.after.map(Cow::Owned),
        limit,
    };
    match files::list(&web.core, conn.peer.ip(), &request).await {
        Ok((reply, body)) => {
            let more = if reply.more { "true" } else { "false" };
            (
                [
                    (header::CONTENT_TYPE, "application/json"),
                    (header::CACHE_CONTROL, "no-store"),
                    (header::HeaderName::from_static("sockit-more"), more),
                ],
                page_body(body),
            )
                .into_response()
        }
        Err(err) => error_response(&err),
    }
}

/// A listing's body, holding its share of the memory budget until it has been handed to the
/// connection.
fn page_body(page: ListBody) -> Body {
    let json = futures_util::stream::unfold(Some(page), |page| async move {
        let mut page = page?;
        if page.json.is_empty() {
            return None; // sent: the memory goes back with the page
        }
        let json = Bytes::from(std::mem::take(&mut page.json));
        Some((Ok::<_, std::io::Error>(json), Some(page)))
    });
    Body::from_stream(json)
}

/// A byte range asked for, resolved against the file's length: the first byte and how many.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    start: u64,
    len: u64,
}

/// What a `Range` header asks of a file of `length` bytes: `None` for the whole file (no
/// header, a unit other than bytes, several ranges), `Some(Err)` for a range that cannot be
/// satisfied (`416`).
fn requested_span(headers: &HeaderMap, length: u64) -> Option<Result<Span, ()>> {
    let range = headers.get(header::RANGE)?.to_str().ok()?;
    let spec = range.strip_prefix("bytes=")?.trim();
    if spec.contains(',') {
        return None;
    }
    let (first, last) = spec.split_once('-')?;
    let (first, last) = (first.trim(), last.trim());
    let span = if first.is_empty() {
        let suffix: u64 = last.parse().ok()?;
        if suffix == 0 || length == 0 {
            return Some(Err(()));
        }
        let len = suffix.min(length);
        Span {
            start: length - len,
            len,
        }
    } else {
        let start: u64 = first.parse().ok()?;
        let end = if last.is_empty() {
            length.saturating_sub(1)
        } else {
            let end: u64 = last.parse().ok()?;
            if end < start {
                return None;
            }
            end.min(length.saturating_sub(1))
        };
        if start >= length {
            return Some(Err(()));
        }
        Span {
            start,
            len: end - start + 1,
        }
    };
    Some(Ok(span))
}

/// Whether a `Range` may be served: yes without `If-Range`; with one, only if it names the file
/// as it is now, by its entity tag (compared strongly: a weak tag never matches) or by its
/// exact modification date (RFC 9110 §13.1.5). A client resuming a download of a file that was
/// replaced meanwhile then gets the whole new file, never its tail glued to the old file's
/// head.
fn range_still_applies(headers: &HeaderMap, etag: &str, last_modified: Option<&str>) -> bool {
    let Some(if_range) = headers.get(header::IF_RANGE) else {
        return true;
    };
    let Ok(if_range) = if_range.to_str() else {
        return false;
    };
    let if_range = if_range.trim();
    if if_range.starts_with('"') || if_range.starts_with("W/") {
        if_range == etag
    } else {
        last_modified == Some(if_range)
    }
}

/// `GET /files/<name>`: the stored file, `206` with the span of a `Range`, `404` if absent.
/// Asked through [`zero_copy`](super::zero_copy), the opened file is left in its slot, to be
/// sent with `sendfile`, and the body is empty.
pub(super) async fn download(
    State(web): WebState,
    Extension(conn): Extension<ConnInfo>,
    zero_copy: Option<Extension<ZeroCopy>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    let request = GetRequest {
        name: Cow::Owned(name),
        offset: 0,
        if_hash: None,
    };
    let (reply, download) = match files::open_get(&web.core, conn.peer.ip(), &request).await {
        Ok(opened) => opened,
        Err(err) => return error_response(&err),
    };
    let length = reply.length;
    let etag = format!("\"{}\"", reply.hash);
    let last_modified = reply
        .modified
        .map(|secs| httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(secs)));
    let range = if range_still_applies(&headers, &etag, last_modified.as_deref()) {
        requested_span(&headers, length)
    } else {
        None // the file changed since the client's copy began: all of it
    };
    let (status, span) = match range {
        None => (
            StatusCode::OK,
            Span {
                start: 0,
                len: length,
            },
        ),
        Some(Ok(span)) => (StatusCode::PARTIAL_CONTENT, span),
        Some(Err(())) => {
            return (
                StatusCode::RANGE_NOT_SATISFIABLE,
                [(header::CONTENT_RANGE, format!("bytes */{length}"))],
            )
                .into_response()
        }
    };
    let sending = conn.activity.sending();
    let body = match zero_copy {
        Some(Extension(zero_copy)) => {
            zero_copy.fill(FileSpan {
                download,
                start: span.start,
                len: span.len,
                _sending: sending,
            });
            Body::empty()
        }
        None => match FileReader::start(&download.file, span.start, span.len, false) {
            Ok(reader) => file_body(reader, download, sending),
            Err(err) => return error_response(&OpError::new(ErrorCode::Internal, err)),
        },
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(span.len));
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Ok(etag) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, etag);
    }
    if let Some(Ok(date)) = last_modified.map(HeaderValue::try_from) {
        headers.insert(header::LAST_MODIFIED, date);
    }
    if status == StatusCode::PARTIAL_CONTENT {
        let last = span.start + span.len - 1;
        let range = format!("bytes {}-{last}/{length}", span.start);
        headers.insert(
            header::CONTENT_RANGE,
            HeaderValue::from_str(&range).expect("digits are a header value"),
        );
    }
    response
}

/// The body of a download: the chunks `reader` reads, holding `download` (its streaming slot)
/// until the last is sent or the client goes. While it lasts, `sending` holds the connection to
/// the transfer pace (see [`guard`](super::guard)).
fn file_body(reader: FileReader, download: Download, sending: Sending) -> Body {
    let chunks =
        futures_util::stream::unfold(Some((reader, download, sending)), |state| async move {
            let (mut reader, download, sending) = state?;
            match reader.next_bytes().await? {
                Ok(bytes) => Some((Ok(bytes), Some((reader, download, sending)))),
                Err(err) => Some((Err(err), None)),
            }
        });
    Body::from_stream(chunks)
}

/// The query of `PUT /files/<name>`.
#[derive(Debug, Deserialize)]
pub(super) struct PutQuery {
    #[serde(default)]
    overwrite: bool,
}

/// `PUT /files/<name>`: stores the body under `name`, atomically and verified; `201` with the
/// `put` reply (`name`, `length`, `hash`), `409` if the name is taken (unless
/// `?overwrite=true`), `400` for a bad name.
pub(super) async fn upload(
    State(web): WebState,
    Extension(conn): Extension<ConnInfo>,
    Path(name): Path<String>,
    query: Result<Query<PutQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let query = match query_params(query) {
        Ok(query) => query,
        Err(refused) => return *refused,
    };
    let length = match declared_length(&headers) {
        Ok(length) => length,
        Err(err) => return error_response(&err),
    };
    let body = RequestBody::new(body, length, web.idle_timeout, web.core.min_rate);
    match store_body(&web.core, conn.peer.ip(), &name, query.overwrite, body).await {
        Ok(reply) => {
            let location = format!("/files/{}", super::tus::percent_encode(&reply.name));
            let mut response = (StatusCode::CREATED, axum::Json(reply)).into_response();
            if let Ok(location) = HeaderValue::from_str(&location) {
                response.headers_mut().insert(header::LOCATION, location);
            }
            response
        }
        Err(err) => error_response(&err),
    }
}

/// The request's `Content-Length`, when it has one.
fn declared_length(headers: &HeaderMap) -> Result<Option<u64>, OpError> {
    headers
        .get(header::CONTENT_LENGTH)
        .map(|value| {
            value
                .to_str()
                .ok()
                .and_then(|value| value.parse().ok())
                .ok_or_else(|| OpError::bad_request("Content-Length is not a number"))
        })
        .transpose()
}

/// Streams `body` into a new upload of `name` and stores it once it arrived whole. The upload
/// is a stream of the store's: whatever cuts it, its partial is deleted.
pub(super) async fn store_body(
    core: &crate::core::Core,
    peer: std::net::IpAddr,
    name: &str,
    overwrite: bool,
    mut body: RequestBody,
) -> Result<PutReply, OpError> {
    let request = PutRequest {
        name: Cow::Borrowed(name),
        offset: 0,
        hash: None,
        trailer: false,
        overwrite,
        chunked: true,
    };
    let (upload, hasher, plan) = files::begin_put(core, peer, &request, 0).await?;
    let mut pipeline = BodyPipeline::start(hasher, upload);
    let fed = pipeline.feed(&mut body, &mut |_| {}).await;
    let (upload, hash, written) = pipeline.finish().await;
    if let Err(err) = fed {
        files::discard(upload).await;
        tracing::info!(%peer, name, %err, "http put cut short");
        return Err(OpError::new(ErrorCode::BadRequest, err));
    }
    if let Err(err) = written {
        files::discard(upload).await;
        return Err(err.into());
    }
    let reply = plan.finish(upload, hash, None).await?;
    tracing::info!(%peer, name, bytes = reply.length, "http put done");
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(range: &str, length: u64) -> Option<Result<Span, ()>> {
        let mut headers = HeaderMap::new();
        headers.insert(header::RANGE, HeaderValue::from_str(range).unwrap());
        requested_span(&headers, length)
    }

    #[test]
    fn if_range_keeps_the_range_only_for_the_same_file() {
        let etag = "\"abc\"";
        let date = "Wed, 02 Dec 2026 04:27:15 GMT";
        let applies = |if_range: Option<&str>| {
            let mut headers = HeaderMap::new();
            if let Some(value) = if_range {
                headers.insert(header::IF_RANGE, HeaderValue::from_str(value).unwrap());
            }
            range_still_applies(&headers, etag, Some(date))
        };
        assert!(applies(None));
        assert!(applies(Some("\"abc\"")));
        assert!(!applies(Some("\"abd\"")), "another file");
        assert!(!applies(Some("W/\"abc\"")), "weak tags never match");
        assert!(applies(Some(date)));
        assert!(!applies(Some("Wed, 02 Dec 2026 04:27:16 GMT")));
        assert!(!applies(Some("yesterday")));
    }

    #[test]
    fn ranges_resolve_against_the_length() {
        let ok = |start, len| Some(Ok(Span { start, len }));
        assert_eq!(span("bytes=0-9", 100), ok(0, 10));
        assert_eq!(span("bytes=90-", 100), ok(90, 10));
        assert_eq!(span("bytes=90-500", 100), ok(90, 10));
        assert_eq!(span("bytes=-10", 100), ok(90, 10));
        assert_eq!(span("bytes=-500", 100), ok(0, 100));
        assert_eq!(span("bytes=100-", 100), Some(Err(())));
        assert_eq!(span("bytes=-0", 100), Some(Err(())));
        assert_eq!(span("bytes=5-1", 100), None, "invalid: ignored");
        assert_eq!(span("bytes=0-1,5-6", 100), None, "several: the whole file");
        assert_eq!(span("items=0-1", 100), None);
    }
}
