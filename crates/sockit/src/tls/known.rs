//! The known-servers file: trust on first use, as ssh's `known_hosts`.
//!
//! One `<host:port> sha256:<hex>` per line; blank lines and lines starting with `#` are
//! ignored. The first TLS connection to a `host:port` not in the file records the fingerprint
//! the server presented; later connections must present a fingerprint recorded for it, or are
//! refused with the file and line to look at.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::Fingerprint;

/// Why a server's identity was not accepted by the known-servers file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KnownServersError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A line that is not `<host:port> sha256:<hex>`.
    #[error(
        "{path} line {line}: not `<host:port> sha256:<64 hex digits>`; fix or remove that line"
    )]
    BadLine {
        /// The file.
        path: PathBuf,
        /// Its line number, from 1.
        line: usize,
    },
    /// The server presented a fingerprint other than the one recorded for it.
    #[error(
        "the TLS identity of {server} has changed: {path} line {line} records {recorded}, and the server now presents {presented}. \
         Someone may be in the middle of this connection. If the server's certificate really changed, remove line {line} of {path} and connect again"
    )]
    Changed {
        /// The `host:port`.
        server: String,
        /// The file.
        path: PathBuf,
        /// The line recording it, from 1.
        line: usize,
        /// What the line records.
        recorded: Fingerprint,
        /// What the server presented.
        presented: Fingerprint,
    },
}

/// How a server's fingerprint stands with the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recognition {
    /// Recorded for this server before.
    Known,
    /// The server was not in the file; its fingerprint is recorded now.
    FirstUse,
}

/// A known-servers file.
#[derive(Debug, Clone)]
pub struct KnownServers {
    path: PathBuf,
}

impl KnownServers {
    /// The file at `path` (it need not exist yet).
    pub fn at(path: impl Into<PathBuf>) -> KnownServers {
        KnownServers { path: path.into() }
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Checks `presented` for `server` (`host:port`), recording it when the server is new.
    ///
    /// # Errors
    ///
    /// [`KnownServersError::Changed`] when the file records other fingerprints for `server`;
    /// a malformed line, or a file that cannot be read or appended to.
    pub fn check(
        &self,
        server: &str,
        presented: Fingerprint,
    ) -> Result<Recognition, KnownServersError> {
        let mut first_recorded = None;
        for (line, recorded) in self.entries_for(server)? {
            if recorded == presented {
                return Ok(Recognition::Known);
            }
            first_recorded.get_or_insert((line, recorded));
        }
        if let Some((line, recorded)) = first_recorded {
            return Err(KnownServersError::Changed {
                server: server.to_owned(),
                path: self.path.clone(),
                line,
                recorded,
                presented,
            });
        }
        self.record(server, presented)?;
        Ok(Recognition::FirstUse)
    }

    /// The fingerprints recorded for `server`, with their line numbers.
    fn entries_for(&self, server: &str) -> Result<Vec<(usize, Fingerprint)>, KnownServersError> {
        let text = match fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(self.io_error(source)),
        };
        let mut found = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = || KnownServersError::BadLine {
                path: self.path.clone(),
                line: index + 1,
            };
            let mut words = line.split_whitespace();
            let (Some(name), Some(fingerprint), None) = (words.next(), words.next(), words.next())
            else {
                return Err(bad());
            };
            let fingerprint: Fingerprint = fingerprint.parse().map_err(|_| bad())?;
            if name == server {
                found.push((index + 1, fingerprint));
            }
        }
        Ok(found)
    }

    /// Appends `server fingerprint` to the file, making it (0600, its directory 0700) if need be.
    fn record(&self, server: &str, fingerprint: Fingerprint) -> Result<(), KnownServersError> {
        if let Some(dir) = self.path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|source| self.io_error(source))?;
        }
        let mut file = fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&self.path)
            .map_err(|source| self.io_error(source))?;
        // One write: appends of whole lines do not interleave.
        file.write_all(format!("{server} {fingerprint}\n").as_bytes())
            .map_err(|source| self.io_error(source))
    }

    fn io_error(&self, source: io::Error) -> KnownServersError {
        KnownServersError::Io {
            path: self.path.clone(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_use_records_and_then_the_same_fingerprint_is_known() {
        let dir = tempfile::tempdir().unwrap();
        let known = KnownServers::at(dir.path().join("sub/known_servers"));
        let print = Fingerprint::of(b"one");
        assert_eq!(known.check("h:1", print).unwrap(), Recognition::FirstUse);
        assert_eq!(known.check("h:1", print).unwrap(), Recognition::Known);
        let text = fs::read_to_string(known.path()).unwrap();
        assert_eq!(text, format!("h:1 {print}\n"));
    }

    #[test]
    fn a_changed_fingerprint_names_the_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_servers");
        let old = Fingerprint::of(b"old");
        fs::write(&path, format!("# mine\n\nother:2 {old}\nh:1 {old}\n")).unwrap();
        let known = KnownServers::at(&path);
        let new = Fingerprint::of(b"new");
        match known.check("h:1", new).unwrap_err() {
            KnownServersError::Changed { line, recorded, .. } => {
                assert_eq!(line, 4);
                assert_eq!(recorded, old);
            }
            other => panic!("{other}"),
        }
        // Nothing was added.
        assert_eq!(fs::read_to_string(&path).unwrap().lines().count(), 4);
        // Another server is new.
        assert_eq!(known.check("h:3", new).unwrap(), Recognition::FirstUse);
    }

    #[test]
    fn a_malformed_line_is_an_error_not_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_servers");
        fs::write(&path, "h:1 sha256:00\n").unwrap();
        let err = KnownServers::at(&path)
            .check("h:1", Fingerprint::of(b"x"))
            .unwrap_err();
        assert!(
            matches!(err, KnownServersError::BadLine { line: 1, .. }),
            "{err}"
        );
    }
}
