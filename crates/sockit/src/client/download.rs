//! Downloads: `get_to` a [`Target`], verified by BLAKE3, resumed after an interruption.
//!
//! A regular file is written through its part file ([`super::part`]) and appears under its
//! name only once complete and verified; a device, a FIFO or standard output is written in
//! order and the hash checked at the end. A local write failure stops the download at once:
//! the connection is dropped rather than the rest of the file read and thrown away.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use sockit_proto::message::{GetReply, GetRequest, Request};

use super::part::{PartFile, Record, Stored};
use super::target::{Existing, SaveError, SaveOptions, Target};
use super::{parse_header, Client, ClientError, Connect};
use crate::transfer::{blocking, receive_body, BodySink};

/// A finished download.
#[derive(Debug, Clone)]
pub struct GetOutcome {
    /// The file's length.
    pub length: u64,
    /// Its BLAKE3 hash, as both sides computed it.
    pub hash: String,
    /// Bytes already on disk from an interrupted download.
    pub resumed_from: u64,
    /// An interrupted download was there to resume, but the file had changed on the server
    /// since: it was taken again from byte 0.
    pub started_over: bool,
}

/// How one request for a regular file's download ended.
enum Fetched {
    /// Saved.
    Done(GetOutcome),
    /// What was held turned out not to be a prefix of the file: ask again from the start.
    Restart(PartFile),
}

impl<C: Connect> Client<C> {
    /// Downloads `name` to the file at `out` (which must not exist yet), resuming an
    /// interrupted download to the same path.
    ///
    /// # Errors
    ///
    /// As [`Client::get_to`].
    pub async fn get_file(
        &mut self,
        name: &str,
        out: &Path,
        progress: &mut (dyn FnMut(u64, u64) + Send),
    ) -> Result<GetOutcome, ClientError> {
        let target = Target::resolve(Some(out), name, false)?;
        self.get_to(name, &target, SaveOptions::default(), progress)
            .await
    }

    /// Downloads `name` to `target`, checking the whole file against the server's BLAKE3 hash.
    /// `progress` is called with the bytes done and the total.
    ///
    /// # Errors
    ///
    /// An error reply (`not_found`, …), a hash mismatch, a local [`SaveError`], or a connection
    /// failure.
    pub async fn get_to(
        &mut self,
        name: &str,
        target: &Target,
        options: SaveOptions,
        progress: &mut (dyn FnMut(u64, u64) + Send),
    ) -> Result<GetOutcome, ClientError> {
        match target {
            Target::Stdout => {
                let file = std::io::stdout()
                    .as_fd()
                    .try_clone_to_owned()
                    .map(File::from)
                    .map_err(|err| SaveError::io(Path::new("standard output"), err))?;
                self.get_streamed(name, file, &target.shown(), progress)
                    .await
            }
            Target::Node { shown, path } => {
                let (shown_owned, path) = (shown.clone(), path.clone());
                // A FIFO's open waits for a reader: on the blocking pool, before asking.
                let file = blocking(move || open_node(&path))
                    .await
                    .map_err(|err| SaveError::io(&shown_owned, err))?;
                self.get_streamed(name, file, &target.shown(), progress)
                    .await
            }
            Target::File {
                shown,
                path,
                existing,
            } => {
                self.get_into_file(name, shown, path, existing, options, progress)
                    .await
            }
        }
    }

    /// Downloads `name` into the regular file at `path` through its part file: resuming what
    /// it holds, and starting over once when that turns out not to be this file's beginning.
    async fn get_into_file(
        &mut self,
        name: &str,
        shown: &Path,
        path: &Path,
        existing: &Option<Existing>,
        options: SaveOptions,
        progress: &mut (dyn FnMut(u64, u64) + Send),
    ) -> Result<GetOutcome, ClientError> {
        let (shown, path) = (shown.to_path_buf(), path.to_path_buf());
        let mut part = blocking(move || PartFile::open(&shown, &path)).await?;
        let mut restarted = false;
        for from_start in [false, true] {
            let (offset, if_hash) = match from_start {
                false => part.resumable(),
                true => (0, None),
            };
            let if_hash = if_hash.map(str::to_owned);
            let fetched = self
                .fetch_part(name, part, offset, if_hash, existing, options, progress)
                .await?;
            match fetched {
                Fetched::Done(mut outcome) => {
                    outcome.started_over |= restarted;
                    return Ok(outcome);
                }
                Fetched::Restart(again) => {
                    part = again;
                    restarted = true;
                }
            }
        }
        Err(ClientError::BadReply(
            "the server did not send the file from its start when asked".into(),
        ))
    }

