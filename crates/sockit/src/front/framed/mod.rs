//! The framed protocol's front end: read a request frame, run it through the core, write the
//! reply frames, repeat.
//!
//! This module owns the frame grammar and nothing else: which requests take a body, how a
//! refused request's unread body is skipped (or the connection closed when it is too long to
//! skip), the `put` trailer, the chunk frames of a chunked `put`, the output frames of
//! `exec`, when to close. What each operation *means* is in [`crate::core`]. It is generic over
//! the stream, so TLS is another acceptor ([`super::tls`]), not another code path.
//!
//! Handlers never flush: the connection loop flushes when it is about to wait for input or
//! when the write buffer passes its high-water mark, which is what batches replies to
//! pipelined requests. (`exec` is the exception that proves it: its output must reach the
//! client while the command still runs.)

mod exec;
mod files;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use sockit_proto::message::{error_reply, ok_reply, ErrorReply, Request, RequestError};
use sockit_proto::{ErrorCode, Header, HeaderWriter, Limits};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::TcpService;
use crate::config::ServerConfig;
use crate::connection::{ConnError, Connection, Deadlines, COPY_BODY_MAX};
use crate::core::{self, Core, OpError, Session};
use crate::tls::ChannelBinding;

/// Whether a connection can take another request after this one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flow {
    /// The stream is in step; read the next frame.
    Continue,
    /// The stream is out of step (a body was left unread), or the session is over: close
    /// after the reply.
    Close,
}

/// Serves the framed protocol.
#[derive(Debug)]
pub(crate) struct Framed {
    limits: Limits,
    deadlines: Deadlines,
    /// How long a request begun may go on after the stop (the shutdown timeout).
    grace: Duration,
    core: Core,
}

impl Framed {
    pub(crate) fn new(config: &ServerConfig, core: Core) -> Framed {
        Framed {
            core,
            limits: config.limits,
            grace: config.shutdown_timeout,
            deadlines: Deadlines {
                header: Some(config.header_timeout),
                idle: Some(config.idle_timeout),
            },
        }
    }

    /// Serves one connection over any stream until the peer leaves, the stream breaks, or
    /// `stop` fires between requests. A request in progress when `stop` fires gets the
    /// shutdown timeout to finish; then it is cut short with `shutting_down`.
    /// `binding` is the stream's TLS channel binding, which a key login must sign.
    pub(crate) async fn serve_stream<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        stream: S,
        peer: SocketAddr,
        binding: Option<ChannelBinding>,
        stop: CancellationToken,
    ) {
        let mut conn = Connection::new(stream, self.limits, self.deadlines);
        conn.stop_when(stop);
        conn.stop_grace(self.grace);
        let mut session = Session::new(peer.ip()).bound_to(binding);
        loop {
            let header = match conn.read_header().await {
                Ok(Some(header)) => header,
                Ok(None) => return conn.close().await,
                Err(err) => {
                    tracing::debug!(%err, "bad request stream");
                    return conn.fail(&err).await;
                }
            };
            let outcome = match handle(&mut conn, header, &self.core, &mut session).await {
                Ok(Flow::Continue) => conn.flush_if_full().await.map_err(Into::into),
                Ok(Flow::Close) => return conn.close().await,
                Err(err) => Err(err),
            };
            if let Err(err) = outcome {
                tracing::debug!(%err, "connection failed");
                return conn.fail(&err).await;
            }
        }
    }

    /// Answers a connection over any stream with one error reply, then closes gracefully.
    pub(crate) async fn refuse_with<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        stream: S,
        code: ErrorCode,
        message: &str,
    ) {
        let mut conn = Connection::new(stream, self.limits, self.deadlines);
        error_reply(conn.write_buf(), None, &ErrorReply::new(code, message));
        conn.close().await;
    }
}

impl TcpService for Framed {
    async fn serve(self: Arc<Self>, stream: TcpStream, peer: SocketAddr, stop: CancellationToken) {
        // Replies are batched by the connection; Nagle's delay would only add latency.
        let _ = stream.set_nodelay(true);
        self.serve_stream(stream, peer, None, stop).await;
    }

