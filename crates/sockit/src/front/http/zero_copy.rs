//! Plain-HTTP downloads sent from the page cache to the socket by `sendfile(2)`, the way nginx
//! sends them: the file's bytes never pass through the server's memory.
//!
//! hyper writes every body from buffers, and gives a connection no way to hand it a file. So a
//! plain (not HTTPS) connection starts here: while its requests are downloads (`GET
//! /files/<name>`, HTTP/1.1, no body, no upgrade), each head is parsed by `httparse` (hyper's
//! own parser) into an `http::Request` and answered by the same router as every other request,
//! login wall, cross-site checks and all. The download handler sees the [`ZeroCopy`] slot in the
//! request's extensions and leaves the opened file there instead of a body; this module writes
//! the response head and then the file with `sendfile`. Any other answer (`401`, `404`, `416`)
//! is small and written whole. The first request that is not a download, or anything this
//! module does not parse, hands the connection, with every byte already read, to hyper
//! ([`Served::Handoff`]), which serves it from then on.
//!
//! The sending runs on a thread of the blocking pool: a page not in the cache is read from
//! disk there, not on a runtime worker. The socket stays non-blocking; when it is full the
//! thread waits in `poll(2)`, a tenth of a second at a time, so that a cancelled download (the
//! client too slow for the pace, or silent past the idle timeout) ends within that.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::SystemTime;

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Request, Uri, Version};
use bytes::{Buf, Bytes, BytesMut};
use http_body_util::BodyExt;
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags};
use nix::sys::socket::MsgFlags;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tower::ServiceExt;

use super::guard::{Activity, Guarded, Sending};
use super::{ConnInfo, HttpFront};
use crate::core::files::Download;

/// The largest head this module parses; a larger one goes to hyper, which allows up to
/// [`MAX_HEAD`](super::MAX_HEAD).
const MAX_PARSED_HEAD: usize = 16 * 1024;

/// The most header fields this module parses; more go to hyper.
const MAX_FIELDS: usize = 64;

/// The largest body of a response that is not a file (an error reply).
const MAX_SMALL_BODY: usize = 64 * 1024;

/// How long the sending thread waits in `poll` before it looks whether it was cancelled.
const POLL_SLICE_MS: u16 = 100;

/// How a connection left this module.
#[derive(Debug)]
pub(super) enum Served {
    /// It is done: closed, idle, or the server is stopping.
    Closed,
    /// Its next request is not a download: hyper serves it from here, starting with these bytes
    /// already read.
    Handoff(Bytes),
}

/// Where the download handler leaves what it opened for a request that can be answered with
/// `sendfile`, instead of a body.
#[derive(Debug, Clone, Default)]
pub(crate) struct ZeroCopy(Arc<Mutex<Option<FileSpan>>>);

/// An opened download: `len` bytes of `download`'s file from `start`, and the connection's
/// pace held while they are sent.
#[derive(Debug)]
pub(crate) struct FileSpan {
    pub(crate) download: Download,
    pub(crate) start: u64,
    pub(crate) len: u64,
    pub(crate) _sending: Sending,
}

impl ZeroCopy {
    /// Leaves `span` to be sent after the response head.
    pub(crate) fn fill(&self, span: FileSpan) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(span);
    }

    fn take(&self) -> Option<FileSpan> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

/// A request head parsed here.
enum Head {
    /// A download, and how many bytes of the buffer its head took.
    Download(Box<Request<Body>>, usize),
    /// Not one this module answers.
    Other,
}

impl HttpFront {
    /// Answers downloads on a plain connection with `sendfile` until it closes or sends
    /// something else (see the module docs).
    pub(super) async fn serve_downloads(
        &self,
        stream: &mut Guarded<TcpStream>,
        info: &ConnInfo,
    ) -> Served {
        let mut buffer = BytesMut::new();
        loop {
            let (request, head_len) = match self.read_head(stream, info, &mut buffer).await {
                Some(Head::Download(request, head_len)) => (request, head_len),
                Some(Head::Other) => return Served::Handoff(buffer.freeze()),
                None => return Served::Closed,
            };
            buffer.advance(head_len);
            let close = wants_close(request.headers());
            match self.answer(stream, *request).await {
                Ok(()) if !close && !info.stop.is_cancelled() => {}
                Ok(()) => return Served::Closed,
                Err(err) => {
                    tracing::debug!(%err, "http download ended");
                    return Served::Closed;
                }
            }
        }
    }

