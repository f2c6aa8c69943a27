//! Accounts and login: the users file, ed25519 keys, and the server's checks and penalties.
//!
//! - [`users`]: the TOML users file with argon2id hashes, as `sockit user` edits it.
//! - [`keys`]: public key lines, identity files, and the signed login proof.
//! - [`penalty`]: lockouts that double after repeated failures (sans-I/O).
//! - [`proof`]: what a `login` request offers as proof, from its fields alone.
//! - `accounts`: the server side — verifying passwords and proofs, and applying penalties.
//! - `password`: argon2 checks, a bounded number at once, in reused memory.

pub(crate) mod accounts;
pub mod keys;
mod password;
pub mod penalty;
pub mod proof;
pub mod users;
