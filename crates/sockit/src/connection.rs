//! A framed connection: one socket, its read and write buffers, and its deadlines.
//!
//! Reading follows the decoder: [`Connection::read_header`] returns the next header, then the
//! body is read whole ([`Connection::read_body`], for small operations), in chunks
//! ([`Connection::read_body_chunk`], for streams), or discarded ([`Connection::skip_body`]).
//!
//! Writing is batched. Replies are appended to a write buffer and go out when the connection
//! is about to wait for input, or when the buffer passes a high-water mark. A client that
//! pipelines many requests therefore gets many replies per `write` system call, in order.

use std::io;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use sockit_proto::message::{error_reply, ErrorReply};
use sockit_proto::{Decoder, ErrorCode, Event, FrameError, Header, Limits};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};
use tokio_util::sync::CancellationToken;

use crate::transfer::BodySource;

/// Smallest free space the read buffer gets before a read.
const READ_RESERVE: usize = 64 * 1024;
/// Read buffer size while a long body streams in.
const BULK_READ: usize = 1024 * 1024;
/// Below this much free space, the read buffer is grown (or reclaimed) before a read.
const MIN_READ_SPACE: usize = 4 * 1024;
/// Replies are flushed once this much is buffered, even if more requests are waiting.
const WRITE_HIGH_WATER: usize = 64 * 1024;
/// Bodies at most this long are copied into the write buffer; longer ones are written directly.
const COPY_BODY_MAX: usize = 16 * 1024;
/// How long a graceful close waits for the peer to finish sending.
const CLOSE_LINGER: Duration = Duration::from_secs(2);
/// How much a graceful close reads and discards at most.
const CLOSE_DRAIN_MAX: usize = 1024 * 1024;

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
}

