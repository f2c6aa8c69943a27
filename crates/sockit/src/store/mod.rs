//! The file store: a plain directory of files, with partial uploads and bookkeeping hidden in
//! `<root>/.sockit/`.
//!
//! - A stored file is `<root>/<name>`, a regular file, where `name` is one validated path
//!   component ([`FileName`]). Symbolic links, directories, FIFOs, sockets and devices in the
//!   root are never followed, listed or served (a FIFO is opened without waiting for a writer,
//!   then refused), nor replaced by an upload or a rename (but a link by an upload with
//!   `overwrite`: the link itself).
//! - An upload writes `<root>/.sockit/partial/<key>-<length>`, keyed by the name and the file's
//!   total length, so that an interrupted upload of the same file can resume from what is
//!   held. It becomes `<root>/<name>` only when complete, synced and verified: by `rename`
//!   (overwrite) or by `link` (which fails if the name appeared meanwhile), never by writing
//!   under the final name.
//! - A streamed upload (length unknown until its end) writes `<key>-stream-<random>`, created
//!   exclusively: it cannot be resumed, so it is deleted whenever the upload does not complete.
//! - No partial is without data: a refused resume creates none, and an upload that ends
//!   before its first byte deletes the one it created.
//! - An upload whose client cannot resume ([`Upload::not_resumable`]: the tutorials' upload)
//!   deletes its partial when it does not complete, like a stream.
//! - Partials are capped per source address and in all ([`PartialLimits`], `partial.rs`): at
//!   its own cap, a new upload from an address deletes that address's oldest partial no upload
//!   is writing; past the total cap, or when all of its partials are being written, it is
//!   `busy`.
//! - A partial untouched for the partial time-to-live (24 h by default) is deleted by
//!   [`Store::sweep_expired_partials`], which the server runs at start and every 10 minutes.
//! - `<root>/.sockit/meta/<key>.json` caches each file's BLAKE3 hash with the inode, length,
//!   modification time and change time (to the nanosecond) it was computed for; a file changed
//!   behind sockit's back is re-hashed, even one rewritten with its length and modification
//!   time put back (which cannot put back the change time).
//! - Nothing under `<root>/.sockit/` is reached through a symbolic link: the store refuses to
//!   open when one of its directories is a link, then holds each open and reaches every file
//!   in it by name relative to it, with `O_NOFOLLOW` (`bookdir.rs`); a link found where a
//!   partial or a record belongs is removed or replaced, never followed.
//! - Listing goes page by page, sorted by name, in memory bounded by the page (`list.rs`).
//!
//! The methods here block (file-system calls); async callers run them on the blocking pool.

mod append;
mod bookdir;
mod list;
mod name;
mod partial;

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sockit_proto::ErrorCode;

use crate::transfer::{hash_prefix, BodySink};

pub use list::{ListPage, MAX_LIST_ENTRIES, MAX_LIST_PAGE_BYTES};
pub use name::{FileName, NameError, BOOKKEEPING_DIR, MAX_NAME_LEN};
pub use partial::{PartialCap, PartialLimits};

use append::Appender;
use bookdir::BookDir;
use nix::fcntl::OFlag;
use partial::{Claim, Partials};

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
    /// The name is something other than a regular file, which is never served, deleted or
    /// renamed.
    #[error("{name:?} is a {kind}, not a stored file: only regular files are served")]
    NotAFile {
        /// The name.
        name: String,
        /// What it is: directory, FIFO, socket, device, symbolic link.
        kind: &'static str,
    },
    /// The name is taken and overwriting was not asked for.
    #[error("a file named {0:?} already exists (ask to overwrite to replace it)")]
    Exists(String),
    /// The name is taken by something other than a regular file, which is never replaced.
    #[error("{name:?} is a {kind} on the server, not a regular file: it is never replaced")]
    Occupied {
        /// The name.
        name: String,
        /// What it is: directory, FIFO, socket, device, symbolic link.
        kind: &'static str,
    },
    /// Another upload of the same file is in progress.
    #[error("another upload of {0:?} is running; try again when it ends")]
    Busy(String),
    /// A new upload would hold more partial files than allowed.
    #[error("{}", too_many_partials(*.0))]
    TooManyPartials(PartialCap),
    /// A resume offset beyond what is held.
    #[error("cannot resume at byte {offset}: {held} bytes are held")]
    BadOffset {
        /// The offset asked for.
        offset: u64,
        /// What the store has.
        held: u64,
    },
    /// A download offset past the end of the file.
    #[error("offset {offset} is past the end of the {length}-byte file")]
    PastEnd {
        /// The offset asked for.
        offset: u64,
        /// The file's length.
        length: u64,
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
            StoreError::NotFound(_) | StoreError::NotAFile { .. } => ErrorCode::NotFound,
            StoreError::Exists(_) | StoreError::Occupied { .. } => ErrorCode::Exists,
            StoreError::Busy(_) | StoreError::TooManyPartials(_) => ErrorCode::Busy,
            StoreError::BadOffset { .. } | StoreError::PastEnd { .. } => ErrorCode::BadOffset,
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

/// The sentence of [`StoreError::TooManyPartials`].
fn too_many_partials(cap: PartialCap) -> String {
    match cap {
        PartialCap::PerSource(max) => format!(
            "{max} uploads from your address are being written now, its limit: \
             try again when one ends"
        ),
        PartialCap::Total(max) => {
            format!("the server holds {max} unfinished uploads, its limit: try again later")
        }
    }
}

/// The cached hash of a stored file, with what identified the file's content when it was
/// computed. A record written by an older version lacks the inode and change time, so it
/// matches no file and is redone.
#[derive(Debug, Serialize, Deserialize)]
struct HashRecord {
    length: u64,
    modified_ns: u128,
    #[serde(default)]
    changed_ns: u128,
    #[serde(default)]
    device: u64,
    #[serde(default)]
    inode: u64,
    hash: String,
}

impl HashRecord {
    fn new(meta: &fs::Metadata, hash: &blake3::Hash) -> HashRecord {
        HashRecord {
            length: meta.len(),
            modified_ns: modified_ns(meta),
            changed_ns: changed_ns(meta),
            device: meta.dev(),
            inode: meta.ino(),
            hash: hash.to_hex().to_string(),
        }
    }

    /// The recorded hash, if the record was made for the file as `meta` describes it now.
    fn hash_for(&self, meta: &fs::Metadata) -> Option<blake3::Hash> {
        let same = self.length == meta.len()
            && self.modified_ns == modified_ns(meta)
            && self.changed_ns == changed_ns(meta)
            && self.device == meta.dev()
            && self.inode == meta.ino();
        same.then(|| blake3::Hash::from_hex(&self.hash).ok())
            .flatten()
    }
}

/// Largest hash record read; a record is about 250 bytes.
const MAX_RECORD_LEN: u64 = 4096;

/// A directory of files.
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    partial_dir: BookDir,
    meta_dir: BookDir,
    partial_limits: PartialLimits,
    partials: Mutex<Partials>,
}

