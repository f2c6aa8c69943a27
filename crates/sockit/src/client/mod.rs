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
mod tls;
mod upload;

pub use download::GetOutcome;
pub use exec::ExecOutcome;
pub use files::{FilePage, ListPages};
pub use part::{part_path, PART_SUFFIX};
pub use source::{Source, SourceError, SourceKind};
pub use target::{SaveError, SaveOptions, Target};
pub use tls::{Endpoint, EndpointStream, FirstUseNotice, Tls};
pub use upload::PutOutcome;

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use sockit_proto::message::{ErrorReply, ReplyStatus, Request};
use sockit_proto::{ErrorCode, Header, HeaderWriter, Limits};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::connection::{ConnError, Connection, Deadlines};

/// How long connecting may take, by default.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the client waits for the server to say anything, by default.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a client waits. Every wait is bounded: connecting by `connect_timeout`, and each
/// read or write by `reply_timeout` of silence (a remote command's output may rightly pause for
/// as long as the command runs). A limit on a whole operation, however long its transfer, is
/// the caller's: wrap the call in `tokio::time::timeout`; dropping the future closes the
/// connection, and an interrupted upload or download resumes as usual.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientOptions {
    /// How long making the connection may take.
    pub connect_timeout: Duration,
    /// How long the server may stay silent while a reply is awaited (or not take our bytes).
    pub reply_timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> ClientOptions {
        ClientOptions {
            connect_timeout: CONNECT_TIMEOUT,
            reply_timeout: REPLY_TIMEOUT,
        }
    }
}

/// Why a request did not succeed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// No connection could be made.
    #[error("cannot connect to {addr}: {}", describe_io_error(source))]
    Connect {
        /// The address tried.
        addr: String,
        /// Why.
        source: io::Error,
    },
    /// The server answered with an error reply.
    #[error("server refused: {message} ({code})")]
    Remote {
        /// The reply's `code`.
        code: RemoteCode,
        /// The reply's `error`, stripped of control characters.
        message: String,
        /// With `rate_limited`, and `busy` for want of a streaming slot or memory: seconds to
        /// wait before trying again.
        retry_after: Option<f64>,
    },
    /// The TLS connection could not be made, or the server's identity is not trusted.
    #[error(transparent)]
    Tls(Box<crate::tls::TrustError>),
    /// A password would cross the network in the clear: the connection is neither TLS nor on
    /// this machine, and clear passwords were not allowed.
    #[error("refusing to send the password for {user} in the clear to {server}, which is not this machine: anyone on the path could read it; use TLS, a key, or allow it (--insecure)")]
    ClearPassword {
        /// The user name.
        user: String,
        /// The server's address, as the connection reached it.
        server: String,
    },
    /// The server closed the connection without answering.
    #[error("the server closed the connection")]
    Closed,
    /// The connection failed.
    #[error("lost the connection to the server: {0}")]
    Conn(#[from] ConnError),
    /// Output of a remote command could not be written locally.
    #[error("{path}: {source}")]
    Local {
        /// Where it went.
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

impl From<crate::tls::TrustError> for ClientError {
    fn from(err: crate::tls::TrustError) -> Self {
        ClientError::Tls(Box::new(err))
    }
}

impl From<io::Error> for ClientError {
    fn from(err: io::Error) -> Self {
        ClientError::Conn(ConnError::Io(err))
    }
}

impl ClientError {
    /// The reply's code when the server refused the request with one this version knows.
    pub fn remote_code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Remote { code, .. } => code.known(),
            _ => None,
        }
    }

    /// Whether the failure is a broken pipe on our side (the reader of our output went away).
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, ClientError::Local { source, .. } if source.kind() == io::ErrorKind::BrokenPipe)
    }
}

/// The code of an error reply: one this version knows, or the word a newer server sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteCode {
    /// A code of this version.
    Known(ErrorCode),
    /// A word this version does not know (printable).
    Unknown(String),
}

impl RemoteCode {
    /// The code, when this version knows it.
    pub fn known(&self) -> Option<ErrorCode> {
        match self {
            RemoteCode::Known(code) => Some(*code),
            RemoteCode::Unknown(_) => None,
        }
    }
}

impl PartialEq<ErrorCode> for RemoteCode {
    fn eq(&self, other: &ErrorCode) -> bool {
        self.known() == Some(*other)
    }
}

impl fmt::Display for RemoteCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RemoteCode::Known(code) => f.write_str(code.as_str()),
            RemoteCode::Unknown(word) => f.write_str(word),
        }
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

