//! Ed25519 keys for key login: their text forms, identity files, and the signed login proof.
//!
//! A public key is one line, `sockit-ed25519 <64 hex digits> [comment]`, which is what
//! `sockit keygen` prints and `sockit user add-key` takes. An identity file holds the secret
//! seed as `sockit-ed25519-secret <64 hex digits>` and must be private to its owner (mode
//! 0600), as ssh insists for its keys.
//!
//! To log in, the client signs [`login_message`]: a fixed context string, the 32-byte challenge
//! the server just made for this connection, and the user name. The server keeps the challenge
//! only until the next `login`, so a proof is good once, on one connection, for one user.
//!
//! Over TLS the challenge is first bound to the connection ([`bind_to_channel`]): what is
//! signed in its place is a hash of it and the TLS exporter value (RFC 9266), which differs on
//! each side of a machine in the middle, so a proof relayed from one TLS session to another
//! fails.

use std::fmt;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

/// The word that starts a public key line.
pub const PUBLIC_KEY_KIND: &str = "sockit-ed25519";
/// The word that starts an identity file.
const SECRET_KEY_KIND: &str = "sockit-ed25519-secret";
/// Length of a login challenge in bytes.
pub const CHALLENGE_LEN: usize = 32;
/// What every login proof starts with, so that a signature made for anything else is never a
/// valid proof.
const LOGIN_CONTEXT: &[u8] = b"sockit login v1\0";

/// A key that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadKey {
    /// The line does not start with the expected word.
    #[error("a key starts with \"{0}\"")]
    Kind(&'static str),
    /// The key material is not 64 hex digits.
    #[error("the key is not 64 hex digits")]
    Hex,
    /// The bytes are not a valid Ed25519 public key.
    #[error("not a valid Ed25519 public key")]
    Invalid,
    /// The text is a secret key (an identity file's line, or a private key of another tool).
    #[error("that is a secret key; give the .pub file")]
    Secret,
}

/// An Ed25519 public key, with the comment it was written with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    key: VerifyingKey,
    comment: String,
}

impl PublicKey {
    /// The key.
    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.key
    }

    /// The key as 64 hex digits, without kind or comment.
    pub fn hex(&self) -> String {
        hex::encode(self.key.as_bytes())
    }

    /// A short fingerprint (first 16 bytes of the key's BLAKE3 hash, hex), for listings.
    pub fn fingerprint(&self) -> String {
        hex::encode(&blake3::hash(self.key.as_bytes()).as_bytes()[..16])
    }

    /// The comment (often `user@host`), possibly empty.
    pub fn comment(&self) -> &str {
        &self.comment
    }
}

impl FromStr for PublicKey {
    type Err = BadKey;

    /// Reads `sockit-ed25519 <hex> [comment]`, or the bare 64 hex digits. Secret key text is
    /// refused as [`BadKey::Secret`], whose message never repeats it.
    fn from_str(line: &str) -> Result<PublicKey, BadKey> {
        let line = line.trim();
        if looks_secret(line) {
            return Err(BadKey::Secret);
        }
        let mut words = line.splitn(2, char::is_whitespace);
        let first = words.next().unwrap_or_default();
        let (hex_key, comment) = if first == PUBLIC_KEY_KIND {
            let rest = words.next().unwrap_or_default().trim_start();
            let mut parts = rest.splitn(2, char::is_whitespace);
            let key = parts.next().unwrap_or_default();
            (key, parts.next().unwrap_or_default().trim())
        } else if words.next().is_none() && first.len() == 64 {
            (first, "")
        } else {
            return Err(BadKey::Kind(PUBLIC_KEY_KIND));
        };
        let bytes = decode_32(hex_key).ok_or(BadKey::Hex)?;
        let key = VerifyingKey::from_bytes(&bytes).map_err(|_| BadKey::Invalid)?;
        if key.is_weak() {
            return Err(BadKey::Invalid);
        }
        Ok(PublicKey {
            key,
            comment: comment.to_owned(),
        })
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PUBLIC_KEY_KIND} {}", self.hex())?;
        if !self.comment.is_empty() {
            write!(f, " {}", self.comment)?;
        }
        Ok(())
    }
}

/// Whether `text` is, or holds, a secret key: a sockit identity line, or a PEM or OpenSSH
/// private key.
fn looks_secret(text: &str) -> bool {
    text.split_whitespace().any(|word| word == SECRET_KEY_KIND) || text.contains("PRIVATE KEY")
}

