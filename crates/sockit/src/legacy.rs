//! The tutorials' raw services: TCP upper-case echo (`--legacy-echo`), as their
//! `socketserver.ThreadingTCPServer` example serves it.
//!
//! No framing: whatever bytes arrive go back with ASCII letters upper-cased, exactly what
//! Python's `bytes.upper()` does, so the tutorials' clients work unchanged.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

use crate::server::accept::TcpService;

/// Read size of the legacy echo; the tutorials read 1024 at a time.
const LEGACY_READ: usize = 16 * 1024;

/// Raw TCP upper-case echo.
#[derive(Debug)]
pub(crate) struct LegacyEcho {
    idle: Duration,
}

impl LegacyEcho {
    pub(crate) fn new(idle: Duration) -> LegacyEcho {
        LegacyEcho { idle }
    }
}

impl TcpService for LegacyEcho {
    async fn serve(
        self: Arc<Self>,
        mut stream: TcpStream,
        _peer: SocketAddr,
        stop: CancellationToken,
    ) {
        let _ = stream.set_nodelay(true);
        let mut buf = vec![0u8; LEGACY_READ];
        loop {
            let read = tokio::select! {
                () = stop.cancelled() => break,
                read = timeout(self.idle, stream.read(&mut buf)) => read,
            };
            let n = match read {
                Ok(Ok(n)) if n > 0 => n,
                _ => break,
            };
            buf[..n].make_ascii_uppercase();
            match timeout(self.idle, stream.write_all(&buf[..n])).await {
                Ok(Ok(())) => {}
                _ => return,
            }
        }
        let _ = stream.shutdown().await;
    }

    async fn refuse_busy(self: Arc<Self>, mut stream: TcpStream) {
        let _ = stream.shutdown().await;
    }
}
