//! The file store's operations: `put` (whole, resumed, or chunked), `get`, `list`, `stat`,
//! `delete`, `rename`.
//!
//! An upload is three steps, so that a front end can move the bytes its own way in between:
//! [`begin_put`] checks the request and opens the partial file, the front end streams the
//! body into the returned [`Upload`] through [`crate::transfer`] (hashing on the way), and
//! [`PutPlan::finish`] checks the hash and makes the file visible under its name. A download
//! is [`open_get`]: the reply's facts and the open file to send from.
//!
//! Everything that touches the disk runs on the blocking pool; each transfer holds one of the
//! streaming slots while it runs ([`Core::transfer_slot`]: each source has its share, and a
//! request waits for one at most the queue timeout, then is `busy`). A `list` page counts
//! against the memory budget while it is made and sent.

use std::fs::File;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use sockit_proto::message::{
    ChunkEnd, DeleteReply, DeleteRequest, GetReply, GetRequest, ListReply, ListRequest, PutReply,
    PutRequest, RenameReply, RenameRequest, StatReply, StatRequest,
};
use sockit_proto::ErrorCode;

use super::pool::PoolPermit;
use super::{shrink_memory, Core, OpError};
use crate::store::{FileName, Store, StoreError, Upload, MAX_LIST_ENTRIES, MAX_LIST_PAGE_BYTES};
use crate::transfer::blocking;

/// An accepted `put`, waiting for its bytes: how to finish it.
#[derive(Debug)]
pub(crate) struct PutPlan {
    /// The hash the request declared in its header, if any.
    declared: Option<blake3::Hash>,
    overwrite: bool,
    /// The bytes come as chunk frames and an end frame.
    chunked: bool,
    _slot: PoolPermit,
}

/// Checks a `put` from a client at `peer` whose body is `body_len` bytes and opens its
/// partial file. Returns the upload to stream the body into, a hasher that has already seen
/// what is held for a resume, and the plan to finish it with.
///
/// # Errors
///
/// `bad_name`, `bad_request` (a bad hash, hash and trailer both, an offset that overflows, a
/// chunked put with a body, offset, hash or trailer), `exists` (also when the name is a
/// directory or another special file), `busy` (the same upload in progress, or too many
/// partial uploads held for `peer` or in all, or no streaming slot for `peer` in time),
/// `bad_offset`, or a store failure.
pub(crate) async fn begin_put(
    core: &Core,
    peer: IpAddr,
    request: &PutRequest<'_>,
    body_len: u64,
) -> Result<(Upload, blake3::Hasher, PutPlan), OpError> {
    if request.chunked {
        check_chunked(request, body_len)?;
    }
    let name = FileName::new(&request.name)?;
    let declared = optional_hash("hash", request.hash.as_deref())?;
    if declared.is_some() && request.trailer {
        return Err(OpError::bad_request(
            "give the hash in the header or in a trailer, not both",
        ));
    }
    let Some(length) = request.offset.checked_add(body_len) else {
        return Err(OpError::bad_request("offset + size overflows"));
    };
    let (offset, overwrite, chunked) = (request.offset, request.overwrite, request.chunked);
    let slot = core.transfer_slot(peer).await?;
    let (upload, hasher) = blocking({
        let store = Arc::clone(&core.store);
        move || {
            if chunked {
                Ok((
                    store.begin_stream_upload(name, overwrite, peer)?,
                    blake3::Hasher::new(),
                ))
            } else {
                store.begin_upload(name, offset, length, overwrite, peer)
            }
        }
    })
    .await?;
    let plan = PutPlan {
        declared,
        overwrite,
        chunked,
        _slot: slot,
    };
    Ok((upload, hasher, plan))
}

/// What a chunked `put` request may not have.
fn check_chunked(request: &PutRequest<'_>, body_len: u64) -> Result<(), OpError> {
    if body_len > 0 {
        return Err(OpError::bad_request(
            "a chunked put has no body: its bytes follow in chunk frames",
        ));
    }
    if request.offset != 0 {
        return Err(OpError::bad_request(
            "a chunked put cannot resume: `offset` must be 0",
        ));
    }
    if request.hash.is_some() || request.trailer {
        return Err(OpError::bad_request(
            "a chunked put declares its hash in the end frame, not in `hash` or a trailer",
        ));
    }
    Ok(())
}

impl PutPlan {
    /// Whether the bytes come as chunk frames and an end frame.
    pub(crate) fn chunked(&self) -> bool {
        self.chunked
    }