impl Reply {
    /// The reply's fields as a typed reply of [`sockit_proto::message`].
    ///
    /// # Errors
    ///
    /// [`ClientError::BadReply`] when they are not what the protocol says.
    pub fn parse<'a, T: serde::Deserialize<'a>>(&'a self) -> Result<T, ClientError> {
        parse_header(&self.header)
    }
}

/// A reply header's fields as a typed reply.
pub(crate) fn parse_header<'a, T: serde::Deserialize<'a>>(
    header: &'a Header,
) -> Result<T, ClientError> {
    header
        .parse()
        .map_err(|err| ClientError::BadReply(err.to_string()))
}

/// How a client reaches its server, again whenever it reconnects: plain TCP ([`Tcp`]), TLS
/// ([`Tls`]), or either as chosen at run time ([`Endpoint`]); every request works the same
/// over each.
pub trait Connect: Send + Sync {
    /// The stream it opens.
    type Stream: AsyncRead + AsyncWrite + Unpin + Send;
    /// Opens a new stream to the server.
    fn connect(&self) -> impl Future<Output = Result<Self::Stream, ClientError>> + Send;
    /// The stream's channel binding (the TLS exporter value), which a key login signs; none
    /// for a plain stream.
    fn channel_binding(_stream: &Self::Stream) -> Option<crate::tls::ChannelBinding> {
        None
    }
    /// The address the stream is connected to, when it has one.
    fn peer_addr(_stream: &Self::Stream) -> Option<SocketAddr> {
        None
    }
}

/// Plain TCP to `host:port`.
#[derive(Debug, Clone)]
pub struct Tcp {
    addr: String,
    connect_timeout: Duration,
}

impl Tcp {
    /// TCP to `addr` (`host:port`), giving up on connecting after [`CONNECT_TIMEOUT`].
    pub fn new(addr: &str) -> Tcp {
        Tcp {
            addr: addr.to_owned(),
            connect_timeout: CONNECT_TIMEOUT,
        }
    }

    /// The same, giving up on connecting after `timeout`.
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Tcp {
        self.connect_timeout = timeout;
        self
    }
}

impl Tcp {
    /// Connects, giving up at `deadline`.
    async fn connect_by(&self, deadline: tokio::time::Instant) -> Result<TcpStream, ClientError> {
        let connecting = tokio::time::timeout_at(deadline, TcpStream::connect(&self.addr));
        let stream = connecting
            .await
            .unwrap_or_else(|_| Err(self.timed_out("no answer")))
            .map_err(|source| ClientError::Connect {
                addr: self.addr.clone(),
                source,
            })?;
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }

    /// The error of a connection not made within the connect timeout: `what` did not happen.
    fn timed_out(&self, what: &str) -> io::Error {
        let limit = self.connect_timeout;
        io::Error::new(io::ErrorKind::TimedOut, format!("{what} within {limit:?}"))
    }
}

impl Connect for Tcp {
    type Stream = TcpStream;

    async fn connect(&self) -> Result<TcpStream, ClientError> {
        self.connect_by(tokio::time::Instant::now() + self.connect_timeout)
            .await
    }

    fn peer_addr(stream: &TcpStream) -> Option<SocketAddr> {
        stream.peer_addr().ok()
    }
}

/// A new connection: the stream, its channel binding and its peer's address.
type Opened<S> = (
    Connection<S>,
    Option<crate::tls::ChannelBinding>,
    Option<SocketAddr>,
);

/// A connection to a sockit server, over the stream its [`Connect`] opens. After a login, a
/// reconnection logs in again the same way.
pub struct Client<C: Connect = Tcp> {
    connector: C,
    conn: Connection<C::Stream>,
    /// The connection's channel binding, when it has one (over TLS).
    binding: Option<crate::tls::ChannelBinding>,
    /// The address the connection reached.
    peer: Option<SocketAddr>,
    /// Send a password even in the clear to another machine.
    clear_passwords: bool,
    login: Option<Login>,
    /// How long the server may stay silent.
    reply_timeout: Duration,
}

/// How a client logged in, kept to log in again after reconnecting.
#[derive(Clone)]
pub(crate) enum Login {
    /// With a password.
    Password { user: String, password: String },
    /// With a key.
    Key {
        user: String,
        identity: crate::auth::keys::Identity,
    },
}

impl<C: Connect + fmt::Debug> fmt::Debug for Client<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("connector", &self.connector)
            .finish_non_exhaustive()
    }
}