fn decode_32(text: &str) -> Option<[u8; 32]> {
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(text, &mut bytes).ok()?;
    Some(bytes)
}

/// Why an identity file could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The identity file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// Others can read the file.
    #[error("{path}: permissions {mode:04o} are too open; a private key must be readable by its owner only (chmod 600 {path})")]
    TooOpen {
        /// The identity file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file is not an identity.
    #[error("{path}: not a sockit identity (expected \"{SECRET_KEY_KIND} <64 hex digits>\")")]
    Format {
        /// The identity file.
        path: PathBuf,
    },
    /// No randomness for a new key.
    #[error("cannot make a key: {0}")]
    Random(String),
}

/// A client's key pair.
#[derive(Clone)]
pub struct Identity {
    key: SigningKey,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("public", &self.public_hex())
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// A new random key pair.
    ///
    /// # Errors
    ///
    /// The system has no randomness to give.
    pub fn generate() -> Result<Identity, IdentityError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|err| IdentityError::Random(err.to_string()))?;
        Ok(Identity {
            key: SigningKey::from_bytes(&seed),
        })
    }

    /// Reads an identity file, refusing one that others can read.
    ///
    /// # Errors
    ///
    /// The file cannot be read, is too open, or is not an identity.
    pub fn load(path: &Path) -> Result<Identity, IdentityError> {
        let io_error = |source| IdentityError::Io {
            path: path.to_owned(),
            source,
        };
        let metadata = std::fs::metadata(path).map_err(io_error)?;
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(IdentityError::TooOpen {
                path: path.to_owned(),
                mode,
            });
        }
        let text = std::fs::read_to_string(path).map_err(io_error)?;
        let seed = text
            .trim()
            .strip_prefix(SECRET_KEY_KIND)
            .and_then(|rest| decode_32(rest.trim()))
            .ok_or_else(|| IdentityError::Format {
                path: path.to_owned(),
            })?;
        Ok(Identity {
            key: SigningKey::from_bytes(&seed),
        })
    }

    /// Writes the secret to `path` (mode 0600, never overwriting) and the public key line to
    /// `path.pub`.
    ///
    /// # Errors
    ///
    /// Either file exists already or cannot be written.
    pub fn save(&self, path: &Path, comment: &str) -> Result<(), IdentityError> {
        let public_path = public_key_path(path);
        let write = |path: &Path, mode: u32, text: String| {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(path)?;
            file.write_all(text.as_bytes())?;
            file.sync_all()
        };
        let secret = format!("{SECRET_KEY_KIND} {}\n", hex::encode(self.key.to_bytes()));
        write(path, 0o600, secret).map_err(|source| IdentityError::Io {
            path: path.to_owned(),
            source,
        })?;
        write(
            &public_path,
            0o644,
            format!("{}\n", self.public_key(comment)),
        )
        .map_err(|source| IdentityError::Io {
            path: public_path.clone(),
            source,
        })
    }

    /// The public half, with a comment.
    pub fn public_key(&self, comment: &str) -> PublicKey {
        PublicKey {
            key: self.key.verifying_key(),
            comment: comment.to_owned(),
        }
    }

    /// The public key as 64 hex digits, as a `login` request carries it.
    pub fn public_hex(&self) -> String {
        hex::encode(self.key.verifying_key().as_bytes())
    }

    /// The signature, hex, that proves this key to a server that sent `challenge` for `user`.
    pub fn sign_login(&self, challenge: &[u8; CHALLENGE_LEN], user: &str) -> String {
        hex::encode(self.key.sign(&login_message(challenge, user)).to_bytes())
    }
}

/// The challenge a key login signs: over TLS, SHA-256 of [`CHANNEL_CONTEXT`], the server's
/// challenge and the connection's TLS exporter value; on a plain connection, the challenge.
pub fn bind_to_channel(
    challenge: &[u8; CHALLENGE_LEN],
    binding: Option<&crate::tls::ChannelBinding>,
) -> [u8; CHALLENGE_LEN] {
    use sha2::{Digest, Sha256};
    match binding {
        None => *challenge,
        Some(binding) => Sha256::new()
            .chain_update(CHANNEL_CONTEXT)
            .chain_update(challenge)
            .chain_update(binding)
            .finalize()
            .into(),
    }
}

