//! Bulk transfer between a connection and a file, shared by both ends of `put` and `get`.
//!
//! Both directions are pipelines of threads passing recycled buffers, so disk work, hashing
//! and socket I/O overlap, no buffer is allocated or zeroed in the steady state, and memory is
//! bounded by a handful of chunks whatever the file's size:
//!
//! - [`FileReader`]: a blocking thread reads the file (hashing it on the way, if asked) into
//!   buffers the sender hands back after writing them to the socket; a stream (a pipe, a
//!   device) is read as its bytes come, to its end.
//! - [`receive_body`] and [`BodyPipeline`]: the connection task reads the body (or the bodies
//!   of a run of frames) straight into buffers, one thread hashes them, another writes them to
//!   a [`BodySink`], and they go back to be filled again.
//! - [`Writeback`]: flushes a file being written to disk in the background, so that the sync
//!   at the end waits only for the tail.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::sync::mpsc as std_mpsc;

use tokio::sync::{mpsc, oneshot};

/// Size of the buffers a transfer moves through.
pub(crate) const CHUNK_LEN: usize = 1024 * 1024;
/// Chunks queued between pipeline stages.
const QUEUE_DEPTH: usize = 4;
/// A file being written asks for a background flush after every this many bytes.
const WRITEBACK_STEP: u64 = 64 * 1024 * 1024;

/// A buffer and how much of it holds data.
pub(crate) struct Chunk {
    buf: Vec<u8>,
    len: usize,
}

