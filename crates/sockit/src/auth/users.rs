//! The users file: accounts with argon2id password hashes and authorised ed25519 keys, in TOML.
//!
//! ```toml
//! [users.alice]
//! password = "$argon2id$v=19$m=19456,t=2,p=1$…"
//! keys = ["sockit-ed25519 3f0c…e1 alice@laptop"]
//! ```
//!
//! A plaintext password never reaches this file: [`hash_password`] turns it into a salted
//! argon2id hash (PHC string format) first. The file is rewritten atomically (a temporary file
//! in the same directory, synced, then renamed over the old one) with mode 0600.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use argon2::password_hash::{PasswordHash, PasswordHasher, SaltString};
use argon2::Argon2;
use serde::{Deserialize, Serialize};

use super::keys::PublicKey;

/// Longest user name.
pub const MAX_USER_NAME: usize = 64;
/// Longest password accepted, in bytes. It bounds what a login request can make argon2 hash.
pub const MAX_PASSWORD: usize = 1024;

/// Why the users file could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UsersError {
    /// Reading or writing the file failed.
    #[error("{path}: {source}")]
    Io {
        /// The users file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The file is not valid TOML of the expected shape.
    #[error("{path}: {message}")]
    Syntax {
        /// The users file.
        path: PathBuf,
        /// What is wrong, from the TOML parser.
        message: String,
    },
    /// The server could not make the hash that stands in for unknown users.
    #[error("cannot prepare password checks: {0}")]
    Hashing(#[source] BadPassword),
    /// An entry is not valid.
    #[error("{path}: user {user:?}: {message}")]
    Entry {
        /// The users file.
        path: PathBuf,
        /// The user whose entry is wrong.
        user: String,
        /// What is wrong.
        message: String,
    },
}

/// The whole users file.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsersFile {
    /// Accounts by user name.
    #[serde(default)]
    pub users: BTreeMap<String, Account>,
}

/// One account.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Account {
    /// The argon2id hash of the password (PHC string); none for a key-only account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// Authorised public keys, one `sockit-ed25519 <hex> [comment]` line each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<String>,
}

impl UsersFile {
    /// Reads and checks a users file.
    ///
    /// # Errors
    ///
    /// The file cannot be read, is not TOML of this shape, or has an invalid name, hash or key.
    pub fn load(path: &Path) -> Result<UsersFile, UsersError> {
        let text = std::fs::read_to_string(path).map_err(|source| UsersError::Io {
            path: path.to_owned(),
            source,
        })?;
        let file: UsersFile = toml::from_str(&text).map_err(|err| UsersError::Syntax {
            path: path.to_owned(),
            message: err.message().to_owned(),
        })?;
        file.check(path)?;
        Ok(file)
    }

    /// As [`UsersFile::load`], but a file that does not exist yet is an empty one.
    ///
    /// # Errors
    ///
    /// As [`UsersFile::load`].
    pub fn load_or_empty(path: &Path) -> Result<UsersFile, UsersError> {
        match UsersFile::load(path) {
            Err(UsersError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                Ok(UsersFile::default())
            }
            other => other,
        }
    }

    fn check(&self, path: &Path) -> Result<(), UsersError> {
        for (user, account) in &self.users {
            let invalid = |message: String| UsersError::Entry {
                path: path.to_owned(),
                user: user.clone(),
                message,
            };
            check_user_name(user).map_err(|err| invalid(err.to_string()))?;
            if let Some(hash) = &account.password {
                check_password_hash(hash).map_err(invalid)?;
            }
            for key in &account.keys {
                key.parse::<PublicKey>()
                    .map_err(|err| invalid(format!("key {key:?}: {err}")))?;
            }
        }
        Ok(())
    }

    /// Writes the file atomically with mode 0600: readers see the old file or the new one,
    /// never a mix, and a crash leaves one of the two.
    ///
    /// # Errors
    ///
    /// The directory is not writable, or the disk is full.
    pub fn save(&self, path: &Path) -> Result<(), UsersError> {
        let io_error = |source| UsersError::Io {
            path: path.to_owned(),
            source,
        };
        let text = toml::to_string(self).map_err(|err| io_error(io::Error::other(err)))?;
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        // tempfile creates the file with mode 0600.
        let mut temp = tempfile::NamedTempFile::new_in(dir).map_err(io_error)?;
        let header = "# sockit users: argon2id password hashes and authorised keys.\n\
                      # Edit with `sockit user add|del|passwd|add-key`.\n\n";
        temp.write_all(header.as_bytes()).map_err(io_error)?;
        temp.write_all(text.as_bytes()).map_err(io_error)?;
        temp.as_file().sync_all().map_err(io_error)?;
        temp.persist(path).map_err(|err| io_error(err.error))?;
        Ok(())
    }
}

/// A user name that breaks the rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a user name is 1 to {MAX_USER_NAME} letters, digits, '.', '_' or '-', not starting with '-' or '.'")]
pub struct BadUserName;

