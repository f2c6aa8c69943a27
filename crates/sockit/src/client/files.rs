//! The client side of the file store: upload with resume, verified download with resume,
//! listing.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sockit_proto::HeaderWriter;

use super::{Client, ClientError, Reply};
use crate::store::FileInfo;
use crate::transfer::{blocking, hash_prefix, receive_body, BodySink, FileReader, Writeback};
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
        let first = self
            .put_from(path, name, overwrite, length, held, progress)
            .await;
        let outcome = match first {
            // The held part was not of this file after all: start again from the beginning.
            Err(ClientError::Remote { code, .. }) if code == "hash_mismatch" && held > 0 => {
                self.put_from(path, name, overwrite, length, 0, progress)
                    .await
            }
            outcome => outcome,
        };
        if outcome.is_err() {
            // A failed upload may have left the stream mid-body, or the server closing it:
            // later requests get a fresh connection. If that fails, they report it.
            let _ = self.reconnect().await;
        }
        outcome
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
        let file = File::open(path).map_err(|err| local(path, err))?;
        let mut reader = FileReader::start(&file, offset, length - offset, true)
            .map_err(|err| local(path, err))?;
        HeaderWriter::new(self.conn.write_buf())
            .field("op", "put")
            .field("name", name)
            .field("offset", &offset)
            .field("trailer", &true)
            .field("overwrite", &overwrite)
            .finish(length - offset)
            .map_err(io::Error::from)?;
        progress(offset);
        let mut done = offset;
        while let Some(chunk) = reader.next().await {
            let chunk = chunk.map_err(|err| local(path, err))?;
            if !self.conn.write_body_watching(chunk.data()).await? {
                // The server answered before the body was complete: a refusal, after which it
                // closes the connection (`put_file` then reconnects).
                return Err(match self.read_reply().await {
                    Ok(_) => ClientError::BadReply("upload accepted before it was sent".into()),
                    Err(err) => err,
                });
            }
            done += chunk.data().len() as u64;
            reader.recycle(chunk);
            progress(done);
        }
        let hash = reader
            .finish()
            .await
            .map_err(|err| local(path, err))?
            .expect("the reader was asked to hash");
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

        let part_owned = part.to_path_buf();
        let (sink, hasher) = blocking(move || open_part(&part_owned, offset))
            .await
            .map_err(|err| local(part, err))?;
        progress(offset, reply.length);
        let total = reply.length;
        let (sink, hash, written) = receive_body(&mut self.conn, hasher, sink, &mut |done| {
            progress(offset + done, total)
        })
        .await?;
        if let Err(err) = written {
            // Keep the stream in step so the connection stays usable.
            self.conn.skip_body().await?;
            return Err(local(part, err));
        }
        blocking(move || sink.file.sync_all())
            .await
            .map_err(|err| local(part, err))?;
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

/// A download's partial file, written with background writeback.
struct PartFile {
    file: File,
    writeback: Writeback,
}

impl BodySink for PartFile {
    type Error = io::Error;

    fn write(&mut self, data: &[u8]) -> io::Result<()> {
        self.file.write_all(data)?;
        self.writeback.wrote(data.len());
        Ok(())
    }
}

/// Opens the partial download at `part`, keeps its first `offset` bytes and returns it with a
/// hasher that has seen them.
fn open_part(part: &Path, offset: u64) -> io::Result<(PartFile, blake3::Hasher)> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(part)?;
    file.set_len(offset)?;
    let hasher = hash_prefix(&mut file, offset)?;
    let writeback = Writeback::start(&file)?;
    Ok((PartFile { file, writeback }, hasher))
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
