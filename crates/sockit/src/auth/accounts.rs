//! The server's view of the users file: checking passwords and key proofs, and the penalties
//! for failing.
//!
//! Passwords are verified by argon2 on the blocking pool, at most one per core at a time and in
//! reused memory ([`PasswordChecker`]), so a flood of logins costs a bounded amount of CPU and
//! memory, and leaves none behind. An unknown user (or one with no
//! password) is verified against a dummy hash made with the same parameters, so the reply and
//! its timing do not say whether the user exists. The comparison of hash outputs is
//! constant-time. In the same way a key proof is always verified, against a dummy key when the
//! key offered is not one of the user's (or does not parse, or the user does not exist), so a
//! key login's reply and its timing do not say whether the key is authorised.
//!
//! The users file is re-read when its modification time or length changes, so `sockit user`
//! edits take effect without a restart; a file that no longer parses leaves the last good one
//! in force, with a warning.
//!
//! Penalties are counted here, and with a bus (`--bus`) in Redis too
//! ([`SharedLockouts`]), which then decides, so lockouts hold on every server. When Redis
//! cannot be reached the count here decides (the bus logs that once): never no count at all.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use ed25519_dalek::{SigningKey, VerifyingKey};

use super::keys::{self, PublicKey, CHALLENGE_LEN};
use super::password::{CheckSlot, PasswordChecker};
use super::penalty::{Penalties, PenaltyPolicy};
use super::users::{hash_password, UsersError, UsersFile, MAX_PASSWORD};
use crate::bus::SharedLockouts;
use crate::core::pool::Refusal;
use crate::source::Source;

/// Most penalty records kept per table (sources, user names).
const PENALTY_CAPACITY: usize = 65_536;

/// One account as the server uses it.
#[derive(Debug)]
struct User {
    password_hash: Option<String>,
    keys: Vec<VerifyingKey>,
}

type Users = Arc<HashMap<String, User>>;

/// What identifies one version of the users file on disk.
type Stamp = Option<(SystemTime, u64)>;

#[derive(Debug)]
struct Loaded {
    users: Users,
    stamp: Stamp,
}

/// Accounts, password and key checks, and login penalties.
#[derive(Debug)]
pub(crate) struct Accounts {
    path: PathBuf,
    loaded: Mutex<Loaded>,
    dummy_hash: String,
    dummy_key: VerifyingKey,
    passwords: PasswordChecker,
    policy: PenaltyPolicy,
    sources: Mutex<Penalties<Source>>,
    user_names: Mutex<Penalties<String>>,
    shared: Option<SharedLockouts>,
}

impl Accounts {
    /// Loads the users file; a password check waits at most `check_wait` for its turn.
    pub(crate) fn open(
        path: &Path,
        penalties: PenaltyPolicy,
        check_wait: Duration,
    ) -> Result<Accounts, UsersError> {
        let stamp = stamp(path);
        let users = parse(UsersFile::load(path)?);
        // Only its cost matters: a match against it is never accepted.
        let dummy_hash = hash_password("no such user").map_err(UsersError::Hashing)?;
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        Ok(Accounts {
            path: path.to_owned(),
            loaded: Mutex::new(Loaded { users, stamp }),
            dummy_hash,
            // Only its cost matters: a proof is never accepted for it.
            dummy_key: SigningKey::from_bytes(&[0x5a; 32]).verifying_key(),
            passwords: PasswordChecker::new(cores, check_wait),
            policy: penalties,
            sources: Mutex::new(Penalties::new(penalties, PENALTY_CAPACITY)),
            user_names: Mutex::new(Penalties::new(penalties, PENALTY_CAPACITY)),
            shared: None,
        })
    }

    /// Counts penalties in `shared` too, which then decides.
    pub(crate) fn share_lockouts(&mut self, shared: SharedLockouts) {
        self.shared = Some(shared);
    }

    /// How many accounts there are now.
    pub(crate) fn len(&self) -> usize {
        self.users().len()
    }

    /// The accounts, re-read first if the file changed.
    fn users(&self) -> Users {
        let mut loaded = self.loaded.lock().unwrap_or_else(PoisonError::into_inner);
        let now = stamp(&self.path);
        if now != loaded.stamp {
            loaded.stamp = now;
            match UsersFile::load(&self.path) {
                Ok(file) => {
                    loaded.users = parse(file);
                    tracing::info!(users = loaded.users.len(), path = %self.path.display(), "users file reloaded");
                }
                Err(err) => {
                    tracing::warn!(%err, "users file not reloaded; the previous version stays in force")
                }
            }
        }
        Arc::clone(&loaded.users)
    }

