//! A framed connection: one socket, its read and write buffers, and its deadlines.
//!
//! Reading follows the decoder: [`Connection::read_header`] returns the next header, then the
//! body is read whole ([`Connection::read_body`], for small operations), in chunks
//! ([`Connection::read_body_chunk`], for streams), or discarded ([`Connection::skip_body`]).
//!
//! A transfer's body can be held to a pace ([`Connection::set_pace`]): while it moves, the
//! connection cuts a peer that sends or takes fewer bytes than a [`MinRate`] asks for in a
//! window of time, however it spreads them out.
//!
//! Writing is batched. Replies are appended to a write buffer and go out when the connection
//! is about to wait for input, or when the buffer passes a high-water mark. A client that
//! pipelines many requests therefore gets many replies per `write` system call, in order.
//!
//! An idle connection holds no buffer. Both buffers are allocated when bytes arrive or a reply
//! is queued, and given back once everything read has been handled and everything queued has
//! been written: the wait for the next frame reads its first bytes into a small array of its
//! own ([`IDLE_READ`]) and only then takes a read buffer.

use std::future::Future;
use std::io;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use sockit_proto::message::{error_reply, ErrorReply};
use sockit_proto::{Decoder, ErrorCode, Event, FrameError, Header, Limits};
use std::task::Poll;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};
use tokio_util::sync::CancellationToken;

use crate::transfer::BodySource;

/// Smallest free space the read buffer gets before a read.
const READ_RESERVE: usize = 64 * 1024;
/// The most the first read after an idle wait takes, into an array of the waiting future's own:
/// a whole small request, or a batch of them (16 pipelined echoes of 32 bytes, in one
/// `recv` rather than two), or the start of a longer stream (which then gets [`READ_RESERVE`]
/// at once). Every connection's future holds it, idle or not.
const IDLE_READ: usize = 1536;
/// The write buffer's first allocation; it grows by doubling from there.
const WRITE_START: usize = 4 * 1024;
/// Read buffer size while a long body streams in.
const BULK_READ: usize = 1024 * 1024;
/// Below this much free space, the read buffer is grown (or reclaimed) before a read.
const MIN_READ_SPACE: usize = 4 * 1024;
/// Replies are flushed once this much is buffered, even if more requests are waiting.
const WRITE_HIGH_WATER: usize = 64 * 1024;
/// Bodies at most this long are copied into the write buffer; longer ones are written directly.
/// The write buffer therefore never holds more than [`WRITE_HIGH_WATER`] and one such body.
pub(crate) const COPY_BODY_MAX: usize = 16 * 1024;
/// The most one [`Connection::exchange`] reads.
const EXCHANGE_READ: usize = 16 * 1024;
/// How long a graceful close waits for the peer to finish sending.
const CLOSE_LINGER: Duration = Duration::from_secs(2);
/// How much a graceful close reads and discards at most.
const CLOSE_DRAIN_MAX: usize = 1024 * 1024;
/// The buffer a graceful close drains into, allocated then (an array would make every
/// connection's future this much larger for its whole life).
const CLOSE_SCRATCH: usize = 8 * 1024;

/// The time limits a connection enforces on its peer. `None` means no limit.
#[derive(Debug, Clone, Copy, Default)]
pub struct Deadlines {
    /// A header must be complete this long after its first byte; the first header, this long
    /// after the connection was made.
    pub header: Option<Duration>,
    /// Waiting for the next frame, or for the next bytes of a body, or for the peer to take our
    /// bytes, ends after this long.
    pub idle: Option<Duration>,
}

/// The slowest pace a transfer may keep: at least `bytes_per_sec × window` bytes moved in each
/// stretch of `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MinRate {
    /// Bytes a second, on average over a window.
    pub bytes_per_sec: u64,
    /// The stretch of time the average is taken over.
    pub window: Duration,
}

impl MinRate {
    /// The bytes that must move in one window.
    pub(crate) fn per_window(self) -> u64 {
        let bytes = self.bytes_per_sec as f64 * self.window.as_secs_f64();
        // A float this large saturates on the way back, as it should.
        bytes.ceil() as u64
    }
}

impl std::fmt::Display for MinRate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} bytes a second over {} s",
            self.bytes_per_sec,
            self.window.as_secs_f64()
        )
    }
}

/// A transfer's pace as it goes: the window under way and the bytes moved in it. The
/// connection keeps one for a framed transfer, and an HTTP request body another.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pace {
    pub(crate) rule: MinRate,
    since: Instant,
    moved: u64,
}

impl Pace {
    /// A pace to `rule`, its first window starting now.
    pub(crate) fn new(rule: MinRate) -> Pace {
        Pace {
            rule,
            since: Instant::now(),
            moved: 0,
        }
    }

    /// When the window under way ends. A window whose bytes have all moved gives way to a new
    /// one from now.
    pub(crate) fn deadline(&mut self) -> Instant {
        if self.moved >= self.rule.per_window() {
            self.since = Instant::now();
            self.moved = 0;
        }
        self.since + self.rule.window
    }

    /// Counts `n` bytes moved in the window under way.
    pub(crate) fn count(&mut self, n: usize) {
        self.moved = self.moved.saturating_add(n as u64);
    }

    /// Whether a window ended before its bytes moved.
    fn fell_behind(&self) -> bool {
        Instant::now() >= self.since + self.rule.window && self.moved < self.rule.per_window()
    }
}

/// Counts `n` bytes moved toward the pace, if one is kept.
fn count_moved(pace: &mut Option<Pace>, n: usize) {
    if let Some(pace) = pace {
        pace.count(n);
    }
}

/// The earlier of a deadline and the end of the pace's window.
fn paced(deadline: Option<Instant>, pace: &mut Option<Pace>) -> Option<Instant> {
    match (deadline, pace.as_mut().map(Pace::deadline)) {
        (Some(deadline), Some(window)) => Some(deadline.min(window)),
        (deadline, window) => deadline.or(window),
    }
}

/// Which part of a frame the stream ended in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FramePart {
    /// The length prefix or the header.
    Header,
    /// The body.
    Body,
}

impl std::fmt::Display for FramePart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FramePart::Header => "header",
            FramePart::Body => "body",
        })
    }
}

/// Why a connection cannot go on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnError {
    /// The peer sent bytes that are not a frame.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The peer did not complete a header in time.
    #[error("header not completed within {0:?}")]
    HeaderTimeout(Duration),
    /// The peer went quiet.
    #[error("no traffic for {0:?}")]
    Idle(Duration),
    /// The peer closed its side partway through a frame.
    #[error("stream ended in the middle of a frame {0}")]
    Truncated(FramePart),
    /// The socket failed.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// The server is shutting down and its grace period ended in the middle of a request.
    #[error("the server is shutting down")]
    ShuttingDown,
    /// A transfer's bytes arrived slower than the pace it is held to.
    #[error("the request's bytes arrived slower than {0}")]
    TooSlow(MinRate),
}

impl ConnError {
    /// The code of the error reply the peer should get, if it can still get one.
    pub fn reply_code(&self) -> Option<ErrorCode> {
        match self {
            ConnError::Frame(err) => Some(err.code()),
            ConnError::HeaderTimeout(_) | ConnError::Idle(_) | ConnError::TooSlow(_) => {
                Some(ErrorCode::Timeout)
            }
            ConnError::Truncated(_) => Some(ErrorCode::BadFrame),
            ConnError::ShuttingDown => Some(ErrorCode::ShuttingDown),
            ConnError::Io(_) => None,
        }
    }
}

/// A socket speaking sockit frames.
#[derive(Debug)]
pub struct Connection<S = TcpStream> {
    stream: S,
    rbuf: BytesMut,
    wbuf: BytesMut,
    decoder: Decoder,
    deadlines: Deadlines,
    opened: Instant,
    headers_read: u64,
    stop: Option<CancellationToken>,
    /// How long a request begun may go on reading once `stop` fired.
    grace: Option<Duration>,
    /// When the grace period ends, once the stop has been seen in the middle of a request.
    cut_at: Option<Instant>,
    /// The pace the transfer under way is held to, if any.
    pace: Option<Pace>,
    /// A deadline that passed while [`read_body_into`](Connection::read_body_into) held bytes
    /// to hand over: its next call reports it.
    timed_out: Option<ConnError>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    /// Wraps a connected stream.
    pub fn new(stream: S, limits: Limits, deadlines: Deadlines) -> Connection<S> {
        Connection {
            stream,
            rbuf: BytesMut::new(),
            wbuf: BytesMut::new(),
            decoder: Decoder::new(limits),
            deadlines,
            opened: Instant::now(),
            headers_read: 0,
            stop: None,
            grace: None,
            cut_at: None,
            pace: None,
            timed_out: None,
        }
    }

