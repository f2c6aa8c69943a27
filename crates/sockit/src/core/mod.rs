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
//! - [`pool`]: what requests wait for, shared fairly between sources: streaming slots and the
//!   memory budget.

pub(crate) mod exec;
pub(crate) mod files;
pub(crate) mod login;
pub(crate) mod pool;
mod session;

pub(crate) use session::Session;

use std::fmt::Display;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use sockit_proto::message::Op;
use sockit_proto::ErrorCode;
use tokio::sync::Semaphore;

use crate::auth::accounts::Accounts;
use crate::config::{ExecConfig, LoginConfig, ServerConfig};
use crate::connection::MinRate;
use crate::store::{NameError, Store, StoreError};
use pool::{FairPool, PoolPermit, Refusal};

/// What the operations share across connections (cloned, it is the same: every field is shared
/// or a setting).
#[derive(Debug, Clone)]
pub(crate) struct Core {
    pub(crate) store: Arc<Store>,
    /// The accounts, when the server has a users file.
    pub(crate) accounts: Option<Arc<Accounts>>,
    pub(crate) login: LoginConfig,
    pub(crate) exec: ExecConfig,
    /// One permit per command that may run at once (shared with the legacy listener).
    pub(crate) exec_slots: Arc<Semaphore>,
    /// One unit per streaming transfer (`put`, `get`, the hashing of `rename`).
    pub(crate) transfers: Arc<FairPool>,
    /// The pace a transfer's body must keep, if any.
    pub(crate) min_rate: Option<MinRate>,
    /// One unit per KiB of bodies held in memory.
    pub(crate) memory: Arc<FairPool>,
}

/// The `retry_after` of a `busy` reply for want of a slot or of memory, in seconds: a hint,
/// since what holds them may be given back at any moment.
pub(crate) const BUSY_RETRY_AFTER: f64 = 1.0;

/// Bytes per unit of the memory budget.
const MEMORY_UNIT: u64 = 1024;

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

    /// `busy`, with [`BUSY_RETRY_AFTER`].
    pub(crate) fn busy(message: impl Display) -> OpError {
        OpError {
            retry_after: Some(BUSY_RETRY_AFTER),
            ..OpError::new(ErrorCode::Busy, message)
        }
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

/// How long a refused taker waited: nothing when what it asked for can never be had.
fn waited(refusal: Refusal) -> Duration {
    match refusal {
        Refusal::Waited(waited) => waited,
        Refusal::Never => Duration::ZERO,
    }
}

/// Gives back all but `bytes` of a memory reservation.
pub(crate) fn shrink_memory(permit: &mut PoolPermit, bytes: u64) {
    permit.shrink_to(u32::try_from(bytes.div_ceil(MEMORY_UNIT)).unwrap_or(u32::MAX));
}

/// What a server without a users file says to `challenge` and `login`.
const NO_ACCOUNTS: &str = "this server has no accounts (it runs without --users)";

impl Core {
    /// What the operations share, for a server with `store`, `accounts` and `config`, whose
    /// commands take `exec_slots`.
    pub(crate) fn new(
        store: Arc<Store>,
        accounts: Option<Arc<Accounts>>,
        config: &ServerConfig,
        exec_slots: Arc<Semaphore>,
    ) -> Core {
        let (transfers, memory) = (&config.transfers, &config.memory);
        let pace = transfers.min_rate > 0 && !transfers.rate_window.is_zero();
        // Rounded up, as requests are: a share of exactly the largest body holds that body.
        let kib = |bytes: u64| usize::try_from(bytes.div_ceil(MEMORY_UNIT)).unwrap_or(usize::MAX);
        Core {
            store,
            accounts,
            login: config.login,
            exec: config.exec,
            exec_slots,
            transfers: FairPool::new(
                transfers.max_running,
                transfers.max_per_source,
                transfers.wait,
            ),
            min_rate: pace.then_some(MinRate {
                bytes_per_sec: transfers.min_rate,
                window: transfers.rate_window,
            }),
            memory: FairPool::new(kib(memory.budget), kib(memory.per_source), memory.wait),
        }
    }

    /// Takes a streaming slot for a request from `peer`, waiting at most the queue timeout.
    ///
    /// # Errors
    ///
    /// `busy` with `retry_after` when no slot came free in time.
    pub(crate) async fn transfer_slot(&self, peer: IpAddr) -> Result<PoolPermit, OpError> {
        self.transfers.take(peer, 1).await.map_err(|refusal| {
            let waited = waited(refusal);
            OpError::busy(format!(
                "every streaming slot open to your address is in use (waited {waited:?}); try again later"
            ))
        })
    }

    /// Reserves `bytes` of the memory budget for a request from `peer`, waiting at most the
    /// queue timeout.
    ///
    /// # Errors
    ///
    /// `busy` with `retry_after` when the memory did not come free in time.
    pub(crate) async fn reserve_memory(
        &self,
        peer: IpAddr,
        bytes: u64,
    ) -> Result<PoolPermit, OpError> {
        let units = u32::try_from(bytes.div_ceil(MEMORY_UNIT)).unwrap_or(u32::MAX);
        self.memory.take(peer, units).await.map_err(|refusal| {
            let waited = waited(refusal);
            OpError::busy(format!(
                "the server's memory for bodies is in use (waited {waited:?} for {bytes} bytes); try again later"
            ))
        })
    }

    /// One source's share of the memory budget, in bytes.
    pub(crate) fn memory_share(&self) -> u64 {
        self.memory.share() as u64 * MEMORY_UNIT
    }

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
