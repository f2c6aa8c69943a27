//! `ping` and `echo`: the smallest operations, and the hot path of the server.

use sockit_proto::{ErrorCode, Header};
use tokio::io::{AsyncRead, AsyncWrite};

use super::{refuse, Flow};
use crate::connection::{ConnError, Connection};
use crate::reply;

/// `ping`: no body in, `{"ok":true}` out.
pub(super) async fn ping<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    header: &Header,
) -> Result<Flow, ConnError> {
    if header.body_len() > 0 {
        return refuse(conn, header, ErrorCode::BadRequest, &"ping takes no body").await;
    }
    reply::ok(conn.write_buf(), header.id())
        .finish(0)
        .expect("a ping reply always encodes");
    Ok(Flow::Continue)
}

/// `echo`: the body comes back unchanged. The body is held in memory, so it is limited to
/// [`Limits::max_buffered_body`](sockit_proto::Limits::max_buffered_body).
pub(super) async fn echo<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Connection<S>,
    header: &Header,
) -> Result<Flow, ConnError> {
    let limit = conn.limits().max_buffered_body();
    if header.body_len() > limit {
        let message = format!(
            "echo body of {} bytes exceeds the limit of {limit} bytes",
            header.body_len()
        );
        return refuse(conn, header, ErrorCode::TooLarge, &message).await;
    }
    let body = conn.read_body().await?;
    reply::ok(conn.write_buf(), header.id())
        .finish(body.len() as u64)
        .expect("an echo reply always encodes");
    conn.write_body(&body).await?;
    Ok(Flow::Continue)
}
