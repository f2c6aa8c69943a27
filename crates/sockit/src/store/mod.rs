//! The file store: a plain directory of files, with partial uploads and bookkeeping hidden in
//! `<root>/.sockit/`.
//!
//! - A stored file is `<root>/<name>`, where `name` is one validated path component
//!   ([`FileName`]). Symbolic links in the root are never followed, listed or served.
//! - An upload writes `<root>/.sockit/partial/<key>-<length>`, keyed by the name and the file's
//!   total length, so that an interrupted upload of the same file can resume from what is
//!   held. It becomes `<root>/<name>` only when complete, synced and verified: by `rename`
//!   (overwrite) or by `link` (which fails if the name appeared meanwhile), never by writing
//!   under the final name.
//! - A streamed upload (length unknown until its end) writes `<key>-stream-<random>`, created
//!   exclusively: it cannot be resumed, so it is deleted whenever the upload does not complete.
//! - A partial untouched for the partial time-to-live (24 h by default) is deleted by
//!   [`Store::sweep_expired_partials`], which the server runs at start and every 10 minutes.
//! - `<root>/.sockit/meta/<key>.json` caches each file's BLAKE3 hash with the length and
//!   modification time it was computed for; a file changed behind sockit's back is re-hashed.
//! - Listing goes page by page, sorted by name, in memory bounded by the page (`list.rs`).
//!
//! The methods here block (file-system calls); async callers run them on the blocking pool.

mod list;
mod name;

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sockit_proto::ErrorCode;

use crate::transfer::{hash_prefix, BodySink, Writeback};

pub use list::{ListPage, MAX_LIST_ENTRIES, MAX_LIST_PAGE_BYTES};
pub use name::{FileName, NameError, BOOKKEEPING_DIR, MAX_NAME_LEN};

/// Most uploads and downloads streaming at once. Each holds two threads of the runtime's
/// blocking pool (512 by default) while it streams; the cap keeps the rest of the pool free for
/// `stat`, `list` and commits however many slow transfers are open. Further transfers wait.
pub const MAX_TRANSFERS: usize = 128;

/// A stored file, as `list` and `stat` describe it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileInfo {
    /// The file's name.
    pub name: String,
    /// Its length in bytes.
    pub length: u64,
    /// Last modification, in seconds since the Unix epoch.
    pub modified: u64,
}

/// Why a store operation failed; each maps to a reply code.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The name breaks a rule.
    #[error(transparent)]
    BadName(#[from] NameError),
    /// No such file.
    #[error("no file named {0:?}")]
    NotFound(String),
    /// The name is taken and overwriting was not asked for.
    #[error("a file named {0:?} already exists (ask to overwrite to replace it)")]
    Exists(String),
    /// Another upload of the same file is in progress.
    #[error("another upload of {0:?} is in progress")]
    Busy(String),
    /// A resume offset beyond what is held.
    #[error("cannot resume at byte {offset}: {held} bytes are held")]
    BadOffset {
        /// The offset asked for.
        offset: u64,
        /// What the store has.
        held: u64,
    },
    /// The disk is full.
    #[error("the server's disk is full")]
    NoSpace,
    /// The data does not match the hash declared for it.
    #[error("data does not match its hash: declared {declared}, received {actual}")]
    HashMismatch {
        /// The hash the client declared.
        declared: String,
        /// The hash of what arrived.
        actual: String,
    },
    /// Any other file-system failure.
    #[error("file store error: {0}")]
    Io(io::Error),
}

impl StoreError {
    /// The reply code for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            StoreError::BadName(_) => ErrorCode::BadName,
            StoreError::NotFound(_) => ErrorCode::NotFound,
            StoreError::Exists(_) => ErrorCode::Exists,
            StoreError::Busy(_) => ErrorCode::Busy,
            StoreError::BadOffset { .. } => ErrorCode::BadOffset,
            StoreError::NoSpace => ErrorCode::NoSpace,
            StoreError::HashMismatch { .. } => ErrorCode::HashMismatch,
            StoreError::Io(_) => ErrorCode::Internal,
        }
    }
}

impl From<io::Error> for StoreError {
    fn from(err: io::Error) -> Self {
        if err.kind() == io::ErrorKind::StorageFull || err.raw_os_error() == Some(libc::EDQUOT) {
            StoreError::NoSpace
        } else {
            StoreError::Io(err)
        }
    }
}

/// The cached hash of a stored file.
#[derive(Debug, Serialize, Deserialize)]
struct HashRecord {
    length: u64,
    modified_ns: u128,
    hash: String,
}

/// A directory of files.
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    partial_dir: PathBuf,
    meta_dir: PathBuf,
    partial_ttl: Duration,
    active: Mutex<HashSet<PathBuf>>,
    transfers: Arc<tokio::sync::Semaphore>,
}

