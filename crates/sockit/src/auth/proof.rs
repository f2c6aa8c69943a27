//! What a `login` request offers as proof, chosen from its fields alone: a password, or a key
//! with its signature over the challenge the session holds. No accounts and no I/O, so the
//! choice is tested (and fuzzed) on its own.

use sockit_proto::message::LoginRequest;

use super::keys::CHALLENGE_LEN;

/// The proof a `login` request offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Proof<'r> {
    /// `user` and `password`.
    Password(&'r str),
    /// `user`, `key` and `signature`, with the challenge the session held.
    Key {
        /// The public key text, as sent.
        key: &'r str,
        /// The signature, hex, as sent.
        signature: &'r str,
        /// The challenge it must sign.
        challenge: [u8; CHALLENGE_LEN],
    },
}

/// Why a `login` request offers no proof.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProofError {
    /// A key and a signature, but no challenge was asked for first.
    #[error("no challenge to sign: send `challenge` first, then `login` with its signature")]
    NoChallenge,
    /// Neither a password alone nor a key with a signature.
    #[error("login takes `user` with `password`, or `user` with `key` and `signature`")]
    Fields,
}

impl<'r> Proof<'r> {
    /// The proof `request` offers, with the challenge the session held.
    ///
    /// # Errors
    ///
    /// [`ProofError`] when the fields offer no proof, or a key proof has no challenge.
    pub fn of(
        request: &'r LoginRequest<'_>,
        challenge: Option<[u8; CHALLENGE_LEN]>,
    ) -> Result<Proof<'r>, ProofError> {
        match (
            request.password.as_deref(),
            request.key.as_deref(),
            request.signature.as_deref(),
            challenge,
        ) {
            (Some(password), None, None, _) => Ok(Proof::Password(password)),
            (None, Some(key), Some(signature), Some(challenge)) => Ok(Proof::Key {
                key,
                signature,
                challenge,
            }),
            (None, Some(_), Some(_), None) => Err(ProofError::NoChallenge),
            _ => Err(ProofError::Fields),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(
        password: Option<&str>,
        key: Option<&str>,
        signature: Option<&str>,
    ) -> LoginRequest<'static> {
        LoginRequest {
            user: "alice".into(),
            password: password.map(|p| p.to_owned().into()),
            key: key.map(|k| k.to_owned().into()),
            signature: signature.map(|s| s.to_owned().into()),
        }
    }

    #[test]
    fn a_password_alone_or_a_key_with_its_signature_is_a_proof() {
        let challenge = Some([1; CHALLENGE_LEN]);
        let password = request(Some("pw"), None, None);
        assert_eq!(Proof::of(&password, None), Ok(Proof::Password("pw")));
        let key = request(None, Some("k"), Some("s"));
        assert_eq!(
            Proof::of(&key, challenge),
            Ok(Proof::Key {
                key: "k",
                signature: "s",
                challenge: [1; CHALLENGE_LEN]
            })
        );
        assert_eq!(Proof::of(&key, None), Err(ProofError::NoChallenge));
    }

    #[test]
    fn anything_else_is_no_proof() {
        for fields in [
            request(None, None, None),
            request(Some("pw"), Some("k"), None),
            request(Some("pw"), None, Some("s")),
            request(Some("pw"), Some("k"), Some("s")),
            request(None, Some("k"), None),
            request(None, None, Some("s")),
        ] {
            assert_eq!(
                Proof::of(&fields, Some([0; CHALLENGE_LEN])),
                Err(ProofError::Fields),
                "{fields:?}"
            );
        }
    }
}
