//! The client side of the file store: upload with resume, verified download with resume,
//! listing.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use serde::Deserialize;
use sockit_proto::HeaderWriter;
use tokio::sync::mpsc;

use super::{Client, ClientError, Reply};
use crate::store::{hash_reader, FileInfo};

/// Read size of the file being sent.
const FILE_READ: usize = 1024 * 1024;
/// Chunks queued between the disk thread and the socket.
const QUEUE_DEPTH: usize = 8;
/// Suffix of a download in progress, kept for resuming.
pub const PART_SUFFIX: &str = ".sockit-part";

/// What the server says about a name.
#[derive(Debug, Clone, Deserialize)]
pub struct RemoteStat {
    /// Whether a file of that name is stored.
    pub exists: bool,
    /// Its length, if stored.
    pub length: Option<u64>,
    /// Bytes held for resuming an upload of the asked length.
    #[serde(default)]
    pub partial: u64,
}

/// A finished upload.
#[derive(Debug, Clone)]
pub struct PutOutcome {
    /// The file's length.
    pub length: u64,
    /// Its BLAKE3 hash, as both sides computed it.
    pub hash: String,
    /// Bytes the server already held from an interrupted upload.
    pub resumed_from: u64,
}

/// A finished download.
#[derive(Debug, Clone)]
pub struct GetOutcome {
    /// The file's length.
    pub length: u64,
    /// Its BLAKE3 hash, as both sides computed it.
    pub hash: String,
    /// Bytes already on disk from an interrupted download.
    pub resumed_from: u64,
}

#[derive(Deserialize)]
struct PutReply {
    length: u64,
    hash: String,
}

#[derive(Deserialize)]
struct GetReply {
    length: u64,
    hash: String,
    offset: u64,
}

impl Client {
    /// `stat`: whether `name` is stored, and with `length`, how much of an upload of that
    /// length the server holds.
    ///
    /// # Errors
    ///
    /// As [`Client::call`].
    pub async fn stat(
        &mut self,
        name: &str,
        length: Option<u64>,
    ) -> Result<RemoteStat, ClientError> {
        let reply = self
            .call_with("stat", |header| {
                header.field("name", name);
                if let Some(length) = length {
                    header.field("length", &length);
                }
            })
            .await?;
        parse(&reply)
    }

    /// `list`: every stored file.
    ///
    /// # Errors
    ///
    /// As [`Client::call`].
    pub async fn list(&mut self) -> Result<Vec<FileInfo>, ClientError> {
        let reply = self.call("list", b"").await?;
        serde_json::from_slice(&reply.body).map_err(|err| ClientError::BadReply(err.to_string()))
    }

