//! A download into a regular file: written beside it as a part file, then moved into place
//! only once complete, synced and verified.
//!
//! - The part file is `.<name>.sockit-part` in the output's directory (the name shortened, with
//!   a hash of the whole name, when it would not fit the file system's name limit). It is
//!   created exclusively, without following links, readable by its owner only. An existing one
//!   is used for resuming only if it is a regular file of this user with one link; anything
//!   else is refused, so a link planted there cannot redirect the download.
//! - One download per output at a time: the part file is locked (`flock`) while in use.
//! - Beside it, `.<name>.sockit-part.json` records what the bytes are the beginning of (the
//!   stored name, length and BLAKE3 hash). A resume offers that hash (`if_hash`), so the
//!   server sends the rest only if the file is unchanged; a part with no record, or with
//!   another file's record, is discarded.
//! - Runs of zero blocks are skipped, not written, so holes are kept as `cp --sparse` does.
//! - On completion the part file takes the mode and owner of the file it replaces (or the
//!   stored file's execute bits, within the umask, for a new file; or its mode and time with
//!   `preserve`) and is renamed over it. A file with several hard links, or one whose owner
//!   cannot be given to the part file, gets the verified bytes written into it instead, as
//!   `cp` does.
//!
//! Everything here blocks; async callers run it on the blocking pool.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use nix::fcntl::{Flock, FlockArg};
use nix::sys::stat::Mode;
use serde::{Deserialize, Serialize};

use super::target::{file_name_of, parent_dir, Existing, SaveError, SaveOptions};
use crate::transfer::{hash_prefix, BodySink, Writeback};

/// Suffix of a download in progress.
pub const PART_SUFFIX: &str = ".sockit-part";
/// Suffix of the record beside it.
const RECORD_SUFFIX: &str = ".json";
/// Longest part of a name kept in a part file's name: with the dot, a 16-digit hash and the
/// suffixes, it stays within the 255 bytes of a file name.
const PART_NAME_KEEP: usize = 200;
/// Largest record read back.
const MAX_RECORD_LEN: u64 = 4096;
/// Blocks of zeros this long are skipped, leaving a hole.
const HOLE_BLOCK: usize = 4096;
static ZEROS: [u8; HOLE_BLOCK] = [0; HOLE_BLOCK];

/// Where a download to `out` is kept while in progress.
pub fn part_path(out: &Path) -> PathBuf {
    let name = file_name_of(out).into_vec();
    let mut part = b".".to_vec();
    if name.len() <= PART_NAME_KEEP {
        part.extend_from_slice(&name);
    } else {
        let mut keep = PART_NAME_KEEP;
        while keep > 0 && (name[keep] & 0xc0) == 0x80 {
            keep -= 1; // cut at a UTF-8 character boundary
        }
        part.extend_from_slice(&name[..keep]);
        part.push(b'.');
        part.extend_from_slice(&blake3::hash(&name).to_hex().as_bytes()[..16]);
    }
    part.extend_from_slice(PART_SUFFIX.as_bytes());
    parent_dir(out).join(OsString::from_vec(part))
}

/// What a part file's bytes are the beginning of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Record {
    /// The stored name.
    pub(crate) name: String,
    /// The stored file's whole length.
    pub(crate) length: u64,
    /// Its BLAKE3 hash.
    pub(crate) hash: String,
}

/// What the server says about the file being downloaded, applied when it is saved.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stored {
    /// Permission bits.
    pub(crate) mode: Option<u32>,
    /// Modification time, seconds since the Unix epoch.
    pub(crate) modified: Option<u64>,
}

/// A locked part file for one output.
#[derive(Debug)]
pub(crate) struct PartFile {
    shown: PathBuf,
    out: PathBuf,
    part: PathBuf,
    record_path: PathBuf,
    file: Flock<File>,
    record: Option<Record>,
}