    /// Makes [`read_header`](Connection::read_header) return `Ok(None)` once `stop` is
    /// cancelled while the connection is between frames. A frame already begun is finished.
    pub fn stop_when(&mut self, stop: CancellationToken) {
        self.stop = Some(stop);
    }

    /// Bounds how long a request begun may go on once the stop signal fired: after `grace`,
    /// reading its body or its next frame fails with [`ConnError::ShuttingDown`]. Without
    /// it, a request begun is read to its end however long that takes.
    pub fn stop_grace(&mut self, grace: Duration) {
        self.grace = Some(grace);
    }

    /// Changes how long waiting for the peer may take, for example while a long remote
    /// command runs and the peer rightly says nothing.
    pub fn set_idle(&mut self, idle: Option<Duration>) {
        self.deadlines.idle = idle;
    }

    /// Holds what the connection reads and writes from now on to `rule` (or to no pace, with
    /// `None`): once a window of `rule.window` passes in which fewer than its bytes moved,
    /// reading fails with [`ConnError::TooSlow`] and writing with a
    /// [`TimedOut`](io::ErrorKind::TimedOut) error. The first window starts now.
    pub fn set_pace(&mut self, rule: Option<MinRate>) {
        self.pace = rule.map(Pace::new);
        self.timed_out = None;
    }

