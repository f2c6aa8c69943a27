//! The server's view of the users file: checking passwords and key proofs, and the penalties
//! for failing.
//!
//! Passwords are verified by argon2 on the blocking pool, at most one per core at a time and in
//! reused memory ([`PasswordChecker`]), so a flood of logins costs a bounded amount of CPU and
//! memory, and leaves none behind. An unknown user (or one with no
//! password) is verified against a dummy hash made with the same parameters, so the reply and
//! its timing do not say whether the user exists. The comparison of hash outputs is
//! constant-time. In the same way a key proof is always verified once, against the key offered
//! whether or not it is one of the user's (or the user exists), and against a dummy key when it
//! does not parse, so a key login's reply and its timing do not say whether the key is
//! authorised.
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
use crate::bus::{SharedLockouts, SharedReservation};
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
    /// no more often than the allowance; [`Accounts::succeeded`] or [`Accounts::give_back`]
    /// takes it back.
    ///
    /// With shared lockouts, Redis decides and the failure is counted here too; when Redis
    /// cannot be reached, this server decides alone.
    pub(crate) async fn reserve_failure(
        &self,
        source: IpAddr,
        user: Option<&str>,
    ) -> Result<Reservation, Duration> {
        let source = Source::of(source);
        if let Some(shared) = &self.shared {
            if let Ok(decided) = shared.reserve(&self.policy, source, user).await {
                let shared = decided?;
                return Ok(Reservation {
                    here: self.count_failure_here(source, user),
                    shared: Some(shared),
                });
            }
        }
        self.reserve_failure_here(source, user)
    }

    /// Counts a failure for `source` (and `user`) on this server, locked out or not.
    fn count_failure_here(&self, source: Source, user: Option<&str>) -> Instant {
        let now = Instant::now();
        lock(&self.sources).fail(&source, now);
        if let Some(user) = user {
            lock(&self.user_names).fail(user, now);
        }
        now
    }

    /// [`Accounts::reserve_failure`], decided on this server alone.
    fn reserve_failure_here(
        &self,
        source: Source,
        user: Option<&str>,
    ) -> Result<Reservation, Duration> {
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
        Ok(Reservation {
            here: now,
            shared: None,
        })
    }

    /// A login whose failure was reserved succeeded: the source gets its failure back, as if it
    /// had never been counted, and the user name's failures are forgotten.
    ///
    /// The source's other failures stay: a success proves one account, not that the guesses
    /// from the same address at other accounts were not guesses.
    pub(crate) async fn succeeded(
        &self,
        source: IpAddr,
        user: Option<&str>,
        reservation: Reservation,
    ) {
        let source = Source::of(source);
        lock(&self.sources).give_back(&source, reservation.here);
        if let Some(user) = user {
            lock(&self.user_names).succeed(user);
        }
        if let (Some(shared), Some(at)) = (&self.shared, reservation.shared) {
            // An error is logged by the bus; the count here is given back already.
            let _ = shared.give_back(&self.policy, source, user, at).await;
        }
    }

    /// A login whose failure was reserved, refused but no guess (a key login signed by a key
    /// that is not authorised for the user: proof of holding a key, which no one guesses),
    /// gives its failure back to the source, as if it had never been counted.
    pub(crate) async fn give_back(&self, source: IpAddr, reservation: Reservation) {
        let source = Source::of(source);
        lock(&self.sources).give_back(&source, reservation.here);
        if let (Some(shared), Some(at)) = (&self.shared, reservation.shared) {
            // An error is logged by the bus; the count here is given back already.
            let _ = shared.give_back(&self.policy, source, None, at).await;
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

    /// What `signature` over `challenge` proves for `user` and the key `public_key`.
    ///
    /// The signature is verified once, whatever the key: against the key offered when it
    /// parses (authorised or not), else against a dummy key, so that the time taken does not
    /// say whether the key is authorised. Only someone who holds a key can make a signature it
    /// verifies, so [`KeyCheck::NotAuthorised`] tells them nothing they did not know.
    pub(crate) fn verify_key(
        &self,
        user: &str,
        public_key: &str,
        challenge: &[u8; CHALLENGE_LEN],
        signature: &str,
    ) -> KeyCheck {
        let (key, authorised) = self.key_to_check(user, public_key);
        let proven = keys::verify_login(&key, challenge, user, signature);
        match (proven, authorised) {
            (true, true) => KeyCheck::Accepted,
            (true, false) => KeyCheck::NotAuthorised,
            (false, _) => KeyCheck::BadSignature,
        }
    }

    /// The key a proof is verified against, and whether a proof by it is accepted: the key
    /// offered (accepted when it is one of `user`'s), else, when it does not parse, the dummy
    /// key (never accepted).
    fn key_to_check(&self, user: &str, public_key: &str) -> (VerifyingKey, bool) {
        let Ok(offered) = public_key.parse::<PublicKey>() else {
            return (self.dummy_key, false);
        };
        let offered = *offered.verifying_key();
        let authorised = self
            .users()
            .get(user)
            .is_some_and(|account| account.keys.contains(&offered));
        (offered, authorised)
    }
}

/// What a key login's signature proves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyCheck {
    /// Signed by a key authorised for the user.
    Accepted,
    /// Signed by the key offered, which is not authorised for the user (or the user does not
    /// exist): refused, but no guess.
    NotAuthorised,
    /// Not a valid signature by the key offered, or no key.
    BadSignature,
}