    /// Stores the upload whose bytes hashed to `hash`: checks the declared hash (from the
    /// header, or `trailer` as a later frame gave it), syncs, and moves the file under its
    /// name. The upload is deleted when it is not stored.
    ///
    /// # Errors
    ///
    /// `hash_mismatch`, `exists` (the name was taken meanwhile), or a store failure.
    pub(crate) async fn finish(
        self,
        upload: Upload,
        hash: blake3::Hash,
        trailer: Option<blake3::Hash>,
    ) -> Result<PutReply, OpError> {
        let declared = trailer.or(self.declared);
        let overwrite = self.overwrite;
        let info = blocking(move || upload.finish(hash, declared, overwrite)).await?;
        Ok(PutReply {
            name: info.name,
            length: info.length,
            hash: hash.to_hex().to_string(),
        })
    }

    /// Stores a chunked upload whose `received` bytes hashed to `hash`, once the end frame
    /// agrees on the length.
    ///
    /// # Errors
    ///
    /// `bad_request` when the end frame's length or hash is not what arrived in form; then as
    /// [`PutPlan::finish`].
    pub(crate) async fn finish_chunked(
        self,
        upload: Upload,
        hash: blake3::Hash,
        received: u64,
        end: &ChunkEnd,
    ) -> Result<PutReply, OpError> {
        let checked = if end.length == received {
            blake3::Hash::from_hex(&end.hash).map_err(|_| {
                OpError::bad_request("the end frame's `hash` must be 64 hexadecimal digits")
            })
        } else {
            Err(OpError::bad_request(format!(
                "the end frame says {} bytes, but the chunks carried {received}; nothing was stored",
                end.length
            )))
        };
        match checked {
            Ok(declared) => self.finish(upload, hash, Some(declared)).await,
            Err(err) => {
                discard(upload).await;
                Err(err)
            }
        }
    }
}

/// A request's optional BLAKE3 `field`, checked: 64 hexadecimal digits.
fn optional_hash(field: &str, hex: Option<&str>) -> Result<Option<blake3::Hash>, OpError> {
    hex.map(|hex| {
        blake3::Hash::from_hex(hex).map_err(|_| {
            OpError::bad_request(format!("`{field}` must be 64 hexadecimal digits (BLAKE3)"))
        })
    })
    .transpose()
}

/// Deletes an upload that will not be stored.
pub(crate) async fn discard(upload: Upload) {
    blocking(move || upload.discard()).await;
}

/// A stored file opened for a download: where the body starts and how long it is.
#[derive(Debug)]
pub(crate) struct Download {
    pub(crate) file: File,
    pub(crate) offset: u64,
    pub(crate) size: u64,
    _slot: PoolPermit,
}

/// `get`: opens the stored file and says what the reply carries. With `if_hash`, a resume:
/// from `offset` only if the file still has that hash, else from the start.
///
/// # Errors
///
/// `bad_name`, `bad_request` (a bad `if_hash`), `not_found`, `bad_offset`, `busy` (no
/// streaming slot for `peer` in time), or a store failure.
pub(crate) async fn open_get(
    core: &Core,
    peer: IpAddr,
    request: &GetRequest<'_>,
) -> Result<(GetReply, Download), OpError> {
    let name = FileName::new(&request.name)?;
    let if_hash = optional_hash("if_hash", request.if_hash.as_deref())?;
    let slot = core.transfer_slot(peer).await?;
    let (file, info, hash, mode) = blocking({
        let store = Arc::clone(&core.store);
        move || -> Result<_, StoreError> {
            let (file, info) = store.open_for_read(&name)?;
            let hash = store.hash_of(&name, &file)?;
            let mode = file.metadata()?.permissions().mode() & 0o777;
            Ok((file, info, hash, mode))
        }
    })
    .await?;
    let offset = match if_hash {
        Some(expected) if expected != hash => {
            if request.offset > 0 {
                tracing::info!(
                    %peer,
                    name = info.name,
                    offset = request.offset,
                    "resume of a get refused: the file changed since the interrupted download \
                     (its hash is not `if_hash`); sent from byte 0"
                );
            }
            0
        }
        _ => request.offset,
    };
    if offset > info.length {
        return Err(StoreError::PastEnd {
            offset,
            length: info.length,
        }
        .into());
    }
    let reply = GetReply {
        name: info.name,
        length: info.length,
        hash: hash.to_hex().to_string(),
        offset,
        mode: Some(mode),
        modified: Some(info.modified),
    };
    let download = Download {
        file,
        offset,
        size: info.length - offset,
        _slot: slot,
    };
    Ok((reply, download))
}

