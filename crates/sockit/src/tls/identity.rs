//! The server's TLS identity: a certificate chain and its private key, read from PEM files
//! (`--tls-cert`, `--tls-key`) or generated once, self-signed, and kept in a directory of its
//! own (the server keeps it in the store's bookkeeping directory, `<root>/.sockit/tls/`), so that
//! the fingerprint clients pinned survives restarts and travels with the store.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::{provider, Fingerprint};

/// Why the server's TLS identity cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A PEM file holds nothing usable.
    #[error("{path}: {what}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        what: String,
    },
    /// The kept key can be read by others than its owner, or is not a plain file; or the
    /// directory it is kept in is not a plain directory.
    #[error("{0}: the kept TLS identity must be a plain directory and a plain key file readable by its owner only (chmod 600), never a link")]
    KeyExposed(PathBuf),
    /// Only one of the two kept files exists.
    #[error("{present} exists without {missing}; remove {present} to generate a new identity")]
    Incomplete {
        /// The file found.
        present: PathBuf,
        /// The one missing.
        missing: PathBuf,
    },
    /// A certificate could not be made.
    #[error("cannot generate a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refused the certificate and key (a key that does not match the certificate).
    #[error("the TLS certificate and key cannot be used together: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A certificate chain (end entity first) and its private key.
#[derive(Debug)]
pub struct ServerIdentity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

/// The files of a kept identity.
const KEPT_CERT: &str = "cert.pem";
const KEPT_KEY: &str = "key.pem";

impl ServerIdentity {
    /// Reads a certificate chain and a private key from PEM files.
    ///
    /// # Errors
    ///
    /// A file that cannot be read or holds no certificate (no key).
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<ServerIdentity, IdentityError> {
        ServerIdentity::from_pem(cert, &read(cert)?, key, &read(key)?)
    }

    /// The identity in `cert_pem` and `key_pem`, read from the files `cert` and `key`.
    fn from_pem(
        cert: &Path,
        cert_pem: &[u8],
        key: &Path,
        key_pem: &[u8],
    ) -> Result<ServerIdentity, IdentityError> {
        let pem_error = |path: &Path, what: String| IdentityError::Pem {
            path: path.to_owned(),
            what,
        };
        let chain = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| pem_error(cert, format!("not a PEM certificate: {err}")))?;
        if chain.is_empty() {
            return Err(pem_error(cert, "no certificate in it".into()));
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem)
            .map_err(|err| pem_error(key, format!("no usable private key in it: {err}")))?;
        Ok(ServerIdentity { chain, key })
    }

    /// The identity kept in `dir`, generated (self-signed) when there is none yet; whether it
    /// was generated now. `dir` is made (mode 0700) if missing; neither it nor the files in it
    /// may be symbolic links.
    ///
    /// # Errors
    ///
    /// The directory or the files cannot be made or read, the key is readable by others, a link
    /// stands where they should be, or only one of the two files exists.
    pub fn kept_in(dir: &Path) -> Result<(ServerIdentity, bool), IdentityError> {
        let io_error = |path: &Path| {
            let path = path.to_owned();
            move |source| IdentityError::Io { path, source }
        };
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_error(dir))?;
        let meta = fs::symlink_metadata(dir).map_err(io_error(dir))?;
        if !meta.is_dir() {
            return Err(IdentityError::KeyExposed(dir.to_owned()));
        }
        let (cert, key) = (dir.join(KEPT_CERT), dir.join(KEPT_KEY));
        match (exists(&cert)?, exists(&key)?) {
            (true, true) => {
                check_private(&key)?;
                let cert_pem = read_no_follow(&cert)?;
                let key_pem = read_no_follow(&key)?;
                let identity = ServerIdentity::from_pem(&cert, &cert_pem, &key, &key_pem)?;
                Ok((identity, false))
            }
            (false, false) => Ok((ServerIdentity::generate_into(&cert, &key)?, true)),
            (true, false) => Err(IdentityError::Incomplete {
                present: cert,
                missing: key,
            }),
            (false, true) => Err(IdentityError::Incomplete {
                present: key,
                missing: cert,
            }),
        }
    }

    /// A new self-signed identity, written to `cert` and `key` (the key first, mode 0600;
    /// each file appears whole under its name or not at all).
    fn generate_into(cert: &Path, key: &Path) -> Result<ServerIdentity, IdentityError> {
        let mut params = rcgen::CertificateParams::new(vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
            "::1".to_owned(),
        ])?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "sockit server");
        let signing_key = rcgen::KeyPair::generate()?;
        let certificate = params.self_signed(&signing_key)?;
        write_new(key, signing_key.serialize_pem().as_bytes(), 0o600)?;
        write_new(cert, certificate.pem().as_bytes(), 0o644)?;
        Ok(ServerIdentity {
            chain: vec![certificate.der().clone()],
            key: PrivateKeyDer::Pkcs8(signing_key.serialize_der().into()),
        })
    }

    /// The fingerprint of the server's certificate, which clients pin.
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of(&self.chain[0])
    }

    /// A rustls server configuration for this identity: TLS 1.3 only, no client certificates.
    ///
    /// # Errors
    ///
    /// The key does not match the certificate, or is of a kind rustls does not support.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, IdentityError> {
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_no_client_auth()
            .with_single_cert(self.chain.clone(), self.key.clone_key())?;
        Ok(Arc::new(config))
    }
}

