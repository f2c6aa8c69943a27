//! A bookkeeping directory under `<root>/.sockit/`, held open from the store's start: every
//! file in it is reached by its name relative to that open directory (`openat`, `renameat`,
//! `linkat`, `unlinkat`), never by a path, and never through a symbolic link.
//!
//! So a link planted where a record or a partial belongs is never followed (every open has
//! `O_NOFOLLOW`; a rename or an unlink acts on the link itself), and a directory swapped for a
//! link once the store runs changes nothing: the store keeps working in the directory it
//! opened. The directory itself must be a real directory when the store opens.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::fcntl::{fcntl, openat, renameat, FcntlArg, OFlag, AT_FDCWD};
use nix::sys::stat::Mode;
use nix::unistd::{linkat, unlinkat, UnlinkatFlags};

/// One bookkeeping directory, open.
#[derive(Debug)]
pub(super) struct BookDir {
    path: PathBuf,
    dir: OwnedFd,
}

impl BookDir {
    /// Creates `path` if it is missing, checks that it is a directory and not a link to one,
    /// and opens it.
    ///
    /// # Errors
    ///
    /// When it cannot be created or opened, or is not a directory (a link to one included).
    pub(super) fn open(path: &Path) -> io::Result<BookDir> {
        match fs::create_dir(path) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {}
            Err(err) => return Err(err),
        }
        let not_a_dir = |kind: &str| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} is a {kind}, not a directory: the store keeps its bookkeeping in a \
                     real directory, never through a link",
                    path.display()
                ),
            )
        };
        let meta = fs::symlink_metadata(path)?;
        if !meta.is_dir() {
            return Err(not_a_dir(super::kind_of(&meta)));
        }
        let flags = OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_RDONLY;
        let dir = match openat(AT_FDCWD, path, flags, Mode::empty()) {
            Ok(dir) => dir,
            // Swapped for a link since it was looked at.
            Err(nix::errno::Errno::ELOOP | nix::errno::Errno::ENOTDIR) => {
                return Err(not_a_dir("symbolic link"))
            }
            Err(errno) => return Err(errno.into()),
        };
        Ok(BookDir {
            path: path.to_path_buf(),
            dir,
        })
    }

    /// Where the directory was when the store opened.
    #[cfg(test)]
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// Opens the entry `name` with `flags` (an access mode, maybe `O_CREAT`, `O_EXCL`): never
    /// through a link (`ELOOP` when `name` is one), never waiting (a FIFO opens at once), and
    /// left blocking once open.
    pub(super) fn open_file(&self, name: &str, flags: OFlag) -> io::Result<File> {
        let flags =
            flags | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_NOCTTY | OFlag::O_CLOEXEC;
        let fd = openat(&self.dir, name, flags, Mode::from_bits_truncate(0o666))?;
        let file = File::from(fd);
        let status = OFlag::from_bits_truncate(fcntl(&file, FcntlArg::F_GETFL)?);
        fcntl(&file, FcntlArg::F_SETFL(status - OFlag::O_NONBLOCK))?;
        Ok(file)
    }

    /// The metadata of the entry `name` itself (of a link, not of what it points to).
    pub(super) fn metadata(&self, name: &str) -> io::Result<fs::Metadata> {
        let flags = OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        File::from(openat(&self.dir, name, flags, Mode::empty())?).metadata()
    }

    /// Removes the entry `name` (a link itself, never what it points to; never a directory).
    pub(super) fn remove(&self, name: &str) -> io::Result<()> {
        Ok(unlinkat(&self.dir, name, UnlinkatFlags::NoRemoveDir)?)
    }

    /// Renames the entry `from` to `to`, both in this directory; `to` is replaced (a link
    /// there included, itself).
    pub(super) fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        Ok(renameat(&self.dir, from, &self.dir, to)?)
    }

    /// Renames the entry `name` to `target`, replacing what is there.
    pub(super) fn move_out(&self, name: &str, target: &Path) -> io::Result<()> {
        Ok(renameat(&self.dir, name, AT_FDCWD, target)?)
    }

    /// Links the entry `name` as `target`, which must not exist (the link is never followed).
    pub(super) fn link_out(&self, name: &str, target: &Path) -> io::Result<()> {
        Ok(linkat(
            &self.dir,
            name,
            AT_FDCWD,
            target,
            nix::fcntl::AtFlags::empty(),
        )?)
    }

    /// The names of the entries, read through the directory's path: whatever they are, every
    /// use of one goes through the open directory.
    pub(super) fn names(&self) -> io::Result<Vec<OsString>> {
        fs::read_dir(&self.path)?
            .map(|entry| entry.map(|entry| entry.file_name()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_swapped_for_a_link_after_opening_is_not_followed() {
        let base = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let path = base.path().join("meta");
        let dir = BookDir::open(&path).unwrap();
        fs::rename(&path, base.path().join("moved")).unwrap();
        std::os::unix::fs::symlink(outside.path(), &path).unwrap();
        let mut file = dir
            .open_file("record", OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL)
            .unwrap();
        io::Write::write_all(&mut file, b"kept").unwrap();
        assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0);
        assert_eq!(fs::read(base.path().join("moved/record")).unwrap(), b"kept");
        assert!(
            BookDir::open(&path).is_err(),
            "a link is opened as a directory"
        );
    }

    #[test]
    fn a_link_in_the_directory_is_never_opened_through_and_is_removed_itself() {
        let base = tempfile::tempdir().unwrap();
        let victim = base.path().join("victim");
        fs::write(&victim, b"precious").unwrap();
        let dir = BookDir::open(&base.path().join("d")).unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join("link")).unwrap();
        for flags in [OFlag::O_RDONLY, OFlag::O_RDWR | OFlag::O_CREAT] {
            let err = dir.open_file("link", flags).unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::ELOOP), "{flags:?}");
        }
        assert!(dir.metadata("link").unwrap().is_symlink());
        dir.remove("link").unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        assert!(dir.names().unwrap().is_empty());
    }
}