/// A failure counted for a login before its proof was checked, to be given back if the proof
/// turns out good ([`Accounts::succeeded`]) or no guess ([`Accounts::give_back`]).
#[derive(Debug, Clone, Copy)]
#[must_use = "a reservation is given back, or stays a failure"]
pub(crate) struct Reservation {
    /// When it was counted on this server.
    here: Instant,
    /// How Redis knows it, when it was counted there.
    shared: Option<SharedReservation>,
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
    fn the_key_offered_is_checked_as_itself_and_only_an_unparsable_one_against_the_dummy() {
        let dir = tempfile::tempdir().unwrap();
        let (alice, stranger) = (Identity::generate().unwrap(), Identity::generate().unwrap());
        let accounts = accounts(dir.path(), &alice);
        let alice_key = *alice.public_key("").verifying_key();
        let stranger_key = *stranger.public_key("").verifying_key();
        assert_eq!(
            accounts.key_to_check("alice", &alice.public_hex()),
            (alice_key, true)
        );
        for (user, offered, key) in [
            ("alice", stranger.public_hex(), stranger_key),
            ("bob", alice.public_hex(), alice_key),
            ("mallory", alice.public_hex(), alice_key),
            ("alice", "not a key".to_owned(), accounts.dummy_key),
        ] {
            assert_eq!(
                accounts.key_to_check(user, &offered),
                (key, false),
                "{user} {offered}"
            );
        }
    }

    #[test]
    fn a_good_signature_by_a_key_that_is_not_authorised_is_refused_but_no_guess() {
        let dir = tempfile::tempdir().unwrap();
        let (alice, stranger) = (Identity::generate().unwrap(), Identity::generate().unwrap());
        let accounts = accounts(dir.path(), &alice);
        let challenge = [3u8; CHALLENGE_LEN];
        let check = |user, key: &Identity, signer: &Identity| {
            let signature = signer.sign_login(&challenge, user);
            accounts.verify_key(user, &key.public_hex(), &challenge, &signature)
        };
        assert_eq!(check("alice", &alice, &alice), KeyCheck::Accepted);
        assert_eq!(
            check("alice", &stranger, &stranger),
            KeyCheck::NotAuthorised
        );
        assert_eq!(check("bob", &alice, &alice), KeyCheck::NotAuthorised);
        assert_eq!(check("mallory", &alice, &alice), KeyCheck::NotAuthorised);
        // Alice's key offered with someone else's signature proves nothing.
        assert_eq!(check("alice", &alice, &stranger), KeyCheck::BadSignature);
        assert_eq!(check("bob", &stranger, &alice), KeyCheck::BadSignature);
        let unsigned = accounts.verify_key("alice", &alice.public_hex(), &challenge, "00");
        assert_eq!(unsigned, KeyCheck::BadSignature);
        let signature = alice.sign_login(&challenge, "alice");
        let no_key = accounts.verify_key("alice", "not a key", &challenge, &signature);
        assert_eq!(no_key, KeyCheck::BadSignature);
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
        assert!(elsewhere.await.is_ok(), "another /64 is not locked out");
    }
}