    /// Reserves a failure for a login from `source` about to be checked; `user` is given for
    /// password logins, whose failures also count against the user name. `Err(wait)` while
    /// either is locked out, and then nothing is counted.
    ///
    /// The failure counts before the proof is checked, so logins sent in parallel are checked
    /// no more often than the allowance; [`Accounts::succeeded`] gives it back.
    ///
    /// With shared lockouts, Redis decides and the failure is counted here too; when Redis
    /// cannot be reached, this server decides alone.
    pub(crate) async fn reserve_failure(
        &self,
        source: IpAddr,
        user: Option<&str>,
    ) -> Result<(), Duration> {
        let source = Source::of(source);
        if let Some(shared) = &self.shared {
            if let Ok(decided) = shared.reserve(&self.policy, source, user).await {
                decided?;
                self.count_failure_here(source, user);
                return Ok(());
            }
        }
        self.reserve_failure_here(source, user)
    }

    /// Counts a failure for `source` (and `user`) on this server, locked out or not.
    fn count_failure_here(&self, source: Source, user: Option<&str>) {
        let now = Instant::now();
        lock(&self.sources).fail(&source, now);
        if let Some(user) = user {
            lock(&self.user_names).fail(user, now);
        }
    }

    /// [`Accounts::reserve_failure`], decided on this server alone.
    fn reserve_failure_here(&self, source: Source, user: Option<&str>) -> Result<(), Duration> {
        let now = Instant::now();
        let mut sources = lock(&self.sources);
        let mut user_names = lock(&self.user_names);
        let by_source = sources.check(&source, now);
        let by_user = match user {
            Some(user) => user_names.check(user, now),
            None => Ok(()),
        };
        match (by_source, by_user) {
            (Err(a), Err(b)) => return Err(a.max(b)),
            (Err(wait), _) | (_, Err(wait)) => return Err(wait),
            _ => {}
        }
        sources.fail(&source, now);
        if let Some(user) = user {
            user_names.fail(user, now);
        }
        Ok(())
    }

    /// A login whose failure was reserved succeeded: the source gets its failure back, and the
    /// user name's failures are forgotten.
    pub(crate) async fn succeeded(&self, source: IpAddr, user: Option<&str>) {
        let source = Source::of(source);
        lock(&self.sources).give_back(&source);
        if let Some(user) = user {
            lock(&self.user_names).succeed(user);
        }
        if let Some(shared) = &self.shared {
            // An error is logged by the bus; the count here is given back already.
            let _ = shared.succeeded(&self.policy, source, user).await;
        }
    }

    /// The turn of a password check for `source`, which runs one at a time.
    ///
    /// # Errors
    ///
    /// [`Refusal`] when no check could start within the wait.
    pub(crate) async fn password_slot(&self, source: IpAddr) -> Result<CheckSlot, Refusal> {
        self.passwords.slot(source).await
    }

    /// Whether `password` is `user`'s, checked in `slot`. Takes one argon2 run whether or not
    /// the user exists.
    pub(crate) async fn verify_password(
        &self,
        slot: CheckSlot,
        user: &str,
        password: &str,
    ) -> bool {
        let users = self.users();
        let account = users.get(user);
        let stored = account.and_then(|account| account.password_hash.clone());
        // A password longer than any stored one can be is still hashed (for the timing) but
        // never accepted.
        let real = stored.is_some() && password.len() <= MAX_PASSWORD;
        let hash = stored.unwrap_or_else(|| self.dummy_hash.clone());
        let password = password.as_bytes()[..password.len().min(MAX_PASSWORD)].to_vec();
        let verified = self.passwords.verify(slot, password, hash).await;
        verified && real
    }

    /// Whether `signature` proves that `user` holds the authorised key `public_key` for
    /// `challenge`.
    pub(crate) fn verify_key(
        &self,
        user: &str,
        public_key: &str,
        challenge: &[u8; CHALLENGE_LEN],
        signature: &str,
    ) -> bool {
        let (key, authorised) = self.key_to_check(user, public_key);
        // Verified whatever the key, so that the time taken does not say whether it is
        // authorised.
        let proven = keys::verify_login(&key, challenge, user, signature);
        proven && authorised
    }

