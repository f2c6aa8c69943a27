//! Logins and sessions: `POST /api/login` checks a user's password with the core's login (the
//! same users file, argon2 check and lockouts as the framed port) and sets a session cookie;
//! the login wall lets a request through only with a live one when the server has accounts.
//!
//! A session is a random 256-bit token held by the server (only its BLAKE3 hash is kept, so a
//! lookup reveals nothing by its timing), in a cookie that is `HttpOnly`, `SameSite=Strict`,
//! `Secure` under TLS, and expires with the session (`--http-session-ttl`). Sessions past
//! `--http-max-sessions` push out the oldest.

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::rejection::JsonRejection;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use sockit_proto::message::LoginRequest;
use sockit_proto::ErrorCode;

use super::routes::{error_response, json_body, MapStatus, WebState};
use super::{ConnInfo, Web};
use crate::core::{login, OpError, Session};

/// The session cookie's name.
pub(crate) const COOKIE: &str = "sockit_session";

/// Bytes in a session token.
const TOKEN_LEN: usize = 32;

/// A live session.
#[derive(Debug)]
struct Live {
    user: String,
    expires: Instant,
}

/// The live sessions, by the hash of their token.
#[derive(Debug)]
pub(crate) struct Sessions {
    live: Mutex<HashMap<[u8; 32], Live>>,
    ttl: Duration,
    max: usize,
}

impl Sessions {
    pub(crate) fn new(ttl: Duration, max: usize) -> Sessions {
        Sessions {
            live: Mutex::new(HashMap::new()),
            ttl,
            max: max.max(1),
        }
    }

    /// A new session for `user`: its token, hex.
    fn open(&self, user: &str) -> Result<String, OpError> {
        let mut token = [0u8; TOKEN_LEN];
        getrandom::fill(&mut token).map_err(|err| {
            OpError::new(
                ErrorCode::Internal,
                format!("no randomness for a session: {err}"),
            )
        })?;
        let now = Instant::now();
        let mut live = self.live.lock().expect("sessions lock");
        live.retain(|_, session| session.expires > now);
        while live.len() >= self.max {
            let oldest = live
                .iter()
                .min_by_key(|(_, session)| session.expires)
                .map(|(key, _)| *key);
            match oldest {
                Some(key) => live.remove(&key),
                None => break,
            };
        }
        live.insert(
            key_of(&token),
            Live {
                user: user.to_owned(),
                expires: now + self.ttl,
            },
        );
        Ok(hex::encode(token))
    }

    /// The user of the live session whose token the request's cookie carries.
    fn user_of(&self, headers: &HeaderMap) -> Option<String> {
        let token = token_in(headers)?;
        let live = self.live.lock().expect("sessions lock");
        live.get(&key_of(&token))
            .filter(|session| session.expires > Instant::now())
            .map(|session| session.user.clone())
    }

    /// Ends the session whose token the request's cookie carries.
    fn close(&self, headers: &HeaderMap) {
        if let Some(token) = token_in(headers) {
            self.live
                .lock()
                .expect("sessions lock")
                .remove(&key_of(&token));
        }
    }
}

/// What a session is kept under: the hash of its token.
fn key_of(token: &[u8]) -> [u8; 32] {
    *blake3::hash(token).as_bytes()
}

/// The session token in the request's cookies, if one is well formed.
fn token_in(headers: &HeaderMap) -> Option<Vec<u8>> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|cookies| cookies.split(';'))
        .filter_map(|cookie| cookie.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .and_then(|(_, value)| hex::decode(value).ok())
        .filter(|token| token.len() == TOKEN_LEN)
}

/// The `Set-Cookie` value for `token`, living `ttl`; `Secure` over HTTPS.
fn cookie(token: &str, ttl: Duration, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!(
        "{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        ttl.as_secs()
    )
}

/// The login wall: with accounts, a request without a live session gets `401`.
pub(super) async fn require_login(
    State(web): State<Arc<Web>>,
    request: Request,
    next: Next,
) -> Response {
    if web.core.accounts.is_some() && web.sessions.user_of(request.headers()).is_none() {
        return error_response(&OpError::new(
            ErrorCode::Unauthorized,
            "log in first: this server has accounts (POST /api/login)",
        ));
    }
    next.run(request).await
}

/// The body of `POST /api/login`.
#[derive(Debug, Deserialize)]
pub(super) struct Credentials {
    user: String,
    password: String,
}

