//! The client side of the file store: `stat`, `list` (page by page, or all pages collected),
//! `delete`, `rename`, and what uploads and downloads share.

use sockit_proto::message::{
    DeleteRequest, ListReply, ListRequest, RenameReply, RenameRequest, Request, StatReply,
    StatRequest,
};

use super::{Client, ClientError, Connect, Tcp};
use crate::store::FileInfo;

impl<C: Connect> Client<C> {
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
    ) -> Result<StatReply, ClientError> {
        let request = Request::Stat(StatRequest {
            name: name.into(),
            length,
        });
        self.call(&request, b"").await?.parse()
    }

    /// `delete`: removes the stored file `name`.
    ///
    /// # Errors
    ///
    /// As [`Client::call`]; the server refuses with `not_found` when there is no such file and
    /// `bad_name` for a name it would never store.
    pub async fn delete(&mut self, name: &str) -> Result<(), ClientError> {
        let request = Request::Delete(DeleteRequest { name: name.into() });
        self.call(&request, b"").await.map(drop)
    }

    /// `rename`: the stored file `name` becomes `to`; a file already named `to` is replaced
    /// only with `overwrite`. Returns the file's new name, length and hash.
    ///
    /// # Errors
    ///
    /// As [`Client::call`]; the server refuses with `not_found`, `exists` (when `to` is
    /// taken and `overwrite` is false) or `bad_name`.
    pub async fn rename(
        &mut self,
        name: &str,
        to: &str,
        overwrite: bool,
    ) -> Result<RenameReply, ClientError> {
        let request = Request::Rename(RenameRequest {
            name: name.into(),
            to: to.into(),
            overwrite,
        });
        self.call(&request, b"").await?.parse()
    }

    /// `list`: every stored file, sorted by name, collected from every page. It holds the whole
    /// listing in memory; to handle a large store page by page, use [`Client::list_pages`].
    ///
    /// # Errors
    ///
    /// As [`Client::list_page`].
    pub async fn list(&mut self) -> Result<Vec<FileInfo>, ClientError> {
        let mut files = Vec::new();
        let mut pages = self.list_pages(None);
        while let Some(page) = pages.next().await? {
            files.extend(page);
        }
        Ok(files)
    }

    /// One page of `list`: the stored files whose names come after `after` (from the first,
    /// when `None`), sorted by name, at most `limit` of them (the server's default and maximum,
    /// 100,000, when `None`; the server refuses 0 as `bad_request`).
    ///
    /// # Errors
    ///
    /// As [`Client::call`]; [`ClientError::BadReply`] when the page is not what the protocol
    /// promises (entries out of order or not after `after`, a `count` that disagrees).
    pub async fn list_page(
        &mut self,
        after: Option<&str>,
        limit: Option<u32>,
    ) -> Result<FilePage, ClientError> {
        let request = Request::List(ListRequest {
            after: after.map(Into::into),
            limit: limit.map(u64::from),
        });
        let reply = self.call(&request, b"").await?;
        let ListReply { count, more } = reply.parse()?;
        let files: Vec<FileInfo> = serde_json::from_slice(&reply.body)
            .map_err(|err| ClientError::BadReply(err.to_string()))?;
        check_page(&files, after, count)?;
        Ok(FilePage { files, more })
    }

    /// Walks every page of `list` from the first, `limit` entries at most per page (see
    /// [`Client::list_page`]); each page is asked for when the previous one has been taken.
    pub fn list_pages(&mut self, limit: Option<u32>) -> ListPages<'_, C> {
        ListPages {
            client: self,
            limit,
            after: None,
            done: false,
        }
    }
}

/// One page of `list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilePage {
    /// The page's entries, sorted by name.
    pub files: Vec<FileInfo>,
    /// Whether entries after the last one exist: the next page starts after it.
    pub more: bool,
}

/// The pages of a listing, one request each, from [`Client::list_pages`].
pub struct ListPages<'c, C: Connect = Tcp> {
    client: &'c mut Client<C>,
    limit: Option<u32>,
    /// The last name received: the next page starts after it.
    after: Option<String>,
    done: bool,
}

impl<C: Connect> ListPages<'_, C> {
    /// The next page's entries, or `None` after the last page.
    ///
    /// # Errors
    ///
    /// As [`Client::list_page`]; also [`ClientError::BadReply`] when the server says more
    /// entries follow a page that has none (the walk could not go on).
    pub async fn next(&mut self) -> Result<Option<Vec<FileInfo>>, ClientError> {
        if self.done {
            return Ok(None);
        }
        let page = self
            .client
            .list_page(self.after.as_deref(), self.limit)
            .await?;
        match (page.more, page.files.last()) {
            (false, _) => self.done = true,
            (true, Some(last)) => self.after = Some(last.name.clone()),
            (true, None) => {
                return Err(ClientError::BadReply(
                    "a list page with no entries says more follow".into(),
                ))
            }
        }
        Ok(Some(page.files))
    }
}

/// Checks that a page keeps the protocol's promises: `count` entries, sorted by name with no
/// repeats, all after `after`. The walk over pages relies on them to end.
fn check_page(files: &[FileInfo], after: Option<&str>, count: u64) -> Result<(), ClientError> {
    if files.len() as u64 != count {
        return Err(ClientError::BadReply(format!(
            "a list page says {count} entries and has {}",
            files.len()
        )));
    }
    let first_after = match (files.first(), after) {
        (Some(first), Some(after)) => first.name.as_str() > after,
        _ => true,
    };
    if !first_after || files.windows(2).any(|pair| pair[0].name >= pair[1].name) {
        return Err(ClientError::BadReply(
            "a list page is not in order of names after the last page".into(),
        ));
    }
    Ok(())
}
