//! What an upload reads. One place looks at what a path (or standard input) really is and
//! decides how it is read, so that no kind of file is silently uploaded as something else:
//!
//! | kind | length | resumable |
//! |---|---|---|
//! | regular file | from `fstat` of the opened file | yes |
//! | block device | the kernel's (`lseek` to its end) | yes |
//! | stream: FIFO or pipe, character device, socket, standard input, a file of `/proc` or `/sys`, or any regular file that reports size 0 | unknown: read to its end | no |
//! | directory | refused in words | — |
//!
//! Files of `/proc` and `/sys` report a size of 0 or 4096 whatever they hold, so they are
//! recognised by their file system (`fstatfs`) and read as streams; so is any regular file of
//! size 0, which costs nothing for a truly empty file (and which is still a regular file,
//! [`Source::is_regular_file`], for what the user is told). A stream is still verified: the client
//! hashes what it reads and the server checks that hash before the file becomes visible.
//!
//! Opening runs on the blocking pool, never on a runtime thread: opening a FIFO waits until
//! a writer appears.

use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;
use std::time::SystemTime;

use nix::sys::statfs::{fstatfs, PROC_SUPER_MAGIC, SYSFS_MAGIC};

use crate::transfer::blocking;

/// How an upload's bytes are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SourceKind {
    /// A regular file: its length is known when it is opened, and an interrupted upload
    /// resumes.
    File,
    /// A block device: its length is the kernel's, and an interrupted upload resumes.
    BlockDevice,
    /// Read to its end, its length unknown in advance: a FIFO or pipe, a character device,
    /// standard input, a file of `/proc` or `/sys`. Not resumable.
    Stream,
}

/// Why a source cannot be uploaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// It cannot be opened or examined.
    #[error("{}", super::plain_io_error(.0))]
    Open(io::Error),
    /// It is a directory.
    #[error("is a directory (upload the files in it one by one)")]
    Directory,
    /// Reading it failed part-way.
    #[error("read failed: {}", super::plain_io_error(.0))]
    Read(io::Error),
    /// A file shrank while it was being sent.
    #[error(
        "file shrank while being sent: {read} of its {expected} bytes could be read; nothing was stored"
    )]
    Shrank {
        /// The bytes that could be read.
        read: u64,
        /// Its length when it was opened.
        expected: u64,
    },
}

/// An opened source of an upload: a file, a device, a pipe or standard input.
#[derive(Debug)]
pub struct Source {
    file: File,
    label: String,
    kind: SourceKind,
    length: Option<u64>,
    /// A regular file's size and modification time when it was opened.
    opened: Option<Snapshot>,
    /// It is a regular file (read as a stream when it reported a size of 0).
    regular: bool,
}

/// What says that a regular file changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Snapshot {
    len: u64,
    modified: Option<SystemTime>,
}

impl Snapshot {
    fn of(meta: &Metadata) -> Snapshot {
        Snapshot {
            len: meta.len(),
            modified: meta.modified().ok(),
        }
    }
}

impl Source {
    /// Opens `path` for an upload, on the blocking pool, and finds out what it is.
    ///
    /// # Errors
    ///
    /// [`SourceError::Open`] when it cannot be opened, [`SourceError::Directory`] for a
    /// directory.
    pub async fn open(path: &Path) -> Result<Source, SourceError> {
        let path = path.to_path_buf();
        blocking(move || {
            let file = OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOCTTY)
                .open(&path)
                .map_err(SourceError::Open)?;
            Source::examine(file, super::shown_path(&path), false)
        })
        .await
    }

    /// Standard input, read to its end whatever it is (a pipe, a terminal, a redirected file,
    /// from where its position is). Its label in messages is "standard input".
    ///
    /// # Errors
    ///
    /// [`SourceError::Open`] when standard input is closed, [`SourceError::Directory`] when it
    /// is a directory.
    pub fn stdin() -> Result<Source, SourceError> {
        let fd = io::stdin()
            .as_fd()
            .try_clone_to_owned()
            .map_err(SourceError::Open)?;
        Source::examine(File::from(fd), "standard input".to_owned(), true)
    }

    /// Decides how `file` is read; `stream` reads it as a stream whatever it is.
    fn examine(file: File, label: String, stream: bool) -> Result<Source, SourceError> {
        let meta = file.metadata().map_err(SourceError::Open)?;
        let file_type = meta.file_type();
        // A file of /proc or /sys is a stream, whatever its type says.
        let regular = file_type.is_file() && !on_pseudo_file_system(&file);
        let (kind, length) = if file_type.is_dir() {
            return Err(SourceError::Directory);
        } else if stream {
            (SourceKind::Stream, None)
        } else if file_type.is_file() {
            if meta.len() == 0 || !regular {
                (SourceKind::Stream, None)
            } else {
                (SourceKind::File, Some(meta.len()))
            }
        } else if file_type.is_block_device() {
            let length = device_length(&file).map_err(SourceError::Open)?;
            (SourceKind::BlockDevice, Some(length))
        } else {
            (SourceKind::Stream, None)
        };
        let opened = (kind == SourceKind::File).then(|| Snapshot::of(&meta));
        Ok(Source {
            file,
            label,
            kind,
            length,
            opened,
            regular,
        })
    }

    /// What it is, and so how it is read.
    pub fn kind(&self) -> SourceKind {
        self.kind
    }

    /// Whether it is a regular file, whichever way it is read: one that reports a size of 0 is
    /// read as a stream, yet is a file. A file of `/proc` or `/sys` is not one.
    pub fn is_regular_file(&self) -> bool {
        self.regular
    }

    /// Its length when it was opened; `None` for a stream.
    pub fn length(&self) -> Option<u64> {
        self.length
    }

    /// What the user named it by: the path as given, or "standard input".
    pub fn label(&self) -> &str {
        &self.label
    }

    pub(crate) fn file(&self) -> &File {
        &self.file
    }

    /// Whether a regular file's size or modification time is no longer what it was when it
    /// was opened: it was written to while it was read.
    ///
    /// # Errors
    ///
    /// When `fstat` fails.
    pub(crate) fn changed(&self) -> io::Result<bool> {
        match self.opened {
            None => Ok(false),
            Some(opened) => Ok(Snapshot::of(&self.file.metadata()?) != opened),
        }
    }
}

/// Whether `file` lives on `/proc` or `/sys`, whose files report a size that is not their
/// length.
fn on_pseudo_file_system(file: &File) -> bool {
    fstatfs(file).is_ok_and(|fs| {
        let kind = fs.filesystem_type();
        kind == PROC_SUPER_MAGIC || kind == SYSFS_MAGIC
    })
}

/// A block device's length, as the kernel reports it: its end is where a seek to the end
/// lands.
fn device_length(mut file: &File) -> io::Result<u64> {
    let length = file.seek(SeekFrom::End(0))?;
    file.seek(SeekFrom::Start(0))?;
    Ok(length)
}