impl PartFile {
    /// Opens (or creates) and locks the part file for a download to `out` (`shown` as the user
    /// gave it), reading its record.
    ///
    /// # Errors
    ///
    /// [`SaveError::InProgress`] when another download holds it, [`SaveError::UnsafePart`]
    /// when what is there is not this user's own regular file.
    pub(crate) fn open(shown: &Path, out: &Path) -> Result<PartFile, SaveError> {
        let part = part_path(out);
        let mut record_path = part.clone().into_os_string();
        record_path.push(RECORD_SUFFIX);
        let record_path = PathBuf::from(record_path);
        let unsafe_part = |why| SaveError::UnsafePart {
            path: super::shown_path(shown),
            part: super::shown_path(&part),
            why,
        };
        // A finishing download renames its part away between our open and lock; then the
        // name holds a new file, and opening again gets it.
        for _ in 0..3 {
            let file = open_private(&part).map_err(|err| match err {
                PrivateError::Unsafe(why) => unsafe_part(why),
                PrivateError::Io(source) => SaveError::CannotCreate {
                    path: super::shown_path(shown),
                    dir: super::shown_path(&parent_dir(out)),
                    source,
                },
            })?;
            let file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(file) => file,
                Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                    return Err(SaveError::InProgress(super::shown_path(shown)))
                }
                Err((_, errno)) => return Err(SaveError::io(&part, errno.into())),
            };
            if !same_file(&file, &part) {
                continue;
            }
            let record = read_record(&record_path);
            return Ok(PartFile {
                shown: shown.to_path_buf(),
                out: out.to_path_buf(),
                part,
                record_path,
                file,
                record,
            });
        }
        Err(SaveError::InProgress(super::shown_path(shown)))
    }

    /// What a resume can ask for: the bytes held and the hash of the file they belong to
    /// (`(0, None)` when nothing usable is held).
    pub(crate) fn resumable(&self) -> (u64, Option<&str>) {
        match (&self.record, self.held()) {
            (Some(record), Ok(held)) if held > 0 && held <= record.length => {
                (held, Some(record.hash.as_str()))
            }
            _ => (0, None),
        }
    }

    /// Bytes in the part file.
    pub(crate) fn held(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    /// Starts writing `record`'s file from `offset`: keeps the first `offset` bytes held,
    /// records what they belong to, and returns the sink and a hasher that has seen them.
    ///
    /// # Errors
    ///
    /// A file-system failure.
    pub(crate) fn begin(
        &mut self,
        record: Record,
        offset: u64,
    ) -> io::Result<(PartSink, blake3::Hasher)> {
        let mut file = self.file.try_clone()?;
        file.set_len(offset)?;
        if self.record.as_ref() != Some(&record) {
            write_record(&self.record_path, &record)?;
            self.record = Some(record);
        }
        let hasher = hash_prefix(&mut file, offset)?;
        let writeback = Writeback::start(&file, offset)?;
        Ok((
            PartSink {
                file,
                writeback,
                position: offset,
                hole_to: None,
            },
            hasher,
        ))
    }

    /// Abandons what is held: the part file is emptied and its record removed.
    pub(crate) fn discard(&mut self) {
        let _ = self.file.set_len(0);
        let _ = fs::remove_file(&self.record_path);
        self.record = None;
    }

    /// Removes the part file and its record (a failed download that cannot be resumed).
    pub(crate) fn remove(self) {
        if same_file(&self.file, &self.part) {
            let _ = fs::remove_file(&self.part);
        }
        let _ = fs::remove_file(&self.record_path);
    }

    /// A write failure part-way: the error telling the user what is kept, and where.
    pub(crate) fn interrupted(&self, source: io::Error) -> SaveError {
        SaveError::Interrupted {
            path: super::shown_path(&self.shown),
            part: super::shown_path(&self.part),
            held: self.held().unwrap_or(0),
            source,
        }
    }

    /// Moves the complete, verified download into place (see the module documentation).
    ///
    /// # Errors
    ///
    /// A file-system failure, or [`SaveError::Changed`] when the output changed meanwhile
    /// (the part file is then kept).
    pub(crate) fn commit(
        self,
        sink: PartSink,
        existing: Option<&Existing>,
        stored: Stored,
        options: SaveOptions,
    ) -> Result<(), SaveError> {
        let io_err = |err| SaveError::io(&self.shown, err);
        sink.finish().map_err(io_err)?;
        let mode = final_mode(existing, stored, options);
        let in_place = match existing {
            Some(existing) => existing.links > 1 || !give_owner(&self.file, existing),
            None => false,
        };
        if in_place {
            let existing = existing.expect("in-place writes replace an existing file");
            self.write_into(existing, stored, options)?;
            let _ = fs::remove_file(&self.part);
        } else {
            nix::sys::stat::fchmod(&*self.file, Mode::from_bits_truncate(mode))
                .map_err(|errno| io_err(errno.into()))?;
            if options.preserve {
                set_modified(&self.file, stored.modified).map_err(io_err)?;
            }
            self.file.sync_all().map_err(io_err)?;
            self.move_into_place(existing.is_some() || options.force)?;
        }
        let _ = fs::remove_file(&self.record_path);
        File::open(parent_dir(&self.out))
            .and_then(|dir| dir.sync_all())
            .map_err(io_err)
    }

    /// Renames the part file over the output (`replace`), or to it only if it is still absent.
    fn move_into_place(&self, replace: bool) -> Result<(), SaveError> {
        let changed = |what| SaveError::Changed {
            path: super::shown_path(&self.shown),
            what,
            part: super::shown_path(&self.part),
        };
        if !same_file(&self.file, &self.part) {
            return Err(changed("its part file was replaced"));
        }
        let moved = if replace {
            fs::rename(&self.part, &self.out)
        } else {
            rename_no_replace(&self.part, &self.out)
        };
        match moved {
            Ok(()) => Ok(()),
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => Err(changed(
                "a file of that name appeared (use --force to replace it)",
            )),
            Err(err) => Err(SaveError::io(&self.shown, err)),
        }
    }

    /// Writes the verified bytes into the existing file itself, keeping its inode (and so its
    /// hard links, owner and mode).
    fn write_into(
        &self,
        existing: &Existing,
        stored: Stored,
        options: SaveOptions,
    ) -> Result<(), SaveError> {
        let io_err = |err| SaveError::io(&self.shown, err);
        let mut out = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&self.out)
            .map_err(io_err)?;
        let meta = out.metadata().map_err(io_err)?;
        if (meta.dev(), meta.ino()) != existing.id {
            return Err(SaveError::Changed {
                path: super::shown_path(&self.shown),
                what: "the file was replaced",
                part: super::shown_path(&self.part),
            });
        }
        let mut from = self.file.try_clone().map_err(io_err)?;
        let length = from.metadata().map_err(io_err)?.len();
        from.seek(SeekFrom::Start(0)).map_err(io_err)?;
        out.set_len(0).map_err(io_err)?;
        io::copy(&mut from, &mut out).map_err(io_err)?;
        out.set_len(length).map_err(io_err)?;
        if options.preserve {
            if let Some(mode) = stored.mode {
                nix::sys::stat::fchmod(&out, Mode::from_bits_truncate(mode & 0o777))
                    .map_err(|errno| io_err(errno.into()))?;
            }
            set_modified(&out, stored.modified).map_err(io_err)?;
        }
        out.sync_all().map_err(io_err)
    }
}

