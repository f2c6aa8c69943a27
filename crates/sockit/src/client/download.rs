//! Downloads: `get_file`, resuming an interrupted download, verified by BLAKE3.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sockit_proto::HeaderWriter;

use super::files::local;
use super::{Client, ClientError};
use crate::transfer::{blocking, hash_prefix, receive_body, BodySink, Writeback};

/// Suffix of a download in progress, kept for resuming.
pub const PART_SUFFIX: &str = ".sockit-part";

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
struct GetReply {
    length: u64,
    hash: String,
    offset: u64,
}

impl Client {
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