    /// Completes when the peer has closed its side (or the socket failed), so that work done
    /// on its behalf can stop. Bytes that arrive meanwhile, such as pipelined requests, are
    /// kept for [`read_header`](Connection::read_header); once [`READ_RESERVE`] of them are
    /// waiting, reading pauses and this never completes.
    ///
    /// Cancel-safe: no byte read is lost when the future is dropped.
    pub async fn peer_gone(&mut self) {
        loop {
            if self.rbuf.len() >= READ_RESERVE {
                return std::future::pending().await;
            }
            self.rbuf.reserve(MIN_READ_SPACE);
            match self.stream.read_buf(&mut self.rbuf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    }

    /// The limits the decoder enforces.
    pub fn limits(&self) -> &Limits {
        self.decoder.limits()
    }

    /// The underlying stream.
    pub fn get_ref(&self) -> &S {
        &self.stream
    }

    /// Reads the next frame header. `Ok(None)` is a clean end: the peer closed between frames,
    /// or the connection was told to stop.
    ///
    /// Buffered replies are flushed before this waits for input.
    ///
    /// # Errors
    ///
    /// A malformed frame, a deadline, a stream ending mid-header, or a socket error.
    ///
    /// # Panics
    ///
    /// If the previous frame's body has not been read or skipped.
    pub async fn read_header(&mut self) -> Result<Option<Header>, ConnError> {
        self.next_header(true).await
    }

    /// Reads the next frame header; when `stoppable`, the stop signal ends the wait between
    /// frames with `Ok(None)`.
    async fn next_header(&mut self, stoppable: bool) -> Result<Option<Header>, ConnError> {
        // A deadline that cut the last body belongs to that body, not to this frame.
        self.timed_out = None;
        assert_eq!(
            self.decoder.body_remaining(),
            0,
            "read_header called before the previous body was consumed"
        );
        // When a header began to arrive: taken once part of one is buffered and the rest is
        // not (a header that arrives whole needs no clock).
        let mut header_started = None;
        loop {
            if let Some(event) = self.decoder.decode(&mut self.rbuf)? {
                let Event::Header(header) = event else {
                    unreachable!("no body is pending, so the decoder yields a header");
                };
                self.headers_read += 1;
                return Ok(Some(header));
            }
            if !self.rbuf.is_empty() {
                header_started.get_or_insert_with(Instant::now);
            }
            self.flush().await?;
            let between_frames = stoppable && self.rbuf.is_empty();
            let (deadline, stoppable) = if self.headers_read == 0 {
                (self.header_deadline(self.opened), between_frames)
            } else if self.rbuf.is_empty() {
                (self.idle_deadline(), between_frames)
            } else {
                let started = *header_started.get_or_insert_with(Instant::now);
                (self.header_deadline(started), false)
            };
            let deadline = paced(deadline, &mut self.pace);
            let read = if between_frames {
                self.read_idle(deadline, stoppable).await?
            } else {
                self.read_more(deadline, stoppable).await?
            };
            match read {
                Read::Stopped => return Ok(None),
                Read::Cut => return Err(ConnError::ShuttingDown),
                Read::Eof if self.rbuf.is_empty() => return Ok(None),
                Read::Eof => return Err(ConnError::Truncated(FramePart::Header)),
                Read::Bytes => {}
            }
        }
    }

    /// Reads the header of a frame that continues the request in progress (the trailer of a
    /// `put`, the next frame of a chunked `put`). Unlike [`read_header`](Connection::read_header)
    /// the stop signal does not end it, since a request begun is finished (within the
    /// [grace](Connection::stop_grace)), and the end of the stream is an error.
    ///
    /// # Errors
    ///
    /// As [`read_header`](Connection::read_header), and [`ConnError::Truncated`] when the
    /// stream ends.
    pub async fn read_continuation(&mut self) -> Result<Header, ConnError> {
        self.next_header(false)
            .await?
            .ok_or(ConnError::Truncated(FramePart::Header))
    }

    /// Bytes of the current body not yet read.
    pub fn body_remaining(&self) -> u64 {
        self.decoder.body_remaining()
    }

    /// Reads the next piece of the current body, as it arrives; `None` once it is complete.
    ///
    /// # Errors
    ///
    /// The idle deadline, a stream ending mid-body, or a socket error.
    pub async fn read_body_chunk(&mut self) -> Result<Option<Bytes>, ConnError> {
        loop {
            if self.decoder.body_remaining() == 0 {
                return Ok(None);
            }
            if let Some(Event::Body(chunk)) = self.decoder.decode(&mut self.rbuf)? {
                return Ok(Some(chunk));
            }
            self.fill_body(true).await?;
        }
    }

    /// Reads the next part of the current body into `buf`, filling it up to `buf.len()` bytes
    /// or the end of the body (or of the stream); returns how many bytes were read, 0 once the
    /// body is complete.
    ///
    /// Bytes already buffered come first; after them the socket is read straight into `buf`,
    /// so a bulk transfer can recycle its own buffers and skip a copy.
    ///
    /// # Errors
    ///
    /// The idle deadline, a stream ending mid-body, or a socket error.
    pub async fn read_body_into(&mut self, buf: &mut [u8]) -> Result<usize, ConnError> {
        let wanted = usize::try_from(self.decoder.body_remaining())
            .map_or(buf.len(), |remaining| remaining.min(buf.len()));
        let buffered = self.rbuf.len().min(wanted);
        buf[..buffered].copy_from_slice(&self.rbuf[..buffered]);
        self.rbuf.advance(buffered);
        let mut filled = buffered;
        if filled == 0 {
            if let Some(err) = self.timed_out.take() {
                return Err(err);
            }
        }
        while filled < wanted {
            let deadline = paced(self.idle_deadline(), &mut self.pace);
            let read = self.stream.read(&mut buf[filled..wanted]);
            let read = within_grace(self.stop.as_ref(), self.grace, &mut self.cut_at, read);
            let n = match deadline {
                None => read.await,
                Some(deadline) => match timeout_at(deadline, read).await {
                    Ok(n) => n,
                    // Hand over what arrived; the next call reports the deadline.
                    Err(_) if filled > 0 => {
                        self.timed_out = Some(self.timeout_error());
                        break;
                    }
                    Err(_) => return Err(self.timeout_error()),
                },
            };
            let n = match n {
                Some(n) => n?,
                // Hand over what arrived; the next call reports the cut.
                None if filled > 0 => break,
                None => return Err(ConnError::ShuttingDown),
            };
            if n == 0 {
                if filled > 0 {
                    break; // hand over what arrived; the next call reports the truncation
                }
                return Err(ConnError::Truncated(FramePart::Body));
            }
            count_moved(&mut self.pace, n);
            filled += n;
        }
        self.decoder.consume_body(filled as u64);
        Ok(filled)
    }

    /// Reads the whole current body into memory.
    ///
    /// The caller must have checked the body's length against its limit: memory grows with the
    /// bytes that actually arrive, up to the declared length.
    ///
    /// # Errors
    ///
    /// The idle deadline, a stream ending mid-body, or a socket error.
    pub async fn read_body(&mut self) -> Result<Bytes, ConnError> {
        let wanted = self.buffer_body().await?;
        if wanted == 0 {
            return Ok(Bytes::new());
        }
        let body = self
            .decoder
            .take_whole_body(&mut self.rbuf)
            .expect("the whole body is buffered");
        if wanted > READ_RESERVE {
            // The body's allocation must go when the body goes: a read buffer that took it
            // back would hold a large body's memory past the budget that paid for it. What
            // follows the body (pipelined requests) moves to a buffer of its own.
            self.rbuf = BytesMut::from(&self.rbuf[..]);
        }
        Ok(body)
    }

    /// Queues the current body, which [`buffer_body`](Connection::buffer_body) read whole, as
    /// it is after the header the caller just queued: an echo, with one copy and no
    /// allocation. (The body is read before its reply's header is queued, so that a stream
    /// that ends mid-body never leaves a reply header without its body.)
    ///
    /// # Panics
    ///
    /// If the body is longer than [`COPY_BODY_MAX`] or not all buffered.
    pub fn queue_body_back(&mut self) {
        let len = usize::try_from(self.decoder.body_remaining()).unwrap_or(usize::MAX);
        assert!(
            len <= COPY_BODY_MAX,
            "a body queued back fits the write buffer"
        );
        assert!(self.rbuf.len() >= len, "the body was buffered whole first");
        self.wbuf.extend_from_slice(&self.rbuf[..len]);
        self.rbuf.advance(len);
        self.decoder.consume_body(len as u64);
    }

    /// Reads the current body whole and appends it to `out`. The caller checked the body
    /// against a limit.
    ///
    /// # Errors
    ///
    /// As [`read_body`](Connection::read_body).
    pub async fn read_body_into_vec(&mut self, out: &mut Vec<u8>) -> Result<(), ConnError> {
        let len = self.buffer_body().await?;
        out.extend_from_slice(&self.rbuf[..len]);
        self.rbuf.advance(len);
        self.decoder.consume_body(len as u64);
        Ok(())
    }

    /// Reads until the rest of the current body is in the read buffer; returns its length.
    /// The caller checked the body against a limit.
    ///
    /// # Errors
    ///
    /// As [`read_body`](Connection::read_body).
    pub async fn buffer_body(&mut self) -> Result<usize, ConnError> {
        let remaining = self.decoder.body_remaining();
        let wanted = usize::try_from(remaining).expect("caller checked the body against a limit");
        // Room for the whole body at once: growing by doubling could take twice as much.
        self.rbuf.reserve(wanted.saturating_sub(self.rbuf.len()));
        while self.rbuf.len() < wanted {
            self.fill_body(false).await?;
        }
        Ok(wanted)
    }

    /// Reads and discards the rest of the current body, through the read buffer as it is (so
    /// skipping a long body takes no more memory than a short one).
    ///
    /// # Errors
    ///
    /// As [`read_body_chunk`](Connection::read_body_chunk).
    pub async fn skip_body(&mut self) -> Result<(), ConnError> {
        while self.decoder.body_remaining() > 0 {
            if self.decoder.decode(&mut self.rbuf)?.is_none() {
                self.fill_body(false).await?;
            }
        }
        Ok(())
    }

    /// The next header, or the next piece of the current body, if the read buffer holds it:
    /// no I/O. With [`fill`](Connection::fill) and [`write_some`](Connection::write_some) it
    /// lets one task read and write at once, waiting on whichever is ready (an `exec` with
    /// standard input forwarded).
    ///
    /// # Errors
    ///
    /// A malformed frame.
    pub fn buffered(&mut self) -> Result<Option<Event>, ConnError> {
        let event = self.decoder.decode(&mut self.rbuf)?;
        if let Some(Event::Header(_)) = event {
            self.headers_read += 1;
        }
        Ok(event)
    }

    /// Waits until some of the write buffer was written or more of the stream was read into
    /// the read buffer, whichever comes first, by `deadline` if one is given; `false` at the
    /// end of the stream. Cancel-safe: no byte is lost or written twice when the future is
    /// dropped.
    ///
    /// # Errors
    ///
    /// The deadline, or a socket error.
    pub async fn exchange(&mut self, deadline: Option<Instant>) -> Result<bool, ConnError> {
        let mut scratch = [0u8; EXCHANGE_READ];
        let (stream, rbuf, wbuf) = (&mut self.stream, &mut self.rbuf, &mut self.wbuf);
        let step = std::future::poll_fn(|cx| {
            if !wbuf.is_empty() {
                match std::pin::Pin::new(&mut *stream).poll_write(cx, wbuf) {
                    Poll::Ready(Ok(0)) => {
                        return Poll::Ready(Err(io::Error::from(io::ErrorKind::WriteZero)))
                    }
                    Poll::Ready(Ok(written)) => {
                        wbuf.advance(written);
                        return Poll::Ready(Ok(true));
                    }
                    Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
                    Poll::Pending => {}
                }
            }
            let mut read = ReadBuf::new(&mut scratch);
            match std::pin::Pin::new(&mut *stream).poll_read(cx, &mut read) {
                Poll::Ready(Ok(())) => {
                    rbuf.extend_from_slice(read.filled());
                    Poll::Ready(Ok(!read.filled().is_empty()))
                }
                Poll::Ready(Err(err)) => Poll::Ready(Err(err)),
                Poll::Pending => Poll::Pending,
            }
        });
        let open = match deadline {
            None => step.await,
            Some(deadline) => match timeout_at(deadline, step).await {
                Ok(open) => open,
                Err(_) => return Err(self.timeout_error()),
            },
        };
        Ok(open?)
    }

    /// Whether bytes are waiting in the write buffer.
    pub fn has_unwritten(&self) -> bool {
        !self.wbuf.is_empty()
    }

    /// The write buffer, for encoding a frame header with [`sockit_proto::HeaderWriter`].
    pub fn write_buf(&mut self) -> &mut BytesMut {
        if self.wbuf.capacity() == 0 {
            self.wbuf.reserve(WRITE_START);
        }
        &mut self.wbuf
    }

    /// Gives back both buffers once they hold nothing: between frames, with every reply
    /// written, a connection holds no buffer.
    fn release_buffers(&mut self) {
        if self.rbuf.is_empty() {
            self.rbuf = BytesMut::new();
        }
        if self.wbuf.is_empty() {
            self.wbuf = BytesMut::new();
        }
    }

    /// Whether the connection holds a read or a write buffer.
    #[cfg(test)]
    fn holds_buffers(&self) -> bool {
        self.rbuf.capacity() > 0 || self.wbuf.capacity() > 0
    }

    /// Queues a body after a header already in the write buffer.
    ///
    /// # Errors
    ///
    /// When a long body has to be written at once and the socket fails or the peer stops
    /// reading for the idle time.
    pub async fn write_body(&mut self, body: &[u8]) -> io::Result<()> {
        if body.len() <= COPY_BODY_MAX {
            self.wbuf.extend_from_slice(body);
            return Ok(());
        }
        self.flush().await?;
        write_paced(&mut self.stream, body, self.deadlines.idle, &mut self.pace).await
    }

    /// Writes out buffered replies if more than a high-water mark is waiting.
    ///
    /// # Errors
    ///
    /// As [`flush`](Connection::flush).
    pub async fn flush_if_full(&mut self) -> io::Result<()> {
        if self.wbuf.len() >= WRITE_HIGH_WATER {
            self.flush().await?;
        }
        Ok(())
    }

    /// Writes out everything buffered.
    ///
    /// # Errors
    ///
    /// A socket error, or the peer not taking our bytes for the idle time.
    pub async fn flush(&mut self) -> io::Result<()> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        write_paced(
            &mut self.stream,
            &self.wbuf,
            self.deadlines.idle,
            &mut self.pace,
        )
        .await?;
        self.wbuf.clear();
        Ok(())
    }

    /// Writes out everything buffered and shuts down the write side: the peer reads the end of
    /// the stream, while what it still sends can be read.
    ///
    /// # Errors
    ///
    /// As [`Connection::flush`], or the shutdown failing.
    pub async fn shutdown_write(&mut self) -> io::Result<()> {
        self.flush().await?;
        self.stream.shutdown().await
    }

    /// Sends the replies already queued and an error reply for `err`, if the peer can still
    /// get one, then closes gracefully.
    pub async fn fail(mut self, err: &ConnError) {
        if let Some(code) = err.reply_code() {
            let message = err.to_string();
            error_reply(&mut self.wbuf, None, &ErrorReply::new(code, &message));
        }
        self.close().await;
    }

    /// Flushes, shuts down the write side and drains what the peer still sends, briefly.
    ///
    /// Closing a socket with unread input makes the kernel send a reset, which can destroy a
    /// last reply before the peer reads it; draining first lets the reply arrive.
    pub async fn close(mut self) {
        if self.flush().await.is_err() {
            return;
        }
        let _ = self.stream.shutdown().await;
        let deadline = Instant::now() + CLOSE_LINGER;
        let mut drained = 0;
        let mut scratch = vec![0u8; CLOSE_SCRATCH];
        while drained < CLOSE_DRAIN_MAX {
            match timeout_at(deadline, self.stream.read(&mut scratch)).await {
                Ok(Ok(n)) if n > 0 => drained += n,
                _ => break,
            }
        }
    }

    fn header_deadline(&self, from: Instant) -> Option<Instant> {
        self.deadlines.header.map(|limit| from + limit)
    }

    fn idle_deadline(&self) -> Option<Instant> {
        self.deadlines.idle.map(|limit| Instant::now() + limit)
    }

    /// Reads more body bytes into the buffer; when `bulk`, in large reads while much is still
    /// to come.
    async fn fill_body(&mut self, bulk: bool) -> Result<(), ConnError> {
        let wanted = usize::try_from(self.decoder.body_remaining()).unwrap_or(usize::MAX);
        if bulk && wanted > READ_RESERVE && self.rbuf.capacity() - self.rbuf.len() < READ_RESERVE {
            self.rbuf.reserve(wanted.min(BULK_READ));
        }
        let deadline = paced(self.idle_deadline(), &mut self.pace);
        match self.read_more(deadline, false).await? {
            Read::Bytes => Ok(()),
            Read::Eof | Read::Stopped => Err(ConnError::Truncated(FramePart::Body)),
            Read::Cut => Err(ConnError::ShuttingDown),
        }
    }

    /// One read into the buffer, bounded by `deadline`; when `stoppable`, also ends when the
    /// stop signal fires, and otherwise when the grace after it has passed.
    async fn read_more(
        &mut self,
        deadline: Option<Instant>,
        stoppable: bool,
    ) -> Result<Read, ConnError> {
        if self.rbuf.capacity() - self.rbuf.len() < MIN_READ_SPACE {
            self.rbuf.reserve(READ_RESERVE);
        }
        let read = self.stream.read_buf(&mut self.rbuf);
        let grace = self.grace;
        let outcome = bounded_read(
            self.stop.as_ref(),
            grace,
            &mut self.cut_at,
            deadline,
            stoppable,
            read,
        )
        .await;
        self.settle(outcome)
    }

    /// The same as [`read_more`](Connection::read_more) with nothing buffered, holding no
    /// buffer while it waits: unless bytes are already waiting, the buffers are given back,
    /// the first bytes land in an array of this future's own, and only then move into a read
    /// buffer, sized for them (or for a stream of requests, when they fill the array).
    async fn read_idle(
        &mut self,
        deadline: Option<Instant>,
        stoppable: bool,
    ) -> Result<Read, ConnError> {
        if let Some(read) = self.read_waiting(stoppable).await {
            return self.settle(Bounded::Read(read));
        }
        self.release_buffers();
        let mut first = [0u8; IDLE_READ];
        let read = self.stream.read(&mut first);
        let grace = self.grace;
        let outcome = bounded_read(
            self.stop.as_ref(),
            grace,
            &mut self.cut_at,
            deadline,
            stoppable,
            read,
        )
        .await;
        if let Bounded::Read(Ok(n)) = outcome {
            self.rbuf
                .reserve(if n == IDLE_READ { READ_RESERVE } else { n });
            self.rbuf.extend_from_slice(&first[..n]);
        }
        self.settle(outcome)
    }

    /// Bytes already waiting, read without waiting into the read buffer when it has room for
    /// a stream of them (the next requests of a client that pipelines): `None` when none are
    /// waiting, no such buffer is held, or the stop signal has fired.
    async fn read_waiting(&mut self, stoppable: bool) -> Option<io::Result<usize>> {
        let stopped = stoppable && self.stop.as_ref().is_some_and(|stop| stop.is_cancelled());
        if stopped || self.rbuf.capacity() - self.rbuf.len() < MIN_READ_SPACE {
            return None;
        }
        let mut read = std::pin::pin!(self.stream.read_buf(&mut self.rbuf));
        // One poll: a read not ready loses no byte when dropped.
        std::future::poll_fn(|cx| match Future::poll(read.as_mut(), cx) {
            Poll::Ready(read) => Poll::Ready(Some(read)),
            Poll::Pending => Poll::Ready(None),
        })
        .await
    }

    /// What a bounded read came to, with its bytes counted toward the pace.
    fn settle(&mut self, outcome: Bounded) -> Result<Read, ConnError> {
        match outcome {
            Bounded::TimedOut => Err(self.timeout_error()),
            Bounded::Ended(ended) => Ok(ended),
            Bounded::Read(Ok(0)) => Ok(Read::Eof),
            Bounded::Read(Ok(n)) => {
                count_moved(&mut self.pace, n);
                Ok(Read::Bytes)
            }
            Bounded::Read(Err(err)) => Err(err.into()),
        }
    }

    fn timeout_error(&self) -> ConnError {
        if let Some(pace) = self.pace.filter(Pace::fell_behind) {
            return ConnError::TooSlow(pace.rule);
        }
        let waiting_for_header =
            self.headers_read == 0 || (self.decoder.body_remaining() == 0 && !self.rbuf.is_empty());
        match (waiting_for_header, self.deadlines) {
            (
                true,
                Deadlines {
                    header: Some(limit),
                    ..
                },
            ) => ConnError::HeaderTimeout(limit),
            (
                _,
                Deadlines {
                    idle: Some(limit), ..
                },
            ) => ConnError::Idle(limit),
            (_, Deadlines { header, .. }) => ConnError::HeaderTimeout(header.unwrap_or_default()),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    /// Writes `body` (after any buffered header) while watching for the peer to speak first.
    ///
    /// Returns `Ok(false)` as soon as the peer sends something or closes — for a request, that
    /// is an early error reply, to be read with [`read_header`](Connection::read_header) —
    /// and `Ok(true)` once the whole body is written. Watching matters for long uploads: a
    /// server that refuses one stops reading, and a client that only writes would block until
    /// the connection is reset, losing the reply that said why.
    ///
    /// # Errors
    ///
    /// A socket error, or the peer taking nothing for the idle time.
    pub async fn write_body_watching(&mut self, body: &[u8]) -> io::Result<bool> {
        self.flush().await?;
        self.rbuf.reserve(MIN_READ_SPACE);
        let (mut reader, mut writer) = tokio::io::split(&mut self.stream);
        let mut written = 0;
        while written < body.len() {
            let deadline = self.deadlines.idle.map(|limit| Instant::now() + limit);
            // Both halves are cancel-safe: a read not chosen loses no byte, a write not
            // chosen wrote none.
            let step = async {
                tokio::select! {
                    biased;
                    read = reader.read_buf(&mut self.rbuf) => read.map(|_| None),
                    wrote = writer.write(&body[written..]) => wrote.map(Some),
                }
            };
            let step = match deadline {
                None => step.await?,
                Some(deadline) => timeout_at(deadline, step).await.map_err(|_| {
                    io::Error::new(io::ErrorKind::TimedOut, "peer stopped reading")
                })??,
            };
            match step {
                None => return Ok(false),
                Some(0) => return Err(io::ErrorKind::WriteZero.into()),
                Some(n) => written += n,
            }
        }
        Ok(true)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> BodySource for Connection<S> {
    type Error = ConnError;

    fn remaining(&self) -> u64 {
        self.body_remaining()
    }

    async fn read_into(&mut self, buf: &mut [u8]) -> Result<usize, ConnError> {
        self.read_body_into(buf).await
    }
}

/// What one read produced.
enum Read {
    Bytes,
    Eof,
    /// The stop signal fired between frames.
    Stopped,
    /// The grace after the stop signal ended in the middle of a request.
    Cut,
}

/// How a read run by [`bounded_read`] ended.
enum Bounded {
    /// The read itself finished: a byte count or a socket error.
    Read(io::Result<usize>),
    /// The stop signal or the end of the grace ended it first.
    Ended(Read),
    /// The deadline passed first.
    TimedOut,
}

/// Runs `read` until `deadline`; when `stoppable`, it also ends when `stop` fires, and
/// otherwise when `grace` has passed since `stop` fired (see [`within_grace`]).
async fn bounded_read(
    stop: Option<&CancellationToken>,
    grace: Option<Duration>,
    cut_at: &mut Option<Instant>,
    deadline: Option<Instant>,
    stoppable: bool,
    read: impl std::future::Future<Output = io::Result<usize>>,
) -> Bounded {
    let read = async {
        match stop {
            Some(stop) if stoppable => tokio::select! {
                biased;
                () = stop.cancelled() => Bounded::Ended(Read::Stopped),
                read = read => Bounded::Read(read),
            },
            _ => within_grace(stop, grace, cut_at, read)
                .await
                .map_or(Bounded::Ended(Read::Cut), Bounded::Read),
        }
    };
    match deadline {
        None => read.await,
        Some(deadline) => timeout_at(deadline, read)
            .await
            .unwrap_or(Bounded::TimedOut),
    }
}

/// Runs `read`, a read inside a request, to its end; `None` once `grace` has passed since
/// `stop` fired (the moment it was first seen is kept in `cut_at`). Without a grace, or
/// without a stop, the read is not bounded here.
async fn within_grace<T>(
    stop: Option<&CancellationToken>,
    grace: Option<Duration>,
    cut_at: &mut Option<Instant>,
    read: impl std::future::Future<Output = T>,
) -> Option<T> {
    let (Some(stop), Some(grace)) = (stop, grace) else {
        return Some(read.await);
    };
    tokio::pin!(read);
    let at = match *cut_at {
        Some(at) => at,
        None => {
            tokio::select! {
                biased;
                () = stop.cancelled() => {}
                done = &mut read => return Some(done),
            }
            *cut_at.insert(Instant::now() + grace)
        }
    };
    tokio::select! {
        biased;
        () = tokio::time::sleep_until(at) => None,
        done = &mut read => Some(done),
    }
}

/// Writes all of `bytes`, failing once `idle` has passed before the peer took them all, or
/// the peer falls behind `pace`.
async fn write_paced<S: AsyncWrite + Unpin>(
    stream: &mut S,
    bytes: &[u8],
    idle: Option<Duration>,
    pace: &mut Option<Pace>,
) -> io::Result<()> {
    // One idle deadline for the whole write: a peer that takes a byte now and then cannot
    // hold the connection (and what it holds) for ever.
    let idle_deadline = idle.map(|idle| Instant::now() + idle);
    let mut written = 0;
    while written < bytes.len() {
        let deadline = paced(idle_deadline, pace);
        let n = write_within(deadline, pace, stream.write(&bytes[written..])).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        count_moved(pace, n);
        written += n;
    }
    // A TLS stream holds written bytes in its session until flushed (for TCP, flushing does
    // nothing).
    let deadline = paced(idle_deadline, pace);
    write_within(deadline, pace, stream.flush()).await
}

/// `write`, failing at `deadline` with words saying whether the peer stopped reading or fell
/// behind `pace`.
async fn write_within<T>(
    deadline: Option<Instant>,
    pace: &Option<Pace>,
    write: impl std::future::Future<Output = io::Result<T>>,
) -> io::Result<T> {
    let Some(deadline) = deadline else {
        return write.await;
    };
    timeout_at(deadline, write).await.map_err(|_| {
        let message = match pace.filter(Pace::fell_behind) {
            Some(pace) => format!("peer took our bytes slower than {}", pace.rule),
            None => "peer stopped reading".to_owned(),
        };
        io::Error::new(io::ErrorKind::TimedOut, message)
    })?
}

#[cfg(test)]
mod tests {
    //! The connection over in-memory streams (`tokio::io::duplex`): reads cut at every size,
    //! writes split at every byte, and tokio's paused clock for the deadlines, so that each
    //! outcome and each instant is exact.

    use std::future::Future;
    use std::pin::{pin, Pin};
    use std::task::{Context, Poll, Waker};

    use serde_json::{json, Value};
    use tokio::io::{duplex, DuplexStream, ReadBuf};

    use super::*;

    const fn ms(millis: u64) -> Duration {
        Duration::from_millis(millis)
    }

    /// Both deadlines, in milliseconds.
    fn deadlines(header: u64, idle: u64) -> Deadlines {
        Deadlines {
            header: Some(ms(header)),
            idle: Some(ms(idle)),
        }
    }

    /// A frame: the length prefix, `json`, then `body`.
    fn frame(json: &str, body: &[u8]) -> Vec<u8> {
        let mut out = (json.len() as i32).to_le_bytes().to_vec();
        out.extend_from_slice(json.as_bytes());
        out.extend_from_slice(body);
        out
    }

    /// The replies in `bytes`, each as its JSON header and its body.
    fn replies(mut bytes: &[u8]) -> Vec<(Value, Vec<u8>)> {
        let mut out = Vec::new();
        while !bytes.is_empty() {
            let hlen = i32::from_le_bytes(bytes[..4].try_into().unwrap()) as usize;
            let header: Value = serde_json::from_slice(&bytes[4..4 + hlen]).unwrap();
            let size = header["size"].as_u64().unwrap_or(0) as usize;
            let body = bytes[4 + hlen..4 + hlen + size].to_vec();
            bytes = &bytes[4 + hlen + size..];
            out.push((header, body));
        }
        out
    }

    /// Polls `future` once: its output if it is ready now.
    fn now_or_never<F: Future>(future: F) -> Option<F::Output> {
        let future = pin!(future);
        match future.poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(output) => Some(output),
            Poll::Pending => None,
        }
    }

    /// A stream whose reads return at most `max` bytes each: the peer's bytes cut into pieces.
    struct Pieces {
        inner: DuplexStream,
        max: usize,
    }

    impl AsyncRead for Pieces {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let mut scratch = vec![0u8; self.max.min(buf.remaining())];
            let mut piece = ReadBuf::new(&mut scratch);
            let read = Pin::new(&mut self.inner).poll_read(cx, &mut piece);
            if let Poll::Ready(Ok(())) = read {
                buf.put_slice(piece.filled());
            }
            read
        }
    }

    impl AsyncWrite for Pieces {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            Pin::new(&mut self.inner).poll_write(cx, buf)
        }

        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_flush(cx)
        }

        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_shutdown(cx)
        }
    }

