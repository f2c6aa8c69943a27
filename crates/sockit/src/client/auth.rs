//! Logging in: by password, or by signing the server's challenge with an ed25519 key.

use std::io;

use serde::Deserialize;

use super::{Client, ClientError};
use crate::auth::keys::{Identity, CHALLENGE_LEN};

impl Client {
    /// `challenge`: fresh bytes from the server for a key login on this connection.
    ///
    /// # Errors
    ///
    /// `disabled` from a server without accounts; others as [`Client::call`].
    pub async fn challenge(&mut self) -> Result<[u8; CHALLENGE_LEN], ClientError> {
        #[derive(Deserialize)]
        struct ChallengeReply {
            challenge: String,
        }
        let reply = self.call_with("challenge", |_| {}).await?;
        let parsed: ChallengeReply = reply
            .header
            .parse()
            .map_err(|err| ClientError::BadReply(err.to_string()))?;
        let mut challenge = [0u8; CHALLENGE_LEN];
        hex::decode_to_slice(&parsed.challenge, &mut challenge)
            .map_err(|_| ClientError::BadReply("challenge is not 64 hex digits".into()))?;
        Ok(challenge)
    }

    /// Logs in with a password.
    ///
    /// # Errors
    ///
    /// `unauthorized` for a wrong user name or password, `rate_limited` while locked out,
    /// `disabled` from a server without accounts.
    pub async fn login_password(&mut self, user: &str, password: &str) -> Result<(), ClientError> {
        self.call_with("login", |header| {
            header.field("user", user).field("password", password);
        })
        .await
        .map(drop)
    }

    /// Logs in with a key: asks for a challenge, signs it, sends the proof.
    ///
    /// # Errors
    ///
    /// `unauthorized` when the key is not authorised for `user`; others as
    /// [`Client::login_password`].
    pub async fn login_key(&mut self, user: &str, identity: &Identity) -> Result<(), ClientError> {
        let challenge = self.challenge().await?;
        let signature = identity.sign_login(&challenge, user);
        self.call_with("login", |header| {
            header
                .field("user", user)
                .field("key", &identity.public_hex())
                .field("signature", &signature);
        })
        .await
        .map(drop)
    }
}

impl ClientError {
    /// The reply's `code` when the server refused the request.
    pub fn remote_code(&self) -> Option<&str> {
        match self {
            ClientError::Remote { code, .. } => Some(code),
            _ => None,
        }
    }

    /// Whether the failure is a broken pipe on our side (the reader of our output went away).
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, ClientError::Local { source, .. } if source.kind() == io::ErrorKind::BrokenPipe)
    }
}