impl ConnError {
    /// The code of the error reply the peer should get, if it can still get one.
    pub fn reply_code(&self) -> Option<ErrorCode> {
        match self {
            ConnError::Frame(err) => Some(err.code()),
            ConnError::HeaderTimeout(_) | ConnError::Idle(_) => Some(ErrorCode::Timeout),
            ConnError::Truncated(_) => Some(ErrorCode::BadFrame),
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
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    /// Wraps a connected stream.
    pub fn new(stream: S, limits: Limits, deadlines: Deadlines) -> Connection<S> {
        Connection {
            stream,
            rbuf: BytesMut::with_capacity(READ_RESERVE),
            wbuf: BytesMut::with_capacity(WRITE_HIGH_WATER),
            decoder: Decoder::new(limits),
            deadlines,
            opened: Instant::now(),
            headers_read: 0,
            stop: None,
        }
    }

    /// Makes [`read_header`](Connection::read_header) return `Ok(None)` once `stop` is
    /// cancelled while the connection is between frames. A frame already begun is finished.
    pub fn stop_when(&mut self, stop: CancellationToken) {
        self.stop = Some(stop);
    }

    /// Changes how long waiting for the peer may take, for example while a long remote
    /// command runs and the peer rightly says nothing.
    pub fn set_idle(&mut self, idle: Option<Duration>) {
        self.deadlines.idle = idle;
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
        assert_eq!(
            self.decoder.body_remaining(),
            0,
            "read_header called before the previous body was consumed"
        );
        let mut header_started = (!self.rbuf.is_empty()).then(Instant::now);
        loop {
            if let Some(event) = self.decoder.decode(&mut self.rbuf)? {
                let Event::Header(header) = event else {
                    unreachable!("no body is pending, so the decoder yields a header");
                };
                self.headers_read += 1;
                return Ok(Some(header));
            }
            self.flush().await?;
            let between_frames = self.rbuf.is_empty();
            let read = if self.headers_read == 0 {
                self.read_more(self.header_deadline(self.opened), between_frames)
                    .await?
            } else if between_frames {
                self.read_more(self.idle_deadline(), true).await?
            } else {
                let started = *header_started.get_or_insert_with(Instant::now);
                self.read_more(self.header_deadline(started), false).await?
            };
            match read {
                Read::Stopped => return Ok(None),
                Read::Eof if self.rbuf.is_empty() => return Ok(None),
                Read::Eof => return Err(ConnError::Truncated(FramePart::Header)),
                Read::Bytes => {
                    header_started.get_or_insert_with(Instant::now);
                }
            }
        }
    }

    /// Reads the header of a frame that continues the request in progress (the trailer of a
    /// `put`, the next frame of a chunked `put`). Unlike [`read_header`](Connection::read_header)
    /// the stop signal does not end it, since a request begun is finished, and the end of the
    /// stream is an error.
    ///
    /// # Errors
    ///
    /// As [`read_header`](Connection::read_header), and [`ConnError::Truncated`] when the
    /// stream ends.
    pub async fn read_continuation(&mut self) -> Result<Header, ConnError> {
        let stop = self.stop.take();
        let read = self.read_header().await;
        self.stop = stop;
        read?.ok_or(ConnError::Truncated(FramePart::Header))
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
            self.fill_body().await?;
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
        while filled < wanted {
            let deadline = self.idle_deadline();
            let read = self.stream.read(&mut buf[filled..wanted]);
            let n = match deadline {
                None => read.await?,
                Some(deadline) => timeout_at(deadline, read)
                    .await
                    .map_err(|_| self.timeout_error())??,
            };
            if n == 0 {
                if filled > 0 {
                    break; // hand over what arrived; the next call reports the truncation
                }
                return Err(ConnError::Truncated(FramePart::Body));
            }
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
        let remaining = self.decoder.body_remaining();
        if remaining == 0 {
            return Ok(Bytes::new());
        }
        let wanted = usize::try_from(remaining).expect("caller checked the body against a limit");
        while self.rbuf.len() < wanted {
            self.rbuf
                .reserve((wanted - self.rbuf.len()).min(READ_RESERVE));
            self.fill_body().await?;
        }
        Ok(self
            .decoder
            .take_whole_body(&mut self.rbuf)
            .expect("the whole body is buffered"))
    }

    /// Reads and discards the rest of the current body.
    ///
    /// # Errors
    ///
    /// As [`read_body_chunk`](Connection::read_body_chunk).
    pub async fn skip_body(&mut self) -> Result<(), ConnError> {
        while self.read_body_chunk().await?.is_some() {}
        Ok(())
    }

    /// The write buffer, for encoding a frame header with [`sockit_proto::HeaderWriter`].
    pub fn write_buf(&mut self) -> &mut BytesMut {
        &mut self.wbuf
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
        let deadline = self.idle_deadline();
        with_deadline(deadline, self.stream.write_all(body)).await
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
        let deadline = self.idle_deadline();
        with_deadline(deadline, self.stream.write_all(&self.wbuf)).await?;
        self.wbuf.clear();
        Ok(())
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
        let mut scratch = [0u8; 8192];
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

    /// Reads more body bytes into the buffer, in large reads while much is still to come.
    async fn fill_body(&mut self) -> Result<(), ConnError> {
        let wanted = usize::try_from(self.decoder.body_remaining()).unwrap_or(usize::MAX);
        if wanted > READ_RESERVE && self.rbuf.capacity() - self.rbuf.len() < READ_RESERVE {
            self.rbuf.reserve(wanted.min(BULK_READ));
        }
        match self.read_more(self.idle_deadline(), false).await? {
            Read::Bytes => Ok(()),
            Read::Eof | Read::Stopped => Err(ConnError::Truncated(FramePart::Body)),
        }
    }

    /// One read into the buffer, bounded by `deadline`; when `stoppable`, also ends when the
    /// stop signal fires.
    async fn read_more(
        &mut self,
        deadline: Option<Instant>,
        stoppable: bool,
    ) -> Result<Read, ConnError> {
        if self.rbuf.capacity() - self.rbuf.len() < MIN_READ_SPACE {
            self.rbuf.reserve(READ_RESERVE);
        }
        let stop = self.stop.clone().filter(|_| stoppable);
        let read = async {
            match &stop {
                Some(stop) => tokio::select! {
                    biased;
                    () = stop.cancelled() => None,
                    read = self.stream.read_buf(&mut self.rbuf) => Some(read),
                },
                None => Some(self.stream.read_buf(&mut self.rbuf).await),
            }
        };
        let outcome = match deadline {
            None => read.await,
            Some(deadline) => match timeout_at(deadline, read).await {
                Ok(outcome) => outcome,
                Err(_) => return Err(self.timeout_error()),
            },
        };
        match outcome {
            None => Ok(Read::Stopped),
            Some(Ok(0)) => Ok(Read::Eof),
            Some(Ok(_)) => Ok(Read::Bytes),
            Some(Err(err)) => Err(err.into()),
        }
    }

    fn timeout_error(&self) -> ConnError {
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
    Stopped,
}

async fn with_deadline<F: std::future::Future<Output = io::Result<()>>>(
    deadline: Option<Instant>,
    io: F,
) -> io::Result<()> {
    match deadline {
        None => io.await,
        Some(deadline) => timeout_at(deadline, io)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "peer stopped reading"))?,
    }
}