impl Store {
    /// Opens (creating if needed) the store at `root`, counting the partial uploads it holds.
    ///
    /// # Errors
    ///
    /// When the directories cannot be created or read, or one of the bookkeeping directories
    /// is a symbolic link (or anything but a directory).
    pub fn open(root: &Path, partial_limits: PartialLimits) -> io::Result<Arc<Store>> {
        let bookkeeping = root.join(BOOKKEEPING_DIR);
        fs::create_dir_all(root)?;
        BookDir::open(&bookkeeping)?;
        let partial_dir = BookDir::open(&bookkeeping.join("partial"))?;
        let meta_dir = BookDir::open(&bookkeeping.join("meta"))?;
        let found = held_partials(&partial_dir)?;
        Ok(Arc::new(Store {
            root: root.to_path_buf(),
            partial_dir,
            meta_dir,
            partial_limits,
            partials: Mutex::new(Partials::found(found)),
        }))
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
        self.partial_dir
            .metadata(&partial_name(name, length))
            .ok()
            .filter(fs::Metadata::is_file)
            .map_or(0, |meta| meta.len().min(length))
    }

    /// How many partial uploads the store holds, in all and begun by `source`.
    pub fn partials_held(&self, source: IpAddr) -> (usize, usize) {
        let partials = self.partials();
        (partials.held(), partials.held_by(source))
    }

