//! Where a download goes: one decision, made from what is on disk before a byte is transferred.
//!
//! The rules are those of `cp`, `curl -o` and `scp`:
//!
//! - `-` is standard output, written in order.
//! - A directory (an existing one, or any path ending in `/`) receives the file under its
//!   stored name.
//! - A symbolic link is followed to its target, and the link is kept; a dangling link is
//!   refused, as `cp` refuses to write through one.
//! - An existing character device, block device or FIFO is written through in order: the node
//!   is kept, never replaced by a regular file.
//! - A regular file (new, or existing and replaced with `force`) is written beside it as a part
//!   file and moved into place only once verified (see [`super::part`]); an existing one keeps
//!   its mode and owner, and a write-protected one is refused.

use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::store::FileName;

/// Symbolic links followed before giving up, as the kernel's limit.
const MAX_LINK_HOPS: usize = 40;

/// How a download may treat what is already there.
#[derive(Debug, Clone, Copy, Default)]
pub struct SaveOptions {
    /// Replace an existing regular file.
    pub force: bool,
    /// Give the saved file the stored file's modification time and permission bits.
    pub preserve: bool,
}

/// Where a download goes, decided by [`Target::resolve`].
#[derive(Debug, Clone)]
pub enum Target {
    /// Standard output.
    Stdout,
    /// An existing character device, block device or FIFO, written through.
    Node {
        /// The path as the user gave it (joined with the name for a directory).
        shown: PathBuf,
        /// The node itself, symbolic links resolved.
        path: PathBuf,
    },
    /// A regular file, replaced atomically once the download is verified.
    File {
        /// The path as the user gave it (joined with the name for a directory).
        shown: PathBuf,
        /// The file itself, symbolic links resolved.
        path: PathBuf,
        /// What was there, when replacing an existing file.
        existing: Option<Existing>,
    },
}

/// An existing regular file that a download replaces.
#[derive(Debug, Clone, Copy)]
pub struct Existing {
    /// Device and inode: the file still there at the end is the one decided on.
    pub(crate) id: (u64, u64),
    /// Permission bits.
    pub(crate) mode: u32,
    /// Owner.
    pub(crate) uid: u32,
    /// Group.
    pub(crate) gid: u32,
    /// Hard links to it: more than one means its bytes are replaced in place, as `cp` does.
    pub(crate) links: u64,
}

/// Why a download cannot be saved, or was not.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SaveError {
    /// A stored name that cannot be a local file name.
    #[error("{name:?} is not a valid file name: {reason}")]
    BadName {
        /// The name asked for.
        name: String,
        /// Why, in words.
        reason: String,
    },
    /// A regular file is there and replacing it was not asked for.
    #[error("{0}: file exists (use --force to replace it)")]
    Exists(String),
    /// The file has no write permission.
    #[error("{0}: file is write-protected (make it writable, or remove it, first)")]
    WriteProtected(String),
    /// The directory to save into does not exist.
    #[error("{path}: no such directory {dir}")]
    NoDirectory {
        /// The path as given.
        path: String,
        /// The directory missing.
        dir: String,
    },
    /// The output is something no file can be written into.
    #[error("{path}: cannot write a download into {what}")]
    Unwritable {
        /// The path as given.
        path: String,
        /// What it is, in words.
        what: &'static str,
    },
    /// A symbolic link whose target does not exist.
    #[error("{path}: not writing through a dangling symbolic link (to {target})")]
    DanglingLink {
        /// The path as given.
        path: String,
        /// Where the link points.
        target: String,
    },
    /// No file can be created beside the output.
    #[error(
        "{path}: cannot create a file in {dir}: {}",
        super::plain_io_error(source)
    )]
    CannotCreate {
        /// The path as given.
        path: String,
        /// The directory.
        dir: String,
        /// Why.
        source: io::Error,
    },
    /// Another download to the same file holds its part file.
    #[error("{0}: another download to this file is in progress")]
    InProgress(String),
    /// Something other than this user's own part file sits at the part file's path.
    #[error("{path}: refusing to use {part} to download into: {why}; remove it and try again")]
    UnsafePart {
        /// The path as given.
        path: String,
        /// The part file's path.
        part: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The output changed behind the download's back.
    #[error("{path}: {what} while downloading; the verified download is kept in {part}")]
    Changed {
        /// The path as given.
        path: String,
        /// What happened, in words.
        what: &'static str,
        /// Where the bytes are.
        part: String,
    },
    /// Writing failed part-way; what was written is kept for resuming.
    #[error(
        "{path}: {}; stopped, {held} bytes are kept in {part}: run the same command again to resume",
        super::plain_io_error(source)
    )]
    Interrupted {
        /// The path as given.
        path: String,
        /// The part file.
        part: String,
        /// Bytes kept.
        held: u64,
        /// Why writing failed.
        source: io::Error,
    },
    /// Data written through (to a device, a FIFO, standard output) does not match its hash.
    #[error(
        "{path}: the data written does not match its hash (expected {expected}, got {actual})"
    )]
    Unverified {
        /// The path as given.
        path: String,
        /// The server's hash.
        expected: String,
        /// The hash of what arrived.
        actual: String,
    },
    /// A file-system call failed.
    #[error("{path}: {}", super::plain_io_error(source))]
    Io {
        /// The path as given.
        path: String,
        /// Why.
        source: io::Error,
    },
}

