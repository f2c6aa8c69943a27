//! `challenge` and `login`, and the per-connection [`Session`] they change.
//!
//! Password login: `{"op":"login","user":U,"password":P}`. Key login: `{"op":"challenge"}`
//! returns 32 fresh random bytes (hex) kept for this connection; the client signs them (see
//! [`crate::auth::keys::login_message`]) and sends `{"op":"login","user":U,"key":K,
//! "signature":S}`. Any `login` uses up the challenge, so a proof works once.
//!
//! Failures answer `unauthorized` with the same words whether the user exists or not. The
//! connection closes after [`LoginConfig::max_tries`](crate::config::LoginConfig) failures,
//! and after repeated failures a source address (and, for passwords, a user name) is locked
//! out for a while: `rate_limited`, with `retry_after` in seconds.

use std::borrow::Cow;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde::Deserialize;
use sockit_proto::{ErrorCode, Header};
use tokio::io::{AsyncRead, AsyncWrite};

use super::{refuse, Context, Flow};
use crate::auth::keys::CHALLENGE_LEN;
use crate::connection::{ConnError, Connection};
use crate::reply;

/// What a connection has proved about itself.
#[derive(Debug)]
pub(crate) struct Session {
    peer: IpAddr,
    connected: Instant,
    user: Option<String>,
    challenge: Option<[u8; CHALLENGE_LEN]>,
    failures: u32,
}

impl Session {
    pub(crate) fn new(peer: IpAddr) -> Session {
        Session {
            peer,
            connected: Instant::now(),
            user: None,
            challenge: None,
            failures: 0,
        }
    }

    /// The user this connection logged in as.
    pub(crate) fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }
}

#[derive(Deserialize)]
struct LoginRequest<'a> {
    #[serde(borrow)]
    user: Cow<'a, str>,
    #[serde(borrow, default)]
    password: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    key: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    signature: Option<Cow<'a, str>>,
}

const NO_ACCOUNTS: &str = "this server has no accounts (it runs without --users)";

/// `challenge`: fresh random bytes to sign for a key login.
pub(super) async fn challenge<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    header: &Header,
    context: &Context,
    session: &mut Session,
) -> Result<Flow, ConnError> {
    if context.accounts.is_none() {
        return refuse(conn, header, ErrorCode::Disabled, &NO_ACCOUNTS).await;
    }
    if header.body_len() > 0 {
        return refuse(
            conn,
            header,
            ErrorCode::BadRequest,
            &"challenge takes no body",
        )
        .await;
    }
    let mut challenge = [0u8; CHALLENGE_LEN];
    if let Err(err) = getrandom::fill(&mut challenge) {
        let message = format!("no randomness for a challenge: {err}");
        return refuse(conn, header, ErrorCode::Internal, &message).await;
    }
    session.challenge = Some(challenge);
    reply::ok(conn.write_buf(), header.id())
        .field("challenge", &hex::encode(challenge))
        .finish(0)
        .expect("a challenge reply always encodes");
    Ok(Flow::Continue)
}

/// `login`, by password or by a signed challenge.
pub(super) async fn login<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    header: &Header,
    context: &Context,
    session: &mut Session,
) -> Result<Flow, ConnError> {
    let Some(accounts) = &context.accounts else {
        return refuse(conn, header, ErrorCode::Disabled, &NO_ACCOUNTS).await;
    };
    if header.body_len() > 0 {
        return refuse(conn, header, ErrorCode::BadRequest, &"login takes no body").await;
    }
    let grace = context.login.grace;
    if session.connected.elapsed() > grace {
        let message = format!(
            "a connection must log in within {}s of connecting; connect again",
            grace.as_secs_f64()
        );
        reply::error(conn.write_buf(), header.id(), ErrorCode::Timeout, &message);
        return Ok(Flow::Close);
    }
    let request: LoginRequest<'_> = match header.parse() {
        Ok(request) => request,
        Err(err) => return refuse(conn, header, ErrorCode::BadRequest, &err).await,
    };
    let user = request.user.as_ref();
    // Any login attempt logs the connection out and uses up its challenge.
    session.user = None;
    let challenge = session.challenge.take();
    let proof = match (
        &request.password,
        &request.key,
        &request.signature,
        challenge,
    ) {
        (Some(password), None, None, _) => Proof::Password(password),
        (None, Some(key), Some(signature), Some(challenge)) => Proof::Key {
            key,
            signature,
            challenge,
        },
        (None, Some(_), Some(_), None) => {
            let message =
                "no challenge to sign: send `challenge` first, then `login` with its signature";
            return refuse(conn, header, ErrorCode::BadRequest, &message).await;
        }
        _ => {
            let message =
                "login takes `user` with `password`, or `user` with `key` and `signature`";
            return refuse(conn, header, ErrorCode::BadRequest, &message).await;
        }
    };
    // Password failures count against the user name as well as the source; keys cannot be
    // guessed, so they only count against the source.
    let penalised_user = matches!(proof, Proof::Password(_)).then_some(user);

    if let Err(wait) = accounts.check_penalty(session.peer, penalised_user) {
        tracing::info!(user, peer = %session.peer, "login refused: locked out after failures");
        let flow = count_failure(session, context);
        let message = format!(
            "too many failed logins; try again in {}{}",
            round_up_seconds(wait),
            closing_note(flow)
        );
        reply::error_with(
            conn.write_buf(),
            header.id(),
            ErrorCode::RateLimited,
            &message,
            |reply| {
                let millis = wait.as_micros().div_ceil(1000).max(1);
                reply.field("retry_after", &(millis as f64 / 1000.0));
            },
        );
        return Ok(flow);
    }

    let (method, verified, refusal) = match proof {
        Proof::Password(password) => (
            "password",
            accounts.verify_password(user, password).await,
            "wrong user name or password",
        ),
        Proof::Key {
            key,
            signature,
            challenge,
        } => (
            "key",
            accounts.verify_key(user, key, &challenge, signature),
            "key not accepted for this user name",
        ),
    };
    accounts.record(session.peer, penalised_user, verified);
    if verified {
        tracing::info!(user, method, peer = %session.peer, "logged in");
        session.user = Some(user.to_owned());
        session.failures = 0;
        reply::ok(conn.write_buf(), header.id())
            .field("user", user)
            .finish(0)
            .expect("a login reply always encodes");
        return Ok(Flow::Continue);
    }
    tracing::info!(user, method, peer = %session.peer, "login failed");
    let flow = count_failure(session, context);
    let message = format!("{refusal}{}", closing_note(flow));
    reply::error(
        conn.write_buf(),
        header.id(),
        ErrorCode::Unauthorized,
        &message,
    );
    Ok(flow)
}

/// What a `login` request offers as proof.
enum Proof<'r> {
    Password(&'r str),
    Key {
        key: &'r str,
        signature: &'r str,
        challenge: [u8; CHALLENGE_LEN],
    },
}

/// Counts a failed attempt on the connection; the last one allowed closes it.
fn count_failure(session: &mut Session, context: &Context) -> Flow {
    session.failures += 1;
    if session.failures >= context.login.max_tries {
        Flow::Close
    } else {
        Flow::Continue
    }
}

/// What a failed login's message adds when it is the connection's last.
fn closing_note(flow: Flow) -> &'static str {
    match flow {
        Flow::Close => "; too many failures on this connection, so it closes",
        Flow::Continue => "",
    }
}

fn round_up_seconds(wait: Duration) -> String {
    match wait.as_millis().div_ceil(1000) {
        1 => "1 second".to_owned(),
        secs => format!("{secs} seconds"),
    }
}