    /// Starts (or resumes, when `offset > 0`) an upload of `name` whose whole length is
    /// `length`, for a client at `source`. Returns the upload and a hasher that has already
    /// seen the first `offset` bytes; the caller hashes what it writes, so hashing and writing
    /// can run in parallel. A resume creates no partial file: only a new upload does.
    ///
    /// # Errors
    ///
    /// [`StoreError::Exists`] if the name is taken and `overwrite` is false,
    /// [`StoreError::Occupied`] if it is taken by a directory or another file that is not
    /// regular, [`StoreError::Busy`] if the same upload is in progress,
    /// [`StoreError::TooManyPartials`] if a new partial would pass a cap,
    /// [`StoreError::BadOffset`] if fewer than `offset` bytes are held.
    pub fn begin_upload(
        self: &Arc<Self>,
        name: FileName,
        offset: u64,
        length: u64,
        overwrite: bool,
        source: IpAddr,
    ) -> Result<(Upload, blake3::Hasher), StoreError> {
        self.refuse_taken(&name, overwrite)?;
        let partial = partial_name(&name, length);
        let claim =
            Claim::new(self, partial.clone()).ok_or_else(|| StoreError::Busy(name.to_string()))?;
        let mut file = if offset == 0 {
            claim.admit(source)?;
            self.open_partial(&partial, true)?
        } else {
            match self.open_partial(&partial, false) {
                Ok(file) => file,
                Err(err) if err.kind() == io::ErrorKind::NotFound => {
                    return Err(StoreError::BadOffset { offset, held: 0 })
                }
                Err(err) => return Err(err.into()),
            }
        };
        let held = file.metadata()?.len();
        if offset > held {
            return Err(StoreError::BadOffset { offset, held });
        }
        file.set_len(offset)?;
        let hasher = hash_prefix(&mut file, offset)?;
        let direct = self.open_direct(&partial, &file);
        let upload = Upload {
            store: Arc::clone(self),
            name,
            partial,
            appender: Appender::new(file, direct, offset)?,
            offset,
            received: 0,
            expected: Some(length - offset),
            delete_on_drop: false,
            settled: false,
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
    /// [`StoreError::Exists`] or [`StoreError::Occupied`] as for [`Store::begin_upload`],
    /// [`StoreError::TooManyPartials`] if its partial would pass a cap, or a file-system
    /// failure.
    pub fn begin_stream_upload(
        self: &Arc<Self>,
        name: FileName,
        overwrite: bool,
        source: IpAddr,
    ) -> Result<Upload, StoreError> {
        self.refuse_taken(&name, overwrite)?;
        let (partial, file, claim) = self.create_stream_partial(&name, source)?;
        let direct = self.open_direct(&partial, &file);
        let appender = match Appender::new(file, direct, 0) {
            Ok(appender) => appender,
            Err(err) => {
                let _ = self.partial_dir.remove(&partial);
                return Err(err.into());
            }
        };
        Ok(Upload {
            store: Arc::clone(self),
            name,
            partial,
            appender,
            offset: 0,
            received: 0,
            expected: None,
            delete_on_drop: true,
            settled: false,
            _claim: claim,
        })
    }

    /// [`StoreError::Exists`] when `name` is taken and is not to be overwritten (a symbolic
    /// link counts: an upload replaces one only when asked), [`StoreError::Occupied`] when it
    /// is taken by something no upload replaces: a directory, a FIFO, a socket, a device.
    fn refuse_taken(&self, name: &FileName, overwrite: bool) -> Result<(), StoreError> {
        match fs::symlink_metadata(self.root.join(name.as_str())) {
            Ok(meta) if !meta.is_file() && !meta.is_symlink() => Err(StoreError::Occupied {
                name: name.to_string(),
                kind: kind_of(&meta),
            }),
            Ok(_) if !overwrite => Err(StoreError::Exists(name.to_string())),
            Ok(_) => Ok(()),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(err) => Err(err.into()),
        }
    }

    /// Creates and claims a partial file of a streamed upload of `name` from `source`, with a
    /// random part so that it is never another upload's.
    fn create_stream_partial(
        self: &Arc<Self>,
        name: &FileName,
        source: IpAddr,
    ) -> Result<(String, File, Claim), StoreError> {
        const ATTEMPTS: usize = 4;
        let mut last = None;
        for _ in 0..ATTEMPTS {
            let partial = format!("{}-stream-{}", bookkeeping_key(name), random_hex()?);
            let Some(claim) = Claim::new(self, partial.clone()) else {
                continue;
            };
            claim.admit(source)?;
            let created = self
                .partial_dir
                .open_file(&partial, OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL);
            match created {
                Ok(file) => return Ok((partial, file, claim)),
                Err(err) if err.kind() == io::ErrorKind::AlreadyExists => last = Some(err),
                Err(err) => return Err(err.into()),
            }
        }
        Err(last
            .unwrap_or_else(|| io::Error::other("no free name for a partial upload"))
            .into())
    }

    /// Opens the stored file `name` for reading: a regular file, never through a symbolic
    /// link, and without waiting (a FIFO is opened non-blocking, then refused).
    ///
    /// # Errors
    ///
    /// [`StoreError::NotFound`] when there is nothing by that name, [`StoreError::NotAFile`]
    /// when it is not a regular file.
    pub fn open_for_read(&self, name: &FileName) -> Result<(File, FileInfo), StoreError> {
        let path = self.root.join(name.as_str());
        // Most that is not a regular file is refused before it is opened at all.
        self.regular_file(name)?;
        let file = match open_no_wait(&path, OpenOptions::new().read(true)) {
            Ok(file) => file,
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::NotFound(name.to_string()))
            }
            Err(err) if err.raw_os_error() == Some(libc::ELOOP) => {
                return Err(StoreError::NotAFile {
                    name: name.to_string(),
                    kind: "symbolic link",
                })
            }
            Err(err) => return Err(err.into()),
        };
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(StoreError::NotAFile {
                name: name.to_string(),
                kind: kind_of(&meta),
            });
        }
        Ok((file, file_info(name.as_str(), &meta)))
    }

    /// The metadata of the regular file `name`, not following a link.
    ///
    /// # Errors
    ///
    /// [`StoreError::NotFound`] when there is nothing by that name, [`StoreError::NotAFile`]
    /// when it is not a regular file.
    fn regular_file(&self, name: &FileName) -> Result<fs::Metadata, StoreError> {
        match fs::symlink_metadata(self.root.join(name.as_str())) {
            Ok(meta) if meta.is_file() => Ok(meta),
            Ok(meta) => Err(StoreError::NotAFile {
                name: name.to_string(),
                kind: kind_of(&meta),
            }),
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                Err(StoreError::NotFound(name.to_string()))
            }
            Err(err) => Err(err.into()),
        }
    }

    /// The BLAKE3 hash of an open stored file: from the cache when it was computed for the
    /// file as it is now (same inode, length, modification and change times), else computed
    /// now (reading the file) and cached.
    ///
    /// # Errors
    ///
    /// When the file cannot be read.
    pub fn hash_of(&self, name: &FileName, file: &File) -> io::Result<blake3::Hash> {
        let meta = file.metadata()?;
        if let Some(hash) = self.cached_hash(name, &meta) {
            return Ok(hash);
        }
        let hash = hash_prefix(&mut file.try_clone()?, meta.len())?.finalize();
        self.record_hash(name, &meta, &hash);
        Ok(hash)
    }

    /// The cached hash of `name`, if it was computed for the file `meta` describes.
    fn cached_hash(&self, name: &FileName, meta: &fs::Metadata) -> Option<blake3::Hash> {
        let record = self
            .meta_dir
            .open_file(&record_name(name), OFlag::O_RDONLY)
            .ok()?;
        if !record.metadata().ok()?.is_file() {
            return None;
        }
        let mut bytes = Vec::new();
        record.take(MAX_RECORD_LEN).read_to_end(&mut bytes).ok()?;
        serde_json::from_slice::<HashRecord>(&bytes)
            .ok()?
            .hash_for(meta)
    }

    /// Removes the stored file `name` and its cached hash. Partial uploads of the name are
    /// left alone; a symbolic link or anything but a regular file is not a stored file.
    ///
    /// # Errors
    ///
    /// [`StoreError::NotFound`] when there is nothing by that name, [`StoreError::NotAFile`]
    /// when it is not a regular file, or a file-system failure.
    pub fn delete(&self, name: &FileName) -> Result<(), StoreError> {
        self.regular_file(name)?;
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
    /// [`StoreError::NotFound`] or [`StoreError::NotAFile`] when `from` is no regular file,
    /// [`StoreError::Exists`] when `to` is taken and `overwrite` is false,
    /// [`StoreError::Occupied`] when `to` is not a regular file, or a file-system failure.
    pub fn rename(
        &self,
        from: &FileName,
        to: &FileName,
        overwrite: bool,
    ) -> Result<FileInfo, StoreError> {
        let before = self.regular_file(from)?;
        let info = file_info(from.as_str(), &before);
        if from == to {
            return Ok(info);
        }
        let (source, target) = (self.root.join(from.as_str()), self.root.join(to.as_str()));
        // Only a regular file is ever replaced. Whether one is there is left to the move
        // itself, which is the only check that cannot be overtaken.
        if let Ok(meta) = fs::symlink_metadata(&target) {
            if !meta.is_file() {
                return Err(StoreError::Occupied {
                    name: to.to_string(),
                    kind: kind_of(&meta),
                });
            }
        }
        let cached = self.cached_hash(from, &before);
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
                return Err(StoreError::Occupied {
                    name: to.to_string(),
                    kind: "directory",
                })
            }
            Err(err) => return Err(err.into()),
        }
        // A rename changes the file's change time, which the record is checked against: the
        // hash is recorded again for the file as it is now.
        self.forget_hash(from);
        match (cached, fs::symlink_metadata(&target)) {
            (Some(hash), Ok(after)) if after.is_file() => self.record_hash(to, &after, &hash),
            _ => self.forget_hash(to),
        }
        self.sync_root()?;
        Ok(FileInfo {
            name: to.to_string(),
            ..info
        })
    }

    /// Deletes partial uploads not in progress and untouched for the time-to-live; returns how
    /// many. Anything there that is not a regular file (a link, a FIFO planted there) is
    /// removed at once, whatever its age.
    ///
    /// # Errors
    ///
    /// When the partial directory cannot be read.
    pub fn sweep_expired_partials(&self) -> io::Result<usize> {
        let now = SystemTime::now();
        let mut removed = 0;
        for partial in self.partial_dir.names()? {
            let Some(partial) = partial.to_str() else {
                continue;
            };
            // Locked from the check to the removal, so that no upload claims it in between.
            let mut partials = self.partials();
            if partials.is_active(partial) {
                continue;
            }
            let Ok(meta) = self.partial_dir.metadata(partial) else {
                continue;
            };
            let expired = !meta.is_file()
                || meta.modified().is_ok_and(|modified| {
                    now.duration_since(modified).unwrap_or_default() > self.partial_limits.ttl
                });
            if expired && self.partial_dir.remove(partial).is_ok() {
                partials.forget(partial);
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Opens the partial file `partial` for reading and writing, creating it if `create`:
    /// never through a link (a link planted there is removed, and the file opened again),
    /// never waiting, and only a regular file.
    fn open_partial(&self, partial: &str, create: bool) -> io::Result<File> {
        let flags = if create {
            OFlag::O_RDWR | OFlag::O_CREAT
        } else {
            OFlag::O_RDWR
        };
        let file = match self.partial_dir.open_file(partial, flags) {
            Err(err) if err.raw_os_error() == Some(libc::ELOOP) => {
                self.partial_dir.remove(partial)?;
                self.partial_dir.open_file(partial, flags)?
            }
            opened => opened?,
        };
        if !file.metadata()?.is_file() {
            return Err(io::Error::other(format!(
                "the partial upload {partial} is not a regular file"
            )));
        }
        Ok(file)
    }

    /// The partial `partial`, open as `file`, opened again for direct writes: `None` when the
    /// file system refuses `O_DIRECT`, or keeps files in memory anyway (tmpfs, where a direct
    /// write is one more copy), or when the name no longer leads to `file`.
    fn open_direct(&self, partial: &str, file: &File) -> Option<File> {
        use nix::sys::statfs::{fstatfs, TMPFS_MAGIC};
        use std::os::unix::fs::MetadataExt;
        if fstatfs(file).ok()?.filesystem_type() == TMPFS_MAGIC {
            return None;
        }
        let direct = self
            .partial_dir
            .open_file(partial, OFlag::O_WRONLY | OFlag::O_DIRECT)
            .ok()?;
        let (a, b) = (file.metadata().ok()?, direct.metadata().ok()?);
        (a.dev() == b.dev() && a.ino() == b.ino()).then_some(direct)
    }

    /// Deletes a partial upload; a failure is logged, and the sweep of expired partials
    /// retries.
    fn remove_partial(&self, partial: &str) {
        if let Err(err) = self.partial_dir.remove(partial) {
            tracing::warn!(%err, partial, "could not remove a partial upload");
        }
    }

    /// Caches a hash; a failure only costs a re-hash later. The record is written to a new
    /// file of a random name (created exclusively, never through a link) and renamed over the
    /// old one, which replaces a link planted there instead of following it.
    fn record_hash(&self, name: &FileName, meta: &fs::Metadata, hash: &blake3::Hash) {
        let record = record_name(name);
        let written = random_hex().and_then(|random| {
            let tmp = format!("{}.{random}.tmp", bookkeeping_key(name));
            let bytes =
                serde_json::to_vec(&HashRecord::new(meta, hash)).map_err(io::Error::other)?;
            let written = self
                .meta_dir
                .open_file(&tmp, OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL)
                .and_then(|mut file| file.write_all(&bytes))
                .and_then(|()| self.meta_dir.rename(&tmp, &record));
            if written.is_err() {
                let _ = self.meta_dir.remove(&tmp);
            }
            written
        });
        if let Err(err) = written {
            tracing::debug!(%err, "could not cache a file hash");
        }
    }

    /// Drops the cached hash of `name`, if any.
    fn forget_hash(&self, name: &FileName) {
        match self.meta_dir.remove(&record_name(name)) {
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
/// ([`Store::begin_stream_upload`]), or one made [not resumable](Upload::not_resumable),
/// deletes it.
#[derive(Debug)]
pub struct Upload {
    store: Arc<Store>,
    name: FileName,
    /// The partial file's name in the partial directory.
    partial: String,
    /// Writes the bytes to the partial file.
    appender: Appender,
    /// Where in the file this upload began: the bytes held before it.
    offset: u64,
    received: u64,
    /// The bytes this upload writes in all, when known in advance.
    expected: Option<u64>,
    /// Whether the partial file is deleted when the upload is dropped unfinished (a stream, or
    /// an upload whose client cannot resume).
    delete_on_drop: bool,
    /// Whether the partial file is gone: stored under its name, or deleted.
    settled: bool,
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
        self.appender.write(chunk)?;
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
        self.appender.flush()?;
        self.appender.file().sync_all()?;
        let target = self.store.root.join(self.name.as_str());
        if overwrite {
            if let Err(err) = self.replace(&target) {
                self.discard();
                return Err(err);
            }
        } else {
            match self.store.partial_dir.link_out(&self.partial, &target) {
                Ok(()) => {
                    self.settled = true;
                    self.store.partial_dir.remove(&self.partial)?;
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
        // This upload's own file, as it is now under its name (the moves changed its change
        // time); by now the name may already be another upload's.
        let meta = self.appender.file().metadata()?;
        self.store.record_hash(&self.name, &meta, &hash);
        Ok(file_info(self.name.as_str(), &meta))
    }

    /// Renames the partial over `target`, which may be a regular file or a symbolic link
    /// (the link itself is replaced), never a directory or another special file.
    fn replace(&mut self, target: &Path) -> Result<(), StoreError> {
        let occupied = |kind| StoreError::Occupied {
            name: self.name.to_string(),
            kind,
        };
        if let Ok(meta) = fs::symlink_metadata(target) {
            if !meta.is_file() && !meta.is_symlink() {
                return Err(occupied(kind_of(&meta)));
            }
        }
        match self.store.partial_dir.move_out(&self.partial, target) {
            Ok(()) => {
                self.settled = true;
                Ok(())
            }
            Err(err) if matches!(err.raw_os_error(), Some(libc::EISDIR | libc::ENOTEMPTY)) => {
                Err(occupied("directory"))
            }
            Err(err) => Err(err.into()),
        }
    }

    /// Makes the upload one that cannot be resumed, for a client that never asks to resume
    /// (the tutorials' upload): its partial is deleted, rather than kept, when the upload is
    /// dropped unfinished.
    pub fn not_resumable(&mut self) {
        self.delete_on_drop = true;
    }

    /// Abandons the upload and deletes what was held.
    pub fn discard(mut self) {
        self.settled = true;
        self.store.remove_partial(&self.partial);
    }
}

impl Drop for Upload {
    /// Deletes a streamed upload's partial, and any partial left without data: an upload
    /// that ends before its first byte leaves nothing behind. A resumable partial that stays
    /// gets every byte received, for the resume to start after them.
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        if self.delete_on_drop || self.offset + self.received == 0 {
            self.store.remove_partial(&self.partial);
        } else if let Err(err) = self.appender.flush() {
            // The partial keeps what reached it; a resume starts from its length.
            tracing::warn!(partial = self.partial, %err, "partial upload not completed on disk");
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

impl BodySink for Upload {
    type Error = StoreError;

    fn write(&mut self, data: &[u8]) -> Result<(), StoreError> {
        Upload::write(self, data)
    }
}

/// The partial files in `partial_dir`, found when the store opens. Anything there that is not
/// a regular file (a link planted there) is removed, never followed.
fn held_partials(partial_dir: &BookDir) -> io::Result<Vec<String>> {
    let mut found = Vec::new();
    for partial in partial_dir.names()? {
        let Some(partial) = partial.to_str() else {
            continue;
        };
        if partial_dir.metadata(partial)?.is_file() {
            found.push(partial.to_owned());
        } else if let Err(err) = partial_dir.remove(partial) {
            tracing::warn!(%err, partial, "cannot remove a non-file among the partial uploads");
        }
    }
    Ok(found)
}

/// Opens `path` with `options`, never following a link in its last component and never
/// waiting: a FIFO opens at once (to be refused by its file type), and a terminal does not
/// become the server's. The file is left blocking, as files are used.
fn open_no_wait(path: &Path, options: &mut OpenOptions) -> io::Result<File> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let file = options
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let flags = OFlag::from_bits_truncate(fcntl(&file, FcntlArg::F_GETFL)?);
    fcntl(&file, FcntlArg::F_SETFL(flags - OFlag::O_NONBLOCK))?;
    Ok(file)
}

/// What a directory entry that is not a regular file is, in words.
fn kind_of(meta: &fs::Metadata) -> &'static str {
    let kind = meta.file_type();
    if kind.is_dir() {
        "directory"
    } else if kind.is_symlink() {
        "symbolic link"
    } else if kind.is_fifo() {
        "FIFO"
    } else if kind.is_socket() {
        "socket"
    } else if kind.is_block_device() || kind.is_char_device() {
        "device"
    } else if kind.is_file() {
        "regular file"
    } else {
        "special file"
    }
}

/// The file-system-safe key of a name in the bookkeeping directory.
fn bookkeeping_key(name: &FileName) -> String {
    blake3::hash(name.as_str().as_bytes()).to_hex()[..32].to_owned()
}

/// The partial file of an upload of `name` whose whole length is `length`.
fn partial_name(name: &FileName, length: u64) -> String {
    format!("{}-{length}", bookkeeping_key(name))
}

/// The hash record of `name`.
fn record_name(name: &FileName) -> String {
    format!("{}.json", bookkeeping_key(name))
}

/// 16 random hexadecimal digits, for a name nobody else picks.
fn random_hex() -> io::Result<String> {
    let mut random = [0u8; 8];
    getrandom::fill(&mut random).map_err(|err| io::Error::other(err.to_string()))?;
    Ok(hex::encode(random))
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

/// The inode's last change (contents or metadata), in nanoseconds since the epoch: unlike the
/// modification time, no call sets it back.
fn changed_ns(meta: &fs::Metadata) -> u128 {
    let seconds = u128::try_from(meta.ctime()).unwrap_or(0);
    let nanos = u128::try_from(meta.ctime_nsec()).unwrap_or(0);
    seconds * 1_000_000_000 + nanos
}

#[cfg(test)]
impl Store {
    /// Where the partial file of an upload of `name` with total `length` is.
    fn partial_path(&self, name: &FileName, length: u64) -> PathBuf {
        self.partial_dir.path().join(partial_name(name, length))
    }

    /// Where the hash record of `name` is.
    fn meta_path(&self, name: &FileName) -> PathBuf {
        self.meta_dir.path().join(record_name(name))
    }
}

#[cfg(test)]
mod tests {
    //! The store on a temporary directory: names at the length limit, the life of an upload
    //! (begin, write, finish, discard, resume, busy), the sweep of expired partials with an
    //! injected time-to-live, and the hash cache.

    use std::fs::FileTimes;
    use std::time::Duration;

    use super::*;

    const DAY: Duration = Duration::from_secs(24 * 3600);
    const SOURCE: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    fn open(ttl: Duration) -> (tempfile::TempDir, Arc<Store>) {
        let dir = tempfile::tempdir().unwrap();
        let limits = PartialLimits {
            ttl,
            ..PartialLimits::default()
        };
        let store = Store::open(dir.path(), limits).unwrap();
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
        let (mut upload, mut hasher) =
            store.begin_upload(name.clone(), 0, len, overwrite, SOURCE)?;
        upload.write(data)?;
        hasher.update(data);
        upload.finish(hasher.finalize(), None, overwrite)
    }

    /// The partial files present.
    fn partials(store: &Store) -> Vec<PathBuf> {
        fs::read_dir(store.partial_dir.path())
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
    fn uploads_write_directly_to_a_disk_but_not_to_tmpfs() {
        let on = |dir: &Path| {
            let store = Store::open(dir, PartialLimits::default()).unwrap();
            let (upload, _) = store.begin_upload(name("f"), 0, 10, false, SOURCE).unwrap();
            upload.appender.is_direct()
        };
        let disk = tempfile::tempdir().unwrap();
        if nix::sys::statfs::fstatfs(File::open(disk.path()).unwrap())
            .unwrap()
            .filesystem_type()
            == nix::sys::statfs::TMPFS_MAGIC
        {
            eprintln!("SKIPPED the disk half: the temporary directory is on tmpfs");
        } else {
            assert!(
                on(disk.path()),
                "direct writes on {}",
                disk.path().display()
            );
        }
        match tempfile::tempdir_in("/dev/shm") {
            Ok(shm) => assert!(!on(shm.path()), "no direct writes on tmpfs"),
            Err(err) => eprintln!("SKIPPED the tmpfs half: no /dev/shm ({err})"),
        }
    }

    #[test]
    fn an_upload_is_a_partial_until_it_is_finished_under_its_name() {
        let (dir, store) = open(DAY);
        let file = name("a.bin");
        let (mut upload, mut hasher) = store
            .begin_upload(file.clone(), 0, 10, false, SOURCE)
            .unwrap();
        assert_eq!(upload.remaining(), Some(10));
        upload.write(b"0123").unwrap();
        hasher.update(b"0123");
        // Bytes may wait in the direct-write buffer until the upload ends: held is at most
        // what was received.
        assert!(store.partial_held(&file, 10) <= 4);
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
        let (mut upload, _) = store.begin_upload(name("d"), 0, 10, false, SOURCE).unwrap();
        upload.write(b"abc").unwrap();
        upload.discard();
        assert!(partials(&store).is_empty());
        assert!(!dir.path().join("d").exists());
        // The name is free again.
        assert!(store.begin_upload(name("d"), 0, 10, false, SOURCE).is_ok());
    }

    #[test]
    fn a_wrong_hash_deletes_the_upload() {
        let (dir, store) = open(DAY);
        let (mut upload, mut hasher) = store.begin_upload(name("h"), 0, 3, false, SOURCE).unwrap();
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
        let err = store
            .begin_upload(file.clone(), 0, 6, false, SOURCE)
            .unwrap_err();
        assert!(
            matches!(&err, StoreError::Exists(n) if n == "same"),
            "{err}"
        );
        assert_eq!(err.code(), ErrorCode::Exists);

        // A name taken while the upload ran: the upload is dropped, the file kept.
        let (mut upload, mut hasher) = store
            .begin_upload(name("race"), 0, 4, false, SOURCE)
            .unwrap();
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
        let (mut upload, _) = store
            .begin_upload(file.clone(), 0, len, false, SOURCE)
            .unwrap();
        upload.write(&data[..12]).unwrap();
        drop(upload); // the connection went away
        assert_eq!(store.partial_held(&file, len), 12);
        assert_eq!(store.partial_held(&file, len + 1), 0, "held per length");

        let err = store
            .begin_upload(file.clone(), 13, len, false, SOURCE)
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
        let (mut upload, mut hasher) = store
            .begin_upload(file.clone(), 10, len, false, SOURCE)
            .unwrap();
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
        let (first, _) = store
            .begin_upload(file.clone(), 0, 100, false, SOURCE)
            .unwrap();
        let err = store
            .begin_upload(file.clone(), 0, 100, false, SOURCE)
            .unwrap_err();
        assert!(matches!(&err, StoreError::Busy(n) if n == "b"), "{err}");
        assert_eq!(err.code(), ErrorCode::Busy);
        // Another length is another upload.
        let (other, _) = store
            .begin_upload(file.clone(), 0, 101, false, SOURCE)
            .unwrap();
        drop(first);
        let (again, _) = store
            .begin_upload(file.clone(), 0, 100, false, SOURCE)
            .unwrap();
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
            let (mut upload, _) = store
                .begin_upload(name(file), 0, 10, false, SOURCE)
                .unwrap();
            upload.write(b"part").unwrap();
            drop(upload);
            set_modified(&store.partial_path(&name(file), 10), now - age);
            held.push(store.partial_path(&name(file), 10));
        }
        // Older still, but an upload is writing to it.
        let (mut busy, _) = store
            .begin_upload(name("busy"), 0, 10, false, SOURCE)
            .unwrap();
        busy.write(b"part").unwrap();
        set_modified(&store.partial_path(&name("busy"), 10), now - ttl * 2);

        assert_eq!(store.sweep_expired_partials().unwrap(), 1);
        assert!(!held[0].exists(), "the expired partial is still there");
        assert!(
            held[1].exists(),
            "a partial within its time-to-live was swept"
        );
        assert!(
            store.partial_path(&name("busy"), 10).exists(),
            "an upload in progress was swept"
        );
        assert_eq!(store.partial_held(&name("young"), 10), 4);
        drop(busy);
        assert_eq!(store.partial_held(&name("busy"), 10), 4, "kept whole");
        set_modified(&store.partial_path(&name("busy"), 10), now - ttl * 2);
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
        let (mut upload, _) = store
            .begin_upload(file.clone(), 0, 10, false, SOURCE)
            .unwrap();
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
        let err = store.delete(&name("link")).unwrap_err();
        assert!(
            matches!(&err, StoreError::NotAFile { name, kind: "symbolic link" } if name == "link"),
            "{err}"
        );
        assert_eq!(err.code(), ErrorCode::NotFound);
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
            Err(StoreError::NotAFile {
                kind: "symbolic link",
                ..
            })
        ));
        let err = store.rename(&name("c"), &name("link"), true).unwrap_err();
        assert!(
            matches!(&err, StoreError::Occupied { name, kind: "symbolic link" } if name == "link"),
            "{err}"
        );
        assert_eq!(err.code(), ErrorCode::Exists);
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
    fn the_hash_cache_is_used_while_the_file_is_unchanged_and_redone_when_it_changes() {
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

        // Unchanged: the record is trusted without reading the file (a forged hash in it
        // shows that).
        let mut record: HashRecord =
            serde_json::from_slice(&fs::read(store.meta_path(&file)).unwrap()).unwrap();
        let forged = blake3::hash(b"forged");
        record.hash = forged.to_hex().to_string();
        fs::write(store.meta_path(&file), serde_json::to_vec(&record).unwrap()).unwrap();
        assert_eq!(hash_now(), forged);

        // Rewritten in place with the same length and the modification time put back: the
        // change time gives it away.
        let modified = fs::metadata(&path).unwrap().modified().unwrap();
        std::thread::sleep(Duration::from_millis(20));
        fs::write(&path, b"version two").unwrap();
        set_modified(&path, modified);
        assert_eq!(fs::metadata(&path).unwrap().modified().unwrap(), modified);
        assert_eq!(hash_now(), blake3::hash(b"version two"));
        // Another file (another inode) moved under the name, with the same length and
        // modification time.
        let other = dir.path().join("other");
        fs::write(&other, b"version six").unwrap();
        set_modified(&other, modified);
        fs::rename(&other, &path).unwrap();
        assert_eq!(hash_now(), blake3::hash(b"version six"));
        // Another modification time: hashed again.
        set_modified(&path, modified + Duration::from_secs(1));
        assert_eq!(hash_now(), blake3::hash(b"version six"));
        // Another length: hashed again.
        fs::write(&path, b"version three").unwrap();
        assert_eq!(hash_now(), blake3::hash(b"version three"));
        // A damaged record is no answer either, nor a record of an older version (without
        // inode and change time).
        fs::write(store.meta_path(&file), b"{not json").unwrap();
        assert_eq!(hash_now(), blake3::hash(b"version three"));
        let meta = fs::metadata(&path).unwrap();
        let old = serde_json::json!({
            "length": meta.len(),
            "modified_ns": modified_ns(&meta),
            "hash": forged.to_hex().to_string(),
        });
        fs::write(store.meta_path(&file), old.to_string()).unwrap();
        assert_eq!(hash_now(), blake3::hash(b"version three"));

        // A finished upload records the hash of what it stored.
        put(&store, &file, b"uploaded", true).unwrap();
        let record: HashRecord =
            serde_json::from_slice(&fs::read(store.meta_path(&file)).unwrap()).unwrap();
        assert_eq!(record.hash, blake3::hash(b"uploaded").to_hex().as_str());
        assert_eq!(record.length, 8);
    }

    #[test]
    fn a_refused_resume_creates_no_partial_and_an_upload_without_data_leaves_none() {
        let (_dir, store) = open(DAY);
        let file = name("r");
        for offset in [1, 5, 99] {
            let err = store
                .begin_upload(file.clone(), offset, 100, false, SOURCE)
                .unwrap_err();
            assert!(
                matches!(err, StoreError::BadOffset { held: 0, .. }),
                "{err}"
            );
        }
        assert!(partials(&store).is_empty(), "{:?}", partials(&store));
        assert_eq!(store.partials_held(SOURCE), (0, 0));

        // Begun, then gone before its first byte: nothing is kept.
        let (upload, _) = store
            .begin_upload(file.clone(), 0, 100, false, SOURCE)
            .unwrap();
        assert_eq!(
            partials(&store).len(),
            1,
            "the partial exists while it is written"
        );
        drop(upload);
        assert!(partials(&store).is_empty());
        assert_eq!(store.partials_held(SOURCE), (0, 0));

        // A partial with data is kept; a resume beyond it is refused and leaves it as it was.
        let (mut upload, _) = store
            .begin_upload(file.clone(), 0, 100, false, SOURCE)
            .unwrap();
        upload.write(b"abc").unwrap();
        drop(upload);
        assert!(store
            .begin_upload(file.clone(), 4, 100, false, SOURCE)
            .is_err());
        assert_eq!(store.partial_held(&file, 100), 3);
        assert_eq!(store.partials_held(SOURCE), (1, 1));
        // Started again from 0 and dropped at once: the partial held no data any more.
        let (upload, _) = store
            .begin_upload(file.clone(), 0, 100, false, SOURCE)
            .unwrap();
        drop(upload);
        assert!(partials(&store).is_empty());
        assert_eq!(store.partials_held(SOURCE), (0, 0));
    }

    #[test]
    fn at_its_cap_an_address_replaces_its_oldest_idle_partial_and_the_total_cap_is_busy() {
        let dir = tempfile::tempdir().unwrap();
        let limits = PartialLimits {
            ttl: DAY,
            max_total: 4,
            max_per_source: 2,
        };
        let store = Store::open(dir.path(), limits).unwrap();
        let other: IpAddr = "192.0.2.7".parse().unwrap();
        let begin = |store: &Arc<Store>, file: &str, source: IpAddr| {
            let (mut upload, _) = store.begin_upload(name(file), 0, 10, false, source)?;
            upload.write(b"part")?;
            Ok::<_, StoreError>(upload)
        };
        let now = SystemTime::now();
        drop(begin(&store, "a", SOURCE).unwrap());
        drop(begin(&store, "b", SOURCE).unwrap());
        // `b` was written to longer ago than `a`: it is the oldest.
        set_modified(
            &store.partial_path(&name("a"), 10),
            now - Duration::from_secs(60),
        );
        set_modified(
            &store.partial_path(&name("b"), 10),
            now - Duration::from_secs(120),
        );
        let c = begin(&store, "c", SOURCE).unwrap();
        assert_eq!(store.partial_held(&name("b"), 10), 0, "the oldest went");
        assert_eq!(store.partial_held(&name("a"), 10), 4);
        assert_eq!(store.partials_held(SOURCE), (2, 2));
        // A stream counts too, and makes room the same way.
        let stream = store.begin_stream_upload(name("s"), false, SOURCE).unwrap();
        assert_eq!(store.partial_held(&name("a"), 10), 0);
        // Both partials of the address are being written: nothing to replace.
        let err = begin(&store, "d", SOURCE).unwrap_err();
        assert!(
            matches!(err, StoreError::TooManyPartials(PartialCap::PerSource(2))),
            "{err}"
        );
        assert_eq!(err.code(), ErrorCode::Busy);
        assert_eq!(
            err.to_string(),
            "2 uploads from your address are being written now, its limit: try again when one \
             ends"
        );
        assert_eq!(partials(&store).len(), 2, "a refused upload left a file");
        drop((c, stream));
        assert_eq!(
            store.partials_held(SOURCE),
            (1, 1),
            "the stream went with its upload"
        );

        // Another address has its own allowance, up to the total; it never takes the room of
        // another address's partials.
        drop(begin(&store, "e", other).unwrap());
        drop(begin(&store, "f", other).unwrap());
        drop(begin(&store, "g", SOURCE).unwrap());
        assert_eq!(store.partials_held(SOURCE), (4, 2));
        let third: IpAddr = "192.0.2.8".parse().unwrap();
        let err = begin(&store, "h", third).unwrap_err();
        assert!(
            matches!(err, StoreError::TooManyPartials(PartialCap::Total(4))),
            "{err}"
        );

        // Resuming a held partial, or starting it again from 0, is no new partial.
        let (mut upload, mut hasher) = store.begin_upload(name("c"), 4, 10, false, SOURCE).unwrap();
        hasher.update(b"more");
        upload.write(b"more").unwrap();
        drop(upload);
        assert_eq!(store.partial_held(&name("c"), 10), 4 + 4);
        assert_eq!(store.partials_held(SOURCE), (4, 2));

        // Reopened, the store counts what it holds in the total, and replaces none of it.
        drop(store);
        let store = Store::open(dir.path(), limits).unwrap();
        assert_eq!(store.partials_held(SOURCE), (4, 0));
        let err = begin(&store, "h", SOURCE).unwrap_err();
        assert!(
            matches!(err, StoreError::TooManyPartials(PartialCap::Total(4))),
            "{err}"
        );
    }

    #[test]
    fn an_upload_made_not_resumable_leaves_no_partial_when_cut() {
        let (_dir, store) = open(DAY);
        let (mut upload, _) = store.begin_upload(name("t"), 0, 10, false, SOURCE).unwrap();
        upload.not_resumable();
        upload.write(b"part").unwrap();
        drop(upload);
        assert!(partials(&store).is_empty());
        assert_eq!(store.partials_held(SOURCE), (0, 0));
    }

    #[test]
    fn links_planted_in_the_bookkeeping_directory_are_never_followed() {
        let (dir, store) = open(DAY);
        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("victim");
        fs::write(&victim, b"precious").unwrap();
        let file = name("f");

        // Where the hash record of `f` goes, and where its partial of 4 bytes goes.
        std::os::unix::fs::symlink(&victim, store.meta_path(&file)).unwrap();
        std::os::unix::fs::symlink(&victim, store.partial_path(&file, 4)).unwrap();
        assert_eq!(
            store.partial_held(&file, 4),
            0,
            "the link was taken for data"
        );
        // A resume finds nothing held through the link.
        assert!(matches!(
            store.begin_upload(file.clone(), 2, 4, false, SOURCE),
            Err(StoreError::BadOffset { held: 0, .. })
        ));
        put(&store, &file, b"data", false).unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        assert!(!fs::symlink_metadata(store.meta_path(&file))
            .unwrap()
            .is_symlink());
        assert_eq!(fs::read(dir.path().join("f")).unwrap(), b"data");

        // A record linked to a file that looks like a record is not read.
        let forged = serde_json::to_vec(&HashRecord::new(
            &fs::metadata(dir.path().join("f")).unwrap(),
            &blake3::hash(b"forged"),
        ))
        .unwrap();
        fs::write(&victim, &forged).unwrap();
        fs::remove_file(store.meta_path(&file)).unwrap();
        std::os::unix::fs::symlink(&victim, store.meta_path(&file)).unwrap();
        let (opened, _) = store.open_for_read(&file).unwrap();
        assert_eq!(
            store.hash_of(&file, &opened).unwrap(),
            blake3::hash(b"data")
        );
        assert_eq!(fs::read(&victim).unwrap(), forged);

        // Links among the partials are swept at once.
        std::os::unix::fs::symlink(&victim, store.partial_dir.path().join("planted")).unwrap();
        assert_eq!(store.sweep_expired_partials().unwrap(), 1);
        assert!(partials(&store).is_empty());
        assert_eq!(fs::read(&victim).unwrap(), forged);
    }

    #[test]
    fn a_bookkeeping_directory_that_is_a_link_stops_the_store_from_opening() {
        let outside = tempfile::tempdir().unwrap();
        for planted in [".sockit", ".sockit/partial", ".sockit/meta"] {
            let dir = tempfile::tempdir().unwrap();
            let link = dir.path().join(planted);
            fs::create_dir_all(link.parent().unwrap()).unwrap();
            std::os::unix::fs::symlink(outside.path(), &link).unwrap();
            let err = Store::open(dir.path(), PartialLimits::default()).unwrap_err();
            assert!(
                err.to_string()
                    .contains("is a symbolic link, not a directory"),
                "{planted}: {err}"
            );
        }
        assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0);
    }

    #[test]
    fn only_regular_files_are_opened_and_a_fifo_does_not_block() {
        let (dir, store) = open(DAY);
        nix::unistd::mkfifo(
            &dir.path().join("pipe"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        fs::create_dir(dir.path().join("dir")).unwrap();
        for (file, kind) in [("pipe", "FIFO"), ("dir", "directory")] {
            let started = std::time::Instant::now();
            let err = store.open_for_read(&name(file)).unwrap_err();
            assert!(started.elapsed() < Duration::from_secs(1));
            assert!(
                matches!(&err, StoreError::NotAFile { name, kind: k } if name == file && *k == kind),
                "{err}"
            );
            assert_eq!(err.code(), ErrorCode::NotFound);
            let err = store.delete(&name(file)).unwrap_err();
            assert!(matches!(err, StoreError::NotAFile { .. }), "{err}");
            let err = store.rename(&name(file), &name("x"), true).unwrap_err();
            assert!(matches!(err, StoreError::NotAFile { .. }), "{err}");
        }
        assert!(dir.path().join("pipe").exists() && dir.path().join("dir").is_dir());
    }

    #[test]
    fn a_directory_or_fifo_is_never_replaced_and_no_partial_is_left() {
        let (dir, store) = open(DAY);
        fs::create_dir(dir.path().join("dir")).unwrap();
        fs::write(dir.path().join("dir").join("inside"), b"kept").unwrap();
        nix::unistd::mkfifo(
            &dir.path().join("pipe"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        put(&store, &name("file"), b"data", false).unwrap();
        for (target, kind) in [("dir", "directory"), ("pipe", "FIFO")] {
            for overwrite in [false, true] {
                let err = put(&store, &name(target), b"new", overwrite).unwrap_err();
                assert!(
                    matches!(&err, StoreError::Occupied { name, kind: k } if name == target && *k == kind),
                    "{err}"
                );
                assert_eq!(err.code(), ErrorCode::Exists);
                let err = store
                    .rename(&name("file"), &name(target), overwrite)
                    .unwrap_err();
                assert!(matches!(err, StoreError::Occupied { .. }), "{err}");
            }
        }
        assert_eq!(
            put(&store, &name("dir"), b"new", true)
                .unwrap_err()
                .to_string(),
            "\"dir\" is a directory on the server, not a regular file: it is never replaced"
        );
        assert!(partials(&store).is_empty());

        // A directory that appears while the upload runs: refused at the end, nothing left.
        let (mut upload, mut hasher) = store
            .begin_upload(name("late"), 0, 3, true, SOURCE)
            .unwrap();
        upload.write(b"new").unwrap();
        hasher.update(b"new");
        fs::create_dir(dir.path().join("late")).unwrap();
        let err = upload.finish(hasher.finalize(), None, true).unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::Occupied {
                    kind: "directory",
                    ..
                }
            ),
            "{err}"
        );
        assert!(partials(&store).is_empty());
        assert_eq!(store.partials_held(SOURCE), (0, 0));
        assert_eq!(fs::read(dir.path().join("dir/inside")).unwrap(), b"kept");
        assert_eq!(fs::read(dir.path().join("file")).unwrap(), b"data");
    }
}