    /// A connection with the default limits and the given deadlines, and its peer.
    fn pair(deadlines: Deadlines) -> (DuplexStream, Connection<DuplexStream>) {
        let (peer, ours) = duplex(1 << 20);
        (peer, Connection::new(ours, Limits::default(), deadlines))
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    async fn expect_header<S: AsyncRead + AsyncWrite + Unpin>(
        conn: &mut Connection<S>,
        op: &str,
    ) -> Header {
        let header = conn.read_header().await.unwrap().expect("a header");
        assert_eq!(header.op().unwrap(), Some(op));
        header
    }

    #[tokio::test]
    async fn frames_come_out_whole_however_the_reads_are_cut() {
        let big = pattern(100_000);
        let into = pattern(10_000);
        let mut stream = frame(r#"{"op":"ping","id":1}"#, b"");
        stream.extend(frame(r#"{"op":"whole","size":5}"#, b"hello"));
        stream.extend(frame(r#"{"op":"chunks","size":100000}"#, &big));
        stream.extend(frame(r#"{"op":"into","file_size":10000}"#, &into));
        stream.extend(frame(r#"{"op":"last","id":"x"}"#, b""));
        for max in [1, 2, 3, 7, 4096, 65_536, usize::MAX] {
            let (mut peer, ours) = duplex(1 << 20);
            peer.write_all(&stream).await.unwrap();
            drop(peer);
            let pieces = Pieces { inner: ours, max };
            let mut conn = Connection::new(pieces, Limits::default(), Deadlines::default());

            let ping = expect_header(&mut conn, "ping").await;
            assert_eq!((ping.id(), ping.body_len()), (Some("1"), 0));
            let whole = expect_header(&mut conn, "whole").await;
            assert_eq!(whole.body_len(), 5);
            assert_eq!(&conn.read_body().await.unwrap()[..], b"hello", "cut {max}");

            expect_header(&mut conn, "chunks").await;
            let mut chunks = Vec::new();
            while let Some(chunk) = conn.read_body_chunk().await.unwrap() {
                assert!(chunk.len() <= max, "a chunk larger than any read");
                chunks.extend_from_slice(&chunk);
            }
            assert!(chunks == big, "chunked body differs, cut {max}");

            expect_header(&mut conn, "into").await;
            let mut received = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                let n = conn.read_body_into(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                received.extend_from_slice(&buf[..n]);
            }
            assert!(
                received == into,
                "body read into buffers differs, cut {max}"
            );
            assert_eq!(conn.body_remaining(), 0);

            let last = expect_header(&mut conn, "last").await;
            assert_eq!(last.id(), Some(r#""x""#));
            assert!(conn.read_header().await.unwrap().is_none(), "a clean end");
        }
    }

    #[tokio::test]
    async fn a_frame_written_in_two_parts_split_at_any_byte_is_read_whole() {
        let bytes = frame(r#"{"op":"echo","id":7,"size":6}"#, b"sticky");
        for split in 0..=bytes.len() {
            let (mut peer, mut conn) = pair(Deadlines::default());
            let (first, second) = (bytes[..split].to_vec(), bytes[split..].to_vec());
            let writer = tokio::spawn(async move {
                peer.write_all(&first).await.unwrap();
                tokio::task::yield_now().await;
                peer.write_all(&second).await.unwrap();
                peer
            });
            let header = expect_header(&mut conn, "echo").await;
            assert_eq!(header.id(), Some("7"), "split at {split}");
            assert_eq!(&conn.read_body().await.unwrap()[..], b"sticky");
            drop(writer.await.unwrap());
            assert!(conn.read_header().await.unwrap().is_none());
        }
    }

    #[tokio::test]
    async fn skip_body_discards_exactly_the_body() {
        // The skipped body looks like a frame: none of it may be read as one.
        let inner = frame(r#"{"op":"smuggled"}"#, b"");
        let mut stream = frame(
            &format!(r#"{{"op":"skip","size":{}}}"#, inner.len()),
            &inner,
        );
        stream.extend(frame(r#"{"op":"next","size":2}"#, b"ok"));
        for max in [1, 5, usize::MAX] {
            let (mut peer, ours) = duplex(1 << 16);
            peer.write_all(&stream).await.unwrap();
            drop(peer);
            let pieces = Pieces { inner: ours, max };
            let mut conn = Connection::new(pieces, Limits::default(), Deadlines::default());
            expect_header(&mut conn, "skip").await;
            conn.skip_body().await.unwrap();
            assert_eq!(conn.body_remaining(), 0);
            expect_header(&mut conn, "next").await;
            assert_eq!(&conn.read_body().await.unwrap()[..], b"ok");
            assert!(conn.read_header().await.unwrap().is_none());
        }
    }

    #[tokio::test]
    #[should_panic(expected = "read_header called before the previous body was consumed")]
    async fn reading_the_next_header_before_the_body_is_a_bug() {
        let (mut peer, mut conn) = pair(Deadlines::default());
        peer.write_all(&frame(r#"{"op":"echo","size":3}"#, b"abc"))
            .await
            .unwrap();
        expect_header(&mut conn, "echo").await;
        let _ = conn.read_header().await;
    }

    /// Reads one header from a connection with `limits` whose peer sent `bytes` and stays
    /// open; with the clock paused, waiting for more bytes would end the test at once.
    async fn header_from(limits: Limits, bytes: &[u8]) -> Result<Option<Header>, ConnError> {
        let (mut peer, ours) = duplex(1 << 16);
        peer.write_all(bytes).await.unwrap();
        let mut conn = Connection::new(ours, limits, Deadlines::default());
        let read = tokio::time::timeout(Duration::from_secs(3600), conn.read_header()).await;
        drop(peer);
        read.expect("decided on the bytes already sent, without waiting for more")
    }

    #[tokio::test(start_paused = true)]
    async fn declared_lengths_are_checked_against_the_limits_before_anything_more_is_read() {
        let limits = Limits::builder()
            .max_header_len(40)
            .max_body_len(1000)
            .build()
            .unwrap();
        let at_limit = format!(r#"{{"op":"ping","pad":"{}"}}"#, "x".repeat(18));
        assert_eq!(at_limit.len(), 40);
        let header = header_from(limits, &frame(&at_limit, b"")).await.unwrap();
        assert_eq!(header.unwrap().op().unwrap(), Some("ping"));

        // Only the length prefix: the verdict needs nothing more.
        let err = header_from(limits, &41i32.to_le_bytes()).await.unwrap_err();
        assert!(
            matches!(
                err,
                ConnError::Frame(FrameError::HeaderTooLong { len: 41, max: 40 })
            ),
            "{err}"
        );
        assert_eq!(err.reply_code(), Some(ErrorCode::TooLarge));
        for len in [0, -1, i32::MIN] {
            let err = header_from(limits, &len.to_le_bytes()).await.unwrap_err();
            assert!(
                matches!(err, ConnError::Frame(FrameError::BadHeaderLength { len: l }) if l == len),
                "{err}"
            );
            assert_eq!(err.reply_code(), Some(ErrorCode::BadFrame));
        }

        // Only the header: a body over the limit is refused before any of it arrives.
        let header = header_from(limits, &frame(r#"{"op":"put","size":1000}"#, b""))
            .await
            .unwrap();
        assert_eq!(header.unwrap().body_len(), 1000);
        let err = header_from(limits, &frame(r#"{"op":"put","size":1001}"#, b""))
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                ConnError::Frame(FrameError::BodyTooLarge {
                    len: 1001,
                    max: 1000
                })
            ),
            "{err}"
        );
        assert_eq!(err.reply_code(), Some(ErrorCode::TooLarge));

        let err = header_from(limits, &frame("[1,2]", b"")).await.unwrap_err();
        assert!(
            matches!(err, ConnError::Frame(FrameError::HeaderNotObject)),
            "{err}"
        );
        assert_eq!(err.reply_code(), Some(ErrorCode::BadFrame));
    }

    #[tokio::test]
    async fn a_stream_ending_mid_frame_is_truncated_and_between_frames_is_a_clean_end() {
        let json = r#"{"op":"echo","size":10}"#;
        let whole = frame(json, b"0123456789");
        let body_start = 4 + json.len();
        for cut in 0..=whole.len() {
            let (mut peer, mut conn) = pair(Deadlines::default());
            peer.write_all(&whole[..cut]).await.unwrap();
            drop(peer);
            let header = conn.read_header().await;
            if cut == 0 {
                assert!(header.unwrap().is_none(), "nothing sent is a clean end");
                continue;
            }
            if cut < body_start {
                let err = header.unwrap_err();
                assert!(
                    matches!(err, ConnError::Truncated(FramePart::Header)),
                    "cut {cut}: {err}"
                );
                assert_eq!(err.reply_code(), Some(ErrorCode::BadFrame));
                continue;
            }
            assert_eq!(header.unwrap().unwrap().body_len(), 10);
            if cut == whole.len() {
                assert_eq!(&conn.read_body().await.unwrap()[..], b"0123456789");
                assert!(conn.read_header().await.unwrap().is_none());
                continue;
            }
            let err = conn.read_body().await.unwrap_err();
            assert!(
                matches!(err, ConnError::Truncated(FramePart::Body)),
                "cut {cut}: {err}"
            );
        }

        // Read into a buffer, what arrived is handed over first; the next read reports the end.
        let (mut peer, mut conn) = pair(Deadlines::default());
        peer.write_all(&whole[..body_start + 4]).await.unwrap();
        drop(peer);
        expect_header(&mut conn, "echo").await;
        let mut buf = [0u8; 10];
        assert_eq!(conn.read_body_into(&mut buf).await.unwrap(), 4);
        assert_eq!(&buf[..4], b"0123");
        let err = conn.read_body_into(&mut buf).await.unwrap_err();
        assert!(
            matches!(err, ConnError::Truncated(FramePart::Body)),
            "{err}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_header_is_due_a_header_deadline_after_connecting() {
        let (_peer, mut conn) = pair(deadlines(300, 60_000));
        let opened = Instant::now();
        // Time spent before the first read counts too.
        tokio::time::advance(ms(200)).await;
        let err = conn.read_header().await.unwrap_err();
        assert!(
            matches!(err, ConnError::HeaderTimeout(limit) if limit == ms(300)),
            "{err}"
        );
        assert_eq!(err.reply_code(), Some(ErrorCode::Timeout));
        assert_eq!(opened.elapsed(), ms(300));
    }

    #[tokio::test(start_paused = true)]
    async fn a_header_trickled_in_is_cut_off_by_the_header_deadline() {
        let (mut peer, mut conn) = pair(deadlines(400, 60_000));
        peer.write_all(&frame(r#"{"op":"ping"}"#, b""))
            .await
            .unwrap();
        expect_header(&mut conn, "ping").await;

        // One byte every 150 ms keeps the idle deadline far away, but not the header's.
        let slow = frame(r#"{"op":"ping","pad":"................"}"#, b"");
        let started = Instant::now();
        let trickle = tokio::spawn(async move {
            for byte in slow {
                if peer.write_all(&[byte]).await.is_err() {
                    break;
                }
                tokio::time::sleep(ms(150)).await;
            }
        });
        let err = conn.read_header().await.unwrap_err();
        assert!(
            matches!(err, ConnError::HeaderTimeout(limit) if limit == ms(400)),
            "{err}"
        );
        assert_eq!(started.elapsed(), ms(400));
        drop(conn);
        trickle.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_peer_is_timed_out_exactly_when_the_idle_deadline_passes() {
        let (mut peer, mut conn) = pair(deadlines(10_000, 500));
        peer.write_all(&frame(r#"{"op":"ping","id":1}"#, b""))
            .await
            .unwrap();
        let ping = expect_header(&mut conn, "ping").await;
        sockit_proto::message::ok_reply(conn.write_buf(), ping.id())
            .finish(0)
            .unwrap();

        let started = Instant::now();
        let err = conn.read_header().await.unwrap_err();
        assert!(
            matches!(err, ConnError::Idle(limit) if limit == ms(500)),
            "{err}"
        );
        assert_eq!(err.reply_code(), Some(ErrorCode::Timeout));
        assert_eq!(started.elapsed(), ms(500));
        // The reply went out before the wait began.
        let mut sent = vec![0u8; 64];
        let n = now_or_never(peer.read(&mut sent))
            .expect("the reply was sent")
            .unwrap();
        assert_eq!(
            replies(&sent[..n]),
            [(json!({"ok": true, "id": 1}), vec![])]
        );
    }

    #[tokio::test]
    async fn a_large_body_read_whole_takes_its_memory_with_it() {
        let (mut peer, mut conn) = pair(deadlines(10_000, 60_000));
        let body = vec![7u8; 4 * READ_RESERVE];
        let mut requests = frame(&format!(r#"{{"op":"echo","size":{}}}"#, body.len()), &body);
        requests.extend(frame(r#"{"op":"ping","id":2}"#, b""));
        let writer = tokio::spawn(async move {
            peer.write_all(&requests).await.unwrap();
            peer
        });
        expect_header(&mut conn, "echo").await;
        let read = conn.read_body().await.unwrap();
        assert!(read[..] == body[..], "the body came back whole");
        drop(read);
        // The read buffer shares none of the body's allocation: growing it again after the body
        // is gone cannot take the body's memory back.
        conn.rbuf.reserve(READ_RESERVE);
        assert!(
            conn.rbuf.capacity() < 2 * READ_RESERVE,
            "read buffer holds {} bytes",
            conn.rbuf.capacity()
        );
        expect_header(&mut conn, "ping").await;
        drop(writer.await.unwrap());
    }

    #[tokio::test]
    async fn between_requests_a_connection_holds_no_buffer() {
        let (mut peer, mut conn) = pair(deadlines(10_000, 60_000));
        assert!(!conn.holds_buffers(), "none before the first byte");
        assert!(now_or_never(conn.read_header()).is_none());
        assert!(
            !conn.holds_buffers(),
            "none while waiting for the first request"
        );

        // Two requests in one write, the second longer than the first read takes at once.
        let pad = "p".repeat(2 * IDLE_READ);
        let mut requests = frame(r#"{"op":"ping","id":1}"#, b"");
        requests.extend(frame(
            &format!(r#"{{"op":"ping","id":2,"pad":"{pad}"}}"#),
            b"",
        ));
        peer.write_all(&requests).await.unwrap();
        for _ in 0..2 {
            let ping = expect_header(&mut conn, "ping").await;
            sockit_proto::message::ok_reply(conn.write_buf(), ping.id())
                .finish(0)
                .unwrap();
            assert!(conn.holds_buffers(), "a reply is queued");
        }
        assert!(now_or_never(conn.read_header()).is_none());
        assert!(!conn.holds_buffers(), "none once both replies are written");
        // Both replies went out before the wait began.
        let mut sent = vec![0u8; 4 * IDLE_READ];
        let n = now_or_never(peer.read(&mut sent))
            .expect("the replies were sent")
            .unwrap();
        assert_eq!(
            replies(&sent[..n]),
            [
                (json!({"ok": true, "id": 1}), vec![]),
                (json!({"ok": true, "id": 2}), vec![])
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn each_piece_of_a_body_restarts_the_idle_deadline() {
        let (mut peer, mut conn) = pair(deadlines(10_000, 500));
        peer.write_all(&frame(r#"{"op":"echo","size":8}"#, b""))
            .await
            .unwrap();
        expect_header(&mut conn, "echo").await;
        // Four bytes 400 ms apart arrive; then the peer pauses for longer than the idle time.
        let started = Instant::now();
        let writer = tokio::spawn(async move {
            for byte in b"abcd" {
                tokio::time::sleep(ms(400)).await;
                peer.write_all(&[*byte]).await.unwrap();
            }
            peer
        });
        let err = conn.read_body().await.unwrap_err();
        assert!(
            matches!(err, ConnError::Idle(limit) if limit == ms(500)),
            "{err}"
        );
        assert_eq!(started.elapsed(), ms(4 * 400 + 500));
        drop(writer.await.unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_stops_reading_fails_a_flush_after_the_idle_time() {
        let (_peer, ours) = duplex(1024);
        let deadlines = Deadlines {
            header: None,
            idle: Some(ms(500)),
        };
        let mut conn = Connection::new(ours, Limits::default(), deadlines);
        sockit_proto::message::ok_reply(conn.write_buf(), None)
            .finish(4000)
            .unwrap();
        conn.write_body(&pattern(4000)).await.unwrap();
        let started = Instant::now();
        let err = conn.flush().await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), ms(500));
    }

    const PACE: MinRate = MinRate {
        bytes_per_sec: 100,
        window: ms(1000),
    };

    #[tokio::test(start_paused = true)]
    async fn a_body_that_keeps_the_pace_goes_on_and_one_that_falls_behind_is_cut() {
        let (mut peer, mut conn) = pair(deadlines(10_000, 60_000));
        peer.write_all(&frame(r#"{"op":"put","size":1000}"#, b""))
            .await
            .unwrap();
        expect_header(&mut conn, "put").await;
        conn.set_pace(Some(PACE));
        let started = Instant::now();
        let writer = tokio::spawn(async move {
            // 100 bytes in each of three windows, then 40 in the fourth and nothing more.
            for piece in [100, 100, 100, 40] {
                peer.write_all(&pattern(piece)).await.unwrap();
                tokio::time::sleep(ms(900)).await;
            }
            peer
        });
        let mut buf = vec![0u8; 1000];
        let mut received = 0;
        let err = loop {
            match conn.read_body_into(&mut buf).await {
                Ok(n) => received += n,
                Err(err) => break err,
            }
        };
        // What arrived is handed over before the cut is reported.
        assert_eq!(received, 340);
        assert!(
            matches!(err, ConnError::TooSlow(rule) if rule == PACE),
            "{err}"
        );
        assert_eq!(err.reply_code(), Some(ErrorCode::Timeout));
        assert_eq!(
            err.to_string(),
            "the request's bytes arrived slower than 100 bytes a second over 1 s"
        );
        // A window begins when the one before has its bytes: the last one when the third
        // piece arrived, at 1.8 s; the fourth piece leaves it short.
        assert_eq!(started.elapsed(), ms(2 * 900 + 1000));
        drop(writer.await.unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_takes_our_bytes_too_slowly_fails_the_write_when_the_window_ends() {
        let (_peer, ours) = duplex(50);
        let mut conn = Connection::new(ours, Limits::default(), deadlines(10_000, 60_000));
        conn.set_pace(Some(PACE));
        let started = Instant::now();
        let err = conn
            .write_body(&pattern(COPY_BODY_MAX + 1))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(
            err.to_string(),
            "peer took our bytes slower than 100 bytes a second over 1 s"
        );
        assert_eq!(started.elapsed(), ms(1000));
        // Without a pace, only the idle deadline applies.
        conn.set_pace(None);
        let started = Instant::now();
        let err = conn
            .write_body(&pattern(COPY_BODY_MAX + 1))
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "peer stopped reading");
        assert_eq!(started.elapsed(), ms(60_000));
    }

    #[tokio::test]
    async fn replies_are_held_until_the_connection_waits_for_input() {
        let (mut peer, mut conn) = pair(Deadlines::default());
        let mut pipelined = Vec::new();
        for id in 1..=3 {
            pipelined.extend(frame(&format!(r#"{{"op":"ping","id":{id}}}"#), b""));
        }
        peer.write_all(&pipelined).await.unwrap();
        let mut buf = vec![0u8; 4096];
        for _ in 1..=3 {
            let ping = expect_header(&mut conn, "ping").await;
            sockit_proto::message::ok_reply(conn.write_buf(), ping.id())
                .finish(0)
                .unwrap();
            assert!(
                now_or_never(peer.read(&mut buf)).is_none(),
                "a reply went out while requests were still buffered"
            );
        }
        peer.shutdown().await.unwrap();
        assert!(conn.read_header().await.unwrap().is_none());
        // All three went out together, before the connection waited.
        let n = now_or_never(peer.read(&mut buf))
            .expect("the replies were sent")
            .unwrap();
        let ids: Vec<Value> = replies(&buf[..n])
            .into_iter()
            .map(|(h, _)| h["id"].clone())
            .collect();
        assert_eq!(ids, [json!(1), json!(2), json!(3)]);
    }

    #[tokio::test]
    async fn bodies_small_and_large_follow_their_headers_byte_for_byte() {
        let (mut peer, mut conn) = pair(Deadlines::default());
        let small = pattern(COPY_BODY_MAX);
        let large = pattern(COPY_BODY_MAX * 6 + 1);
        for body in [&small, &large] {
            sockit_proto::message::ok_reply(conn.write_buf(), None)
                .finish(body.len() as u64)
                .unwrap();
            conn.write_body(body).await.unwrap();
        }
        sockit_proto::message::ok_reply(conn.write_buf(), Some("\"end\""))
            .finish(0)
            .unwrap();
        conn.flush().await.unwrap();
        drop(conn);
        let mut sent = Vec::new();
        peer.read_to_end(&mut sent).await.unwrap();
        let got = replies(&sent);
        assert_eq!(got.len(), 3);
        assert!(got[0].1 == small && got[1].1 == large, "bodies differ");
        assert_eq!(got[2].0, json!({"ok": true, "id": "end"}));
    }

    #[tokio::test]
    async fn a_stop_ends_the_connection_between_frames_but_finishes_a_frame_begun() {
        let stop = CancellationToken::new();
        let (mut peer, mut conn) = pair(Deadlines::default());
        conn.stop_when(stop.clone());
        let bytes = frame(r#"{"op":"echo","size":4}"#, b"late");
        peer.write_all(&bytes[..6]).await.unwrap();
        {
            let mut reading = pin!(conn.read_header());
            assert!(
                now_or_never(reading.as_mut()).is_none(),
                "half a header is not a header"
            );
            stop.cancel();
            peer.write_all(&bytes[6..]).await.unwrap();
            let header = reading.await.unwrap().expect("the frame begun is finished");
            assert_eq!(header.op().unwrap(), Some("echo"));
        }
        assert_eq!(&conn.read_body().await.unwrap()[..], b"late");
        // Between frames, the stop ends the connection although the peer is still there.
        assert!(conn.read_header().await.unwrap().is_none());
        drop(peer);
    }

    #[tokio::test]
    async fn peer_gone_keeps_the_bytes_that_arrive_meanwhile() {
        let (mut peer, mut conn) = pair(Deadlines::default());
        let bytes = frame(r#"{"op":"ping","id":5}"#, b"");
        // Dropped before the peer is gone: what it read so far is kept.
        peer.write_all(&bytes[..3]).await.unwrap();
        assert!(now_or_never(conn.peer_gone()).is_none());
        peer.write_all(&bytes[3..]).await.unwrap();
        peer.shutdown().await.unwrap();
        conn.peer_gone().await;
        let ping = expect_header(&mut conn, "ping").await;
        assert_eq!(ping.id(), Some("5"));
        assert!(conn.read_header().await.unwrap().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn close_sends_what_is_queued_ends_the_stream_and_returns_once_the_peer_is_done() {
        let (mut peer, mut conn) = pair(Deadlines::default());
        sockit_proto::message::ok_reply(conn.write_buf(), Some("9"))
            .finish(0)
            .unwrap();
        // Input the connection never read: closing must not reset the stream over it.
        peer.write_all(b"unread request bytes").await.unwrap();
        let started = Instant::now();
        let closing = tokio::spawn(conn.close());
        let mut sent = Vec::new();
        peer.read_to_end(&mut sent).await.unwrap();
        assert_eq!(replies(&sent), [(json!({"ok": true, "id": 9}), vec![])]);
        // Still draining what the peer sends, until the peer closes its side.
        peer.write_all(b"more").await.unwrap();
        tokio::task::yield_now().await;
        assert!(!closing.is_finished());
        peer.shutdown().await.unwrap();
        closing.await.unwrap();
        assert_eq!(started.elapsed(), Duration::ZERO, "waited for nothing");
    }

    #[tokio::test(start_paused = true)]
    async fn close_gives_up_on_a_peer_that_never_closes_after_the_linger() {
        let (_peer, conn) = pair(Deadlines::default());
        let started = Instant::now();
        conn.close().await;
        assert_eq!(started.elapsed(), CLOSE_LINGER);
    }

    #[tokio::test]
    async fn fail_sends_the_error_reply_if_one_can_still_arrive_then_closes() {
        let cases = [
            (ConnError::HeaderTimeout(ms(1500)), Some("timeout")),
            (ConnError::Idle(ms(1500)), Some("timeout")),
            (ConnError::Truncated(FramePart::Body), Some("bad_frame")),
            (
                ConnError::Frame(FrameError::BadHeaderLength { len: -1 }),
                Some("bad_frame"),
            ),
            (
                ConnError::Frame(FrameError::HeaderTooLong { len: 99, max: 10 }),
                Some("too_large"),
            ),
            (ConnError::Io(io::ErrorKind::BrokenPipe.into()), None),
        ];
        for (err, code) in cases {
            let (mut peer, mut conn) = pair(Deadlines::default());
            sockit_proto::message::ok_reply(conn.write_buf(), Some("1"))
                .finish(0)
                .unwrap();
            peer.shutdown().await.unwrap();
            conn.fail(&err).await;
            let mut sent = Vec::new();
            peer.read_to_end(&mut sent).await.unwrap();
            let mut expected = vec![(json!({"ok": true, "id": 1}), vec![])];
            if let Some(code) = code {
                let reply = json!({"ok": false, "code": code, "error": err.to_string()});
                expected.push((reply, vec![]));
            }
            assert_eq!(replies(&sent), expected, "{err}");
        }
    }
}