impl Store {
    /// Opens (creating if needed) the store at `root`.
    ///
    /// # Errors
    ///
    /// When the directories cannot be created.
    pub fn open(root: &Path, partial_ttl: Duration) -> io::Result<Arc<Store>> {
        let bookkeeping = root.join(BOOKKEEPING_DIR);
        let partial_dir = bookkeeping.join("partial");
        let meta_dir = bookkeeping.join("meta");
        fs::create_dir_all(&partial_dir)?;
        fs::create_dir_all(&meta_dir)?;
        Ok(Arc::new(Store {
            root: root.to_path_buf(),
            partial_dir,
            meta_dir,
            partial_ttl,
            active: Mutex::new(HashSet::new()),
            transfers: Arc::new(tokio::sync::Semaphore::new(MAX_TRANSFERS)),
        }))
    }

    /// Waits for one of the [`MAX_TRANSFERS`] streaming slots; it is held until dropped.
    pub async fn transfer_slot(&self) -> tokio::sync::OwnedSemaphorePermit {
        Arc::clone(&self.transfers)
            .acquire_owned()
            .await
            .expect("the transfer semaphore is never closed")
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The stored file `name`, if there is one.
    ///
    /// # Errors
    ///
    /// File-system failures other than "not found".
    pub fn stat(&self, name: &FileName) -> io::Result<Option<FileInfo>> {
        match fs::symlink_metadata(self.root.join(name.as_str())) {
            Ok(meta) if meta.is_file() => Ok(Some(file_info(name.as_str(), &meta))),
            Ok(_) => Ok(None),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// How many bytes of an upload of `name` with total `length` are held for resuming.
    pub fn partial_held(&self, name: &FileName, length: u64) -> u64 {
        fs::symlink_metadata(self.partial_path(name, length))
            .map(|meta| meta.len().min(length))
            .unwrap_or(0)
    }

    /// Starts (or resumes, when `offset > 0`) an upload of `name` whose whole length is
    /// `length`. Returns the upload and a hasher that has already seen the first `offset` bytes;
    /// the caller hashes what it writes, so hashing and writing can run in parallel.
    ///
    /// # Errors
    ///
    /// [`StoreError::Exists`] if the name is taken and `overwrite` is false,
    /// [`StoreError::Busy`] if the same upload is in progress, [`StoreError::BadOffset`] if
    /// fewer than `offset` bytes are held.
    pub fn begin_upload(
        self: &Arc<Self>,
        name: FileName,
        offset: u64,
        length: u64,
        overwrite: bool,
    ) -> Result<(Upload, blake3::Hasher), StoreError> {
        self.refuse_taken(&name, overwrite)?;
        let partial = self.partial_path(&name, length);
        let claim =
            Claim::new(self, partial.clone()).ok_or_else(|| StoreError::Busy(name.to_string()))?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&partial)?;
        let held = file.metadata()?.len();
        if offset > held {
            return Err(StoreError::BadOffset { offset, held });
        }
        file.set_len(offset)?;
        let hasher = hash_prefix(&mut file, offset)?;
        let upload = Upload {
            store: Arc::clone(self),
            name,
            partial,
            writeback: Writeback::start(&file)?,
            file,
            received: 0,
            expected: Some(length - offset),
            delete_on_drop: false,
            _claim: claim,
        };
        Ok((upload, hasher))
    }

    /// Starts an upload of `name` whose length is not known in advance (a stream). Its partial
    /// file is new and its own, cannot be resumed, and is deleted unless the upload is
    /// [finished](Upload::finish): on [`Upload::discard`] and when the upload is dropped.
    ///
    /// # Errors
    ///
    /// [`StoreError::Exists`] if the name is taken and `overwrite` is false, or a file-system
    /// failure.
    pub fn begin_stream_upload(
        self: &Arc<Self>,
        name: FileName,
        overwrite: bool,
    ) -> Result<Upload, StoreError> {
        self.refuse_taken(&name, overwrite)?;
        let (partial, file) = self.create_stream_partial(&name)?;
        let claim = Claim::new(self, partial.clone()).expect("a new partial is nobody's");
        let writeback = match Writeback::start(&file) {
            Ok(writeback) => writeback,
            Err(err) => {
                let _ = fs::remove_file(&partial);
                return Err(err.into());
            }
        };
        Ok(Upload {
            store: Arc::clone(self),
            name,
            partial,
            writeback,
            file,
            received: 0,
            expected: None,
            delete_on_drop: true,
            _claim: claim,
        })
    }

    /// [`StoreError::Exists`] when `name` is stored and is not to be overwritten.
    fn refuse_taken(&self, name: &FileName, overwrite: bool) -> Result<(), StoreError> {
        if !overwrite && self.stat(name)?.is_some() {
            return Err(StoreError::Exists(name.to_string()));
        }
        Ok(())
    }

    /// Creates a partial file of a streamed upload of `name`, with a random part so that it is
    /// never another upload's.
    fn create_stream_partial(&self, name: &FileName) -> io::Result<(PathBuf, File)> {
        const ATTEMPTS: usize = 4;
        let mut last = None;
        for _ in 0..ATTEMPTS {
            let mut random = [0u8; 8];
            getrandom::fill(&mut random).map_err(|err| io::Error::other(err.to_string()))?;
            let path = self.partial_dir.join(format!(
                "{}-stream-{}",
                bookkeeping_key(name),
                hex::encode(random)
            ));
            let created = OpenOptions::new()
                .write(true)
                .create_new(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&path);
            match created {
                Ok(file) => return Ok((path, file)),
                Err(err) if err.kind() == io::ErrorKind::AlreadyExists => last = Some(err),
                Err(err) => return Err(err),
            }
        }
        Err(last.expect("at least one attempt was made"))
    }

    /// Opens the stored file `name` for reading, refusing symbolic links.
    ///
    /// # Errors
    ///
    /// [`StoreError::NotFound`] when there is no regular file by that name.
    pub fn open_for_read(&self, name: &FileName) -> Result<(File, FileInfo), StoreError> {
        let opened = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(self.root.join(name.as_str()));
        let file = match opened {
            Ok(file) => file,
            Err(err)
                if err.kind() == io::ErrorKind::NotFound
                    || err.raw_os_error() == Some(libc::ELOOP) =>
            {
                return Err(StoreError::NotFound(name.to_string()))
            }
            Err(err) => return Err(err.into()),
        };
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(StoreError::NotFound(name.to_string()));
        }
        Ok((file, file_info(name.as_str(), &meta)))
    }

    /// The BLAKE3 hash of an open stored file: from the cache when it was computed for the
    /// file's current length and modification time, else computed now (reading the file) and
    /// cached.
    ///
    /// # Errors
    ///
    /// When the file cannot be read.
    pub fn hash_of(&self, name: &FileName, file: &File) -> io::Result<blake3::Hash> {
        let meta = file.metadata()?;
        let modified_ns = modified_ns(&meta);
        let record_path = self.meta_path(name);
        if let Some(record) = fs::read(&record_path)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<HashRecord>(&bytes).ok())
            .filter(|r| r.length == meta.len() && r.modified_ns == modified_ns)
        {
            if let Ok(hash) = blake3::Hash::from_hex(&record.hash) {
                return Ok(hash);
            }
        }
        let hash = hash_prefix(&mut file.try_clone()?, meta.len())?.finalize();
        self.record_hash(name, &meta, &hash);
        Ok(hash)
    }

