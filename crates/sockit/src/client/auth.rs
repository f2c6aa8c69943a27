//! Logging in: by password, or by signing the server's challenge with an ed25519 key.

use sockit_proto::message::{ChallengeReply, LoginRequest, Request};

use super::{printable, Client, ClientError, Connect, Login};
use crate::auth::keys::{self, Identity, CHALLENGE_LEN};

impl<C: Connect> Client<C> {
    /// `challenge`: fresh bytes from the server for a key login on this connection.
    ///
    /// # Errors
    ///
    /// `disabled` from a server without accounts; others as [`Client::call`].
    pub async fn challenge(&mut self) -> Result<[u8; CHALLENGE_LEN], ClientError> {
        let reply = self.call(&Request::Challenge, b"").await?;
        let parsed: ChallengeReply = reply.parse()?;
        let mut challenge = [0u8; CHALLENGE_LEN];
        hex::decode_to_slice(&parsed.challenge, &mut challenge)
            .map_err(|_| ClientError::BadReply("challenge is not 64 hex digits".into()))?;
        Ok(challenge)
    }

    /// Whether a password may be sent for `user` on this connection: it is
    /// [private](Client::is_private), or clear passwords were
    /// [allowed](Client::allow_clear_passwords). Ask before prompting someone for one.
    ///
    /// # Errors
    ///
    /// [`ClientError::ClearPassword`] when it may not.
    pub fn password_allowed(&self, user: &str) -> Result<(), ClientError> {
        if self.is_private() || self.clear_passwords {
            return Ok(());
        }
        Err(ClientError::ClearPassword {
            user: printable(user),
            server: self
                .peer
                .map_or_else(|| "the server".to_owned(), |peer| peer.to_string()),
        })
    }

    /// Logs in with a password; a reconnection logs in again with it.
    ///
    /// # Errors
    ///
    /// `unauthorized` for a wrong user name or password, `rate_limited` while locked out,
    /// `disabled` from a server without accounts; [`ClientError::ClearPassword`], before
    /// anything is sent, over a connection that is not [private](Client::is_private) unless
    /// [allowed](Client::allow_clear_passwords). A reconnection checks again.
    pub async fn login_password(&mut self, user: &str, password: &str) -> Result<(), ClientError> {
        self.password_allowed(user)?;
        let request = Request::Login(LoginRequest {
            user: user.into(),
            password: Some(password.into()),
            key: None,
            signature: None,
        });
        self.call(&request, b"").await?;
        self.login = Some(Login::Password {
            user: user.to_owned(),
            password: password.to_owned(),
        });
        Ok(())
    }

    /// Logs in with a key: asks for a challenge, signs it (with the TLS channel binding, over
    /// TLS), sends the proof; a reconnection logs in again with it.
    ///
    /// # Errors
    ///
    /// `unauthorized` when the key is not authorised for `user`; others as
    /// [`Client::login_password`].
    pub async fn login_key(&mut self, user: &str, identity: &Identity) -> Result<(), ClientError> {
        let challenge = self.challenge().await?;
        let challenge = keys::bind_to_channel(&challenge, self.binding.as_ref());
        let signature = identity.sign_login(&challenge, user);
        let request = Request::Login(LoginRequest {
            user: user.into(),
            password: None,
            key: Some(identity.public_hex().into()),
            signature: Some(signature.into()),
        });
        self.call(&request, b"").await?;
        self.login = Some(Login::Key {
            user: user.to_owned(),
            identity: identity.clone(),
        });
        Ok(())
    }
}