    /// Uploads `path` as `name`, resuming an interrupted upload of the same file, and checks
    /// that the server stored exactly what was sent. `progress` is called with the bytes done.
    ///
    /// # Errors
    ///
    /// A local read error, an error reply (`exists` without `overwrite`, `bad_name`, …), or a
    /// connection failure.
    pub async fn put_file(
        &mut self,
        path: &Path,
        name: &str,
        overwrite: bool,
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<PutOutcome, ClientError> {
        let length = fs::metadata(path).map_err(|err| local(path, err))?.len();
        let stat = self.stat(name, Some(length)).await?;
        if stat.exists && !overwrite {
            return Err(ClientError::Remote {
                code: "exists".into(),
                message: format!(
                    "a file named {name:?} already exists (use --force to replace it)"
                ),
            });
        }
        let held = stat.partial.min(length);
        match self
            .put_from(path, name, overwrite, length, held, progress)
            .await
        {
            // The held part was not of this file after all: start again from the beginning.
            Err(ClientError::Remote { code, .. }) if code == "hash_mismatch" && held > 0 => {
                self.put_from(path, name, overwrite, length, 0, progress)
                    .await
            }
            outcome => outcome,
        }
    }

    async fn put_from(
        &mut self,
        path: &Path,
        name: &str,
        overwrite: bool,
        length: u64,
        offset: u64,
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<PutOutcome, ClientError> {
        let mut file = File::open(path).map_err(|err| local(path, err))?;
        let (chunks, hasher) = spawn_file_reader(&mut file, path, offset, length - offset)?;
        HeaderWriter::new(self.conn.write_buf())
            .field("op", "put")
            .field("name", name)
            .field("offset", &offset)
            .field("trailer", &true)
            .field("overwrite", &overwrite)
            .finish(length - offset)
            .map_err(io::Error::from)?;
        progress(offset);
        let mut chunks = chunks;
        let mut done = offset;
        while let Some(chunk) = chunks.recv().await {
            let chunk = chunk.map_err(|err| local(path, err))?;
            if !self.conn.write_body_watching(&chunk).await? {
                // The server answered before the body was complete: a refusal, after which it
                // closes the connection.
                let refusal = match self.read_reply().await {
                    Ok(_) => ClientError::BadReply("upload accepted before it was sent".into()),
                    Err(err) => err,
                };
                self.reconnect().await?;
                return Err(refusal);
            }
            done += chunk.len() as u64;
            progress(done);
        }
        let hash = hasher
            .await
            .expect("the file reader does not panic")
            .map_err(|err| local(path, err))?;
        if done != length {
            return Err(local(
                path,
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "file changed size while being sent",
                ),
            ));
        }
        HeaderWriter::new(self.conn.write_buf())
            .field("hash", hash.to_hex().as_str())
            .finish(0)
            .map_err(io::Error::from)?;
        let reply: PutReply = parse(&self.read_reply().await?)?;
        if reply.hash != hash.to_hex().as_str() || reply.length != length {
            return Err(ClientError::BadReply(format!(
                "server stored {} bytes with hash {}, but {length} bytes with hash {} were sent",
                reply.length,
                reply.hash,
                hash.to_hex()
            )));
        }
        Ok(PutOutcome {
            length,
            hash: reply.hash,
            resumed_from: offset,
        })
    }

    /// Downloads `name` to `out`, through `<out>.sockit-part` so that an interrupted download
    /// resumes, and checks the whole file against the server's BLAKE3 hash before renaming it
    /// into place. `progress` is called with the bytes done and the total.
    ///
    /// # Errors
    ///
    /// An error reply (`not_found`, …), a hash mismatch, a local write error, or a connection
    /// failure.
    pub async fn get_file(
        &mut self,
        name: &str,
        out: &Path,
        progress: &mut (dyn FnMut(u64, u64) + Send),
    ) -> Result<GetOutcome, ClientError> {
        let part = part_path(out);
        let held = fs::metadata(&part).map(|meta| meta.len()).unwrap_or(0);
        match self.get_from(name, out, &part, held, progress).await {
            Err(ClientError::Remote { code, .. }) if code == "bad_offset" && held > 0 => {
                self.get_from(name, out, &part, 0, progress).await
            }
            Err(ClientError::HashMismatch { .. }) if held > 0 => {
                self.get_from(name, out, &part, 0, progress).await
            }
            outcome => outcome,
        }
    }

    async fn get_from(
        &mut self,
        name: &str,
        out: &Path,
        part: &Path,
        offset: u64,
        progress: &mut (dyn FnMut(u64, u64) + Send),
    ) -> Result<GetOutcome, ClientError> {
        HeaderWriter::new(self.conn.write_buf())
            .field("op", "get")
            .field("name", name)
            .field("offset", &offset)
            .finish(0)
            .map_err(io::Error::from)?;
        let header = self.read_reply_header().await?;
        let reply: GetReply = header
            .parse()
            .map_err(|err| ClientError::BadReply(err.to_string()))?;
        if reply.offset != offset || header.body_len() != reply.length.saturating_sub(offset) {
            return Err(ClientError::BadReply(
                "get reply does not match the request".into(),
            ));
        }

        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(part)
            .map_err(|err| local(part, err))?;
        let (chunks, writer) = spawn_file_writer(&mut file, part, offset)?;
        progress(offset, reply.length);
        let mut done = offset;
        let mut failed = None;
        while let Some(chunk) = self.conn.read_body_chunk().await? {
            done += chunk.len() as u64;
            if chunks.send(chunk).await.is_err() {
                failed = Some(());
                break;
            }
            progress(done, reply.length);
        }
        drop(chunks);
        let written = writer.await.expect("the file writer does not panic");
        let hash = match (written, failed) {
            (Ok(hash), None) => hash,
            (Err(err), _) => {
                // Keep the stream in step so the connection stays usable.
                self.conn.skip_body().await?;
                return Err(local(part, err));
            }
            (Ok(_), Some(())) => unreachable!("the writer only stops early on an error"),
        };
        if hash.to_hex().as_str() != reply.hash {
            let _ = fs::remove_file(part);
            return Err(ClientError::HashMismatch {
                expected: reply.hash,
                actual: hash.to_hex().to_string(),
            });
        }
        fs::rename(part, out).map_err(|err| local(out, err))?;
        Ok(GetOutcome {
            length: reply.length,
            hash: reply.hash,
            resumed_from: offset,
        })
    }
}

/// Where a download to `out` is kept while in progress.
pub fn part_path(out: &Path) -> PathBuf {
    let mut part = out.as_os_str().to_owned();
    part.push(PART_SUFFIX);
    PathBuf::from(part)
}

/// Reads `len` bytes of `file` from `offset` on a blocking thread, hashing the whole file
/// (including the first `offset` bytes) as it goes. Returns the chunks and the final hash.
#[allow(clippy::type_complexity)]
fn spawn_file_reader(
    file: &mut File,
    path: &Path,
    offset: u64,
    len: u64,
) -> Result<
    (
        mpsc::Receiver<io::Result<Bytes>>,
        tokio::task::JoinHandle<io::Result<blake3::Hash>>,
    ),
    ClientError,
> {
    let mut file = file.try_clone().map_err(|err| local(path, err))?;
    let (chunks, queue) = mpsc::channel(QUEUE_DEPTH);
    let reader = tokio::task::spawn_blocking(move || {
        let mut hasher = blake3::Hasher::new();
        file.seek(SeekFrom::Start(0))?;
        hash_reader(&mut (&mut file).take(offset), &mut hasher)?;
        let mut rest = file.take(len);
        loop {
            let mut buf = BytesMut::zeroed(FILE_READ);
            let n = match rest.read(&mut buf) {
                Ok(0) => return Ok(hasher.finalize()),
                Ok(n) => n,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => {
                    let kind = err.kind();
                    let _ = chunks.blocking_send(Err(err));
                    return Err(kind.into());
                }
            };
            buf.truncate(n);
            hasher.update(&buf);
            if chunks.blocking_send(Ok(buf.freeze())).is_err() {
                return Ok(hasher.finalize());
            }
        }
    });
    Ok((queue, reader))
}

/// Writes chunks to `file` from `offset` on a blocking thread, hashing the whole file
/// (re-reading the first `offset` bytes) and syncing at the end.
fn spawn_file_writer(
    file: &mut File,
    path: &Path,
    offset: u64,
) -> Result<
    (
        mpsc::Sender<Bytes>,
        tokio::task::JoinHandle<io::Result<blake3::Hash>>,
    ),
    ClientError,
> {
    let mut file = file.try_clone().map_err(|err| local(path, err))?;
    let (chunks, mut queue) = mpsc::channel::<Bytes>(QUEUE_DEPTH);
    let writer = tokio::task::spawn_blocking(move || {
        let mut hasher = blake3::Hasher::new();
        file.set_len(offset)?;
        file.seek(SeekFrom::Start(0))?;
        hash_reader(&mut (&mut file).take(offset), &mut hasher)?;
        file.seek(SeekFrom::Start(offset))?;
        while let Some(chunk) = queue.blocking_recv() {
            file.write_all(&chunk)?;
            hasher.update(&chunk);
        }
        file.sync_all()?;
        Ok(hasher.finalize())
    });
    Ok((chunks, writer))
}

fn parse<'a, T: Deserialize<'a>>(reply: &'a Reply) -> Result<T, ClientError> {
    reply
        .header
        .parse()
        .map_err(|err| ClientError::BadReply(err.to_string()))
}

fn local(path: &Path, err: io::Error) -> ClientError {
    ClientError::Local {
        path: path.display().to_string(),
        source: err,
    }
}