    /// Removes the stored file `name` and its cached hash. Partial uploads of the name are
    /// left alone; a symbolic link or anything but a regular file is not a stored file.
    ///
    /// # Errors
    ///
    /// [`StoreError::NotFound`] when there is no regular file by that name, or a file-system
    /// failure.
    pub fn delete(&self, name: &FileName) -> Result<(), StoreError> {
        if self.stat(name)?.is_none() {
            return Err(StoreError::NotFound(name.to_string()));
        }
        // `unlink` never follows a link: should the name have become one since, the link goes.
        match fs::remove_file(self.root.join(name.as_str())) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::NotFound(name.to_string()))
            }
            Err(err) => return Err(err.into()),
        }
        self.forget_hash(name);
        self.sync_root()?;
        Ok(())
    }

    /// Gives the stored file `from` the name `to`, atomically: without `overwrite`, a file
    /// named `to` is never replaced, even one that appears while this runs (`renameat2` with
    /// `RENAME_NOREPLACE`, else a hard link then an unlink). The cached hash moves with the
    /// file. Renaming a file onto its own name changes nothing. Returns the file under its new
    /// name.
    ///
    /// # Errors
    ///
    /// [`StoreError::NotFound`] when `from` is no regular file, [`StoreError::Exists`] when
    /// `to` is taken and `overwrite` is false (or `to` is not a regular file), or a
    /// file-system failure.
    pub fn rename(
        &self,
        from: &FileName,
        to: &FileName,
        overwrite: bool,
    ) -> Result<FileInfo, StoreError> {
        let Some(info) = self.stat(from)? else {
            return Err(StoreError::NotFound(from.to_string()));
        };
        if from == to {
            return Ok(info);
        }
        let (source, target) = (self.root.join(from.as_str()), self.root.join(to.as_str()));
        // Only a regular file is ever replaced. Whether one is there is left to the move
        // itself, which is the only check that cannot be overtaken.
        if fs::symlink_metadata(&target).is_ok_and(|meta| !meta.is_file()) {
            return Err(StoreError::Exists(to.to_string()));
        }
        let moved = if overwrite {
            fs::rename(&source, &target)
        } else {
            rename_noreplace(&source, &target)
        };
        match moved {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
                return Err(StoreError::Exists(to.to_string()))
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::NotFound(from.to_string()))
            }
            Err(err) if err.raw_os_error() == Some(libc::EISDIR) => {
                return Err(StoreError::Exists(to.to_string()))
            }
            Err(err) => return Err(err.into()),
        }
        // The record is checked against length and modification time, which a rename keeps.
        if fs::rename(self.meta_path(from), self.meta_path(to)).is_err() {
            self.forget_hash(to);
        }
        self.sync_root()?;
        Ok(FileInfo {
            name: to.to_string(),
            ..info
        })
    }

    /// Deletes partial uploads not in progress and untouched for the time-to-live; returns how
    /// many.
    ///
    /// # Errors
    ///
    /// When the partial directory cannot be read.
    pub fn sweep_expired_partials(&self) -> io::Result<usize> {
        let now = SystemTime::now();
        let mut removed = 0;
        for entry in fs::read_dir(&self.partial_dir)? {
            let path = entry?.path();
            let expired = fs::symlink_metadata(&path)
                .and_then(|meta| meta.modified())
                .is_ok_and(|modified| {
                    now.duration_since(modified).unwrap_or_default() > self.partial_ttl
                });
            if expired && !self.is_active(&path) && fs::remove_file(&path).is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }

    fn partial_path(&self, name: &FileName, length: u64) -> PathBuf {
        self.partial_dir
            .join(format!("{}-{length}", bookkeeping_key(name)))
    }

    fn meta_path(&self, name: &FileName) -> PathBuf {
        self.meta_dir
            .join(format!("{}.json", bookkeeping_key(name)))
    }

    fn is_active(&self, partial: &Path) -> bool {
        self.active
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(partial)
    }

    /// Caches a hash; a failure only costs a re-hash later.
    fn record_hash(&self, name: &FileName, meta: &fs::Metadata, hash: &blake3::Hash) {
        let record = HashRecord {
            length: meta.len(),
            modified_ns: modified_ns(meta),
            hash: hash.to_hex().to_string(),
        };
        let path = self.meta_path(name);
        let tmp = path.with_extension("tmp");
        let written = serde_json::to_vec(&record)
            .map_err(io::Error::other)
            .and_then(|bytes| fs::write(&tmp, bytes))
            .and_then(|()| fs::rename(&tmp, &path));
        if let Err(err) = written {
            tracing::debug!(%err, "could not cache a file hash");
        }
    }

    /// Drops the cached hash of `name`, if any.
    fn forget_hash(&self, name: &FileName) {
        match fs::remove_file(self.meta_path(name)) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => tracing::debug!(%err, "could not drop a cached file hash"),
        }
    }

    fn sync_root(&self) -> io::Result<()> {
        File::open(&self.root)?.sync_all()
    }
}