impl SaveError {
    pub(crate) fn io(path: &Path, source: io::Error) -> SaveError {
        SaveError::Io {
            path: super::shown_path(path),
            source,
        }
    }
}

impl Target {
    /// Decides where the stored file `name` goes for the output path the user gave (`None`:
    /// `name` in the current directory; `-`: standard output). Looks at the file system but
    /// changes nothing.
    ///
    /// # Errors
    ///
    /// When the output cannot take the download: see [`SaveError`].
    pub fn resolve(output: Option<&Path>, name: &str, force: bool) -> Result<Target, SaveError> {
        let shown = match output {
            Some(path) if path.as_os_str() == "-" => return Ok(Target::Stdout),
            Some(path) if names_directory(path) => path.join(local_name(name)?),
            Some(path) => path.to_path_buf(),
            None => PathBuf::from(local_name(name)?),
        };
        let path = follow_links(&shown)?;
        let meta = match fs::symlink_metadata(&path) {
            Ok(meta) => meta,
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                check_directory(&shown, &path)?;
                return Ok(Target::File {
                    shown,
                    path,
                    existing: None,
                });
            }
            Err(err) => return Err(SaveError::io(&shown, err)),
        };
        let kind = meta.file_type();
        if kind.is_file() {
            let existing = check_replaceable(&shown, &path, &meta, force)?;
            Ok(Target::File {
                shown,
                path,
                existing: Some(existing),
            })
        } else if kind.is_char_device() || kind.is_block_device() || kind.is_fifo() {
            Ok(Target::Node { shown, path })
        } else {
            let what = if kind.is_dir() {
                "a directory" // only when one appeared since it was looked at
            } else {
                "a socket"
            };
            Err(SaveError::Unwritable {
                path: super::shown_path(&shown),
                what,
            })
        }
    }

    /// The output as the user gave it, for messages.
    pub fn shown(&self) -> String {
        match self {
            Target::Stdout => "standard output".to_owned(),
            Target::Node { shown, .. } | Target::File { shown, .. } => super::shown_path(shown),
        }
    }
}

/// Whether `path` means "into this directory": it ends in `/` (or is `.`/`..`), or is an
/// existing directory (following links).
fn names_directory(path: &Path) -> bool {
    let bytes = path.as_os_str().as_bytes();
    bytes.ends_with(b"/")
        || bytes.ends_with(b"/.")
        || bytes.ends_with(b"/..")
        || bytes == b"."
        || bytes == b".."
        || fs::metadata(path).is_ok_and(|meta| meta.is_dir())
}

/// The stored name as a local file name: one plain path component.
fn local_name(name: &str) -> Result<&str, SaveError> {
    FileName::new(name).map_err(|err| SaveError::BadName {
        name: name.to_owned(),
        reason: err.to_string(),
    })?;
    Ok(name)
}

/// Follows symbolic links from `shown` to what they end at; a dangling link is refused.
fn follow_links(shown: &Path) -> Result<PathBuf, SaveError> {
    let mut path = shown.to_path_buf();
    for hop in 0..=MAX_LINK_HOPS {
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_symlink() => {
                let target = fs::read_link(&path).map_err(|err| SaveError::io(shown, err))?;
                path = match path.parent() {
                    Some(parent) => parent.join(target),
                    None => target,
                };
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound && hop > 0 => {
                return Err(SaveError::DanglingLink {
                    path: super::shown_path(shown),
                    target: super::shown_path(&path),
                });
            }
            _ => return Ok(path),
        }
    }
    Err(SaveError::io(
        shown,
        io::Error::from_raw_os_error(libc::ELOOP),
    ))
}

/// A new file's directory must exist (checked before anything is transferred).
fn check_directory(shown: &Path, path: &Path) -> Result<(), SaveError> {
    let dir = parent_dir(path);
    match fs::metadata(&dir) {
        Ok(meta) if meta.is_dir() => Ok(()),
        _ => Err(SaveError::NoDirectory {
            path: super::shown_path(shown),
            dir: super::shown_path(&dir),
        }),
    }
}

/// An existing regular file may be replaced only when asked, and when it is writable.
fn check_replaceable(
    shown: &Path,
    path: &Path,
    meta: &fs::Metadata,
    force: bool,
) -> Result<Existing, SaveError> {
    let shown_text = || super::shown_path(shown);
    if !force {
        return Err(SaveError::Exists(shown_text()));
    }
    let writable = nix::unistd::access(path, nix::unistd::AccessFlags::W_OK).is_ok();
    if meta.mode() & 0o222 == 0 || !writable {
        return Err(SaveError::WriteProtected(shown_text()));
    }
    Ok(Existing {
        id: (meta.dev(), meta.ino()),
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
        links: meta.nlink(),
    })
}

/// The directory a path's last component lives in (`.` for a bare name).
pub(crate) fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// A path's last component (the whole path when it has none).
pub(crate) fn file_name_of(path: &Path) -> OsString {
    path.file_name()
        .map_or_else(|| path.as_os_str().to_owned(), ToOwned::to_owned)
}