impl Client<Tcp> {
    /// Connects to `addr` (`host:port`) over TCP.
    ///
    /// # Errors
    ///
    /// [`ClientError::Connect`], saying why ("connection refused").
    pub async fn connect(addr: &str) -> Result<Client<Tcp>, ClientError> {
        Client::connect_with(Tcp::new(addr)).await
    }

    /// Connects to `addr` (`host:port`) over TCP, waiting as `options` say.
    ///
    /// # Errors
    ///
    /// [`ClientError::Connect`], saying why ("connection refused", "no answer within 10s").
    pub async fn connect_with_options(
        addr: &str,
        options: ClientOptions,
    ) -> Result<Client<Tcp>, ClientError> {
        let tcp = Tcp::new(addr).connect_timeout(options.connect_timeout);
        Client::connect_with_reply_timeout(tcp, options.reply_timeout).await
    }
}

impl<C: Connect> Client<C> {
    /// Connects through `connector`.
    ///
    /// # Errors
    ///
    /// As the connector's [`Connect::connect`].
    pub async fn connect_with(connector: C) -> Result<Client<C>, ClientError> {
        Client::connect_with_reply_timeout(connector, REPLY_TIMEOUT).await
    }

    /// Connects through `connector`; the server may then stay silent for `reply_timeout` while
    /// a reply is awaited.
    ///
    /// # Errors
    ///
    /// As the connector's [`Connect::connect`].
    pub async fn connect_with_reply_timeout(
        connector: C,
        reply_timeout: Duration,
    ) -> Result<Client<C>, ClientError> {
        let (conn, binding, peer) = Client::open(&connector, reply_timeout).await?;
        Ok(Client {
            connector,
            conn,
            binding,
            peer,
            clear_passwords: false,
            login: None,
            reply_timeout,
        })
    }

    /// Replaces the connection with a new one to the same server, after the server refused a
    /// request without reading all of it (and so closes the old one), and logs in again as
    /// before.
    ///
    /// # Errors
    ///
    /// As [`Client::connect_with`], and as the login.
    pub async fn reconnect(&mut self) -> Result<(), ClientError> {
        (self.conn, self.binding, self.peer) =
            Client::open(&self.connector, self.reply_timeout).await?;
        match self.login.clone() {
            None => Ok(()),
            Some(Login::Password { user, password }) => self.login_password(&user, &password).await,
            Some(Login::Key { user, identity }) => self.login_key(&user, &identity).await,
        }
    }

    /// A new connection through `connector`, with its channel binding and peer address.
    async fn open(
        connector: &C,
        reply_timeout: Duration,
    ) -> Result<Opened<C::Stream>, ClientError> {
        let stream = connector.connect().await?;
        let binding = C::channel_binding(&stream);
        let peer = C::peer_addr(&stream);
        let deadlines = Deadlines {
            header: None,
            idle: Some(reply_timeout),
        };
        let conn = Connection::new(stream, Limits::default(), deadlines);
        Ok((conn, binding, peer))
    }

    /// Whether no one but the server can read what this connection carries: it is encrypted
    /// (TLS), or it stays on this machine (a loopback address).
    pub fn is_private(&self) -> bool {
        self.binding.is_some() || self.peer.is_some_and(|peer| peer.ip().is_loopback())
    }

    /// Lets [`Client::login_password`] send a password over a connection that is not
    /// [private](Client::is_private), where anyone on the path can read it.
    pub fn allow_clear_passwords(&mut self, allow: bool) {
        self.clear_passwords = allow;
    }

    /// Sends one request with `body` and reads its reply.
    ///
    /// # Errors
    ///
    /// [`ClientError::Remote`] for an error reply; others when the connection fails.
    pub async fn call(&mut self, request: &Request<'_>, body: &[u8]) -> Result<Reply, ClientError> {
        self.queue(request, body).await?;
        self.read_reply().await
    }

    /// `ping`.
    ///
    /// # Errors
    ///
    /// As [`Client::call`].
    pub async fn ping(&mut self) -> Result<(), ClientError> {
        self.call(&Request::Ping, b"").await.map(drop)
    }

    /// `echo`: the server sends `body` back.
    ///
    /// # Errors
    ///
    /// As [`Client::call`]; `too_large` over the server's in-memory limit.
    pub async fn echo(&mut self, body: &[u8]) -> Result<Bytes, ClientError> {
        let reply = self.call(&Request::Echo, body).await?;
        if reply.body != body {
            return Err(ClientError::BadReply("echo came back different".into()));
        }
        Ok(reply.body)
    }

