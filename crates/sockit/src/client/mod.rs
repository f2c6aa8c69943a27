//! The client side of the framed protocol, as the `sockit` commands use it.
//!
//! Requests can be sent one at a time ([`Client::call`]) or pipelined: [`Client::queue`] any
//! number, [`Client::flush`], then [`Client::read_reply`] once per request, in order. File
//! transfer in `upload` (`put_file`, `put_source`), `download` (`get_file`, `get_to`) and
//! `files` (`list`, `list_page`, `list_pages`, `stat`); what an upload reads in `source`, where a
//! download goes in `target` and `part`; logging in in `auth`, remote commands in `exec`.

mod auth;
mod download;
mod exec;
mod files;
mod part;
mod source;
mod target;
mod upload;

pub use download::GetOutcome;
pub use exec::ExecOutcome;
pub use files::{FilePage, ListPages, RemoteStat};
pub use part::{part_path, PART_SUFFIX};
pub use source::{Source, SourceError, SourceKind};
pub use target::{SaveError, SaveOptions, Target};
pub use upload::PutOutcome;

use std::borrow::Cow;
use std::io;
use std::time::Duration;

use bytes::Bytes;
use serde::Deserialize;
use sockit_proto::{Header, HeaderWriter, Limits};
use tokio::net::TcpStream;

use crate::connection::{ConnError, Connection, Deadlines};

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the client waits for the server to say anything.
pub(crate) const REPLY_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a request did not succeed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// No connection could be made.
    #[error("cannot connect to {addr}: {reason}")]
    Connect {
        /// The address tried.
        addr: String,
        /// Why, in words.
        reason: String,
    },
    /// The server answered with an error reply.
    #[error("server refused: {message} ({code})")]
    Remote {
        /// The reply's `code`.
        code: String,
        /// The reply's `error`, stripped of control characters.
        message: String,
    },
    /// The server closed the connection without answering.
    #[error("the server closed the connection")]
    Closed,
    /// The connection failed.
    #[error("lost the connection to the server: {0}")]
    Conn(#[from] ConnError),
    /// A local file could not be read or written.
    #[error("{path}: {source}")]
    Local {
        /// The file.
        path: String,
        /// Why.
        source: io::Error,
    },
    /// A download could not be saved where it was asked to go.
    #[error(transparent)]
    Save(#[from] SaveError),
    /// What an upload reads cannot be used: it cannot be opened, is a directory, failed or
    /// shrank while being read.
    #[error("{path}: {source}")]
    Source {
        /// What the user named it by: the path as given, or "standard input".
        path: String,
        /// Why.
        source: SourceError,
    },
    /// A downloaded file does not match the hash the server sent.
    #[error("downloaded data does not match its hash (expected {expected}, got {actual}); nothing was kept")]
    HashMismatch {
        /// The server's hash.
        expected: String,
        /// The hash of what arrived.
        actual: String,
    },
    /// The server's reply is not what the protocol says.
    #[error("malformed reply from the server: {0}")]
    BadReply(String),
}

impl From<io::Error> for ClientError {
    fn from(err: io::Error) -> Self {
        ClientError::Conn(ConnError::Io(err))
    }
}

/// A successful reply.
#[derive(Debug)]
pub struct Reply {
    /// The reply's header.
    pub header: Header,
    /// The reply's body, read whole.
    pub body: Bytes,
}

/// The fields of a reply header the client checks.
#[derive(Deserialize)]
struct ReplyEnvelope<'a> {
    ok: bool,
    #[serde(borrow, default)]
    code: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    error: Option<Cow<'a, str>>,
}

/// A connection to a sockit server.
#[derive(Debug)]
pub struct Client {
    addr: String,
    conn: Connection<TcpStream>,
}

impl Client {
    /// Connects to `addr` (`host:port`).
    ///
    /// # Errors
    ///
    /// [`ClientError::Connect`] with the reason in words ("connection refused").
    pub async fn connect(addr: &str) -> Result<Client, ClientError> {
        Ok(Client {
            addr: addr.to_owned(),
            conn: Client::open(addr).await?,
        })
    }

    /// Replaces the connection with a new one to the same server, after the server refused a
    /// request without reading all of it (and so closes the old one).
    ///
    /// # Errors
    ///
    /// As [`Client::connect`].
    pub async fn reconnect(&mut self) -> Result<(), ClientError> {
        self.conn = Client::open(&self.addr).await?;
        Ok(())
    }