impl Chunk {
    /// The data.
    pub(crate) fn data(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// A file being read into chunks on a blocking thread.
pub(crate) struct FileReader {
    chunks: mpsc::Receiver<io::Result<Chunk>>,
    recycle: std_mpsc::Sender<Vec<u8>>,
    done: oneshot::Receiver<io::Result<Option<blake3::Hash>>>,
}

/// What a [`FileReader`] reads.
#[derive(Clone, Copy)]
enum Span {
    /// `len` bytes from `offset`, filling each buffer (a file or a block device).
    Range { offset: u64, len: u64 },
    /// From the current position to the end, one `read` per buffer: a pipe's bytes go on as
    /// they come instead of waiting for a whole buffer.
    ToEnd,
}

impl FileReader {
    /// Reads `len` bytes of `file` from `offset`. With `hash`, the whole file from its start
    /// (including the first `offset` bytes) is hashed on the way and returned by
    /// [`FileReader::finish`].
    ///
    /// # Errors
    ///
    /// When the file handle cannot be duplicated.
    pub(crate) fn start(file: &File, offset: u64, len: u64, hash: bool) -> io::Result<FileReader> {
        FileReader::spawn(file, Span::Range { offset, len }, hash)
    }

    /// Reads `file` (a pipe, a device, standard input) from where it is to its end, hashing
    /// what it reads: a stream can be read only once.
    ///
    /// A read of a stream may wait for ever (a pipe whose writer neither writes nor closes, a
    /// terminal), so it runs on a thread of its own rather than the blocking pool, which a
    /// runtime waits for when it shuts down: a program that gave up on the upload can still
    /// end.
    ///
    /// # Errors
    ///
    /// When the file handle cannot be duplicated or the thread cannot start.
    pub(crate) fn stream(file: &File) -> io::Result<FileReader> {
        FileReader::spawn(file, Span::ToEnd, true)
    }

    fn spawn(file: &File, span: Span, hash: bool) -> io::Result<FileReader> {
        let mut file = file.try_clone()?;
        let (chunks, queue) = mpsc::channel(QUEUE_DEPTH);
        let (recycle, recycled) = std_mpsc::channel::<Vec<u8>>();
        let (finished, done) = oneshot::channel();
        let mut read = move || {
            let mut hasher = match span {
                Span::Range { offset, .. } if hash => Some(hash_prefix(&mut file, offset)?),
                Span::Range { offset, .. } => {
                    file.seek(SeekFrom::Start(offset))?;
                    None
                }
                Span::ToEnd => hash.then(blake3::Hasher::new),
            };
            let mut left = match span {
                Span::Range { len, .. } => Some(len),
                Span::ToEnd => None,
            };
            while left != Some(0) {
                let mut buf = recycled.try_recv().unwrap_or_else(|_| vec![0; CHUNK_LEN]);
                let want = left
                    .and_then(|left| usize::try_from(left).ok())
                    .map_or(buf.len(), |left| left.min(buf.len()));
                let read = match span {
                    Span::Range { .. } => read_full(&mut file, &mut buf[..want]),
                    Span::ToEnd => read_once(&mut file, &mut buf[..want]),
                };
                let filled = match read {
                    Ok(filled) => filled,
                    Err(err) => {
                        let kind = err.kind();
                        let _ = chunks.blocking_send(Err(err));
                        return Err(kind.into());
                    }
                };
                if filled == 0 {
                    break; // the end, or a file that shrank: the consumer sees the short count
                }
                if let Some(hasher) = &mut hasher {
                    hasher.update(&buf[..filled]);
                }
                left = left.map(|left| left - filled as u64);
                if chunks
                    .blocking_send(Ok(Chunk { buf, len: filled }))
                    .is_err()
                {
                    break;
                }
            }
            Ok(hasher.map(|hasher| hasher.finalize()))
        };
        let report = move || {
            let _ = finished.send(read());
        };
        match span {
            Span::Range { .. } => drop(tokio::task::spawn_blocking(report)),
            Span::ToEnd => drop(
                std::thread::Builder::new()
                    .name("sockit-stream-reader".into())
                    .spawn(report)?,
            ),
        }
        Ok(FileReader {
            chunks: queue,
            recycle,
            done,
        })
    }

    /// The next chunk, `None` at the end of what was asked for (or of the file).
    ///
    /// # Errors
    ///
    /// A read error.
    pub(crate) async fn next(&mut self) -> Option<io::Result<Chunk>> {
        self.chunks.recv().await
    }

    /// Gives a chunk's buffer back to be filled again.
    pub(crate) fn recycle(&self, chunk: Chunk) {
        let _ = self.recycle.send(chunk.buf);
    }

    /// Waits for the reader to end; the hash, if one was asked for.
    ///
    /// # Errors
    ///
    /// A read error.
    pub(crate) async fn finish(self) -> io::Result<Option<blake3::Hash>> {
        drop(self.chunks);
        self.done.await.expect("the file reader does not panic")
    }
}

/// Where [`receive_body`] and [`BodyPipeline`] read: the body of a request in progress, from
/// whatever carries it (a framed connection; later, an HTTP request).
pub(crate) trait BodySource {
    /// Why reading failed.
    type Error;
    /// Bytes of the body not yet read.
    fn remaining(&self) -> u64;
    /// Reads the next part of the body into `buf`; how many bytes, 0 once it is complete.
    async fn read_into(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error>;
}

/// Where [`receive_body`] and [`BodyPipeline`] write.
pub(crate) trait BodySink: Send + 'static {
    /// Why a write failed.
    type Error: Send + 'static;
    /// Appends `data`.
    fn write(&mut self, data: &[u8]) -> Result<(), Self::Error>;
}

/// Streams the rest of the current body into `sink`, hashing it with `hasher` (which may
/// already hold a prefix) on another thread.
///
/// `Err` when the connection failed; `Ok((sink, hash, Err))` when the sink failed, in which
/// case the rest of the body is still unread.
pub(crate) async fn receive_body<B, K>(
    conn: &mut B,
    hasher: blake3::Hasher,
    sink: K,
    progress: &mut (dyn FnMut(u64) + Send),
) -> Result<(K, blake3::Hash, Result<(), K::Error>), B::Error>
where
    B: BodySource,
    K: BodySink,
{
    let mut pipeline = BodyPipeline::start(hasher, sink);
    let fed = pipeline.feed(conn, progress).await;
    let outcome = pipeline.finish().await;
    fed.map(|_| outcome)
}

/// The receiving pipeline: the connection task reads bodies straight into buffers, one thread
/// hashes them, another writes them to a [`BodySink`], and they go back to be filled again.
///
/// It can take the bodies of several frames in a row ([`BodyPipeline::feed`] once per body),
/// packing small ones into the same buffer, so a stream sent in many small frames costs no
/// more buffers or thread hand-offs than one long body.
pub(crate) struct BodyPipeline<K: BodySink> {
    to_hasher: mpsc::Sender<Chunk>,
    recycled: std_mpsc::Receiver<Vec<u8>>,
    /// The buffer being filled, not yet handed to the hasher.
    filling: Option<Chunk>,
    received: u64,
    hashing: tokio::task::JoinHandle<blake3::Hash>,
    writing: tokio::task::JoinHandle<(K, Result<(), K::Error>)>,
}

impl<K: BodySink> BodyPipeline<K> {
    /// Starts the hashing and writing threads; `hasher` may already hold a prefix.
    pub(crate) fn start(hasher: blake3::Hasher, sink: K) -> BodyPipeline<K> {
        let (to_hasher, mut hasher_queue) = mpsc::channel::<Chunk>(QUEUE_DEPTH);
        let (to_writer, writer_queue) = std_mpsc::sync_channel::<Chunk>(QUEUE_DEPTH);
        let (recycle, recycled) = std_mpsc::channel::<Vec<u8>>();
        let hashing = tokio::task::spawn_blocking(move || {
            let mut hasher = hasher;
            while let Some(chunk) = hasher_queue.blocking_recv() {
                hasher.update(chunk.data());
                if to_writer.send(chunk).is_err() {
                    break; // the writer stopped on an error
                }
            }
            hasher.finalize()
        });
        let writing = tokio::task::spawn_blocking(move || {
            let mut sink = sink;
            for chunk in writer_queue {
                if let Err(err) = sink.write(chunk.data()) {
                    return (sink, Err(err));
                }
                let _ = recycle.send(chunk.buf);
            }
            (sink, Ok(()))
        });
        BodyPipeline {
            to_hasher,
            recycled,
            filling: None,
            received: 0,
            hashing,
            writing,
        }
    }

    /// Bytes taken in so far, over every body fed.
    pub(crate) fn received(&self) -> u64 {
        self.received
    }

    /// Streams the rest of the connection's current body in; `progress` gets the bytes taken
    /// in so far. `Ok(false)` when a later stage stopped on an error (which
    /// [`finish`](BodyPipeline::finish) reports): the rest of the body is then still unread.
    ///
    /// # Errors
    ///
    /// When the connection failed.
    pub(crate) async fn feed<B: BodySource>(
        &mut self,
        conn: &mut B,
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<bool, B::Error> {
        while conn.remaining() > 0 {
            let mut chunk = self.filling.take().unwrap_or_else(|| Chunk {
                buf: self
                    .recycled
                    .try_recv()
                    .unwrap_or_else(|_| vec![0; CHUNK_LEN]),
                len: 0,
            });
            let read = conn.read_into(&mut chunk.buf[chunk.len..]).await;
            let len = match read {
                Ok(len) => len,
                Err(err) => {
                    // What arrived before the failure still goes to the sink on `finish`.
                    self.filling = Some(chunk);
                    return Err(err);
                }
            };
            chunk.len += len;
            self.received += len as u64;
            if chunk.len < chunk.buf.len() {
                self.filling = Some(chunk);
            } else if self.to_hasher.send(chunk).await.is_err() {
                return Ok(false);
            }
            progress(self.received);
        }
        Ok(true)
    }

    /// Hands on what is still buffered and waits for both threads: the sink, the hash of
    /// everything fed, and whether every write succeeded.
    pub(crate) async fn finish(mut self) -> (K, blake3::Hash, Result<(), K::Error>) {
        if let Some(chunk) = self.filling.take().filter(|chunk| chunk.len > 0) {
            // A failed send means the writer stopped on an error, which it reports below.
            let _ = self.to_hasher.send(chunk).await;
        }
        drop(self.to_hasher);
        let hash = self.hashing.await.expect("the body hasher does not panic");
        let (sink, written) = self.writing.await.expect("the body writer does not panic");
        (sink, hash, written)
    }
}

/// Flushes a file being written to disk on a helper thread while more arrives.
#[derive(Debug)]
pub(crate) struct Writeback {
    written: u64,
    requests: Option<std_mpsc::SyncSender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writeback {
    /// Starts flushing `file` in the background.
    ///
    /// # Errors
    ///
    /// When the handle cannot be duplicated or the thread cannot start.
    pub(crate) fn start(file: &File) -> io::Result<Writeback> {
        let file = file.try_clone()?;
        let (requests, pending) = std_mpsc::sync_channel::<()>(1);
        let thread = std::thread::Builder::new()
            .name("sockit-writeback".into())
            .spawn(move || {
                while pending.recv().is_ok() {
                    // Only an optimisation: the owner syncs for real and reports errors.
                    let _ = file.sync_data();
                }
            })?;
        Ok(Writeback {
            written: 0,
            requests: Some(requests),
            thread: Some(thread),
        })
    }

    /// Records that `n` more bytes were written, asking for a flush after each step; a flush
    /// already pending covers a new request.
    pub(crate) fn wrote(&mut self, n: usize) {
        let before = self.written;
        self.written += n as u64;
        if before / WRITEBACK_STEP != self.written / WRITEBACK_STEP {
            if let Some(requests) = &self.requests {
                let _ = requests.try_send(());
            }
        }
    }
}

impl Drop for Writeback {
    fn drop(&mut self) {
        drop(self.requests.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Runs file-system work on the blocking pool.
pub(crate) async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(work)
        .await
        .expect("file-system work does not panic")
}

/// Hashes the first `len` bytes of `file` (fewer if it is shorter) and leaves its position at
/// `len`, where reading or writing the rest goes on.
///
/// # Errors
///
/// A read or seek error.
pub(crate) fn hash_prefix(file: &mut File, len: u64) -> io::Result<blake3::Hasher> {
    let mut hasher = blake3::Hasher::new();
    file.seek(SeekFrom::Start(0))?;
    hash_reader(&mut (&mut *file).take(len), &mut hasher)?;
    file.seek(SeekFrom::Start(len))?;
    Ok(hasher)
}

/// Feeds everything `reader` yields to `hasher`; returns how many bytes.
fn hash_reader(reader: &mut impl Read, hasher: &mut blake3::Hasher) -> io::Result<u64> {
    let mut buf = vec![0u8; CHUNK_LEN];
    let mut total = 0;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err),
        };
        hasher.update(&buf[..n]);
        total += n as u64;
    }
}

/// One `read` into `buf`, retried only when interrupted; returns how much was read.
fn read_once(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match file.read(buf) {
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            read => return read,
        }
    }
}

/// Reads until `buf` is full or the file ends; returns how much was read.
fn read_full(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(filled)
}
