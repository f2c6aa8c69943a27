//! The accept loop shared by every TCP listener: limits, one task per connection, shutdown.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::limit::ConnLimiter;
use crate::front::TcpService;

/// Accepts connections until `stop`, each in its own task holding its place under the limits.
///
/// A slot under the total limit is taken *before* accepting, so a full server leaves new
/// clients in the kernel's accept queue instead of accepting and dropping them.
pub(crate) async fn accept_loop<T: TcpService>(
    listener: TcpListener,
    service: Arc<T>,
    limiter: Arc<ConnLimiter>,
    stop: CancellationToken,
    tasks: TaskTracker,
) {
    loop {
        let slot = tokio::select! {
            () = stop.cancelled() => return,
            slot = limiter.slot() => slot,
        };
        let (stream, peer) = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of descriptors or a connection reset before accept: not fatal.
                    tracing::warn!(%err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let service = Arc::clone(&service);
        match limiter.admit(slot, peer.ip()) {
            Ok(permit) => {
                let span = tracing::debug_span!("conn", %peer);
                let stop = stop.clone();
                tasks.spawn(
                    async move {
                        let _permit = permit;
                        service.serve(stream, peer, stop).await;
                    }
                    .instrument(span),
                );
            }
            Err(slot) => {
                tracing::debug!(%peer, "too many connections from this source");
                tasks.spawn(async move {
                    let _slot = slot;
                    service.refuse_busy(stream).await;
                });
            }
        }
    }
}
