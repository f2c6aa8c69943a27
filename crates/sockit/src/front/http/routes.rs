//! The router: which path goes to which handler, the login wall in front of everything but the
//! page and `/api/login`, the cross-site checks, and how an [`OpError`] becomes a response.

use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use sockit_proto::message::ErrorReply;
use sockit_proto::ErrorCode;

use super::{assets, files, session, tus, ws, Web, MAX_HEAD};
use crate::core::OpError;

/// The largest JSON body a small API request (`/api/login`) may have.
const MAX_JSON_BODY: usize = 16 * 1024;

/// Every route of the front end.
pub(super) fn router(web: Arc<Web>) -> Router {
    let guarded = Router::new()
        .route("/api/files", get(files::list))
        .route("/files/{name}", get(files::download).put(files::upload))
        .route("/api/uploads", post(tus::create).options(tus::options))
        .route(
            "/api/uploads/{id}",
            axum::routing::head(tus::offset)
                .patch(tus::append)
                .options(tus::options),
        )
        .route("/chat", get(ws::chat))
        .layer(middleware::from_fn_with_state(
            Arc::clone(&web),
            session::require_login,
        ));
    Router::new()
        .route("/", get(assets::index))
        .route("/assets/{file}", get(assets::asset_file))
        .route(
            "/api/login",
            post(session::login).layer(DefaultBodyLimit::max(MAX_JSON_BODY)),
        )
        .route("/api/logout", post(session::logout))
        .route("/api/session", get(session::whoami))
        .merge(guarded)
        .layer(middleware::from_fn(same_origin_only))
        .layer(middleware::from_fn(head_within_limit))
        .with_state(web)
}

/// Refuses (`403`) a request that changes something, or opens the chat WebSocket, when the
/// browser says it comes from another site: `Sec-Fetch-Site` other than `same-origin` or
/// `none`, or an `Origin` whose host is not the one asked. Clients that send neither (curl,
/// tus clients outside a browser) are not browsers acting for another site.
async fn same_origin_only(request: Request, next: Next) -> Response {
    let changes = !matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    );
    let upgrade = request.headers().contains_key(header::UPGRADE);
    if (changes || upgrade) && cross_site(request.headers()) {
        return error_response(&OpError::new(
            ErrorCode::Unauthorized,
            "cross-site request refused",
        ))
        .map_status(StatusCode::FORBIDDEN);
    }
    next.run(request).await
}

/// Answers `431` and closes the connection when the request's head is larger than
/// [`MAX_HEAD`]. hyper's read buffer, bounded by the same size, refuses a head that arrives in
/// pieces; this catches one that came in a single read.
async fn head_within_limit(request: Request, next: Next) -> Response {
    let line = request.method().as_str().len() + request.uri().to_string().len() + 11;
    let fields: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if line + fields + 2 > MAX_HEAD {
        let mut response = error_response(&OpError::new(
            ErrorCode::TooLarge,
            format!("the request head is over {MAX_HEAD} bytes"),
        ))
        .map_status(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return response;
    }
    next.run(request).await
}

/// Whether the browser's headers say the request comes from another site.
fn cross_site(headers: &HeaderMap) -> bool {
    let fetch_site = headers
        .get("sec-fetch-site")
        .map(|site| site.as_bytes() != b"same-origin" && site.as_bytes() != b"none");
    if fetch_site == Some(true) {
        return true;
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return false;
    };
    let host = headers.get(header::HOST).map(HeaderValue::as_bytes);
    let origin_host = origin
        .to_str()
        .ok()
        .and_then(|origin| origin.split_once("://"))
        .map(|(_, host)| host.as_bytes());
    origin_host.is_none() || origin_host != host
}

/// The status an error code answers with.
pub(super) fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::BadName
        | ErrorCode::BadRequest
        | ErrorCode::BadFrame
        | ErrorCode::UnknownOp
        | ErrorCode::HashMismatch => StatusCode::BAD_REQUEST,
        ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorCode::Disabled => StatusCode::FORBIDDEN,
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::Exists | ErrorCode::BadOffset => StatusCode::CONFLICT,
        ErrorCode::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::Timeout => StatusCode::REQUEST_TIMEOUT,
        ErrorCode::Busy | ErrorCode::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::NoSpace => StatusCode::INSUFFICIENT_STORAGE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The response for `err`: its status, the framed protocol's error reply as JSON, and
/// `Retry-After` when it says when to come back.
pub(super) fn error_response(err: &OpError) -> Response {
    let reply = ErrorReply {
        retry_after: err.retry_after,
        ..ErrorReply::new(err.code, &err.message)
    };
    let body = serde_json::to_vec(&reply).expect("an error reply serialises");
    let mut response = (
        status_of(err.code),
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response();
    if let Some(seconds) = err.retry_after {
        let seconds = seconds.ceil().max(1.0) as u64;
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

/// The parameters of a query string, or the response for a bad one: `400` with the framed
/// error reply (`bad_request`), as every other refusal of the API.
pub(super) fn query_params<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, Box<Response>> {
    query
        .map(|Query(params)| params)
        .map_err(|rejection| refusal(rejection.body_text(), rejection.status()))
}

/// A JSON request body, or the response for a bad one (`400`, `415` without the JSON content
/// type, `422` for the wrong fields) with the framed error reply (`bad_request`).
pub(super) fn json_body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, Box<Response>> {
    body.map(|Json(body)| body)
        .map_err(|rejection| refusal(rejection.body_text(), rejection.status()))
}

/// `bad_request` with `why`, answered with `status`.
fn refusal(why: String, status: StatusCode) -> Box<Response> {
    Box::new(error_response(&OpError::bad_request(why)).map_status(status))
}

/// A response with another status.
pub(super) trait MapStatus {
    fn map_status(self, status: StatusCode) -> Self;
}

impl MapStatus for Response {
    fn map_status(mut self, status: StatusCode) -> Response {
        *self.status_mut() = status;
        self
    }
}

/// `State` for handlers.
pub(super) type WebState = State<Arc<Web>>;
