//! `--tls`: the framed protocol over TLS 1.3. A thin acceptor in front of [`Framed`]: it tells
//! a TLS client from a plain one by the first bytes, completes the handshake, both within the
//! header timeout, and hands the encrypted stream, with its channel binding, to the same
//! connection loop as plain TCP.
//!
//! A client that sends plain frames gets one plain error reply, `tls_required`, and the
//! connection closes: the only unencrypted bytes this listener ever writes (with `busy`, for a
//! plain client over its address's share of connections).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use sockit_proto::ErrorCode;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::framed::Framed;
use super::TcpService;
use crate::tls::channel_binding;

/// Serves the framed protocol to TLS clients.
pub(crate) struct TlsFramed {
    framed: Arc<Framed>,
    acceptor: TlsAcceptor,
    /// How long a new connection has to show what it speaks and finish the handshake.
    handshake_timeout: Duration,
}

/// What a new connection's first bytes say it speaks.
#[derive(Debug, PartialEq, Eq)]
enum Greeting {
    /// A TLS handshake record.
    Tls,
    /// Anything else: a plain frame, most likely.
    Plain,
    /// Nothing within the timeout, or the peer left.
    Silent,
}

impl TlsFramed {
    pub(crate) fn new(
        framed: Arc<Framed>,
        config: Arc<rustls::ServerConfig>,
        handshake_timeout: Duration,
    ) -> TlsFramed {
        TlsFramed {
            framed,
            acceptor: TlsAcceptor::from(config),
            handshake_timeout,
        }
    }
}

impl TcpService for TlsFramed {
    async fn serve(self: Arc<Self>, stream: TcpStream, peer: SocketAddr, stop: CancellationToken) {
        let _ = stream.set_nodelay(true);
        let deadline = Instant::now() + self.handshake_timeout;
        match greeting(&stream, deadline).await {
            Greeting::Silent => {}
            Greeting::Plain => {
                let message = "this port speaks TLS only: connect with TLS (sockit --tls)";
                let code = ErrorCode::TlsRequired;
                self.framed.refuse_with(stream, code, message).await;
            }
            Greeting::Tls => {
                let tls =
                    match tokio::time::timeout_at(deadline, self.acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => tls,
                        Ok(Err(err)) => return tracing::debug!(%err, "TLS handshake failed"),
                        Err(_) => return tracing::debug!("TLS handshake timed out"),
                    };
                let binding = channel_binding(tls.get_ref().1);
                self.framed.serve_stream(tls, peer, binding, stop).await;
            }
        }
    }

    /// A TLS client over its address's share is closed without a handshake: a refusal must cost
    /// the server less than a key exchange and a signature.
    async fn refuse_busy(self: Arc<Self>, stream: TcpStream) {
        drop(stream);
    }
}

/// Looks at (without taking) the first bytes the client sends: a TLS handshake record (22) of
/// TLS version 3.1 to 3.4. A plain frame starting so would announce a header of at least 66,326
/// bytes (its length is little-endian), over any header limit the server accepts.
async fn greeting(stream: &TcpStream, deadline: Instant) -> Greeting {
    let mut first = [0u8; 3];
    loop {
        let len = match tokio::time::timeout_at(deadline, stream.peek(&mut first)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return Greeting::Silent,
            Ok(Ok(len)) => len,
        };
        match classify(&first[..len]) {
            Some(greeting) => return greeting,
            // Only the start of a TLS record is here, which clients send whole: look again soon.
            None if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            None => return Greeting::Silent,
        }
    }
}

/// What `first` (the first 1 to 3 bytes) says, or `None` while it could still be either.
fn classify(first: &[u8]) -> Option<Greeting> {
    let tls = |index: usize, byte: u8| match index {
        0 => byte == 0x16,
        1 => byte == 0x03,
        _ => (0x01..=0x04).contains(&byte),
    };
    if !first
        .iter()
        .enumerate()
        .all(|(index, &byte)| tls(index, byte))
    {
        return Some(Greeting::Plain);
    }
    (first.len() == 3).then_some(Greeting::Tls)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_bytes_tell_a_tls_record_from_a_plain_frame() {
        assert_eq!(classify(&[0x16, 0x03, 0x01]), Some(Greeting::Tls));
        assert_eq!(classify(&[0x16, 0x03, 0x04]), Some(Greeting::Tls));
        // A plain frame with a 790-byte header starts 16 03 00 00.
        assert_eq!(classify(&[0x16, 0x03, 0x00]), Some(Greeting::Plain));
        // A 22-byte header: 16 00 00 00.
        assert_eq!(classify(&[0x16, 0x00]), Some(Greeting::Plain));
        assert_eq!(classify(&[0x50, 0x00, 0x00]), Some(Greeting::Plain));
        assert_eq!(classify(&[0x16]), None);
        assert_eq!(classify(&[0x16, 0x03]), None);
    }
}