/// An upload in progress, written to its partial file.
///
/// Dropped unfinished, a resumable upload keeps its partial for a later resume; a streamed one
/// ([`Store::begin_stream_upload`]) deletes it.
#[derive(Debug)]
pub struct Upload {
    store: Arc<Store>,
    name: FileName,
    partial: PathBuf,
    file: File,
    writeback: Writeback,
    received: u64,
    /// The bytes this upload writes in all, when known in advance.
    expected: Option<u64>,
    /// Whether the partial file is still to be deleted when the upload is dropped.
    delete_on_drop: bool,
    _claim: Claim,
}

impl Upload {
    /// Bytes still expected; `None` for a stream, whose length is known only at its end.
    pub fn remaining(&self) -> Option<u64> {
        self.expected.map(|expected| expected - self.received)
    }

    /// Appends `chunk`, which must not run past the expected length.
    ///
    /// # Errors
    ///
    /// [`StoreError::NoSpace`] or another write failure; the caller should then
    /// [`discard`](Upload::discard).
    pub fn write(&mut self, chunk: &[u8]) -> Result<(), StoreError> {
        assert!(
            self.remaining()
                .is_none_or(|remaining| chunk.len() as u64 <= remaining),
            "upload chunk past the declared length"
        );
        self.file.write_all(chunk)?;
        self.writeback.wrote(chunk.len());
        self.received += chunk.len() as u64;
        Ok(())
    }

    /// Completes the upload whose bytes hash to `hash`: checks it against the `declared` hash,
    /// syncs, and moves the file under its name (replacing an existing file only if
    /// `overwrite`).
    ///
    /// On a hash mismatch or a name taken meanwhile, the partial is deleted.
    ///
    /// # Errors
    ///
    /// [`StoreError::HashMismatch`], [`StoreError::Exists`], or a file-system failure.
    ///
    /// # Panics
    ///
    /// If fewer bytes were written than expected.
    pub fn finish(
        mut self,
        hash: blake3::Hash,
        declared: Option<blake3::Hash>,
        overwrite: bool,
    ) -> Result<FileInfo, StoreError> {
        assert!(
            self.remaining().is_none_or(|remaining| remaining == 0),
            "upload finished before all bytes arrived"
        );
        if let Some(declared) = declared.filter(|declared| *declared != hash) {
            let err = StoreError::HashMismatch {
                declared: declared.to_hex().to_string(),
                actual: hash.to_hex().to_string(),
            };
            self.discard();
            return Err(err);
        }
        self.file.sync_all()?;
        // This upload's own file: after the rename the name may already be another upload's.
        let meta = self.file.metadata()?;
        let target = self.store.root.join(self.name.as_str());
        if overwrite {
            fs::rename(&self.partial, &target)?;
            self.delete_on_drop = false;
        } else {
            match fs::hard_link(&self.partial, &target) {
                Ok(()) => {
                    self.delete_on_drop = false;
                    fs::remove_file(&self.partial)?;
                }
                Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
                    let name = self.name.to_string();
                    self.discard();
                    return Err(StoreError::Exists(name));
                }
                Err(err) => return Err(err.into()),
            }
        }
        self.store.sync_root()?;
        self.store.record_hash(&self.name, &meta, &hash);
        Ok(file_info(self.name.as_str(), &meta))
    }

    /// Abandons the upload and deletes what was held.
    pub fn discard(mut self) {
        self.delete_on_drop = false;
        remove_partial(&self.partial);
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if self.delete_on_drop {
            remove_partial(&self.partial);
        }
    }
}