impl Drop for PartFile {
    /// A part file that holds nothing (the request was refused, or failed at once) is not
    /// left behind.
    fn drop(&mut self) {
        let empty = self.file.metadata().is_ok_and(|meta| meta.len() == 0);
        if empty && same_file(&self.file, &self.part) {
            let _ = fs::remove_file(&self.part);
            let _ = fs::remove_file(&self.record_path);
        }
    }
}

/// Writes a download into its part file, leaving holes for blocks of zeros.
#[derive(Debug)]
pub(crate) struct PartSink {
    file: File,
    writeback: Writeback,
    position: u64,
    /// Where the file must end at least, when the last bytes were a hole.
    hole_to: Option<u64>,
}

impl PartSink {
    /// Extends the file over a trailing hole and syncs it.
    fn finish(self) -> io::Result<()> {
        if let Some(end) = self.hole_to {
            self.file.set_len(end)?;
        }
        drop(self.writeback);
        self.file.sync_all()
    }
}

impl BodySink for PartSink {
    type Error = io::Error;

    fn write(&mut self, data: &[u8]) -> io::Result<()> {
        let mut rest = data;
        while !rest.is_empty() {
            // Blocks aligned to the file's offsets: a leading piece up to the next boundary.
            let to_boundary = HOLE_BLOCK - (self.position % HOLE_BLOCK as u64) as usize;
            let zeros = zero_run(rest, to_boundary);
            if zeros > 0 {
                self.position += zeros as u64;
                self.hole_to = Some(self.position);
                rest = &rest[zeros..];
                continue;
            }
            let data_len = data_run(rest, to_boundary);
            if self.hole_to.take().is_some() {
                self.file.seek(SeekFrom::Start(self.position))?;
            }
            self.file.write_all(&rest[..data_len])?;
            self.position += data_len as u64;
            self.writeback.wrote_to(self.position);
            rest = &rest[data_len..];
        }
        Ok(())
    }
}

