//! The operations of the framed protocol, one module each, and the dispatch between them.
//!
//! A handler reads the rest of its request (the body) from the connection, appends its reply
//! to the connection's write buffer, and says whether the connection can go on. Handlers never
//! flush: the connection loop decides when replies go out, which is what batches them.
//!
//! Access (DESIGN.md): without a users file, everything but `exec` is open and `exec` is
//! `disabled`. With one, a connection must `login` before anything but `ping`, `echo`,
//! `challenge` and `login` itself.

mod basic;
mod chunked;
mod exec;
mod files;
mod login;

pub(crate) use login::Session;

use std::fmt::Display;
use std::sync::Arc;

use sockit_proto::{ErrorCode, Header};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Semaphore;

use crate::auth::accounts::Accounts;
use crate::config::{ExecConfig, LoginConfig};
use crate::connection::{ConnError, Connection};
use crate::reply;
use crate::store::Store;

/// What the operations share across connections.
#[derive(Debug)]
pub(crate) struct Context {
    pub(crate) store: Arc<Store>,
    /// The accounts, when the server has a users file.
    pub(crate) accounts: Option<Arc<Accounts>>,
    pub(crate) login: LoginConfig,
    pub(crate) exec: ExecConfig,
    /// One permit per command that may run at once (shared with the legacy listener).
    pub(crate) exec_slots: Arc<Semaphore>,
}

/// Whether a connection can take another request after this one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flow {
    /// The stream is in step; read the next frame.
    Continue,
    /// The stream is out of step (a body was left unread); close after the reply.
    Close,
}

/// Runs one request.
///
/// # Errors
///
/// When the connection itself fails while the request is read or answered.
pub(crate) async fn handle<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    header: Header,
    context: &Context,
    session: &mut Session,
) -> Result<Flow, ConnError> {
    let op = match header.op() {
        Ok(op) => op,
        Err(err) => return refuse(conn, &header, err.code(), &err).await,
    };
    let open_to_all = matches!(op, Some("ping" | "echo" | "challenge" | "login"));
    if context.accounts.is_some() && session.user().is_none() && !open_to_all {
        let message = "log in first: this server has accounts";
        return refuse(conn, &header, ErrorCode::Unauthorized, &message).await;
    }
    let store = &context.store;
    match op {
        Some("ping") => basic::ping(conn, &header).await,
        Some("echo") => basic::echo(conn, &header).await,
        Some("challenge") => login::challenge(conn, &header, context, session).await,
        Some("login") => login::login(conn, &header, context, session).await,
        Some("exec") => exec::exec(conn, &header, context, session).await,
        Some("put") => files::put(conn, &header, store).await,
        Some("get") => files::get(conn, &header, store).await,
        Some("list") => files::list(conn, &header, store).await,
        Some("stat") => files::stat(conn, &header, store).await,
        Some(other) => {
            let message = format!("unknown op {}", quoted(other));
            refuse(conn, &header, ErrorCode::UnknownOp, &message).await
        }
        None => match files::legacy_upload(conn, &header, store).await {
            Some(outcome) => outcome,
            None => refuse(conn, &header, ErrorCode::BadRequest, &"request has no `op`").await,
        },
    }
}

/// Answers a request with an error.
///
/// The rest of the request's body is read and discarded when it is within the in-memory limit,
/// so that the connection stays usable; a longer rest is left unread and the connection is
/// closed after the reply.
pub(crate) async fn refuse<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    header: &Header,
    code: ErrorCode,
    message: &(dyn Display + Sync),
) -> Result<Flow, ConnError> {
    let unread = conn.body_remaining();
    if unread <= conn.limits().max_buffered_body() {
        conn.skip_body().await?;
        reply::error(conn.write_buf(), header.id(), code, message);
        return Ok(Flow::Continue);
    }
    let message = format!(
        "{message}; the {unread} bytes of body that followed were not read, so the connection closes"
    );
    reply::error(conn.write_buf(), header.id(), code, &message);
    Ok(Flow::Close)
}

/// A peer-supplied word, quoted, escaped and shortened for an error message.
pub(crate) fn quoted(word: &str) -> String {
    const MAX_CHARS: usize = 64;
    let mut shown: String = word.chars().take(MAX_CHARS).collect();
    if shown.len() < word.len() {
        shown.push('…');
    }
    format!("{shown:?}")
}