/// Checks a user name: 1 to [`MAX_USER_NAME`] ASCII letters, digits, `.`, `_` or `-`, not
/// starting with `-` or `.`.
///
/// # Errors
///
/// [`BadUserName`] otherwise.
pub fn check_user_name(name: &str) -> Result<(), BadUserName> {
    let allowed = |c: u8| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-');
    let valid = (1..=MAX_USER_NAME).contains(&name.len())
        && name.bytes().all(allowed)
        && !name.starts_with(['-', '.']);
    if valid {
        Ok(())
    } else {
        Err(BadUserName)
    }
}

fn check_password_hash(hash: &str) -> Result<(), String> {
    let parsed = PasswordHash::new(hash).map_err(|err| format!("password hash: {err}"))?;
    if parsed.algorithm != argon2::Algorithm::Argon2id.ident() {
        return Err(format!(
            "password hash uses {}, not argon2id",
            parsed.algorithm
        ));
    }
    Ok(())
}

/// A password that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadPassword {
    /// Nothing was typed.
    #[error("the password is empty")]
    Empty,
    /// Over [`MAX_PASSWORD`] bytes.
    #[error("the password is longer than {MAX_PASSWORD} bytes")]
    TooLong,
    /// The system could not supply randomness for the salt.
    #[error("cannot hash the password: {0}")]
    Hashing(String),
}

/// Hashes a password with argon2id (the `argon2` crate's defaults: 19 MiB, 2 passes, 1 lane,
/// the OWASP recommendation) and a fresh random salt, as a PHC string.
///
/// # Errors
///
/// An empty or over-long password, or no randomness available.
pub fn hash_password(password: &str) -> Result<String, BadPassword> {
    if password.is_empty() {
        return Err(BadPassword::Empty);
    }
    if password.len() > MAX_PASSWORD {
        return Err(BadPassword::TooLong);
    }
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|err| BadPassword::Hashing(err.to_string()))?;
    let salt =
        SaltString::encode_b64(&salt).map_err(|err| BadPassword::Hashing(err.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|err| BadPassword::Hashing(err.to_string()))
}

impl fmt::Display for Account {
    /// `password, 2 keys`, for listings.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let password = if self.password.is_some() {
            "password"
        } else {
            "no password"
        };
        match self.keys.len() {
            1 => write!(f, "{password}, 1 key"),
            n => write!(f, "{password}, {n} keys"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names() {
        for good in [
            "alice",
            "a",
            "bob.smith",
            "x_1-2",
            &"a".repeat(MAX_USER_NAME),
        ] {
            assert_eq!(check_user_name(good), Ok(()), "{good}");
        }
        let long = "a".repeat(MAX_USER_NAME + 1);
        for bad in ["", "-x", ".x", "a b", "a/b", "é", "a\n", &long] {
            assert_eq!(check_user_name(bad), Err(BadUserName), "{bad:?}");
        }
    }

    #[test]
    fn hashes_are_salted_argon2id_and_verify() {
        use argon2::PasswordVerifier;
        let first = hash_password("correct horse").unwrap();
        let second = hash_password("correct horse").unwrap();
        assert!(first.starts_with("$argon2id$"), "{first}");
        assert_ne!(first, second, "salts differ");
        let parsed = PasswordHash::new(&first).unwrap();
        assert!(Argon2::default()
            .verify_password(b"correct horse", &parsed)
            .is_ok());
        assert!(Argon2::default()
            .verify_password(b"correct horsf", &parsed)
            .is_err());
        assert_eq!(hash_password(""), Err(BadPassword::Empty));
        let long = "x".repeat(MAX_PASSWORD + 1);
        assert_eq!(hash_password(&long), Err(BadPassword::TooLong));
    }

    #[test]
    fn save_and_load_round_trip_with_private_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.toml");
        let mut file = UsersFile::load_or_empty(&path).unwrap();
        assert!(file.users.is_empty());
        file.users.insert(
            "alice".into(),
            Account {
                password: Some(hash_password("pw").unwrap()),
                keys: vec![],
            },
        );
        file.save(&path).unwrap();
        assert_eq!(UsersFile::load(&path).unwrap(), file);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("\"pw\""));
    }

    #[test]
    fn invalid_entries_are_reported_with_the_user() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.toml");
        let cases = [
            ("[users.alice]\npassword = \"plain\"\n", "password hash"),
            ("[users.\"a b\"]\n", "user name"),
            ("[users.alice]\nkeys = [\"ssh-rsa AAAA\"]\n", "key"),
            ("[users.alice]\npasswd = \"x\"\n", "unknown field"),
        ];
        for (text, expected) in cases {
            std::fs::write(&path, text).unwrap();
            let err = UsersFile::load(&path).unwrap_err().to_string();
            assert!(err.contains(expected), "{text:?}: {err}");
        }
    }
}