/// Renames `source` to `target` unless `target` exists, atomically: `renameat2` with
/// `RENAME_NOREPLACE` where the system has it, else a hard link (which fails if `target`
/// exists) and the unlink of `source`.
fn rename_noreplace(source: &Path, target: &Path) -> io::Result<()> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use nix::errno::Errno;
        use nix::fcntl::{renameat2, RenameFlags, AT_FDCWD};
        match renameat2(
            AT_FDCWD,
            source,
            AT_FDCWD,
            target,
            RenameFlags::RENAME_NOREPLACE,
        ) {
            Ok(()) => return Ok(()),
            // The file system cannot do it: link and unlink instead.
            Err(Errno::EINVAL | Errno::ENOSYS | Errno::EOPNOTSUPP) => {}
            Err(errno) => return Err(errno.into()),
        }
    }
    link_then_unlink(source, target)
}

/// Moves `source` to `target` unless `target` exists: a hard link (which never replaces, and
/// never follows a link), then the unlink of `source`.
fn link_then_unlink(source: &Path, target: &Path) -> io::Result<()> {
    fs::hard_link(source, target)?;
    fs::remove_file(source)
}

/// Deletes a partial upload; a failure is logged, and the sweep of expired partials retries.
fn remove_partial(partial: &Path) {
    if let Err(err) = fs::remove_file(partial) {
        tracing::warn!(%err, partial = %partial.display(), "could not remove a partial upload");
    }
}

impl BodySink for Upload {
    type Error = StoreError;

    fn write(&mut self, data: &[u8]) -> Result<(), StoreError> {
        Upload::write(self, data)
    }
}

/// Marks a partial file as in use by one upload; released on drop.
#[derive(Debug)]
struct Claim {
    store: Arc<Store>,
    partial: PathBuf,
}

impl Claim {
    fn new(store: &Arc<Store>, partial: PathBuf) -> Option<Claim> {
        let inserted = store
            .active
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(partial.clone());
        inserted.then(|| Claim {
            store: Arc::clone(store),
            partial,
        })
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.store
            .active
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.partial);
    }
}

/// The file-system-safe key of a name in the bookkeeping directory.
fn bookkeeping_key(name: &FileName) -> String {
    blake3::hash(name.as_str().as_bytes()).to_hex()[..32].to_owned()
}

fn file_info(name: &str, meta: &fs::Metadata) -> FileInfo {
    FileInfo {
        name: name.to_owned(),
        length: meta.len(),
        modified: meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs()),
    }
}

fn modified_ns(meta: &fs::Metadata) -> u128 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos())
}

#[cfg(test)]
mod tests {
    //! The store on a temporary directory: names at the length limit, the life of an upload
    //! (begin, write, finish, discard, resume, busy), the sweep of expired partials with an
    //! injected time-to-live, and the hash cache.

    use std::fs::FileTimes;

    use super::*;

    const DAY: Duration = Duration::from_secs(24 * 3600);