/// The memory a `list` page is made in: the names it keeps and its JSON, each at most the
/// page's byte cap.
const LIST_PAGE_MEMORY: u64 = 2 * MAX_LIST_PAGE_BYTES as u64;

/// A `list` page's body, the JSON array of entries, with the memory it holds.
#[derive(Debug)]
pub(crate) struct ListBody {
    pub(crate) json: Vec<u8>,
    _memory: PoolPermit,
}

/// `list`: one page of the listing, and its body. The page is made under a reservation of
/// [`LIST_PAGE_MEMORY`] (or `peer`'s whole share of the memory budget, if smaller), cut down
/// to the body's length once it is made and held until the body is sent.
///
/// # Errors
///
/// `busy` when the memory did not come free in time, `internal` when the store cannot be read.
pub(crate) async fn list(
    core: &Core,
    peer: IpAddr,
    request: &ListRequest<'_>,
) -> Result<(ListReply, ListBody), OpError> {
    let after = request.after.as_deref().map(str::to_owned);
    let limit = request.limit.map_or(MAX_LIST_ENTRIES, |limit| {
        usize::try_from(limit).map_or(MAX_LIST_ENTRIES, |limit| limit.min(MAX_LIST_ENTRIES))
    });
    let making = LIST_PAGE_MEMORY.min(core.memory_share());
    let mut memory = core.reserve_memory(peer, making).await?;
    let page = blocking({
        let store = Arc::clone(&core.store);
        move || store.list_page(after.as_deref(), limit)
    })
    .await
    .map_err(|err| OpError::new(ErrorCode::Internal, StoreError::from(err)))?;
    shrink_memory(&mut memory, page.json.len() as u64);
    let reply = ListReply {
        count: page.count as u64,
        more: page.more,
    };
    let body = ListBody {
        json: page.json,
        _memory: memory,
    };
    Ok((reply, body))
}

/// `stat`: whether a name is stored, and with `length`, how much of such an upload is held.
///
/// # Errors
///
/// `bad_name`, or `internal` when the store cannot be read.
pub(crate) async fn stat(
    store: &Arc<Store>,
    request: &StatRequest<'_>,
) -> Result<StatReply, OpError> {
    let name = FileName::new(&request.name)?;
    let length = request.length;
    let (name, info, partial) = blocking({
        let store = Arc::clone(store);
        move || {
            let info = store.stat(&name)?;
            let partial = length.map(|length| store.partial_held(&name, length));
            Ok::<_, std::io::Error>((name, info, partial))
        }
    })
    .await
    .map_err(|err| OpError::new(ErrorCode::Internal, StoreError::from(err)))?;
    Ok(StatReply {
        name: name.to_string(),
        exists: info.is_some(),
        length: info.as_ref().map(|info| info.length),
        modified: info.as_ref().map(|info| info.modified),
        partial,
    })
}

/// `delete`: removes a stored file (never a partial upload, never through a link).
///
/// # Errors
///
/// `bad_name`, `not_found`, or a store failure.
pub(crate) async fn delete(
    store: &Arc<Store>,
    request: &DeleteRequest<'_>,
) -> Result<DeleteReply, OpError> {
    let name = FileName::new(&request.name)?;
    let name = blocking({
        let store = Arc::clone(store);
        move || store.delete(&name).map(|()| name)
    })
    .await?;
    Ok(DeleteReply {
        name: name.to_string(),
    })
}

/// `rename`: the stored file `name` becomes `to` (replacing a file of that name only with
/// `overwrite`), and the reply says what is stored under `to`. Hashing a file whose hash is
/// not cached reads it, so it holds a streaming slot.
///
/// # Errors
///
/// `bad_name` (either name), `not_found`, `exists`, `busy` (no streaming slot for `peer` in
/// time), or a store failure.
pub(crate) async fn rename(
    core: &Core,
    peer: IpAddr,
    request: &RenameRequest<'_>,
) -> Result<RenameReply, OpError> {
    let from = FileName::new(&request.name)?;
    let to = FileName::new(&request.to)?;
    let overwrite = request.overwrite;
    let _slot = core.transfer_slot(peer).await?;
    let (info, hash) = blocking({
        let store = Arc::clone(&core.store);
        move || -> Result<_, StoreError> {
            store.rename(&from, &to, overwrite)?;
            let (file, info) = store.open_for_read(&to)?;
            let hash = store.hash_of(&to, &file)?;
            Ok((info, hash))
        }
    })
    .await?;
    Ok(RenameReply {
        name: info.name,
        length: info.length,
        hash: hash.to_hex().to_string(),
    })
}