    /// The key a proof is verified against, and whether a proof by it is accepted: the key
    /// offered when it is one of `user`'s, else the dummy key (never accepted).
    fn key_to_check(&self, user: &str, public_key: &str) -> (VerifyingKey, bool) {
        let offered = public_key
            .parse::<PublicKey>()
            .ok()
            .map(|offered| *offered.verifying_key());
        let authorised = offered.filter(|offered| {
            self.users()
                .get(user)
                .is_some_and(|account| account.keys.contains(offered))
        });
        match authorised {
            Some(key) => (key, true),
            None => (self.dummy_key, false),
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn stamp(path: &Path) -> Stamp {
    let metadata = std::fs::metadata(path).ok()?;
    Some((metadata.modified().ok()?, metadata.len()))
}

/// The server's form of a checked users file.
fn parse(file: UsersFile) -> Users {
    let users = file
        .users
        .into_iter()
        .map(|(name, account)| {
            let keys = account
                .keys
                .iter()
                .filter_map(|line| line.parse::<PublicKey>().ok())
                .map(|key| *key.verifying_key())
                .collect();
            let user = User {
                password_hash: account.password,
                keys,
            };
            (name, user)
        })
        .collect();
    Arc::new(users)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::keys::Identity;
    use crate::auth::users::Account;

    /// Accounts with `alice`, who has `key`, and `bob`, who has none.
    fn accounts(dir: &Path, key: &Identity) -> Accounts {
        let path = dir.join("users.toml");
        let mut file = UsersFile::default();
        file.users.insert(
            "alice".into(),
            Account {
                password: None,
                keys: vec![key.public_key("alice@test").to_string()],
            },
        );
        file.users.insert(
            "bob".into(),
            Account {
                password: None,
                keys: vec![],
            },
        );
        file.save(&path).unwrap();
        Accounts::open(&path, PenaltyPolicy::default(), Duration::from_secs(10)).unwrap()
    }

    #[test]
    fn only_an_authorised_key_is_checked_as_itself_and_every_other_against_the_dummy() {
        let dir = tempfile::tempdir().unwrap();
        let (alice, stranger) = (Identity::generate().unwrap(), Identity::generate().unwrap());
        let accounts = accounts(dir.path(), &alice);
        let alice_key = *alice.public_key("").verifying_key();
        assert_eq!(
            accounts.key_to_check("alice", &alice.public_hex()),
            (alice_key, true)
        );
        for (user, key) in [
            ("alice", stranger.public_hex()),
            ("bob", alice.public_hex()),
            ("mallory", alice.public_hex()),
            ("alice", "not a key".to_owned()),
        ] {
            assert_eq!(
                accounts.key_to_check(user, &key),
                (accounts.dummy_key, false),
                "{user} {key}"
            );
        }
    }

    #[test]
    fn a_good_signature_by_a_key_that_is_not_authorised_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (alice, stranger) = (Identity::generate().unwrap(), Identity::generate().unwrap());
        let accounts = accounts(dir.path(), &alice);
        let challenge = [3u8; CHALLENGE_LEN];
        assert!(accounts.verify_key(
            "alice",
            &alice.public_hex(),
            &challenge,
            &alice.sign_login(&challenge, "alice")
        ));
        assert!(!accounts.verify_key(
            "alice",
            &stranger.public_hex(),
            &challenge,
            &stranger.sign_login(&challenge, "alice")
        ));
        assert!(!accounts.verify_key(
            "bob",
            &alice.public_hex(),
            &challenge,
            &alice.sign_login(&challenge, "bob")
        ));
    }

    #[tokio::test]
    async fn the_addresses_of_one_ipv6_slash_64_share_one_lockout() {
        let dir = tempfile::tempdir().unwrap();
        let accounts = accounts(dir.path(), &Identity::generate().unwrap());
        let ip = |text: String| text.parse::<IpAddr>().unwrap();
        let mut allowed = 0;
        while accounts
            .reserve_failure(ip(format!("2001:db8::{:x}", allowed + 1)), None)
            .await
            .is_ok()
        {
            allowed += 1;
            assert!(allowed < 100, "never locked out");
        }
        let free = PenaltyPolicy::default().free_failures;
        assert_eq!(allowed, free + 1, "as many as one address gets");
        let elsewhere = accounts.reserve_failure(ip("2001:db8:0:1::1".into()), None);
        assert_eq!(elsewhere.await, Ok(()), "another /64 is not locked out");
    }
}
