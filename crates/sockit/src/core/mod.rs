//! The operations themselves, knowing nothing of frames, sockets or HTTP.
//!
//! Each operation is a function of the shared [`Core`], the connection's [`Session`] and a
//! typed request from [`sockit_proto::message`], returning a typed reply or an [`OpError`];
//! bytes come in and go out through the file pipelines of [`crate::transfer`], and remote
//! commands as a stream of events. A front end (`front/framed` for the framed protocol) reads
//! requests in its own grammar, asks [`Core::authorize`], calls the operation and writes the
//! outcome back in its grammar.
//!
//! - [`files`]: `put` (whole, resumed, or chunked), `get`, `list`, `stat`, `delete`, `rename`.
//! - [`login`]: `challenge` and `login`, changing the session.
//! - [`exec`]: a remote command for a logged-in session.

pub(crate) mod exec;
pub(crate) mod files;
pub(crate) mod login;
mod session;

pub(crate) use session::Session;

use std::fmt::Display;
use std::sync::Arc;

use sockit_proto::message::Op;
use sockit_proto::ErrorCode;
use tokio::sync::Semaphore;

use crate::auth::accounts::Accounts;
use crate::config::{ExecConfig, LoginConfig};
use crate::store::{NameError, Store, StoreError};

/// What the operations share across connections.
#[derive(Debug)]
pub(crate) struct Core {
    pub(crate) store: Arc<Store>,
    /// The accounts, when the server has a users file.
    pub(crate) accounts: Option<Arc<Accounts>>,
    pub(crate) login: LoginConfig,
    pub(crate) exec: ExecConfig,
    /// One permit per command that may run at once (shared with the legacy listener).
    pub(crate) exec_slots: Arc<Semaphore>,
}

/// Why an operation was refused or failed: the reply code and the sentence for people.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct OpError {
    pub(crate) code: ErrorCode,
    pub(crate) message: String,
    /// With `rate_limited`: seconds to wait.
    pub(crate) retry_after: Option<f64>,
    /// The session cannot go on (the last failed login allowed, the login grace passed).
    pub(crate) ends_session: bool,
}

impl OpError {
    pub(crate) fn new(code: ErrorCode, message: impl Display) -> OpError {
        OpError {
            code,
            message: message.to_string(),
            retry_after: None,
            ends_session: false,
        }
    }

    pub(crate) fn bad_request(message: impl Display) -> OpError {
        OpError::new(ErrorCode::BadRequest, message)
    }
}

impl From<NameError> for OpError {
    fn from(err: NameError) -> OpError {
        OpError::new(ErrorCode::BadName, err)
    }
}

impl From<StoreError> for OpError {
    fn from(err: StoreError) -> OpError {
        OpError::new(err.code(), err)
    }
}

/// What a server without a users file says to `challenge` and `login`.
const NO_ACCOUNTS: &str = "this server has no accounts (it runs without --users)";

impl Core {
    /// The one access check, before any request is read further (docs/PROTOCOL.md §3, *Access*): without a
    /// users file, everything but `exec`, `challenge` and `login` is open to all and those are
    /// `disabled`; with one, a session must log in before anything but `ping`, `echo`,
    /// `challenge` and `login`. `op` is `None` for a request that names no operation of ours.
    ///
    /// # Errors
    ///
    /// `unauthorized` or `disabled`.
    pub(crate) fn authorize(&self, session: &Session, op: Option<Op>) -> Result<(), OpError> {
        let open_to_all = matches!(op, Some(Op::Ping | Op::Echo | Op::Challenge | Op::Login));
        match (&self.accounts, op) {
            (Some(_), _) if session.user().is_none() && !open_to_all => Err(OpError::new(
                ErrorCode::Unauthorized,
                "log in first: this server has accounts",
            )),
            (None, Some(Op::Exec)) => Err(OpError::new(
                ErrorCode::Disabled,
                "remote commands are off: the server runs without a users file (--users)",
            )),
            (None, Some(Op::Challenge | Op::Login)) => {
                Err(OpError::new(ErrorCode::Disabled, NO_ACCOUNTS))
            }
            _ => Ok(()),
        }
    }
}
