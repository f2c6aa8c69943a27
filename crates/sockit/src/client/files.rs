//! The client side of the file store: `stat`, `list`, and what uploads and downloads share.

use std::io;
use std::path::Path;

use serde::Deserialize;

use super::{Client, ClientError, Reply};
use crate::store::FileInfo;

/// What the server says about a name.
#[derive(Debug, Clone, Deserialize)]
pub struct RemoteStat {
    /// Whether a file of that name is stored.
    pub exists: bool,
    /// Its length, if stored.
    pub length: Option<u64>,
    /// Bytes held for resuming an upload of the asked length.
    #[serde(default)]
    pub partial: u64,
}

impl Client {
    /// `stat`: whether `name` is stored, and with `length`, how much of an upload of that
    /// length the server holds.
    ///
    /// # Errors
    ///
    /// As [`Client::call`].
    pub async fn stat(
        &mut self,
        name: &str,
        length: Option<u64>,
    ) -> Result<RemoteStat, ClientError> {
        let reply = self
            .call_with("stat", |header| {
                header.field("name", name);
                if let Some(length) = length {
                    header.field("length", &length);
                }
            })
            .await?;
        parse(&reply)
    }

    /// `list`: every stored file.
    ///
    /// # Errors
    ///
    /// As [`Client::call`].
    pub async fn list(&mut self) -> Result<Vec<FileInfo>, ClientError> {
        let reply = self.call("list", b"").await?;
        serde_json::from_slice(&reply.body).map_err(|err| ClientError::BadReply(err.to_string()))
    }
}

pub(super) fn parse<'a, T: Deserialize<'a>>(reply: &'a Reply) -> Result<T, ClientError> {
    reply
        .header
        .parse()
        .map_err(|err| ClientError::BadReply(err.to_string()))
}

pub(super) fn local(path: &Path, err: io::Error) -> ClientError {
    ClientError::Local {
        path: path.display().to_string(),
        source: err,
    }
}
