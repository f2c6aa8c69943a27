//! Uploads: `put_file` and `put_source`, verified by BLAKE3 on both sides.
//!
//! A file or block device of known length is sent as one `put` body with a trailer hash, and
//! an interrupted upload resumes from what the server holds. A stream (a pipe, a character
//! device, standard input, `/proc`) is sent as a chunked `put`: each `read` becomes a chunk
//! frame as soon as it returns, and the end frame carries the length and hash
//! (PROTOCOL.md §3.1). [`Source`] decides which.

use std::io;
use std::path::Path;

use sockit_proto::message::{ChunkEnd, PutReply, PutRequest, PutTrailer, Request};
use sockit_proto::{ErrorCode, HeaderWriter};

use super::source::{Source, SourceError};
use super::{Client, ClientError, Connect, RemoteCode};
use crate::transfer::FileReader;

/// A finished upload.
#[derive(Debug, Clone)]
pub struct PutOutcome {
    /// The length stored: for a file, its length when it was opened; for a stream, every byte
    /// read to its end.
    pub length: u64,
    /// Its BLAKE3 hash, as both sides computed it.
    pub hash: String,
    /// Bytes the server already held from an interrupted upload.
    pub resumed_from: u64,
    /// The file changed (grew, or was written to) while it was read. What was stored is
    /// exactly the `length` bytes read and hashed, which may not be the file as it is now.
    pub changed: bool,
    /// The server held part of an interrupted upload of this name and length, but it turned
    /// out not to be this file's beginning (the file changed since), or it was gone when the
    /// upload asked for it: the file was sent again from byte 0.
    pub started_over: bool,
}