fn read(path: &Path) -> Result<Vec<u8>, IdentityError> {
    fs::read(path).map_err(|source| IdentityError::Io {
        path: path.to_owned(),
        source,
    })
}

/// The bytes of `path`, which must not be a symbolic link.
fn read_no_follow(path: &Path) -> Result<Vec<u8>, IdentityError> {
    use std::io::Read;
    let io_error = |source| IdentityError::Io {
        path: path.to_owned(),
        source,
    };
    let mut file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(io_error)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(io_error)?;
    Ok(bytes)
}

/// Whether `path` exists (a dangling link counts: it is not ours to replace).
fn exists(path: &Path) -> Result<bool, IdentityError> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(IdentityError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Refuses a kept key that is not a plain file of ours readable by us alone.
fn check_private(key: &Path) -> Result<(), IdentityError> {
    let meta = fs::symlink_metadata(key).map_err(|source| IdentityError::Io {
        path: key.to_owned(),
        source,
    })?;
    let ours = meta.uid() == nix::unistd::geteuid().as_raw();
    if !meta.is_file() || !ours || meta.permissions().mode() & 0o077 != 0 {
        return Err(IdentityError::KeyExposed(key.to_owned()));
    }
    Ok(())
}

/// Writes `bytes` to a new file `path` with `mode`: through a temporary file in the same
/// directory, synced, then renamed into place.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), IdentityError> {
    let io_error = |source| IdentityError::Io {
        path: path.to_owned(),
        source,
    };
    let dir = path.parent().expect("kept files live in a directory");
    let mut temp = tempfile::Builder::new()
        .prefix(".new-")
        .permissions(fs::Permissions::from_mode(mode))
        .tempfile_in(dir)
        .map_err(io_error)?;
    temp.write_all(bytes).map_err(io_error)?;
    temp.as_file().sync_all().map_err(io_error)?;
    temp.persist_noclobber(path)
        .map_err(|err| io_error(err.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_identity_is_kept_and_read_back_the_same() {
        let root = tempfile::tempdir().unwrap();
        let (first, generated) = ServerIdentity::kept_in(&root.path().join(".sockit/tls")).unwrap();
        assert!(generated);
        let (again, generated) = ServerIdentity::kept_in(&root.path().join(".sockit/tls")).unwrap();
        assert!(!generated);
        assert_eq!(first.fingerprint(), again.fingerprint());
        let key = root.path().join(".sockit/tls/key.pem");
        let mode = fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        again.server_config().unwrap();
    }

    #[test]
    fn a_kept_key_others_can_read_is_refused() {
        let root = tempfile::tempdir().unwrap();
        ServerIdentity::kept_in(&root.path().join(".sockit/tls")).unwrap();
        let key = root.path().join(".sockit/tls/key.pem");
        fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
        let err = ServerIdentity::kept_in(&root.path().join(".sockit/tls")).unwrap_err();
        assert!(matches!(err, IdentityError::KeyExposed(_)), "{err}");
    }

    #[test]
    fn a_link_where_the_kept_directory_should_be_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let elsewhere = root.path().join("elsewhere");
        fs::create_dir(&elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, root.path().join("tls")).unwrap();
        let err = ServerIdentity::kept_in(&root.path().join("tls")).unwrap_err();
        assert!(matches!(err, IdentityError::KeyExposed(_)), "{err}");
        assert_eq!(fs::read_dir(&elsewhere).unwrap().count(), 0);
    }

    #[test]
    fn half_an_identity_is_not_replaced() {
        let root = tempfile::tempdir().unwrap();
        ServerIdentity::kept_in(&root.path().join(".sockit/tls")).unwrap();
        fs::remove_file(root.path().join(".sockit/tls/cert.pem")).unwrap();
        let err = ServerIdentity::kept_in(&root.path().join(".sockit/tls")).unwrap_err();
        assert!(matches!(err, IdentityError::Incomplete { .. }), "{err}");
    }
}
