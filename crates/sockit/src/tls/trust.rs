//! Whom a client trusts: a pinned fingerprint (`--fingerprint`), certificates a CA vouches for
//! (`--ca`), or whatever the known-servers file says (trust on first use, the default).
//!
//! With a fingerprint or the known-servers file there is no chain to check: the handshake
//! still proves that the server holds the key of the certificate it presents (its signature is
//! verified), and the certificate itself is then judged by its fingerprint, right after the
//! handshake and before the client sends a byte of its own.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::{provider, Fingerprint, KnownServers, KnownServersError, Recognition};

/// How a client decides whether the server is the one it means.
#[derive(Debug, Clone)]
pub enum Trust {
    /// Exactly the certificate with this fingerprint.
    Fingerprint(Fingerprint),
    /// A certificate for the server's host name issued by a CA of this file (PEM).
    Ca(PathBuf),
    /// The fingerprint recorded for the server in this file, or, for a server not in it yet,
    /// the one it presents now (then recorded).
    FirstUse(KnownServers),
}

/// Why a TLS connection was not made, or not trusted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrustError {
    /// The server answered the TLS greeting with something that is not TLS.
    #[error("{server} does not speak TLS (it answered in plain frames): connect without --tls, or ask for its TLS port")]
    NotTls {
        /// The `host:port`.
        server: String,
    },
    /// The TLS handshake failed.
    #[error("TLS handshake with {server} failed: {reason}")]
    Handshake {
        /// The `host:port`.
        server: String,
        /// Why, in rustls's words.
        reason: String,
    },
    /// The server's certificate is not the pinned one.
    #[error(
        "{server} presented the certificate {presented}, not the pinned {pinned}; refusing it"
    )]
    NotPinned {
        /// The `host:port`.
        server: String,
        /// What `--fingerprint` asked for.
        pinned: Fingerprint,
        /// What the server presented.
        presented: Fingerprint,
    },
    /// The known-servers file refused the server (or could not be used).
    #[error(transparent)]
    Known(#[from] KnownServersError),
    /// The CA file holds no usable certificate.
    #[error("{path}: {what}")]
    CaFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        what: String,
    },
}

/// What a trusted connection's identity check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Trusted as pinned, by the CA, or as recorded before.
    Trusted,
    /// A server seen for the first time, whose fingerprint was recorded now.
    FirstUse(Fingerprint),
}

impl Trust {
    /// The rustls client configuration for this trust: TLS 1.3 only.
    ///
    /// # Errors
    ///
    /// [`TrustError::CaFile`] for a CA file that cannot be read or holds no certificate.
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, TrustError> {
        let builder = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("ring supports TLS 1.3");
        let config = match self {
            Trust::Ca(path) => builder
                .with_root_certificates(roots_from(path)?)
                .with_no_client_auth(),
            Trust::Fingerprint(_) | Trust::FirstUse(_) => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(ByFingerprint {
                    algorithms: provider().signature_verification_algorithms,
                }))
                .with_no_client_auth(),
        };
        Ok(Arc::new(config))
    }

    /// Judges the certificate `server` (`host:port`) presented in a completed handshake.
    ///
    /// # Errors
    ///
    /// [`TrustError::NotPinned`], or the known-servers file's refusal.
    pub fn judge(&self, server: &str, certificate: &[u8]) -> Result<Verdict, TrustError> {
        let presented = Fingerprint::of(certificate);
        match self {
            // The chain and the name were checked during the handshake.
            Trust::Ca(_) => Ok(Verdict::Trusted),
            Trust::Fingerprint(pinned) if *pinned == presented => Ok(Verdict::Trusted),
            Trust::Fingerprint(pinned) => Err(TrustError::NotPinned {
                server: server.to_owned(),
                pinned: *pinned,
                presented,
            }),
            Trust::FirstUse(known) => match known.check(server, presented)? {
                Recognition::Known => Ok(Verdict::Trusted),
                Recognition::FirstUse => Ok(Verdict::FirstUse(presented)),
            },
        }
    }
}

/// The certificates of a PEM file, as trust anchors.
fn roots_from(path: &Path) -> Result<RootCertStore, TrustError> {
    let ca_error = |what: String| TrustError::CaFile {
        path: path.to_owned(),
        what,
    };
    let pem = std::fs::read(path).map_err(|err| ca_error(err.to_string()))?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|err| ca_error(format!("not a PEM certificate: {err}")))?;
        roots
            .add(cert)
            .map_err(|err| ca_error(format!("not a usable CA certificate: {err}")))?;
    }
    if roots.is_empty() {
        return Err(ca_error("no certificate in it".into()));
    }
    Ok(roots)
}

/// Accepts any certificate during the handshake, to be judged by its fingerprint once the
/// handshake is over, but verifies that the server signed the handshake with its key.
#[derive(Debug)]
struct ByFingerprint {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for ByFingerprint {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
