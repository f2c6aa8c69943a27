//! `challenge` and `login`: proving who a session is.
//!
//! Password login: `user` and `password`. Key login: `challenge` returns 32 fresh random
//! bytes (hex) kept in the session; the client signs them (see
//! [`crate::auth::keys::login_message`], over TLS with the challenge bound to the connection
//! by [`bind_to_channel`]) and sends `user`, `key` and `signature`. Any `login`
//! uses up the challenge, so a proof works once.
//!
//! Failures answer `unauthorized` with the same words whether the user exists or not. The
//! session ends after [`LoginConfig::max_tries`](crate::config::LoginConfig) failures, and
//! after repeated failures a source address (and, for passwords, a user name) is locked out
//! for a while: `rate_limited`, with `retry_after` in seconds.

use std::time::Duration;

use sockit_proto::message::{ChallengeReply, LoginReply, LoginRequest};
use sockit_proto::ErrorCode;

use super::{Core, OpError, Session};
use crate::auth::keys::{bind_to_channel, CHALLENGE_LEN};
use crate::auth::proof::Proof;

/// `challenge`: fresh random bytes to sign for a key login, kept in the session.
///
/// # Errors
///
/// `internal` when the system has no randomness to give.
pub(crate) fn challenge(session: &mut Session) -> Result<ChallengeReply, OpError> {
    let mut challenge = [0u8; CHALLENGE_LEN];
    getrandom::fill(&mut challenge).map_err(|err| {
        OpError::new(
            ErrorCode::Internal,
            format!("no randomness for a challenge: {err}"),
        )
    })?;
    session.challenge = Some(challenge);
    Ok(ChallengeReply {
        challenge: hex::encode(challenge),
    })
}

/// `login`, by password or by a signed challenge.
///
/// # Errors
///
/// `unauthorized` for a wrong proof, `rate_limited` while locked out, `timeout` after the
/// login grace, `bad_request` for a request that offers no proof; the error says when the
/// session cannot go on.
pub(crate) async fn login(
    core: &Core,
    session: &mut Session,
    request: &LoginRequest<'_>,
) -> Result<LoginReply, OpError> {
    let accounts = core
        .accounts
        .as_ref()
        .expect("authorize lets login through only with accounts");
    let grace = core.login.grace;
    if session.connected.elapsed() > grace {
        let message = format!(
            "a connection must log in within {}s of connecting; connect again",
            grace.as_secs_f64()
        );
        return Err(OpError {
            ends_session: true,
            ..OpError::new(ErrorCode::Timeout, message)
        });
    }
    let user = request.user.as_ref();
    // Any login attempt logs the session out and uses up its challenge.
    session.user = None;
    let challenge = session.challenge.take();
    let challenge =
        challenge.map(|challenge| bind_to_channel(&challenge, session.binding.as_ref()));
    let proof = Proof::of(request, challenge).map_err(OpError::bad_request)?;
    // Password failures count against the user name as well as the source; keys cannot be
    // guessed, so they only count against the source.
    let penalised_user = matches!(proof, Proof::Password(_)).then_some(user);

    // A password check waits for its turn first (one at a time per source, a few at once in
    // all, for at most the queue timeout): a login that gets none is `busy` and counts nothing.
    let check_slot = match proof {
        Proof::Password(_) => Some(accounts.password_slot(session.peer).await.map_err(
            |refusal| {
                OpError::busy(format!(
                    "every password check is taken (waited {:?}); try again later",
                    super::waited(refusal)
                ))
            },
        )?),
        Proof::Key { .. } => None,
    };

    // The failure counts before the proof is checked, so guesses sent in parallel get no more
    // checks than the allowance; a success gives it back.
    if let Err(wait) = accounts.reserve_failure(session.peer, penalised_user).await {
        tracing::info!(user, peer = %session.peer, "login refused: locked out after failures");
        let ends_session = count_failure(core, session);
        let message = format!(
            "too many failed logins; try again in {}{}",
            round_up_seconds(wait),
            closing_note(ends_session)
        );
        let millis = wait.as_micros().div_ceil(1000).max(1);
        return Err(OpError {
            retry_after: Some(millis as f64 / 1000.0),
            ends_session,
            ..OpError::new(ErrorCode::RateLimited, message)
        });
    }

    let (method, verified, refusal) = match (proof, check_slot) {
        (Proof::Password(password), Some(slot)) => (
            "password",
            accounts.verify_password(slot, user, password).await,
            "wrong user name or password",
        ),
        (Proof::Password(_), None) => unreachable!("a password login has its check slot"),
        (
            Proof::Key {
                key,
                signature,
                challenge,
            },
            _,
        ) => (
            "key",
            accounts.verify_key(user, key, &challenge, signature),
            "key not accepted for this user name",
        ),
    };
    if verified {
        accounts.succeeded(session.peer, penalised_user).await;
        tracing::info!(user, method, peer = %session.peer, "logged in");
        session.user = Some(user.to_owned());
        session.failures = 0;
        return Ok(LoginReply {
            user: user.to_owned(),
        });
    }
    tracing::info!(user, method, peer = %session.peer, "login failed");
    let ends_session = count_failure(core, session);
    Err(OpError {
        ends_session,
        ..OpError::new(
            ErrorCode::Unauthorized,
            format!("{refusal}{}", closing_note(ends_session)),
        )
    })
}

/// Counts a failed attempt; whether it was the session's last allowed.
fn count_failure(core: &Core, session: &mut Session) -> bool {
    session.failures += 1;
    session.failures >= core.login.max_tries
}

/// What a failed login's message adds when it is the session's last.
fn closing_note(ends_session: bool) -> &'static str {
    if ends_session {
        "; too many failures on this connection, so it closes"
    } else {
        ""
    }
}

fn round_up_seconds(wait: Duration) -> String {
    match wait.as_millis().div_ceil(1000) {
        1 => "1 second".to_owned(),
        secs => format!("{secs} seconds"),
    }
}