/// Length of the run of whole zero blocks at the start of `data`, whose first block is
/// `first` bytes long (a block cut by the end of `data` counts only if it is the end).
fn zero_run(data: &[u8], first: usize) -> usize {
    let mut len = 0;
    let mut block = first;
    while len < data.len() {
        let end = (len + block).min(data.len());
        if data[len..end] != ZEROS[..end - len] {
            break;
        }
        len = end;
        block = HOLE_BLOCK;
    }
    len
}

/// Length of the run of blocks at the start of `data` up to the first whole zero block.
fn data_run(data: &[u8], first: usize) -> usize {
    let mut len = first.min(data.len());
    while len < data.len() {
        let end = (len + HOLE_BLOCK).min(data.len());
        if data[len..end] == ZEROS[..end - len] {
            break;
        }
        len = end;
    }
    len
}

/// Why a private file could not be opened.
enum PrivateError {
    /// Something that is not this user's own plain file is there.
    Unsafe(&'static str),
    /// A file-system failure.
    Io(io::Error),
}

/// Opens `path` for reading and writing as this user's own private regular file: created
/// exclusively (mode 0600) if absent, else opened without following links or blocking, and
/// refused unless it is a regular file owned by this user with a single link.
fn open_private(path: &Path) -> Result<File, PrivateError> {
    let created = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path);
    match created {
        Ok(file) => return Ok(file),
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {}
        Err(err) => return Err(PrivateError::Io(err)),
    }
    let file = match OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
    {
        Ok(file) => file,
        Err(err) if err.raw_os_error() == Some(libc::ELOOP) => {
            return Err(PrivateError::Unsafe("it is a symbolic link"))
        }
        Err(err) => return Err(PrivateError::Io(err)),
    };
    let meta = file.metadata().map_err(PrivateError::Io)?;
    check_private(&meta).map_err(PrivateError::Unsafe)?;
    Ok(file)
}

/// Whether a file is this user's own plain file: regular, owned by us, with a single link;
/// else what is wrong with it.
fn check_private(meta: &fs::Metadata) -> Result<(), &'static str> {
    if !meta.is_file() {
        return Err("it is not a regular file");
    }
    if meta.uid() != nix::unistd::geteuid().as_raw() {
        return Err("it belongs to another user");
    }
    if meta.nlink() != 1 {
        return Err("it has other hard links");
    }
    Ok(())
}

/// Whether `path` still names the open `file`.
fn same_file(file: &File, path: &Path) -> bool {
    match (file.metadata(), fs::symlink_metadata(path)) {
        (Ok(open), Ok(named)) => open.dev() == named.dev() && open.ino() == named.ino(),
        _ => false,
    }
}

/// The record beside a part file; `None` when absent or not trustworthy.
fn read_record(path: &Path) -> Option<Record> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .ok()?;
    let meta = file.metadata().ok()?;
    if check_private(&meta).is_err() || meta.len() > MAX_RECORD_LEN {
        return None;
    }
    let mut bytes = Vec::new();
    io::Read::read_to_end(&mut io::Read::take(file, MAX_RECORD_LEN), &mut bytes).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Writes the record beside a part file, through the same checks as the part file.
fn write_record(path: &Path, record: &Record) -> io::Result<()> {
    let mut file = open_private(path).map_err(|err| match err {
        PrivateError::Io(err) => err,
        PrivateError::Unsafe(why) => io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("{}: refusing to use it: {why}", super::shown_path(path)),
        ),
    })?;
    file.set_len(0)?;
    file.write_all(&serde_json::to_vec(record).map_err(io::Error::other)?)
}