    /// Reads into `buffer` until it holds a whole head. `None` when the connection closed, fell
    /// idle, took too long over the head, or the server is stopping while it waits.
    async fn read_head(
        &self,
        stream: &mut Guarded<TcpStream>,
        info: &ConnInfo,
        buffer: &mut BytesMut,
    ) -> Option<Head> {
        let idle = stream.activity();
        if buffer.is_empty() {
            buffer.reserve(4096);
            let read = tokio::select! {
                read = stream.read_buf(buffer) => read,
                () = idle.expired(self.idle_timeout) => return None,
                () = info.stop.cancelled() => return None,
            };
            if !matches!(read, Ok(1..)) {
                return None;
            }
        }
        let rest = async {
            loop {
                match parse_head(buffer, info) {
                    Some(head) => return Some(head),
                    None if buffer.len() < MAX_PARSED_HEAD => {}
                    None => return Some(Head::Other),
                }
                buffer.reserve(4096);
                if !matches!(stream.read_buf(buffer).await, Ok(1..)) {
                    return None;
                }
            }
        };
        tokio::time::timeout(self.header_timeout, rest)
            .await
            .ok()
            .flatten()
    }

    /// Answers one download request: through the router, then the file by `sendfile` or the
    /// small body as it is.
    async fn answer(
        &self,
        stream: &mut Guarded<TcpStream>,
        mut request: Request<Body>,
    ) -> io::Result<()> {
        let slot = ZeroCopy::default();
        request.extensions_mut().insert(slot.clone());
        let response = self.router.clone().oneshot(request).await;
        let Ok(response) = response;
        let (parts, body) = response.into_parts();
        let mut headers = parts.headers;
        let status = parts.status;
        match slot.take() {
            Some(span) => {
                let head = response_head(status, &headers);
                self.send_span(stream, head, span).await
            }
            None => {
                let body = http_body_util::Limited::new(body, MAX_SMALL_BODY)
                    .collect()
                    .await
                    .map_err(io::Error::other)?
                    .to_bytes();
                headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
                let mut bytes = response_head(status, &headers);
                bytes.extend_from_slice(&body);
                stream.write_all(&bytes).await
            }
        }
    }

    /// Sends `head` and then `span` on a thread of the blocking pool, cut when the connection
    /// falls idle or slower than the pace.
    async fn send_span(
        &self,
        stream: &Guarded<TcpStream>,
        head: Vec<u8>,
        span: FileSpan,
    ) -> io::Result<()> {
        let socket = stream.get_ref().as_fd().try_clone_to_owned()?;
        let activity = stream.activity();
        let cancelled = Arc::new(AtomicBool::new(false));
        let _cancel_on_drop = CancelOnDrop(Arc::clone(&cancelled));
        let sender = Sender {
            socket,
            activity: activity.clone(),
            cancelled: Arc::clone(&cancelled),
        };
        let sending = tokio::task::spawn_blocking(move || sender.send(&head, &span));
        tokio::select! {
            sent = sending => sent.map_err(io::Error::other)?,
            () = activity.expired(self.idle_timeout) => {
                Err(io::Error::new(io::ErrorKind::TimedOut, "download idle"))
            }
            () = activity.too_slow(self.pace) => {
                Err(io::Error::new(io::ErrorKind::TimedOut, "download slower than the pace"))
            }
        }
    }
}

/// Sets the flag when the download's future is dropped or ends, so that its thread stops.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// The sending thread's end of a download.
struct Sender {
    /// The connection's socket (a duplicate, so it outlives the connection's task if need be).
    socket: OwnedFd,
    activity: Activity,
    cancelled: Arc<AtomicBool>,
}