    async fn refuse_busy(self: Arc<Self>, stream: TcpStream) {
        let message = "too many connections from your address";
        self.refuse_with(stream, ErrorCode::Busy, message).await;
    }
}

/// Runs one request: the access check, then its operation.
///
/// # Errors
///
/// When the connection itself fails while the request is read or answered.
async fn handle<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    header: Header,
    core: &Core,
    session: &mut Session,
) -> Result<Flow, ConnError> {
    // An unknown op is answered as such only after the access check, which it fails too.
    let op = match Request::op_of(&header) {
        Err(err @ RequestError::Bad(_)) => return refuse(conn, &header, &err.into()).await,
        op => op,
    };
    if let Err(err) = core.authorize(session, op.as_ref().ok().copied().flatten()) {
        return refuse(conn, &header, &err).await;
    }
    let request = match op.and_then(|op| Request::parse_as(&header, op)) {
        Ok(request) => request,
        Err(err) => return refuse(conn, &header, &err.into()).await,
    };
    match request {
        Request::Ping => {
            start_reply(conn, &header)
                .finish(0)
                .expect("a ping reply always encodes");
            Ok(Flow::Continue)
        }
        Request::Echo => echo(conn, &header, core, session.peer()).await,
        Request::Challenge => match core::login::challenge(session) {
            Ok(reply) => {
                answer(conn, &header, &reply);
                Ok(Flow::Continue)
            }
            Err(err) => refuse(conn, &header, &err).await,
        },
        // The long operations are boxed, so that the future of every request, and so of the
        // hot `ping` and `echo`, stays small.
        Request::Login(request) => {
            match Box::pin(core::login::login(core, session, &request)).await {
                Ok(reply) => {
                    answer(conn, &header, &reply);
                    Ok(Flow::Continue)
                }
                Err(err) => refuse(conn, &header, &err).await,
            }
        }
        Request::Exec(request) => {
            Box::pin(exec::exec(conn, &header, core, session, &request)).await
        }
        Request::Put(request) => {
            Box::pin(files::put(conn, &header, core, session.peer(), &request)).await
        }
        Request::Get(request) => {
            Box::pin(files::get(conn, &header, core, session.peer(), &request)).await
        }
        Request::List(request) => {
            Box::pin(files::list(conn, &header, core, session.peer(), &request)).await
        }
        Request::Stat(request) => Box::pin(files::stat(conn, &header, core, &request)).await,
        Request::Delete(request) => {
            Box::pin(files::delete(conn, &header, core, session.peer(), &request)).await
        }
        Request::Rename(request) => {
            Box::pin(files::rename(conn, &header, core, session.peer(), &request)).await
        }
        _ => {
            let err = OpError::new(ErrorCode::UnknownOp, "an operation this server cannot run");
            refuse(conn, &header, &err).await
        }
    }
}

/// `echo`: the body comes back unchanged. It is held in memory, so it is limited to
/// [`Limits::max_buffered_body`], and a body longer than the write buffer takes in a copy
/// ([`COPY_BODY_MAX`]) holds its part of the memory budget from before it is read until the
/// reply's last byte is written: `peer` waits for it at most the queue timeout, else `busy`,
/// and meanwhile the body and the reply are held to the transfer pace, so that a peer that
/// trickles the body or never reads the reply gives the memory back within a rate window.
/// (A shorter body goes into the write buffer, whose size each connection bounds.)
async fn echo<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    header: &Header,
    core: &Core,
    peer: IpAddr,
) -> Result<Flow, ConnError> {
    let limit = conn.limits().max_buffered_body();
    if header.body_len() > limit {
        let message = format!(
            "echo body of {} bytes exceeds the limit of {limit} bytes",
            header.body_len()
        );
        return refuse(conn, header, &OpError::new(ErrorCode::TooLarge, message)).await;
    }
    if header.body_len() <= COPY_BODY_MAX as u64 {
        let len = conn.buffer_body().await?;
        ok_reply(conn.write_buf(), header.id())
            .finish(len as u64)
            .expect("an echo reply always encodes");
        conn.queue_body_back();
        return Ok(Flow::Continue);
    }
    // Boxed, like the other long operations, so that a small echo's future stays small.
    Box::pin(echo_in_budget(conn, header, core, peer)).await
}