/// What a channel-bound challenge's hash starts with.
pub const CHANNEL_CONTEXT: &[u8] = b"sockit login tls-exporter v1\0";

/// Where an identity's public key is written: the identity's path with `.pub` appended.
pub fn public_key_path(identity: &Path) -> PathBuf {
    let mut path = identity.as_os_str().to_owned();
    path.push(".pub");
    PathBuf::from(path)
}

/// The bytes a login proof signs.
pub fn login_message(challenge: &[u8; CHALLENGE_LEN], user: &str) -> Vec<u8> {
    let mut message = Vec::with_capacity(LOGIN_CONTEXT.len() + CHALLENGE_LEN + user.len());
    message.extend_from_slice(LOGIN_CONTEXT);
    message.extend_from_slice(challenge);
    message.extend_from_slice(user.as_bytes());
    message
}

/// Whether `signature_hex` is `key`'s signature of the login message for `challenge` and
/// `user`. Strict verification: no malleable or small-order forms are accepted.
pub fn verify_login(
    key: &VerifyingKey,
    challenge: &[u8; CHALLENGE_LEN],
    user: &str,
    signature_hex: &str,
) -> bool {
    let mut bytes = [0u8; 64];
    if hex::decode_to_slice(signature_hex, &mut bytes).is_err() {
        return false;
    }
    let signature = Signature::from_bytes(&bytes);
    key.verify_strict(&login_message(challenge, user), &signature)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_key_lines_round_trip() {
        let identity = Identity::generate().unwrap();
        let key = identity.public_key("alice@laptop");
        let line = key.to_string();
        assert!(line.starts_with("sockit-ed25519 "), "{line}");
        assert!(line.ends_with(" alice@laptop"), "{line}");
        let parsed: PublicKey = line.parse().unwrap();
        assert_eq!(parsed, key);
        let bare: PublicKey = key.hex().parse().unwrap();
        assert_eq!(bare.verifying_key(), key.verifying_key());
        assert_eq!(
            "ssh-ed25519 AAAA".parse::<PublicKey>(),
            Err(BadKey::Kind(PUBLIC_KEY_KIND))
        );
        assert_eq!("sockit-ed25519 abcd".parse::<PublicKey>(), Err(BadKey::Hex));
        // The identity point is a weak (small-order) key.
        let weak = format!("sockit-ed25519 01{}", "00".repeat(31));
        assert_eq!(weak.parse::<PublicKey>(), Err(BadKey::Invalid));
    }

    #[test]
    fn secret_key_text_is_refused_without_repeating_it() {
        let secret = format!("{SECRET_KEY_KIND} {}", "ab".repeat(32));
        assert_eq!(secret.parse::<PublicKey>(), Err(BadKey::Secret));
        let pem = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk=\n";
        assert_eq!(pem.parse::<PublicKey>(), Err(BadKey::Secret));
        assert!(!BadKey::Secret.to_string().contains("ab"));
    }

    #[test]
    fn a_proof_is_bound_to_its_challenge_user_and_key() {
        let identity = Identity::generate().unwrap();
        let other = Identity::generate().unwrap();
        let key = identity.public_key("").key;
        let challenge = [7u8; CHALLENGE_LEN];
        let proof = identity.sign_login(&challenge, "alice");
        assert!(verify_login(&key, &challenge, "alice", &proof));
        assert!(!verify_login(&key, &[8u8; CHALLENGE_LEN], "alice", &proof));
        assert!(!verify_login(&key, &challenge, "bob", &proof));
        assert!(!verify_login(
            &other.public_key("").key,
            &challenge,
            "alice",
            &proof
        ));
        assert!(!verify_login(&key, &challenge, "alice", "zz"));
    }

    #[test]
    fn identity_files_are_private_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("id_ed25519");
        let identity = Identity::generate().unwrap();
        identity.save(&path, "me@here").unwrap();
        let loaded = Identity::load(&path).unwrap();
        assert_eq!(loaded.public_hex(), identity.public_hex());
        let public = std::fs::read_to_string(public_key_path(&path)).unwrap();
        assert_eq!(
            public.trim().parse::<PublicKey>().unwrap(),
            identity.public_key("me@here")
        );
        assert!(matches!(
            identity.save(&path, ""),
            Err(IdentityError::Io { .. })
        ));

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = Identity::load(&path).unwrap_err();
        assert!(
            matches!(err, IdentityError::TooOpen { mode: 0o644, .. }),
            "{err}"
        );
    }
}