impl<C: Connect> Client<C> {
    /// Uploads `path` as `name`: opens it (see [`Source::open`]) and calls
    /// [`Client::put_source`].
    ///
    /// # Errors
    ///
    /// [`ClientError::Source`] when the path cannot be opened or read or is a directory, and
    /// as [`Client::put_source`].
    pub async fn put_file(
        &mut self,
        path: &Path,
        name: &str,
        overwrite: bool,
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<PutOutcome, ClientError> {
        let source = Source::open(path)
            .await
            .map_err(|err| source_error(&super::shown_path(path), err))?;
        self.put_source(&source, name, overwrite, progress).await
    }

    /// Uploads `source` as `name` and checks that the server stored exactly what was sent.
    /// A file or block device resumes an interrupted upload of the same length; a stream is
    /// read to its end. `progress` is called with the bytes done.
    ///
    /// # Errors
    ///
    /// [`ClientError::Source`] for a read failure or a file that shrank; an error reply
    /// (`exists` without `overwrite`, whether the name was taken before the upload or while it
    /// ran, `bad_name`, `no_space`, …); or a connection failure. After an error the client
    /// has a new connection for later requests.
    pub async fn put_source(
        &mut self,
        source: &Source,
        name: &str,
        overwrite: bool,
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<PutOutcome, ClientError> {
        let outcome = self.put_checked(source, name, overwrite, progress).await;
        if outcome.is_err() {
            // A failed upload may have left the stream mid-body, or the server closing it:
            // later requests get a fresh connection. If that fails, they report it.
            let _ = self.reconnect().await;
        }
        outcome.map_err(|err| match err.remote_code() {
            // The server's sentence speaks of its protocol; say it in the client's terms.
            Some(ErrorCode::Exists) => exists(name),
            _ => err,
        })
    }

    /// Asks whether the name is free (and, for a known length, what is held to resume), then
    /// sends the source in the form its kind needs.
    async fn put_checked(
        &mut self,
        source: &Source,
        name: &str,
        overwrite: bool,
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<PutOutcome, ClientError> {
        let length = source.length();
        let stat = match self.stat(name, length).await {
            // Opening the source may have taken long (a FIFO waits for its writer), and the
            // server closes idle connections. Nothing of the upload is sent yet: ask again.
            Err(err) if closed_while_idle(&err) => {
                self.reconnect().await?;
                self.stat(name, length).await?
            }
            stat => stat?,
        };
        if stat.exists && !overwrite {
            return Err(exists(name));
        }
        let Some(length) = length else {
            return self.put_stream(source, name, overwrite, progress).await;
        };
        let held = stat.partial.unwrap_or(0).min(length);
        let first = self
            .put_from(source, name, overwrite, length, held, progress)
            .await;
        match first {
            // The held part was not of this file after all (or the server no longer holds it):
            // start again from the beginning.
            Err(err)
                if held > 0
                    && matches!(
                        err.remote_code(),
                        Some(ErrorCode::HashMismatch | ErrorCode::BadOffset)
                    ) =>
            {
                if err.remote_code() == Some(ErrorCode::BadOffset) {
                    // Refused before its body: the connection is out of step.
                    self.reconnect().await?;
                }
                let outcome = self
                    .put_from(source, name, overwrite, length, 0, progress)
                    .await;
                outcome.map(|put| PutOutcome {
                    started_over: true,
                    ..put
                })
            }
            outcome => outcome,
        }
    }

    /// Sends a source of known length from `offset` as one `put` body with a trailer hash.
    async fn put_from(
        &mut self,
        source: &Source,
        name: &str,
        overwrite: bool,
        length: u64,
        offset: u64,
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<PutOutcome, ClientError> {
        let reader = FileReader::start(source.file(), offset, length - offset, true)
            .map_err(|err| read_failed(source, err))?;
        let request = Request::Put(PutRequest {
            name: name.into(),
            offset,
            trailer: true,
            overwrite,
            ..PutRequest::default()
        });
        self.write_request(&request, length - offset)?;
        let (done, hash) = self
            .send_read(reader, source, false, offset, progress)
            .await?;
        if done != length {
            // The body can never be completed: what reached the server would wait there as a
            // partial for a resume that cannot come.
            self.discard_partial(name, length).await;
            let shrank = SourceError::Shrank {
                read: done,
                expected: length,
            };
            return Err(source_error(source.label(), shrank));
        }
        let changed = source.changed().map_err(|err| read_failed(source, err))?;
        let trailer = PutTrailer {
            hash: hash.to_hex().to_string().into(),
        };
        self.write_fields(&trailer, 0)?;
        self.read_stored(length, &hash).await?;
        Ok(PutOutcome {
            length,
            hash: hash.to_hex().to_string(),
            resumed_from: offset,
            changed,
            started_over: false,
        })
    }

    /// Has the server delete what it holds of an upload of `name` whose whole length is
    /// `length`, after this connection was left mid-body. First this connection is ended and
    /// the server's end awaited, so that it is done with the cut upload; then, if `stat` says
    /// the server holds part of it, a `put` of `offset` 0 of that length, on a new connection
    /// that ends before its first body byte, starts the partial again from empty and so leaves
    /// nothing (PROTOCOL.md §3.1). Best effort: a partial left otherwise expires after the
    /// server's partial time-to-live.
    async fn discard_partial(&mut self, name: &str, length: u64) {
        self.end_and_wait().await;
        if self.reconnect().await.is_err() {
            return;
        }
        match self.stat(name, Some(length)).await {
            Ok(stat) if stat.partial.unwrap_or(0) > 0 => {}
            _ => return,
        }
        let request = Request::Put(PutRequest {
            name: name.into(),
            // Only so that a file stored meanwhile does not refuse it: nothing is stored.
            overwrite: true,
            ..PutRequest::default()
        });
        if self.write_request(&request, length).is_ok() {
            self.end_and_wait().await;
        }
        if self.reconnect().await.is_ok() {
            if let Ok(stat) = self.stat(name, Some(length)).await {
                if let Some(held) = stat.partial.filter(|held| *held > 0) {
                    tracing::debug!(name, held, "the server still holds part of the cut upload");
                }
            }
        }
    }

    /// Shuts down the sending side of this connection and reads what the server still says
    /// until it closes the connection (for at most two seconds): then it is done with what
    /// was sent.
    async fn end_and_wait(&mut self) {
        if self.conn.shutdown_write().await.is_err() {
            return;
        }
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), async {
            while !matches!(
                self.read_reply().await,
                Err(ClientError::Closed | ClientError::Conn(_))
            ) {}
        })
        .await;
    }

    /// Sends a stream as a chunked `put`: a chunk frame for each read, then the end frame.
    async fn put_stream(
        &mut self,
        source: &Source,
        name: &str,
        overwrite: bool,
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<PutOutcome, ClientError> {
        let reader = FileReader::stream(source.file()).map_err(|err| read_failed(source, err))?;
        let request = Request::Put(PutRequest {
            name: name.into(),
            overwrite,
            chunked: true,
            ..PutRequest::default()
        });
        self.write_request(&request, 0)?;
        let (done, hash) = self.send_read(reader, source, true, 0, progress).await?;
        self.write_fields(&ChunkEnd::new(done, hash.to_hex().to_string()), 0)?;
        self.read_stored(done, &hash).await?;
        Ok(PutOutcome {
            length: done,
            hash: hash.to_hex().to_string(),
            resumed_from: 0,
            changed: false,
            started_over: false,
        })
    }

    /// Sends what `reader` reads: as the rest of the body already announced, or (`chunked`)
    /// each piece in a chunk frame of its own. Returns the bytes done, counted on from `done`,
    /// and the hash of the whole source.
    async fn send_read(
        &mut self,
        mut reader: FileReader,
        source: &Source,
        chunked: bool,
        mut done: u64,
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<(u64, blake3::Hash), ClientError> {
        progress(done);
        while let Some(chunk) = reader.next().await {
            let chunk = chunk.map_err(|err| read_failed(source, err))?;
            let len = chunk.data().len() as u64;
            if chunked {
                HeaderWriter::new(self.conn.write_buf())
                    .finish(len)
                    .map_err(io::Error::from)?;
            }
            self.send_body(chunk.data()).await?;
            done += len;
            reader.recycle(chunk);
            progress(done);
        }
        let hash = reader
            .finish()
            .await
            .map_err(|err| read_failed(source, err))?
            .expect("an upload's reader always hashes");
        Ok((done, hash))
    }

    /// Writes a body after its header, watching for the server to answer early.
    async fn send_body(&mut self, body: &[u8]) -> Result<(), ClientError> {
        if self.conn.write_body_watching(body).await? {
            return Ok(());
        }
        // The server answered before the body was complete: a refusal, after which it closes
        // the connection or discards the rest (`put_source` then reconnects).
        Err(match self.read_reply().await {
            Ok(_) => ClientError::BadReply("upload accepted before it was sent".into()),
            Err(err) => err,
        })
    }

    /// Reads the reply to an upload and checks that the server stored `length` bytes hashing
    /// to `hash`.
    async fn read_stored(&mut self, length: u64, hash: &blake3::Hash) -> Result<(), ClientError> {
        let reply: PutReply = self.read_reply().await?.parse()?;
        if reply.hash != hash.to_hex().as_str() || reply.length != length {
            return Err(ClientError::BadReply(format!(
                "server stored {} bytes with hash {}, but {length} bytes with hash {} were sent",
                reply.length,
                reply.hash,
                hash.to_hex()
            )));
        }
        Ok(())
    }
}

/// Whether the failure of a request on a connection that sat idle says that the server had
/// closed it: the connection is gone, or the server's last words were a timeout.
fn closed_while_idle(err: &ClientError) -> bool {
    matches!(err, ClientError::Closed | ClientError::Conn(_))
        || err.remote_code() == Some(ErrorCode::Timeout)
}

/// A read of `source` that failed.
fn read_failed(source: &Source, err: io::Error) -> ClientError {
    source_error(source.label(), SourceError::Read(err))
}

/// A source's failure, named by what the user called it.
fn source_error(label: &str, err: SourceError) -> ClientError {
    ClientError::Source {
        path: label.to_owned(),
        source: err,
    }
}

/// The refusal of a name that is taken, whether the server found it so before the upload or
/// at its commit (another upload took the name meanwhile).
fn exists(name: &str) -> ClientError {
    ClientError::Remote {
        code: RemoteCode::Known(ErrorCode::Exists),
        message: format!("a file named {name:?} already exists on the server"),
        retry_after: None,
    }
}
