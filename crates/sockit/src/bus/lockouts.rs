//! Login lockouts counted in Redis, so that they hold on every server of the bus.
//!
//! The same rules as [`crate::auth::penalty`], kept in one hash per key
//! (`sockit:lockout:source:<ip>`, `sockit:lockout:user:<name>`) in Redis's milliseconds:
//! failures `n`, the run's start `since`, the times of the latest failures `recent` (and the
//! latest of those that no longer fit, `older`), and the lockout they set, `until`. Two Lua
//! scripts keep them, each atomic in Redis: *reserve* refuses while either key is locked and
//! otherwise counts a failure against both, locking once past the free failures, and returns
//! its time; *give back* takes that failure out again for a login that was no guess, leaving
//! the count and the lockout as they would be had it never been counted. A key expires after
//! the quiet spell that forgets failures (or its lockout, if longer), so Redis forgets as the
//! rules do. Redis's own clock decides, so the servers' clocks need not agree.
//!
//! When Redis cannot be reached within the timeout, the caller counts on its server alone; the
//! outage is logged once, and so is the return. After a failure, connecting again is tried at
//! most once a second, so logins during an outage do not each wait for a connection to fail.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Script, ScriptInvocation};

use super::{BusError, BusSettings};
use crate::auth::penalty::PenaltyPolicy;
use crate::source::Source;

/// How long after a failed connection the next is tried.
const RECONNECT_AFTER: Duration = Duration::from_secs(1);

/// How many of a key's latest failures keep their times ([`crate::auth::penalty`] keeps as
/// many).
const RECENT: usize = 16;

/// Functions both scripts use. ARGV: free failures, first lockout, longest lockout, forget after
/// (milliseconds), then the script's own.
const COMMON: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local free, base, max, forget = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local function times(key)
  local list = {}
  for time in string.gmatch(redis.call('HGET', key, 'recent') or '', '%d+') do
    list[#list + 1] = tonumber(time)
  end
  return list
end
local function store(key, list)
  local parts = {}
  for i, time in ipairs(list) do parts[i] = string.format('%.0f', time) end
  redis.call('HSET', key, 'recent', table.concat(parts, ' '))
end
-- The lockout that n failures, the latest at the latest time in list or older, set; and when
-- the key is forgotten.
local function settle(key, n, list, older)
  local last = older
  for _, time in ipairs(list) do
    if not last or time > last then last = time end
  end
  if n <= 0 or not last then
    redis.call('DEL', key)
    return
  end
  local keep = last + forget
  if n > free then
    local untl = last + math.min(base * 2 ^ math.min(n - free - 1, 30), max)
    redis.call('HSET', key, 'until', string.format('%.0f', untl))
    if untl > keep then keep = untl end
  else
    redis.call('HDEL', key, 'until')
  end
  if keep <= now then
    redis.call('DEL', key)
  else
    redis.call('PEXPIRE', key, string.format('%.0f', keep - now))
  end
end
";

/// KEYS: the keys to check and count. ARGV after the common ones: how many failure times to
/// keep. Returns the milliseconds left of the longest lockout (and 0), or 0 and the time the
/// failure was counted at.
const RESERVE: &str = r"
local wait = 0
for _, key in ipairs(KEYS) do
  local untl = tonumber(redis.call('HGET', key, 'until') or '0')
  if untl - now > wait then wait = untl - now end
end
if wait > 0 then return {wait, 0} end
local keep_times = tonumber(ARGV[5])
for _, key in ipairs(KEYS) do
  if redis.call('EXISTS', key) == 0 then
    redis.call('HSET', key, 'since', string.format('%.0f', now))
  end
  local n = redis.call('HINCRBY', key, 'n', 1)
  local list = times(key)
  local older = tonumber(redis.call('HGET', key, 'older'))
  if #list >= keep_times then
    local oldest = 1
    for i, time in ipairs(list) do
      if time < list[oldest] then oldest = i end
    end
    local time = table.remove(list, oldest)
    if not older or time > older then
      older = time
      redis.call('HSET', key, 'older', string.format('%.0f', older))
    end
  end
  list[#list + 1] = now
  store(key, list)
  settle(key, n, list, older)
end
return {0, now}
";

/// KEYS[1]: the source, which gets the failure counted at ARGV[5] back, unless it was forgotten
/// with its run; KEYS[2], if given: the user name, forgotten.
const GIVE_BACK: &str = r"
local key, at = KEYS[1], tonumber(ARGV[5])
local since = tonumber(redis.call('HGET', key, 'since'))
if since and at >= since then
  local n = redis.call('HINCRBY', key, 'n', -1)
  local list = times(key)
  for i, time in ipairs(list) do
    if time == at then
      table.remove(list, i)
      break
    end
  end
  store(key, list)
  settle(key, n, list, tonumber(redis.call('HGET', key, 'older')))
end
if KEYS[2] then redis.call('DEL', KEYS[2]) end
return 0
";

/// A failure counted in Redis for a login being checked: when, by Redis's clock, so that it can
/// be given back ([`SharedLockouts::give_back`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedReservation {
    at: u64,
}

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
            reserve: Script::new(&format!("{COMMON}{RESERVE}")),
            give_back: Script::new(&format!("{COMMON}{GIVE_BACK}")),
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
    ) -> Result<Result<SharedReservation, Duration>, BusError> {
        let mut invocation = self.reserve.prepare_invoke();
        invocation.key(source_key(source));
        if let Some(user) = user {
            invocation.key(user_key(user));
        }
        policy_args(&mut invocation, policy).arg(RECENT);
        let (wait, at): (u64, u64) = self
            .call(|mut conn| async move { invocation.invoke_async(&mut conn).await })
            .await?;
        Ok(match wait {
            0 => Ok(SharedReservation { at }),
            wait => Err(Duration::from_millis(wait)),
        })
    }

    /// Gives back a failure reserved for a login that was no guess (it succeeded, or proved
    /// that it holds a key): the source's count and lockout become what they would be had it
    /// never been counted. `forget_user`, when given, has its failures forgotten (a success).
    ///
    /// # Errors
    ///
    /// [`BusError`] when Redis cannot be reached in time.
    pub async fn give_back(
        &self,
        policy: &PenaltyPolicy,
        source: impl Into<Source>,
        forget_user: Option<&str>,
        reservation: SharedReservation,
    ) -> Result<(), BusError> {
        let mut invocation = self.give_back.prepare_invoke();
        invocation.key(source_key(source));
        if let Some(user) = forget_user {
            invocation.key(user_key(user));
        }
        policy_args(&mut invocation, policy).arg(reservation.at);
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

/// The arguments both scripts begin with.
fn policy_args<'i, 'a>(
    invocation: &'i mut ScriptInvocation<'a>,
    policy: &PenaltyPolicy,
) -> &'i mut ScriptInvocation<'a> {
    invocation
        .arg(policy.free_failures)
        .arg(millis(policy.base))
        .arg(millis(policy.max))
        .arg(millis(policy.forget_after))
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