    async fn open(addr: &str) -> Result<Connection<TcpStream>, ClientError> {
        let connecting = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr));
        let stream = match connecting.await {
            Ok(Ok(stream)) => stream,
            Ok(Err(err)) => {
                return Err(ClientError::Connect {
                    addr: addr.to_owned(),
                    reason: describe_io_error(&err),
                })
            }
            Err(_) => {
                return Err(ClientError::Connect {
                    addr: addr.to_owned(),
                    reason: format!("no answer within {CONNECT_TIMEOUT:?}"),
                })
            }
        };
        let _ = stream.set_nodelay(true);
        let deadlines = Deadlines {
            header: None,
            idle: Some(REPLY_TIMEOUT),
        };
        Ok(Connection::new(stream, Limits::default(), deadlines))
    }

    /// Sends one request and reads its reply.
    ///
    /// # Errors
    ///
    /// [`ClientError::Remote`] for an error reply; others when the connection fails.
    pub async fn call(&mut self, op: &str, body: &[u8]) -> Result<Reply, ClientError> {
        self.queue(op, body).await?;
        self.read_reply().await
    }

    /// `ping`.
    ///
    /// # Errors
    ///
    /// As [`Client::call`].
    pub async fn ping(&mut self) -> Result<(), ClientError> {
        self.call("ping", b"").await.map(drop)
    }

    /// `echo`: the server sends `body` back.
    ///
    /// # Errors
    ///
    /// As [`Client::call`]; `too_large` over the server's in-memory limit.
    pub async fn echo(&mut self, body: &[u8]) -> Result<Bytes, ClientError> {
        let reply = self.call("echo", body).await?;
        if reply.body != body {
            return Err(ClientError::BadReply("echo came back different".into()));
        }
        Ok(reply.body)
    }

    /// Sends a request whose header has `op` and the fields `fields` adds, with no body, and
    /// reads its reply.
    async fn call_with(
        &mut self,
        op: &str,
        fields: impl FnOnce(&mut HeaderWriter<'_>),
    ) -> Result<Reply, ClientError> {
        let mut header = HeaderWriter::new(self.conn.write_buf());
        header.field("op", op);
        fields(&mut header);
        header.finish(0).map_err(io::Error::from)?;
        self.read_reply().await
    }

    /// Appends a request to the outgoing buffer without waiting for its reply. Long bodies are
    /// written out at once; short requests stay buffered until [`Client::flush`] or the next
    /// read.
    ///
    /// # Errors
    ///
    /// When writing a long body fails.
    pub async fn queue(&mut self, op: &str, body: &[u8]) -> Result<(), ClientError> {
        HeaderWriter::new(self.conn.write_buf())
            .field("op", op)
            .finish(body.len() as u64)
            .map_err(io::Error::from)?;
        self.conn.write_body(body).await?;
        Ok(())
    }

    /// Sends every queued request.
    ///
    /// # Errors
    ///
    /// When the socket fails.
    pub async fn flush(&mut self) -> Result<(), ClientError> {
        Ok(self.conn.flush().await?)
    }

    /// Reads the next reply (flushing queued requests first).
    ///
    /// # Errors
    ///
    /// [`ClientError::Remote`] for an error reply; others when the connection fails or the
    /// reply breaks the protocol.
    pub async fn read_reply(&mut self) -> Result<Reply, ClientError> {
        let header = self.read_reply_header().await?;
        if header.body_len() > self.conn.limits().max_buffered_body() {
            return Err(ClientError::BadReply(format!(
                "reply body of {} bytes is over the limit",
                header.body_len()
            )));
        }
        let body = self.conn.read_body().await?;
        Ok(Reply { header, body })
    }

    /// Reads the next reply's header, leaving its body to be read; an error reply (whose body
    /// is always empty) becomes [`ClientError::Remote`].
    async fn read_reply_header(&mut self) -> Result<Header, ClientError> {
        let header = self.conn.read_header().await?.ok_or(ClientError::Closed)?;
        let envelope: ReplyEnvelope<'_> = header
            .parse()
            .map_err(|err| ClientError::BadReply(err.to_string()))?;
        if !envelope.ok {
            let err = ClientError::Remote {
                code: printable(envelope.code.as_deref().unwrap_or("unknown")),
                message: printable(envelope.error.as_deref().unwrap_or("no reason given")),
            };
            drop(envelope);
            self.conn.skip_body().await?;
            return Err(err);
        }
        drop(envelope);
        Ok(header)
    }
}

/// An I/O error in a few lower-case words, as in "connection refused".
pub fn describe_io_error(err: &io::Error) -> String {
    use io::ErrorKind::*;
    let words = match err.kind() {
        ConnectionRefused => "connection refused",
        ConnectionReset => "connection reset by peer",
        ConnectionAborted => "connection aborted",
        TimedOut => "timed out",
        AddrNotAvailable => "address not available",
        HostUnreachable => "host unreachable",
        NetworkUnreachable => "network unreachable",
        PermissionDenied => "permission denied",
        _ => return err.to_string(),
    };
    words.to_owned()
}

/// Text from the network with control characters replaced, safe to print on a terminal.
pub fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '\u{FFFD}' } else { c })
        .collect()
}