    /// Sends `get` and reads the reply header, checking it against the request.
    async fn request_get(
        &mut self,
        name: &str,
        offset: u64,
        if_hash: Option<&str>,
    ) -> Result<GetReply, ClientError> {
        let request = Request::Get(GetRequest {
            name: name.into(),
            offset,
            if_hash: if_hash.map(Into::into),
        });
        self.write_request(&request, 0)?;
        let header = self.read_reply_header().await?;
        let reply: GetReply = parse_header(&header)?;
        let served_from_start = reply.offset == 0 && if_hash.is_some();
        if (reply.offset != offset && !served_from_start)
            || header.body_len() != reply.length.saturating_sub(reply.offset)
        {
            return Err(ClientError::BadReply(
                "get reply does not match the request".into(),
            ));
        }
        Ok(reply)
    }

    /// One request for a regular file's download, from `offset` (bytes held in `part` of the
    /// file whose hash is `if_hash`).
    #[allow(clippy::too_many_arguments)]
    async fn fetch_part(
        &mut self,
        name: &str,
        part: PartFile,
        offset: u64,
        if_hash: Option<String>,
        existing: &Option<Existing>,
        options: SaveOptions,
        progress: &mut (dyn FnMut(u64, u64) + Send),
    ) -> Result<Fetched, ClientError> {
        let reply = self.request_get(name, offset, if_hash.as_deref()).await?;
        let mut part = part;
        if reply.offset > 0 && if_hash.as_deref() != Some(reply.hash.as_str()) {
            // A server that does not know `if_hash` sent the rest of another file: drop it.
            let _ = self.reconnect().await;
            part.discard();
            return Ok(Fetched::Restart(part));
        }
        let record = Record {
            name: name.to_owned(),
            length: reply.length,
            hash: reply.hash.clone(),
        };
        let start = reply.offset;
        let (mut part, begun) = blocking(move || {
            let begun = part.begin(record, start);
            (part, begun)
        })
        .await;
        let (sink, hasher) = match begun {
            Ok(begun) => begun,
            Err(err) => {
                let _ = self.reconnect().await;
                return Err(part.interrupted(err).into());
            }
        };
        let total = reply.length;
        progress(start, total);
        let received = receive_body(&mut self.conn, hasher, sink, &mut |done| {
            progress(start + done, total);
        })
        .await;
        let (sink, hash, written) = match received {
            Ok(received) => received,
            Err(err) => return Err(part.interrupted(io::Error::other(err)).into()),
        };
        if let Err(err) = written {
            // Stop at once: reading the rest only to throw it away could take hours.
            let _ = self.reconnect().await;
            return Err(part.interrupted(err).into());
        }
        if hash.to_hex().as_str() != reply.hash {
            if start > 0 {
                // What was held was not the beginning of this file after all.
                part.discard();
                return Ok(Fetched::Restart(part));
            }
            blocking(move || part.remove()).await;
            return Err(ClientError::HashMismatch {
                expected: reply.hash,
                actual: hash.to_hex().to_string(),
            });
        }
        let stored = Stored {
            mode: reply.mode,
            modified: reply.modified,
        };
        let existing = *existing;
        blocking(move || part.commit(sink, existing.as_ref(), stored, options)).await?;
        Ok(Fetched::Done(GetOutcome {
            length: reply.length,
            hash: reply.hash,
            resumed_from: start,
            // Asked to resume, served from the start: the file changed (`if_hash`).
            started_over: offset > 0 && start == 0,
        }))
    }

    /// Downloads `name` into an open device, FIFO or standard output, in order.
    async fn get_streamed(
        &mut self,
        name: &str,
        file: File,
        shown: &str,
        progress: &mut (dyn FnMut(u64, u64) + Send),
    ) -> Result<GetOutcome, ClientError> {
        let shown_path = PathBuf::from(shown);
        let reply = self.request_get(name, 0, None).await?;
        let total = reply.length;
        progress(0, total);
        let sink = StreamSink(file);
        let received = receive_body(&mut self.conn, blake3::Hasher::new(), sink, &mut |done| {
            progress(done, total);
        })
        .await?;
        let (StreamSink(mut file), hash, written) = received;
        if let Err(err) = written.and_then(|()| file.flush()) {
            let _ = self.reconnect().await;
            return Err(SaveError::io(&shown_path, err).into());
        }
        if hash.to_hex().as_str() != reply.hash {
            return Err(SaveError::Unverified {
                path: shown.to_owned(),
                expected: reply.hash,
                actual: hash.to_hex().to_string(),
            }
            .into());
        }
        Ok(GetOutcome {
            length: reply.length,
            hash: reply.hash,
            resumed_from: 0,
            started_over: false,
        })
    }
}

/// Opens an existing device or FIFO for writing, without creating, truncating or replacing it.
fn open_node(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(path)
}

/// Writes a download in order into a file that cannot seek.
struct StreamSink(File);

impl BodySink for StreamSink {
    type Error = io::Error;

    fn write(&mut self, data: &[u8]) -> io::Result<()> {
        self.0.write_all(data)
    }
}
