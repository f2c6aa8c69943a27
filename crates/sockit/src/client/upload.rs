//! Uploads: `put_file`, resuming an interrupted upload, verified by BLAKE3 on both sides.

use std::fs::{self, File};
use std::io;
use std::path::Path;

use serde::Deserialize;
use sockit_proto::HeaderWriter;

use super::files::{local, parse};
use super::{Client, ClientError};
use crate::transfer::FileReader;

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

#[derive(Deserialize)]
struct PutReply {
    length: u64,
    hash: String,
}

impl Client {
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
}