/// What `POST /api/login` and `GET /api/session` answer.
#[derive(Debug, Serialize)]
pub(super) struct Whoami {
    /// Whether the server has accounts (and so a login wall).
    accounts: bool,
    /// The session's user, if logged in.
    user: Option<String>,
}

/// `POST /api/login`: `200` with a session cookie, or `401` (with `Retry-After` while locked
/// out).
pub(super) async fn login(
    State(web): WebState,
    Extension(conn): Extension<ConnInfo>,
    credentials: Result<Json<Credentials>, JsonRejection>,
) -> Response {
    let credentials = match json_body(credentials) {
        Ok(credentials) => credentials,
        Err(refused) => return *refused,
    };
    match check(&web, conn.peer.ip(), &credentials).await {
        Ok(user) => match web.sessions.open(&user) {
            Ok(token) => {
                let set = cookie(&token, web.sessions.ttl, web.secure);
                let mut response = Json(Whoami {
                    accounts: true,
                    user: Some(user),
                })
                .into_response();
                response.headers_mut().insert(
                    header::SET_COOKIE,
                    HeaderValue::from_str(&set).expect("hex in a cookie"),
                );
                response
            }
            Err(err) => error_response(&err),
        },
        Err(err) => error_response(&err).map_status(StatusCode::UNAUTHORIZED),
    }
}

/// The core's password login for `credentials` from `peer`: the user's name, once checked.
async fn check(web: &Web, peer: IpAddr, credentials: &Credentials) -> Result<String, OpError> {
    if web.core.accounts.is_none() {
        return Err(OpError::new(
            ErrorCode::Disabled,
            "this server has no accounts (it runs without --users)",
        ));
    }
    let mut session = Session::new(peer);
    let request = LoginRequest {
        user: Cow::Borrowed(&credentials.user),
        password: Some(Cow::Borrowed(&credentials.password)),
        key: None,
        signature: None,
    };
    login::login(&web.core, &mut session, &request)
        .await
        .map(|reply| reply.user)
}

/// `POST /api/logout`: ends the session and clears its cookie.
pub(super) async fn logout(State(web): WebState, headers: HeaderMap) -> Response {
    web.sessions.close(&headers);
    let clear = cookie("", Duration::ZERO, web.secure);
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&clear).expect("a cookie"),
    );
    response
}

/// `GET /api/session`: whether the server has accounts and who this session is.
pub(super) async fn whoami(State(web): WebState, headers: HeaderMap) -> Json<Whoami> {
    Json(Whoami {
        accounts: web.core.accounts.is_some(),
        user: web.sessions.user_of(&headers),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_cookie(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn only_a_token_the_server_made_opens_a_session_and_logout_ends_it() {
        let sessions = Sessions::new(Duration::from_secs(60), 10);
        let token = sessions.open("alice").unwrap();
        let headers = with_cookie(&format!("theme=dark; {COOKIE}={token}"));
        assert_eq!(sessions.user_of(&headers).as_deref(), Some("alice"));
        let forged = with_cookie(&format!("{COOKIE}={}", "ab".repeat(TOKEN_LEN)));
        assert_eq!(sessions.user_of(&forged), None);
        assert_eq!(
            sessions.user_of(&with_cookie(&format!("{COOKIE}=alice"))),
            None
        );
        sessions.close(&headers);
        assert_eq!(sessions.user_of(&headers), None);
    }

    #[test]
    fn sessions_expire_and_the_oldest_make_room() {
        let sessions = Sessions::new(Duration::ZERO, 10);
        let token = sessions.open("alice").unwrap();
        assert_eq!(
            sessions.user_of(&with_cookie(&format!("{COOKIE}={token}"))),
            None
        );
        let sessions = Sessions::new(Duration::from_secs(60), 2);
        let first = sessions.open("a").unwrap();
        std::thread::sleep(Duration::from_millis(2));
        let second = sessions.open("b").unwrap();
        std::thread::sleep(Duration::from_millis(2));
        let third = sessions.open("c").unwrap();
        let user = |token: &str| sessions.user_of(&with_cookie(&format!("{COOKIE}={token}")));
        assert_eq!(user(&first), None);
        assert_eq!(user(&second).as_deref(), Some("b"));
        assert_eq!(user(&third).as_deref(), Some("c"));
    }
}