    fn open(ttl: Duration) -> (tempfile::TempDir, Arc<Store>) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), ttl).unwrap();
        (dir, store)
    }

    fn name(name: &str) -> FileName {
        FileName::new(name).unwrap()
    }

    /// Uploads `data` as `name` in one go.
    fn put(
        store: &Arc<Store>,
        name: &FileName,
        data: &[u8],
        overwrite: bool,
    ) -> Result<FileInfo, StoreError> {
        let len = data.len() as u64;
        let (mut upload, mut hasher) = store.begin_upload(name.clone(), 0, len, overwrite)?;
        upload.write(data)?;
        hasher.update(data);
        upload.finish(hasher.finalize(), None, overwrite)
    }

    /// The partial files present.
    fn partials(store: &Store) -> Vec<PathBuf> {
        fs::read_dir(&store.partial_dir)
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .collect()
    }

    fn set_modified(path: &Path, when: SystemTime) {
        let file = File::options().write(true).open(path).unwrap();
        file.set_times(FileTimes::new().set_modified(when)).unwrap();
    }

    #[test]
    fn names_of_the_longest_length_are_stored_and_one_byte_more_is_refused() {
        let (dir, store) = open(DAY);
        // 255 bytes: in ASCII, and in three-byte characters.
        for long in ["x".repeat(MAX_NAME_LEN), "澳".repeat(MAX_NAME_LEN / 3)] {
            assert_eq!(long.len(), 255);
            let info = put(&store, &name(&long), b"data", false).unwrap();
            assert_eq!((info.name.as_str(), info.length), (long.as_str(), 4));
            assert_eq!(fs::read(dir.path().join(&long)).unwrap(), b"data");
            let (file, _) = store.open_for_read(&name(&long)).unwrap();
            assert_eq!(
                store.hash_of(&name(&long), &file).unwrap(),
                blake3::hash(b"data")
            );
        }
        // The limit counts bytes, not characters.
        for over in [
            "x".repeat(MAX_NAME_LEN + 1),
            format!("{}x", "澳".repeat(MAX_NAME_LEN / 3)),
            "é".repeat(128),
        ] {
            assert_eq!(FileName::new(&over), Err(NameError::TooLong(256)));
        }
    }

    #[test]
    fn an_upload_is_a_partial_until_it_is_finished_under_its_name() {
        let (dir, store) = open(DAY);
        let file = name("a.bin");
        let (mut upload, mut hasher) = store.begin_upload(file.clone(), 0, 10, false).unwrap();
        assert_eq!(upload.remaining(), Some(10));
        upload.write(b"0123").unwrap();
        hasher.update(b"0123");
        assert_eq!(store.partial_held(&file, 10), 4);
        assert!(
            store.stat(&file).unwrap().is_none(),
            "visible before it is whole"
        );
        upload.write(b"456789").unwrap();
        hasher.update(b"456789");
        assert_eq!(upload.remaining(), Some(0));
        let hash = hasher.finalize();
        assert_eq!(hash, blake3::hash(b"0123456789"));

        let info = upload.finish(hash, Some(hash), false).unwrap();
        assert_eq!((info.name.as_str(), info.length), ("a.bin", 10));
        assert_eq!(store.stat(&file).unwrap(), Some(info));
        assert_eq!(fs::read(dir.path().join("a.bin")).unwrap(), b"0123456789");
        assert!(partials(&store).is_empty());
        assert_eq!(store.partial_held(&file, 10), 0);
    }

    #[test]
    fn a_discarded_upload_leaves_nothing() {
        let (dir, store) = open(DAY);
        let (mut upload, _) = store.begin_upload(name("d"), 0, 10, false).unwrap();
        upload.write(b"abc").unwrap();
        upload.discard();
        assert!(partials(&store).is_empty());
        assert!(!dir.path().join("d").exists());
        // The name is free again.
        assert!(store.begin_upload(name("d"), 0, 10, false).is_ok());
    }

    #[test]
    fn a_wrong_hash_deletes_the_upload() {
        let (dir, store) = open(DAY);
        let (mut upload, mut hasher) = store.begin_upload(name("h"), 0, 3, false).unwrap();
        upload.write(b"abc").unwrap();
        hasher.update(b"abc");
        let declared = blake3::hash(b"abd");
        let err = upload
            .finish(hasher.finalize(), Some(declared), false)
            .unwrap_err();
        assert!(
            matches!(&err, StoreError::HashMismatch { declared: d, actual }
                if *d == declared.to_hex().as_str() && *actual == blake3::hash(b"abc").to_hex().as_str()),
            "{err}"
        );
        assert_eq!(err.code(), ErrorCode::HashMismatch);
        assert!(partials(&store).is_empty());
        assert!(!dir.path().join("h").exists());
    }

    #[test]
    fn an_existing_name_is_kept_unless_overwrite_is_asked() {
        let (dir, store) = open(DAY);
        let file = name("same");
        put(&store, &file, b"first", false).unwrap();
        let err = store.begin_upload(file.clone(), 0, 6, false).unwrap_err();
        assert!(
            matches!(&err, StoreError::Exists(n) if n == "same"),
            "{err}"
        );
        assert_eq!(err.code(), ErrorCode::Exists);

        // A name taken while the upload ran: the upload is dropped, the file kept.
        let (mut upload, mut hasher) = store.begin_upload(name("race"), 0, 4, false).unwrap();
        upload.write(b"mine").unwrap();
        hasher.update(b"mine");
        fs::write(dir.path().join("race"), b"theirs").unwrap();
        let err = upload.finish(hasher.finalize(), None, false).unwrap_err();
        assert!(
            matches!(&err, StoreError::Exists(n) if n == "race"),
            "{err}"
        );
        assert_eq!(fs::read(dir.path().join("race")).unwrap(), b"theirs");
        assert!(partials(&store).is_empty());

        put(&store, &file, b"second", true).unwrap();
        assert_eq!(fs::read(dir.path().join("same")).unwrap(), b"second");
    }

    #[test]
    fn an_interrupted_upload_resumes_from_what_is_held() {
        let (dir, store) = open(DAY);
        let file = name("r.bin");
        let data = b"the whole file, in two sittings";
        let len = data.len() as u64;
        let (mut upload, _) = store.begin_upload(file.clone(), 0, len, false).unwrap();
        upload.write(&data[..12]).unwrap();
        drop(upload); // the connection went away
        assert_eq!(store.partial_held(&file, len), 12);
        assert_eq!(store.partial_held(&file, len + 1), 0, "held per length");

        let err = store
            .begin_upload(file.clone(), 13, len, false)
            .unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::BadOffset {
                    offset: 13,
                    held: 12
                }
            ),
            "{err}"
        );
        assert_eq!(err.code(), ErrorCode::BadOffset);

        // Resuming before the end of what is held drops the rest.
        let (mut upload, mut hasher) = store.begin_upload(file.clone(), 10, len, false).unwrap();
        assert_eq!(store.partial_held(&file, len), 10);
        assert_eq!(upload.remaining(), Some(len - 10));
        upload.write(&data[10..]).unwrap();
        hasher.update(&data[10..]);
        let hash = hasher.finalize();
        assert_eq!(hash, blake3::hash(data), "the hasher saw the held prefix");
        upload.finish(hash, None, false).unwrap();
        assert_eq!(fs::read(dir.path().join("r.bin")).unwrap(), data);
    }

    #[test]
    fn a_second_upload_of_one_name_and_length_is_busy_while_the_first_runs() {
        let (_dir, store) = open(DAY);
        let file = name("b");
        let (first, _) = store.begin_upload(file.clone(), 0, 100, false).unwrap();
        let err = store.begin_upload(file.clone(), 0, 100, false).unwrap_err();
        assert!(matches!(&err, StoreError::Busy(n) if n == "b"), "{err}");
        assert_eq!(err.code(), ErrorCode::Busy);
        // Another length is another upload.
        let (other, _) = store.begin_upload(file.clone(), 0, 101, false).unwrap();
        drop(first);
        let (again, _) = store.begin_upload(file.clone(), 0, 100, false).unwrap();
        drop((other, again));
    }

    #[test]
    fn partials_untouched_for_longer_than_the_time_to_live_are_swept() {
        let ttl = Duration::from_secs(3600);
        let (_dir, store) = open(ttl);
        let now = SystemTime::now();
        let mut held = Vec::new();
        for (file, age) in [
            ("old", ttl + Duration::from_secs(60)),
            ("young", ttl - Duration::from_secs(60)),
        ] {
            let (mut upload, _) = store.begin_upload(name(file), 0, 10, false).unwrap();
            upload.write(b"part").unwrap();
            drop(upload);
            set_modified(&store.partial_path(&name(file), 10), now - age);
            held.push(store.partial_path(&name(file), 10));
        }
        // Older still, but an upload is writing to it.
        let (mut busy, _) = store.begin_upload(name("busy"), 0, 10, false).unwrap();
        busy.write(b"part").unwrap();
        set_modified(&store.partial_path(&name("busy"), 10), now - ttl * 2);

        assert_eq!(store.sweep_expired_partials().unwrap(), 1);
        assert!(!held[0].exists(), "the expired partial is still there");
        assert!(
            held[1].exists(),
            "a partial within its time-to-live was swept"
        );
        assert_eq!(
            store.partial_held(&name("busy"), 10),
            4,
            "an upload in progress was swept"
        );
        assert_eq!(store.partial_held(&name("young"), 10), 4);
        drop(busy);
        assert_eq!(
            store.sweep_expired_partials().unwrap(),
            1,
            "once idle, it expires too"
        );
        assert_eq!(partials(&store).len(), 1);
    }

    #[test]
    fn delete_removes_the_file_and_its_hash_but_no_partial_and_no_link() {
        let (dir, store) = open(DAY);
        let file = name("gone");
        let (mut upload, _) = store.begin_upload(file.clone(), 0, 10, false).unwrap();
        upload.write(b"part").unwrap();
        drop(upload);
        put(&store, &file, b"data", false).unwrap();
        assert!(store.meta_path(&file).exists());

        store.delete(&file).unwrap();
        assert!(!dir.path().join("gone").exists());
        assert!(!store.meta_path(&file).exists(), "the cached hash stayed");
        assert_eq!(
            store.partial_held(&file, 10),
            4,
            "a partial upload was touched"
        );
        assert!(matches!(store.delete(&file), Err(StoreError::NotFound(n)) if n == "gone"));

        // A symbolic link in the root is not a stored file: neither it nor its target goes.
        fs::write(dir.path().join("target"), b"kept").unwrap();
        std::os::unix::fs::symlink(dir.path().join("target"), dir.path().join("link")).unwrap();
        assert!(matches!(
            store.delete(&name("link")),
            Err(StoreError::NotFound(_))
        ));
        assert!(fs::symlink_metadata(dir.path().join("link")).is_ok());
        assert_eq!(fs::read(dir.path().join("target")).unwrap(), b"kept");
    }

    #[test]
    fn rename_moves_the_file_and_its_hash_and_replaces_only_when_asked() {
        let (dir, store) = open(DAY);
        let (a, b) = (name("a"), name("b"));
        put(&store, &a, b"alpha", false).unwrap();
        put(&store, &b, b"beta", false).unwrap();

        let err = store.rename(&a, &b, false).unwrap_err();
        assert!(matches!(&err, StoreError::Exists(n) if n == "b"), "{err}");
        assert_eq!(fs::read(dir.path().join("b")).unwrap(), b"beta");
        assert_eq!(fs::read(dir.path().join("a")).unwrap(), b"alpha");

        let info = store.rename(&a, &b, true).unwrap();
        assert_eq!((info.name.as_str(), info.length), ("b", 5));
        assert!(!dir.path().join("a").exists());
        assert_eq!(fs::read(dir.path().join("b")).unwrap(), b"alpha");
        assert!(!store.meta_path(&a).exists());
        let record: HashRecord =
            serde_json::from_slice(&fs::read(store.meta_path(&b)).unwrap()).unwrap();
        assert_eq!(record.hash, blake3::hash(b"alpha").to_hex().as_str());

        let info = store.rename(&b, &name("c"), false).unwrap();
        assert_eq!(info.name, "c");
        assert_eq!(
            store.rename(&name("c"), &name("c"), false).unwrap().length,
            5
        );
        assert!(
            matches!(store.rename(&a, &name("d"), false), Err(StoreError::NotFound(n)) if n == "a")
        );

        // Links are neither moved nor replaced.
        std::os::unix::fs::symlink(dir.path().join("c"), dir.path().join("link")).unwrap();
        assert!(matches!(
            store.rename(&name("link"), &name("e"), true),
            Err(StoreError::NotFound(_))
        ));
        assert!(matches!(
            store.rename(&name("c"), &name("link"), true),
            Err(StoreError::Exists(_))
        ));
        assert_eq!(fs::read(dir.path().join("c")).unwrap(), b"alpha");
    }

    #[test]
    fn the_no_replace_moves_refuse_a_target_that_exists_when_they_run() {
        let dir = tempfile::tempdir().unwrap();
        let (source, target) = (dir.path().join("s"), dir.path().join("t"));
        for mv in [rename_noreplace, link_then_unlink] {
            fs::write(&source, b"source").unwrap();
            fs::write(&target, b"target").unwrap();
            let err = mv(&source, &target).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
            assert_eq!(fs::read(&target).unwrap(), b"target");
            assert_eq!(fs::read(&source).unwrap(), b"source");
            fs::remove_file(&target).unwrap();
            mv(&source, &target).unwrap();
            assert_eq!(fs::read(&target).unwrap(), b"source");
            assert!(!source.exists());
            fs::remove_file(&target).unwrap();
        }
    }

    #[test]
    fn a_target_created_while_renaming_is_never_replaced() {
        let (dir, store) = open(DAY);
        for round in 0..200 {
            let (from, to) = (name(&format!("a{round}")), name(&format!("b{round}")));
            fs::write(dir.path().join(from.as_str()), b"mine").unwrap();
            let target = dir.path().join(to.as_str());
            let creator = std::thread::spawn(move || {
                match OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&target)
                {
                    Ok(mut file) => {
                        file.write_all(b"theirs").unwrap();
                        true
                    }
                    Err(err) if err.kind() == io::ErrorKind::AlreadyExists => false,
                    Err(err) => panic!("{err}"),
                }
            });
            let renamed = store.rename(&from, &to, false);
            let created = creator.join().unwrap();
            assert!(
                renamed.is_ok() != created,
                "round {round}: rename {renamed:?}, other file created: {created}"
            );
        }
    }

    #[test]
    fn the_hash_cache_is_used_while_length_and_time_match_and_redone_when_they_change() {
        let (dir, store) = open(DAY);
        let file = name("c.txt");
        let path = dir.path().join("c.txt");
        fs::write(&path, b"version one").unwrap();
        let hash_now = || {
            let (opened, _) = store.open_for_read(&file).unwrap();
            store.hash_of(&file, &opened).unwrap()
        };
        assert_eq!(hash_now(), blake3::hash(b"version one"));
        assert!(store.meta_path(&file).exists(), "the hash was not cached");

        // Same length, same modification time: the cached hash is trusted without reading.
        let modified = fs::metadata(&path).unwrap().modified().unwrap();
        fs::write(&path, b"version two").unwrap();
        set_modified(&path, modified);
        assert_eq!(hash_now(), blake3::hash(b"version one"));

        // Another modification time: hashed again.
        set_modified(&path, modified + Duration::from_secs(1));
        assert_eq!(hash_now(), blake3::hash(b"version two"));
        // Another length, the time put back: hashed again.
        fs::write(&path, b"version three").unwrap();
        set_modified(&path, modified + Duration::from_secs(1));
        assert_eq!(hash_now(), blake3::hash(b"version three"));
        // A damaged record is no answer either.
        fs::write(store.meta_path(&file), b"{not json").unwrap();
        assert_eq!(hash_now(), blake3::hash(b"version three"));

        // A finished upload records the hash of what it stored.
        put(&store, &file, b"uploaded", true).unwrap();
        let record: HashRecord =
            serde_json::from_slice(&fs::read(store.meta_path(&file)).unwrap()).unwrap();
        assert_eq!(record.hash, blake3::hash(b"uploaded").to_hex().as_str());
        assert_eq!(record.length, 8);
    }
}
