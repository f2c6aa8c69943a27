//! The framed protocol's connection loop: read a request, run it, repeat.

use std::net::SocketAddr;
use std::sync::Arc;

use sockit_proto::{ErrorCode, Limits};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::accept::TcpService;
use crate::config::ServerConfig;
use crate::connection::{Connection, Deadlines};
use crate::reply;
use crate::service::{self, Context, Flow, Session};

/// Serves the framed protocol.
#[derive(Debug)]
pub(crate) struct Framed {
    limits: Limits,
    deadlines: Deadlines,
    context: Context,
}

impl Framed {
    pub(crate) fn new(config: &ServerConfig, context: Context) -> Framed {
        Framed {
            context,
            limits: config.limits,
            deadlines: Deadlines {
                header: Some(config.header_timeout),
                idle: Some(config.idle_timeout),
            },
        }
    }
}

impl TcpService for Framed {
    async fn serve(self: Arc<Self>, stream: TcpStream, peer: SocketAddr, stop: CancellationToken) {
        // Replies are batched by the connection; Nagle's delay would only add latency.
        let _ = stream.set_nodelay(true);
        let mut conn = Connection::new(stream, self.limits, self.deadlines);
        conn.stop_when(stop);
        let mut session = Session::new(peer.ip());
        loop {
            let header = match conn.read_header().await {
                Ok(Some(header)) => header,
                Ok(None) => return conn.close().await,
                Err(err) => {
                    tracing::debug!(%err, "bad request stream");
                    return conn.fail(&err).await;
                }
            };
            let outcome =
                match service::handle(&mut conn, header, &self.context, &mut session).await {
                    Ok(Flow::Continue) => conn.flush_if_full().await.map_err(Into::into),
                    Ok(Flow::Close) => return conn.close().await,
                    Err(err) => Err(err),
                };
            if let Err(err) = outcome {
                tracing::debug!(%err, "connection failed");
                return conn.fail(&err).await;
            }
        }
    }

    async fn refuse_busy(self: Arc<Self>, stream: TcpStream) {
        let mut conn = Connection::new(stream, self.limits, self.deadlines);
        reply::error(
            conn.write_buf(),
            None,
            ErrorCode::Busy,
            &"too many connections from your address",
        );
        conn.close().await;
    }
}