/// An `echo` whose body counts against the memory budget, and is held to the transfer pace
/// while its bytes are read and written back.
async fn echo_in_budget<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    header: &Header,
    core: &Core,
    peer: IpAddr,
) -> Result<Flow, ConnError> {
    let _memory = match core.reserve_memory(peer, header.body_len()).await {
        Ok(memory) => memory,
        Err(err) => return refuse(conn, header, &err).await,
    };
    conn.set_pace(core.min_rate);
    let echoed = echo_body(conn, header).await;
    conn.set_pace(None);
    echoed
}

/// Reads a large `echo` body whole and writes it back.
async fn echo_body<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    header: &Header,
) -> Result<Flow, ConnError> {
    let body = conn.read_body().await?;
    ok_reply(conn.write_buf(), header.id())
        .finish(body.len() as u64)
        .expect("an echo reply always encodes");
    conn.write_body(&body).await?;
    Ok(Flow::Continue)
}

/// Queues a successful reply with no body.
fn answer<S, R: serde::Serialize>(conn: &mut Connection<S>, header: &Header, reply: &R)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    start_reply(conn, header)
        .fields(reply)
        .finish(0)
        .expect("a reply of plain fields always encodes");
}

/// Starts a successful reply to `header`; the caller adds fields and finishes it.
fn start_reply<'c, S>(conn: &'c mut Connection<S>, header: &Header) -> HeaderWriter<'c>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    ok_reply(conn.write_buf(), header.id())
}

/// Queues an error reply for `err`, with its extra fields.
fn queue_error<S>(conn: &mut Connection<S>, header: &Header, err: &OpError)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let reply = ErrorReply {
        retry_after: err.retry_after,
        ..ErrorReply::new(err.code, &err.message)
    };
    error_reply(conn.write_buf(), header.id(), &reply);
}

/// Answers a request with an error.
///
/// The rest of the request's body is read and discarded when it is within the in-memory limit,
/// so that the connection stays usable; a longer rest is left unread and the connection is
/// closed after the reply. An error that ends the session closes it too.
async fn refuse<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    header: &Header,
    err: &OpError,
) -> Result<Flow, ConnError> {
    let unread = conn.body_remaining();
    if unread <= conn.limits().max_buffered_body() {
        conn.skip_body().await?;
        queue_error(conn, header, err);
        return Ok(if err.ends_session {
            Flow::Close
        } else {
            Flow::Continue
        });
    }
    // It says that the connection closes, not how many bytes went unread.
    let closing = OpError {
        message: format!(
            "{}; the body that followed was not read, so the connection closes",
            err.message
        ),
        ..err.clone()
    };
    queue_error(conn, header, &closing);
    Ok(Flow::Close)
}

impl From<RequestError> for OpError {
    fn from(err: RequestError) -> OpError {
        OpError::new(err.code(), err)
    }
}

#[cfg(test)]
mod tests {
    //! What every connection holds for its whole life, idle or not: its task's future.

    use tokio::net::TcpListener;

    use super::*;
    use crate::store::{PartialLimits, Store};

    /// The most a framed connection's future may take: one page (2.6 KiB measured, unoptimised).
    /// Every connection's task holds one of this size for as long as it lives, so it is a share
    /// of what an idle connection costs: rarely used, large state (the long operations, the
    /// drain on close) is boxed or allocated when it is needed instead.
    const FUTURE_MAX: usize = 4096;

    #[tokio::test]
    async fn a_connection_future_is_small() {
        let dir = tempfile::tempdir().unwrap();
        let config = ServerConfig::default();
        let store = Store::open(dir.path(), PartialLimits::default()).unwrap();
        let slots = Arc::new(tokio::sync::Semaphore::new(1));
        let framed = Arc::new(Framed::new(&config, Core::new(store, None, &config, slots)));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = TcpStream::connect(addr).await.unwrap();
        let (stream, peer) = listener.accept().await.unwrap();

        let serving = framed.serve(stream, peer, CancellationToken::new());
        let size = std::mem::size_of_val(&serving);
        assert!(
            size <= FUTURE_MAX,
            "a connection's future takes {size} bytes, more than {FUTURE_MAX}"
        );
    }
}
