//! Login lockouts counted in Redis, so that they hold on every server of the bus.
//!
//! The same rules as [`crate::auth::penalty`], kept in one hash per key
//! (`sockit:lockout:source:<ip>`, `sockit:lockout:user:<name>`: failures `n`, locked `until`
//! in Redis's milliseconds) by two Lua scripts, each atomic in Redis: *reserve* refuses while
//! either key is locked and otherwise counts a failure against both, locking once past the free
//! failures; *give back* undoes one for a login that succeeded. A key expires after the quiet
//! spell that forgets failures (or its lockout, if longer), so Redis forgets as the rules do.
//! Redis's own clock decides, so the servers' clocks need not agree.
//!
//! When Redis cannot be reached within the timeout, the caller counts on its server alone; the
//! outage is logged once, and so is the return. After a failure, connecting again is tried at
//! most once a second, so logins during an outage do not each wait for a connection to fail.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Script};

use super::{BusError, BusSettings};
use crate::auth::penalty::PenaltyPolicy;
use crate::source::Source;

/// How long after a failed connection the next is tried.
const RECONNECT_AFTER: Duration = Duration::from_secs(1);

/// KEYS: the keys to check and count. ARGV: free failures, first lockout, longest lockout,
/// forget after (milliseconds). Returns 0, or the milliseconds left of the longest lockout.
const RESERVE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local wait = 0
for _, key in ipairs(KEYS) do
  local untl = tonumber(redis.call('HGET', key, 'until') or '0')
  if untl - now > wait then wait = untl - now end
end
if wait > 0 then return wait end
local free, base, max, forget = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
for _, key in ipairs(KEYS) do
  local n = redis.call('HINCRBY', key, 'n', 1)
  local keep = forget
  if n > free then
    local lock = math.min(base * 2 ^ math.min(n - free - 1, 30), max)
    redis.call('HSET', key, 'until', string.format('%.0f', now + lock))
    if lock > keep then keep = lock end
  end
  redis.call('PEXPIRE', key, string.format('%.0f', keep))
end
return 0
";

/// KEYS[1]: the source, which gets one failure back (and no lockout once within the free
/// failures again); KEYS[2], if given: the user name, forgotten. ARGV[1]: free failures.
const GIVE_BACK: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then
  local n = redis.call('HINCRBY', KEYS[1], 'n', -1)
  if n <= tonumber(ARGV[1]) then redis.call('HDEL', KEYS[1], 'until') end
end
if KEYS[2] then redis.call('DEL', KEYS[2]) end
return 0
";

/// Lockouts kept in Redis for every server of the bus.
#[derive(Debug)]
pub struct SharedLockouts {
    client: redis::Client,
    settings: BusSettings,
    conn: tokio::sync::Mutex<Connection>,
    down: AtomicBool,
    reserve: Script,
    give_back: Script,
}

/// The command connection, or when to try again.
#[derive(Debug, Default)]
struct Connection {
    open: Option<MultiplexedConnection>,
    retry_at: Option<Instant>,
}

impl SharedLockouts {
    pub(super) fn new(client: redis::Client, settings: BusSettings) -> SharedLockouts {
        SharedLockouts {
            client,
            settings,
            conn: tokio::sync::Mutex::default(),
            down: AtomicBool::new(false),
            reserve: Script::new(RESERVE),
            give_back: Script::new(GIVE_BACK),
        }
    }

    /// Reserves a failure for a login from `source` (and for `user`, when given) under
    /// `policy`: `Ok(Err(wait))` while either is locked out, and then nothing is counted. An
    /// IPv6 `source` counts as its /64 ([`Source`]).
    ///
    /// # Errors
    ///
    /// [`BusError`] when Redis cannot be reached in time; the caller counts on its own.
    pub async fn reserve(
        &self,
        policy: &PenaltyPolicy,
        source: impl Into<Source>,
        user: Option<&str>,
    ) -> Result<Result<(), Duration>, BusError> {
        let mut invocation = self.reserve.prepare_invoke();
        invocation.key(source_key(source));
        if let Some(user) = user {
            invocation.key(user_key(user));
        }
        invocation
            .arg(policy.free_failures)
            .arg(millis(policy.base))
            .arg(millis(policy.max))
            .arg(millis(policy.forget_after));
        let wait: u64 = self
            .call(|mut conn| async move { invocation.invoke_async(&mut conn).await })
            .await?;
        Ok(match wait {
            0 => Ok(()),
            wait => Err(Duration::from_millis(wait)),
        })
    }

    /// A login whose failure was reserved succeeded: the source gets its failure back, and
    /// the user name's failures are forgotten.
    ///
    /// # Errors
    ///
    /// [`BusError`] when Redis cannot be reached in time.
    pub async fn succeeded(
        &self,
        policy: &PenaltyPolicy,
        source: impl Into<Source>,
        user: Option<&str>,
    ) -> Result<(), BusError> {
        let mut invocation = self.give_back.prepare_invoke();
        invocation.key(source_key(source));
        if let Some(user) = user {
            invocation.key(user_key(user));
        }
        invocation.arg(policy.free_failures);
        self.call(|mut conn| async move { invocation.invoke_async::<()>(&mut conn).await })
            .await
    }

    /// Runs `call` on the connection within the timeout, logging an outage's start and end
    /// once each.
    async fn call<T, F>(&self, call: impl FnOnce(MultiplexedConnection) -> F) -> Result<T, BusError>
    where
        F: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let result = match self.connection().await {
            Ok(conn) => match tokio::time::timeout(self.settings.timeout, call(conn)).await {
                Ok(Ok(value)) => Ok(value),
                Ok(Err(err)) => Err(BusError::from(err)),
                Err(_) => Err(BusError::Timeout(self.settings.timeout)),
            },
            Err(err) => Err(err),
        };
        match &result {
            Ok(_) => {
                if self.down.swap(false, Ordering::Relaxed) {
                    tracing::info!("login lockouts: counted on the bus again");
                }
            }
            Err(err) => {
                if !matches!(err, BusError::Waiting) {
                    let mut conn = self.conn.lock().await;
                    conn.open = None;
                    conn.retry_at = Some(Instant::now() + RECONNECT_AFTER);
                }
                if !self.down.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        error = %err,
                        "login lockouts: the bus is unreachable; counting on this server alone until it is back"
                    );
                }
            }
        }
        result
    }

    /// The open connection, or a new one unless the last attempt was under a second ago.
    async fn connection(&self) -> Result<MultiplexedConnection, BusError> {
        let mut conn = self.conn.lock().await;
        if let Some(open) = &conn.open {
            return Ok(open.clone());
        }
        if conn.retry_at.is_some_and(|at| Instant::now() < at) {
            return Err(BusError::Waiting);
        }
        let timeout = self.settings.timeout;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout));
        match self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
        {
            Ok(open) => {
                conn.retry_at = None;
                conn.open = Some(open.clone());
                Ok(open)
            }
            Err(err) => {
                conn.retry_at = Some(Instant::now() + RECONNECT_AFTER);
                Err(err.into())
            }
        }
    }
}

fn source_key(source: impl Into<Source>) -> String {
    let source = source.into();
    format!("sockit:lockout:source:{source}")
}

fn user_key(user: &str) -> String {
    format!("sockit:lockout:user:{user}")
}

fn millis(time: Duration) -> u64 {
    u64::try_from(time.as_millis()).unwrap_or(u64::MAX)
}