    /// Appends a request to the outgoing buffer without waiting for its reply. Long bodies are
    /// written out at once; short requests stay buffered until [`Client::flush`] or the next
    /// read.
    ///
    /// # Errors
    ///
    /// When writing a long body fails.
    pub async fn queue(&mut self, request: &Request<'_>, body: &[u8]) -> Result<(), ClientError> {
        self.write_request(request, body.len() as u64)?;
        self.conn.write_body(body).await?;
        Ok(())
    }

    /// Appends a request's header, announcing a body of `body_len` bytes, to the write buffer.
    fn write_request(&mut self, request: &Request<'_>, body_len: u64) -> Result<(), ClientError> {
        let mut header = HeaderWriter::new(self.conn.write_buf());
        request.write(&mut header);
        header.finish(body_len).map_err(io::Error::from)?;
        Ok(())
    }

    /// Appends a frame of `fields` alone (a trailer, a chunk frame), announcing `body_len`
    /// bytes of body.
    fn write_fields<F: serde::Serialize>(
        &mut self,
        fields: &F,
        body_len: u64,
    ) -> Result<(), ClientError> {
        HeaderWriter::new(self.conn.write_buf())
            .fields(fields)
            .finish(body_len)
            .map_err(io::Error::from)?;
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
        self.check_reply_body(&header)?;
        let body = self.conn.read_body().await?;
        Ok(Reply { header, body })
    }

    /// Reads the next reply into `body` (cleared first), for a caller that reads many small
    /// replies and would rather reuse one buffer than allocate for each: a reply body over
    /// [`Limits::max_buffered_body`](sockit_proto::Limits::max_buffered_body) is refused as
    /// in [`read_reply`](Client::read_reply).
    ///
    /// # Errors
    ///
    /// As [`read_reply`](Client::read_reply).
    pub async fn read_reply_into(&mut self, body: &mut Vec<u8>) -> Result<Header, ClientError> {
        let header = self.read_reply_header().await?;
        self.check_reply_body(&header)?;
        body.clear();
        self.conn.read_body_into_vec(body).await?;
        Ok(header)
    }

    /// Refuses a reply whose body is too long to read whole.
    fn check_reply_body(&self, header: &Header) -> Result<(), ClientError> {
        if header.body_len() > self.conn.limits().max_buffered_body() {
            return Err(ClientError::BadReply(format!(
                "reply body of {} bytes is over the limit",
                header.body_len()
            )));
        }
        Ok(())
    }

    /// Reads the next reply's header, leaving its body to be read; an error reply (whose body
    /// is always empty) becomes [`ClientError::Remote`].
    async fn read_reply_header(&mut self) -> Result<Header, ClientError> {
        let header = self.conn.read_header().await?.ok_or(ClientError::Closed)?;
        let ok = match header.plain_ok() {
            Some(ok) => ok,
            None => parse_header::<ReplyStatus>(&header)?.ok,
        };
        if !ok {
            let err = remote_error(&header)?;
            self.conn.skip_body().await?;
            return Err(err);
        }
        Ok(header)
    }
}

/// The error a failed reply carries.
fn remote_error(header: &Header) -> Result<ClientError, ClientError> {
    let reply: ErrorReply<'_> = parse_header(header)?;
    let code = match reply.known_code() {
        Some(code) => RemoteCode::Known(code),
        None => RemoteCode::Unknown(printable(&reply.code)),
    };
    Ok(ClientError::Remote {
        code,
        message: printable(&reply.error),
        retry_after: reply.retry_after,
    })
}

/// An I/O error in a few lower-case words, as in "connection refused".
pub fn describe_io_error(err: &io::Error) -> String {
    use io::ErrorKind::*;
    if err.get_ref().is_some() {
        return err.to_string(); // a message of our own, such as a timeout's
    }
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

/// A local I/O error in the system's words, as a sentence part: `no such file or directory`,
/// without the `(os error 2)` that only a programmer needs.
pub fn plain_io_error(err: &io::Error) -> String {
    let text = err.to_string();
    let text = match (err.raw_os_error(), text.rfind(" (os error ")) {
        (Some(_), Some(at)) => &text[..at],
        _ => &text[..],
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) if err.raw_os_error().is_some() => first.to_lowercase().chain(chars).collect(),
        _ => text.to_owned(),
    }
}

/// Text from the network or a local name with control characters replaced, safe to print on
/// a terminal.
pub fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '\u{FFFD}' } else { c })
        .collect()
}

/// A local path as messages show it: as given, with control characters made safe
/// ([`printable`]), so that a hostile file name cannot move the cursor or clear the screen.
pub fn shown_path(path: &std::path::Path) -> String {
    printable(&path.display().to_string())
}
