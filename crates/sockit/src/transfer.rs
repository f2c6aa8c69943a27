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
//! - [`Writeback`]: starts writing a file being received out to the disk as it grows, without
//!   waiting for the disk, so that the sync at the end waits only for the tail.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::sync::mpsc as std_mpsc;

use tokio::sync::{mpsc, oneshot};

/// Size of the buffers a transfer moves through.
pub(crate) const CHUNK_LEN: usize = 1024 * 1024;
/// Chunks queued between pipeline stages.
const QUEUE_DEPTH: usize = 4;

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

/// A chunk's buffer lent out as [`bytes::Bytes`], going back to its reader when dropped.
struct Lent {
    buf: Vec<u8>,
    len: usize,
    recycle: std_mpsc::Sender<Vec<u8>>,
}

impl AsRef<[u8]> for Lent {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        // A reader that has ended no longer takes buffers: this one is then simply freed.
        let _ = self.recycle.send(std::mem::take(&mut self.buf));
    }
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

    /// The next chunk as [`Bytes`](bytes::Bytes) that share its buffer, without a copy; the
    /// buffer comes back to be filled again when the last of them is dropped (once the bytes
    /// are written to a socket, for an HTTP body).
    pub(crate) async fn next_bytes(&mut self) -> Option<io::Result<bytes::Bytes>> {
        let chunk = match self.next().await? {
            Ok(chunk) => chunk,
            Err(err) => return Some(Err(err)),
        };
        let lent = Lent {
            len: chunk.len,
            buf: chunk.buf,
            recycle: self.recycle.clone(),
        };
        Some(Ok(bytes::Bytes::from_owner(lent)))
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

/// Starts writing a file's new bytes to the disk on a helper thread while more arrive, without
/// waiting for the disk, so that the sync before the reply has only the last few MiB left to
/// write and wait for.
///
/// Every [`WRITEBACK_STEP`] bytes, the helper asks the kernel to start write-out of the bytes
/// written since its last request: `posix_fadvise(POSIX_FADV_DONTNEED)` over that range, which
/// on Linux first starts write-out of the range's dirty pages without waiting for it (as
/// `sync_file_range(SYNC_FILE_RANGE_WRITE)` does, which neither nix nor rustix offers without
/// `unsafe`), then drops those of its pages already clean: of bytes just written, few or none.
/// On tmpfs, which has nothing to write back, the call does nothing.
///
/// It never waits for the device or its cache: an earlier version called `fdatasync` every
/// 64 MiB, and each of those waited for the disk and forced a journal commit and a cache flush,
/// stalling the writes behind it. Durability is the owner's: it syncs the file for real (and
/// reports errors) before it answers.
#[derive(Debug)]
pub(crate) struct Writeback {
    /// Where the new bytes end in the file.
    end: u64,
    /// Where the last range handed to the helper ended.
    requested: u64,
    /// Ends of ranges to start writing out; the helper knows where each one begins.
    requests: Option<std_mpsc::SyncSender<u64>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Bytes written between two requests to start write-out: a few milliseconds of work for a
/// disk that writes a GB a second, so the device stays busy while the transfer goes on and
/// little is left for the final sync. (Measured on the benchmark machine against 32 MiB steps
/// and against 8 MiB steps that also dropped the cached pages of older ranges: the same within
/// the noise; see docs/BENCHMARKS.md.)
const WRITEBACK_STEP: u64 = 8 * 1024 * 1024;

impl Writeback {
    /// Starts writing out `file`, whose new bytes begin at `from`, in the background.
    ///
    /// # Errors
    ///
    /// When the handle cannot be duplicated or the thread cannot start.
    pub(crate) fn start(file: &File, from: u64) -> io::Result<Writeback> {
        let file = file.try_clone()?;
        Writeback::with_flush(from, move |start, end| start_write_out(&file, start, end))
    }

    /// Starts the helper thread, which calls `flush(start, end)` for each range of new bytes
    /// to write out; consecutive ranges meet, and the first begins at `from`.
    fn with_flush(
        from: u64,
        mut flush: impl FnMut(u64, u64) + Send + 'static,
    ) -> io::Result<Writeback> {
        let (requests, pending) = std_mpsc::sync_channel::<u64>(1);
        let thread = std::thread::Builder::new()
            .name("sockit-writeback".into())
            .spawn(move || {
                let mut started = from;
                while let Ok(end) = pending.recv() {
                    flush(started, end);
                    started = end;
                }
            })?;
        Ok(Writeback {
            end: from,
            requested: from,
            requests: Some(requests),
            thread: Some(thread),
        })
    }

    /// Records that the file's new bytes now end at `end` (holes left by seeking count as
    /// written), asking for write-out after each step. While the helper is busy the request
    /// waits for a later write: the next range then starts where the last one ended.
    pub(crate) fn wrote_to(&mut self, end: u64) {
        self.end = self.end.max(end);
        if self.end - self.requested < WRITEBACK_STEP {
            return;
        }
        if let Some(requests) = &self.requests {
            if requests.try_send(self.end).is_ok() {
                self.requested = self.end;
            }
        }
    }
}

/// Starts write-out of the dirty pages of `file` in `start..end` without waiting for it (see
/// [`Writeback`]). Only an optimisation: a failure is left for the final sync to report.
fn start_write_out(file: &File, start: u64, end: u64) {
    let (Ok(offset), Ok(len)) = (i64::try_from(start), i64::try_from(end - start)) else {
        return;
    };
    let _ = nix::fcntl::posix_fadvise(
        file,
        offset,
        len,
        nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
    );
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

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// The ranges a [`Writeback`] asked to write out, once its helper has stopped.
    fn ranges_after(from: u64, ends: &[u64]) -> Vec<(u64, u64)> {
        let asked = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&asked);
        let mut writeback = Writeback::with_flush(from, move |start, end| {
            record.lock().unwrap().push((start, end));
        })
        .unwrap();
        for &end in ends {
            writeback.wrote_to(end);
            // Each request has time to reach the helper, so none waits for a later write.
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        drop(writeback);
        Arc::try_unwrap(asked).unwrap().into_inner().unwrap()
    }

    #[test]
    fn writeback_asks_for_each_step_from_where_the_new_bytes_begin() {
        let mib = 1024 * 1024;
        let from = 3 * mib + 17;
        let ends: Vec<u64> = (1..=40).map(|i| from + i * mib).collect();
        assert_eq!(
            ranges_after(from, &ends),
            vec![
                (from, from + 8 * mib),
                (from + 8 * mib, from + 16 * mib),
                (from + 16 * mib, from + 24 * mib),
                (from + 24 * mib, from + 32 * mib),
                (from + 32 * mib, from + 40 * mib),
            ]
        );
    }

    #[test]
    fn writeback_ranges_meet_when_writes_cross_steps_unevenly() {
        let mib = 1024 * 1024;
        // A 3 MiB write then one of 20 MiB, then a hole to 30 MiB (a download's zeros), then
        // two short ones: each range starts where the last ended, and the tail under a step is
        // left for the final sync.
        let ends = [3 * mib, 23 * mib, 30 * mib, 31 * mib + 5, 39 * mib];
        assert_eq!(
            ranges_after(0, &ends),
            vec![(0, 23 * mib), (23 * mib, 31 * mib + 5)]
        );
    }

    #[test]
    fn writeback_of_less_than_a_step_asks_for_nothing() {
        assert_eq!(ranges_after(0, &[1, 4096, WRITEBACK_STEP - 1]), vec![]);
    }

    #[test]
    fn writeback_leaves_a_written_file_whole() {
        let mut file = tempfile::tempfile().unwrap();
        let mut writeback = Writeback::start(&file, 0).unwrap();
        let data: Vec<u8> = (0..20 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
        let mut written = 0;
        for piece in data.chunks(CHUNK_LEN) {
            io::Write::write_all(&mut file, piece).unwrap();
            written += piece.len() as u64;
            writeback.wrote_to(written);
        }
        drop(writeback);
        file.sync_all().unwrap();
        let mut back = Vec::new();
        file.seek(SeekFrom::Start(0)).unwrap();
        file.read_to_end(&mut back).unwrap();
        assert!(
            back == data,
            "the file read back differs from what was written"
        );
    }
}
