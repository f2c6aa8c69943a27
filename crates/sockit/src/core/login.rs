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
//! for a while: `rate_limited`, with `retry_after` in seconds. A key login with a good
//! signature by a key that is not the user's is refused but not counted against the address:
//! it proves that the client holds a key (clients try theirs before a password), no guess.

use std::time::Duration;

use sockit_proto::message::{ChallengeReply, LoginReply, LoginRequest};
use sockit_proto::ErrorCode;

use super::{Core, OpError, Session};
use crate::auth::accounts::KeyCheck;
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
    // checks than the allowance; a success, or a key proof that is no guess, gives it back.
    let reservation = match accounts.reserve_failure(session.peer, penalised_user).await {
        Ok(reservation) => reservation,
        Err(wait) => return Err(locked_out(core, session, user, wait)),
    };

    let (method, outcome, refusal) = match (proof, check_slot) {
        (Proof::Password(password), Some(slot)) => (
            "password",
            if accounts.verify_password(slot, user, password).await {
                Outcome::Accepted
            } else {
                Outcome::Refused
            },
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
            match accounts.verify_key(user, key, &challenge, signature) {
                KeyCheck::Accepted => Outcome::Accepted,
                KeyCheck::NotAuthorised => Outcome::NoGuess,
                KeyCheck::BadSignature => Outcome::Refused,
            },
            "key not accepted for this user name",
        ),
    };
    match outcome {
        Outcome::Accepted => {
            accounts
                .succeeded(session.peer, penalised_user, reservation)
                .await;
            tracing::info!(user, method, peer = %session.peer, "logged in");
            session.user = Some(user.to_owned());
            session.failures = 0;
            return Ok(LoginReply {
                user: user.to_owned(),
            });
        }
        Outcome::NoGuess => {
            // Signed by a key that is not this user's: whoever sent it holds a key (a client
            // trying its key before a password does this), which is no guess at anything.
            accounts.give_back(session.peer, reservation).await;
            tracing::info!(
                user,
                method,
                peer = %session.peer,
                reason = "a good signature by a key not authorised for the user: not counted",
                "login failed"
            );
        }
        Outcome::Refused => {
            tracing::info!(user, method, peer = %session.peer, "login failed");
        }
    }
    let ends_session = count_failure(core, session);
    Err(OpError {
        ends_session,
        ..OpError::new(
            ErrorCode::Unauthorized,
            format!("{refusal}{}", closing_note(ends_session)),
        )
    })
}

/// What a checked proof comes to.
enum Outcome {
    Accepted,
    /// Refused, but no guess: its reserved failure is given back.
    NoGuess,
    Refused,
}

/// The refusal of a login while locked out: `rate_limited` with the time left.
fn locked_out(core: &Core, session: &mut Session, user: &str, wait: Duration) -> OpError {
    tracing::info!(user, peer = %session.peer, "login refused: locked out after failures");
    let ends_session = count_failure(core, session);
    let message = format!(
        "too many failed logins; try again in {}{}",
        round_up_seconds(wait),
        closing_note(ends_session)
    );
    let millis = wait.as_micros().div_ceil(1000).max(1);
    OpError {
        retry_after: Some(millis as f64 / 1000.0),
        ends_session,
        ..OpError::new(ErrorCode::RateLimited, message)
    }
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