/// The saved file's permission bits.
fn final_mode(existing: Option<&Existing>, stored: Stored, options: SaveOptions) -> u32 {
    match (existing, stored.mode) {
        (_, Some(mode)) if options.preserve => mode & 0o777,
        (Some(existing), _) => existing.mode & 0o777,
        (None, stored_mode) => {
            // A new file, as `cp` makes one: read and write within the umask, and execute
            // where the stored file has it and the class may read.
            let base = 0o666 & !umask();
            let exec = stored_mode.unwrap_or(0) & 0o111 & (base >> 2);
            base | exec
        }
    }
}

/// Gives the part file the owner and group of the file it replaces; false when that is not
/// permitted (the bytes are then written into the existing file instead).
fn give_owner(file: &File, existing: &Existing) -> bool {
    let Ok(meta) = file.metadata() else {
        return false;
    };
    if (meta.uid(), meta.gid()) == (existing.uid, existing.gid) {
        return true;
    }
    nix::unistd::fchown(
        file,
        Some(nix::unistd::Uid::from_raw(existing.uid)),
        Some(nix::unistd::Gid::from_raw(existing.gid)),
    )
    .is_ok()
}

/// Sets a file's modification time (and its access time to now).
fn set_modified(file: &File, modified: Option<u64>) -> io::Result<()> {
    let Some(secs) = modified else { return Ok(()) };
    let times = fs::FileTimes::new().set_modified(UNIX_EPOCH + Duration::from_secs(secs));
    file.set_times(times.set_accessed(std::time::SystemTime::now()))
}

/// Renames `from` to `to` only if `to` does not exist, atomically.
fn rename_no_replace(from: &Path, to: &Path) -> io::Result<()> {
    use nix::fcntl::{renameat2, RenameFlags, AT_FDCWD};
    match renameat2(AT_FDCWD, from, AT_FDCWD, to, RenameFlags::RENAME_NOREPLACE) {
        Ok(()) => Ok(()),
        // File systems without it: a link cannot replace either.
        Err(nix::errno::Errno::EINVAL) => {
            fs::hard_link(from, to)?;
            fs::remove_file(from)
        }
        Err(errno) => Err(errno.into()),
    }
}

/// The process's umask, read without changing it.
fn umask() -> u32 {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("Umask:"))
                .and_then(|mask| u32::from_str_radix(mask.trim(), 8).ok())
        })
        .unwrap_or(0o022)
}

#[cfg(test)]
mod tests {
    use std::os::unix::ffi::OsStrExt;

    use super::*;

    #[test]
    fn part_names_fit_the_name_limit_and_stay_distinct() {
        let long = "文".repeat(84); // 252 bytes
        let part = part_path(Path::new(&long));
        let name = part.file_name().unwrap().as_bytes();
        assert!(name.len() <= 255, "{}", name.len());
        assert!(std::str::from_utf8(name).is_ok(), "cut inside a character");
        let other = part_path(Path::new(&format!("{}x", "文".repeat(83))));
        assert_ne!(part, other);
        assert_eq!(
            part_path(Path::new("dir/a.txt")),
            Path::new("dir/.a.txt.sockit-part")
        );
    }

    #[test]
    fn zero_blocks_become_holes_and_data_is_written_in_runs() {
        let block = HOLE_BLOCK;
        let mut data = vec![0u8; 3 * block];
        data[block + 5] = 1;
        assert_eq!(zero_run(&data, block), block);
        assert_eq!(data_run(&data[block..], block), block);
        assert_eq!(zero_run(&data[2 * block..], block), block);
        // A cut first block counts on its own; the next one holds the 1.
        assert_eq!(zero_run(&data, 100), 100);
        assert_eq!(zero_run(&data[..block + 5], 100), block + 5);
        assert_eq!(data_run(&[1u8; 10], block), 10);
    }

    #[test]
    fn new_files_get_execute_bits_only_where_readable() {
        let stored = Stored {
            mode: Some(0o755),
            modified: None,
        };
        let mode = final_mode(None, stored, SaveOptions::default());
        assert_eq!(mode & 0o111, (mode & 0o444) >> 2);
        let existing = Existing {
            id: (0, 0),
            mode: 0o600,
            uid: 0,
            gid: 0,
            links: 1,
        };
        assert_eq!(
            final_mode(Some(&existing), stored, SaveOptions::default()),
            0o600
        );
        let preserve = SaveOptions {
            preserve: true,
            force: true,
        };
        assert_eq!(final_mode(Some(&existing), stored, preserve), 0o755);
    }
}