impl Sender {
    /// Sends `head` (held back, with `MSG_MORE`, to leave in the same segment as the file's
    /// first bytes) and then the span of the file.
    fn send(&self, head: &[u8], span: &FileSpan) -> io::Result<()> {
        let more = if span.len > 0 {
            MsgFlags::from_bits_retain(libc::MSG_MORE)
        } else {
            MsgFlags::empty()
        };
        let mut sent = 0;
        while sent < head.len() {
            sent +=
                self.step(|| nix::sys::socket::send(self.socket.as_raw_fd(), &head[sent..], more))?;
        }
        let mut offset = i64::try_from(span.start).map_err(io::Error::other)?;
        let mut left = span.len;
        while left > 0 {
            let count = usize::try_from(left).unwrap_or(usize::MAX).min(1 << 30);
            let file = &span.download.file;
            let sent = self.step(|| {
                nix::sys::sendfile::sendfile(&self.socket, file, Some(&mut offset), count)
            })?;
            if sent == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the file ended before its length",
                ));
            }
            left -= sent as u64;
        }
        Ok(())
    }

    /// Runs `op` until it moves some bytes, waiting in `poll` while the socket is full; notes
    /// what moved in the connection's activity.
    fn step(&self, mut op: impl FnMut() -> nix::Result<usize>) -> io::Result<usize> {
        loop {
            if self.cancelled.load(Ordering::Relaxed) {
                return Err(io::Error::new(io::ErrorKind::Interrupted, "cancelled"));
            }
            match op() {
                Ok(sent) => {
                    self.activity.wrote(sent);
                    return Ok(sent);
                }
                Err(Errno::EAGAIN | Errno::EINTR) => {
                    let mut fds = [PollFd::new(self.socket.as_fd(), PollFlags::POLLOUT)];
                    match nix::poll::poll(&mut fds, POLL_SLICE_MS) {
                        Ok(_) | Err(Errno::EINTR) => {}
                        Err(err) => return Err(err.into()),
                    }
                }
                Err(err) => return Err(err.into()),
            }
        }
    }
}

/// A stream that first gives back the bytes already read from it: how hyper takes over a
/// connection from this module.
#[derive(Debug)]
pub(super) struct Prefixed<S> {
    prefix: Bytes,
    inner: S,
}

impl<S> Prefixed<S> {
    pub(super) fn new(prefix: Bytes, inner: S) -> Prefixed<S> {
        Prefixed { prefix, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.prefix.is_empty() {
            return Pin::new(&mut self.inner).poll_read(cx, buf);
        }
        let len = self.prefix.len().min(buf.remaining());
        buf.put_slice(&self.prefix.split_to(len));
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Parses the head at the start of `buffer`: a download this module answers, or not; `None`
/// while the head is not complete.
fn parse_head(buffer: &[u8], info: &ConnInfo) -> Option<Head> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
    let mut parsed = httparse::Request::new(&mut fields);
    let head_len = match parsed.parse(buffer) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return None,
        Err(_) => return Some(Head::Other), // hyper answers it
    };
    let (Some("GET"), Some(path), Some(1)) = (parsed.method, parsed.path, parsed.version) else {
        return Some(Head::Other);
    };
    if !path.starts_with("/files/") {
        return Some(Head::Other);
    }
    let Ok(uri) = path.parse::<Uri>() else {
        return Some(Head::Other);
    };
    let mut headers = HeaderMap::with_capacity(parsed.headers.len());
    for field in parsed.headers.iter() {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(field.name.as_bytes()),
            HeaderValue::from_bytes(field.value),
        ) else {
            return Some(Head::Other);
        };
        headers.append(name, value);
    }
    let has_body = headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .is_some_and(|length| length.as_bytes() != b"0");
    if has_body || headers.contains_key(header::UPGRADE) || headers.contains_key(header::EXPECT) {
        return Some(Head::Other);
    }
    let mut request = Request::new(Body::empty());
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = headers;
    request.extensions_mut().insert(info.clone());
    Some(Head::Download(Box::new(request), head_len))
}

/// Whether the request asks for the connection to close after its response.
fn wants_close(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|option| option.trim().eq_ignore_ascii_case("close"))
}

/// The status line and header fields of a response, with the date, as hyper writes them.
fn response_head(status: axum::http::StatusCode, headers: &HeaderMap) -> Vec<u8> {
    let mut head = Vec::with_capacity(256);
    head.extend_from_slice(b"HTTP/1.1 ");
    head.extend_from_slice(status.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    head.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"date: ");
    head.extend_from_slice(httpdate::fmt_http_date(SystemTime::now()).as_bytes());
    head.extend_from_slice(b"\r\n\r\n");
    head
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_is_found_among_the_connection_options() {
        let mut headers = HeaderMap::new();
        assert!(!wants_close(&headers));
        headers.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        assert!(!wants_close(&headers));
        headers.append(header::CONNECTION, HeaderValue::from_static("TE, Close"));
        assert!(wants_close(&headers));
    }

    #[test]
    fn a_head_is_the_status_line_the_fields_and_the_date() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(5));
        let head = String::from_utf8(response_head(
            axum::http::StatusCode::PARTIAL_CONTENT,
            &headers,
        ))
        .unwrap();
        assert!(head.starts_with("HTTP/1.1 206 Partial Content\r\ncontent-length: 5\r\ndate: "));
        assert!(head.ends_with(" GMT\r\n\r\n"));
    }
}
