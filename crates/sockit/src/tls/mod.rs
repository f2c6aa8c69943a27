//! TLS for the framed protocol: the server's identity, how a client decides to trust it, and
//! the channel binding that ties a key login to the TLS session it happened in.
//!
//! - [`identity`]: the server's certificate and key, from PEM files or generated once and kept
//!   under the store's bookkeeping directory, and the rustls server configuration (TLS 1.3
//!   only).
//! - [`trust`]: the client's side: a pinned fingerprint, a CA file, or trust on first use with
//!   the known-servers file ([`known`]).
//!
//! A certificate is named by its [`Fingerprint`], the SHA-256 of its DER bytes, written
//! `sha256:<64 lowercase hex digits>` everywhere (the `fingerprint` line of `serve`, the
//! known-servers file, `--fingerprint`).

pub mod identity;
pub mod known;
pub mod trust;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use sha2::{Digest, Sha256};

pub use identity::{IdentityError, ServerIdentity};
pub use known::{KnownServers, KnownServersError, Recognition};
pub use trust::{Trust, TrustError, Verdict};

/// The label of the TLS exporter value a key login signs (RFC 9266, `tls-exporter`).
pub const EXPORTER_LABEL: &[u8] = b"EXPORTER-Channel-Binding";

/// The TLS exporter value of one connection (RFC 9266): equal at both ends of one TLS session,
/// different on each side of a machine in the middle.
pub type ChannelBinding = [u8; 32];

/// The exporter value of a TLS connection whose handshake is complete.
pub fn channel_binding<D>(conn: &rustls::ConnectionCommon<D>) -> Option<ChannelBinding> {
    let mut binding = [0u8; 32];
    conn.export_keying_material(&mut binding, EXPORTER_LABEL, None)
        .ok()?;
    Some(binding)
}

/// The cryptography every TLS configuration here uses (*ring*), the same for server and client.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The SHA-256 of a certificate's DER bytes, which names the certificate.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// The fingerprint of the certificate `der`.
    pub fn of(der: &[u8]) -> Fingerprint {
        Fingerprint(Sha256::digest(der).into())
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", hex::encode(self.0))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A fingerprint that is not `sha256:` and 64 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a fingerprint is `sha256:` followed by 64 hex digits, as `sockit serve --tls` prints it")]
pub struct BadFingerprint;

impl FromStr for Fingerprint {
    type Err = BadFingerprint;

    fn from_str(text: &str) -> Result<Fingerprint, BadFingerprint> {
        let digits = text.strip_prefix("sha256:").ok_or(BadFingerprint)?;
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(digits, &mut bytes).map_err(|_| BadFingerprint)?;
        Ok(Fingerprint(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fingerprint_reads_back_as_it_is_written() {
        let fingerprint = Fingerprint::of(b"certificate");
        let text = fingerprint.to_string();
        assert_eq!(text.len(), "sha256:".len() + 64);
        assert_eq!(text.parse::<Fingerprint>(), Ok(fingerprint));
        // Upper-case digits are the same fingerprint.
        let upper = format!("sha256:{}", text[7..].to_uppercase());
        assert_eq!(upper.parse::<Fingerprint>(), Ok(fingerprint));
    }

    #[test]
    fn anything_else_is_not_a_fingerprint() {
        for bad in ["", "sha256:", "sha1:00", "sha256:zz", &"0".repeat(64)] {
            assert_eq!(bad.parse::<Fingerprint>(), Err(BadFingerprint), "{bad}");
        }
        let short = format!("sha256:{}", "0".repeat(62));
        assert_eq!(short.parse::<Fingerprint>(), Err(BadFingerprint));
    }
}
