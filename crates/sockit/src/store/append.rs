//! How an upload's bytes reach its partial file: written straight to the device with
//! `O_DIRECT` where the file system takes it, else through the page cache.
//!
//! A durable upload must be on the device before it is answered. Through the page cache, every
//! byte is copied into the cache, then written out by the kernel, and the final sync waits for
//! what is left; on the benchmark machine that path took three times as long as writing the
//! same bytes with `O_DIRECT` (see docs/BENCHMARKS.md). So the bytes are gathered in a buffer
//! aligned to [`ALIGN`] and written, [`STAGE_LEN`] at a time, through a second handle of the
//! partial opened with `O_DIRECT`, at offsets aligned the same way.
//!
//! What cannot be written that way goes through the page cache, from the ordinary handle, and
//! the final sync takes it to the device:
//! - the bytes before the first aligned offset, when a resumed upload starts in the middle of
//!   a block;
//! - the last bytes, less than a block, when the upload ends ([`Appender::flush`]);
//! - everything, when the file system refuses `O_DIRECT` when the partial is opened or on its
//!   first write (then [`Writeback`] starts write-out as the file grows), and on tmpfs, which
//!   has no device to write to.
//!
//! The two handles never write the same block: the page cache holds only whole blocks of its
//! own, which a direct write never touches, and a direct write drops any cached copy of the
//! blocks it writes, so reading the partial back (a resume hashes what is held) sees the
//! bytes written either way.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use bytemuck::{Pod, Zeroable};

use crate::transfer::Writeback;

/// The alignment of direct writes, in memory and in the file: the largest logical block size
/// of common devices.
pub(super) const ALIGN: usize = 4096;

/// Bytes gathered before a direct write.
pub(super) const STAGE_LEN: usize = 1024 * 1024;

/// One aligned block of the staging buffer.
#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C, align(4096))]
struct Block([u8; ALIGN]);

/// Appends an upload's bytes to its partial file from a given offset.
#[derive(Debug)]
pub(super) struct Appender {
    /// The partial, through the page cache.
    file: File,
    /// While direct writes work: the same file opened with `O_DIRECT`, and the buffer.
    direct: Option<Direct>,
    /// Page-cache write-out as the file grows, when writing through the page cache.
    writeback: Option<Writeback>,
    /// Where the next byte goes, once what is staged is written.
    end: u64,
}

#[derive(Debug)]
struct Direct {
    file: File,
    stage: Vec<Block>,
    /// Bytes of `stage` in use; they go at `Appender::end - staged`.
    staged: usize,
}

impl std::fmt::Debug for Block {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Block")
    }
}

impl Appender {
    /// Appends to `file` from `offset`, with direct writes through `direct` (the same file
    /// opened with `O_DIRECT`) when given.
    ///
    /// # Errors
    ///
    /// When write-out cannot be started for the page-cache path.
    pub(super) fn new(file: File, direct: Option<File>, offset: u64) -> io::Result<Appender> {
        let direct = direct.map(|file| Direct {
            file,
            stage: vec![Block([0; ALIGN]); STAGE_LEN / ALIGN],
            staged: 0,
        });
        let writeback = match direct {
            Some(_) => None,
            None => Some(Writeback::start(&file, offset)?),
        };
        Ok(Appender {
            file,
            direct,
            writeback,
            end: offset,
        })
    }

    /// The partial, for its metadata, length and sync.
    pub(super) fn file(&self) -> &File {
        &self.file
    }

    /// Whether bytes go to the device with direct writes.
    #[cfg(test)]
    pub(super) fn is_direct(&self) -> bool {
        self.direct.is_some()
    }

    /// Appends `data`.
    ///
    /// # Errors
    ///
    /// A write failure (`ENOSPC` among them).
    pub(super) fn write(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let Some(direct) = &mut self.direct else {
                self.file.write_all_at(data, self.end)?;
                self.end += data.len() as u64;
                if let Some(writeback) = &mut self.writeback {
                    writeback.wrote_to(self.end);
                }
                return Ok(());
            };
            // Up to the first aligned offset, through the page cache.
            let start = self.end - direct.staged as u64;
            let misaligned = (start % ALIGN as u64) as usize;
            if direct.staged == 0 && misaligned != 0 {
                let head = (ALIGN - misaligned).min(data.len());
                self.file.write_all_at(&data[..head], self.end)?;
                self.end += head as u64;
                data = &data[head..];
                continue;
            }
            let stage: &mut [u8] = bytemuck::cast_slice_mut(&mut direct.stage);
            let taken = (stage.len() - direct.staged).min(data.len());
            stage[direct.staged..direct.staged + taken].copy_from_slice(&data[..taken]);
            direct.staged += taken;
            self.end += taken as u64;
            data = &data[taken..];
            if direct.staged == stage.len() {
                self.write_stage()?;
            }
        }
        Ok(())
    }

    /// Writes what is staged: its whole blocks directly, the rest through the page cache.
    /// After a partial block, the file's end is no longer aligned, so later bytes go through
    /// the page cache.
    ///
    /// # Errors
    ///
    /// A write failure.
    pub(super) fn flush(&mut self) -> io::Result<()> {
        self.write_stage()?;
        let Some(direct) = &mut self.direct else {
            return Ok(());
        };
        if direct.staged > 0 {
            let stage: &[u8] = bytemuck::cast_slice(&direct.stage);
            let start = self.end - direct.staged as u64;
            self.file.write_all_at(&stage[..direct.staged], start)?;
            direct.staged = 0;
            self.direct = None;
        }
        Ok(())
    }

    /// Writes the whole blocks staged with one direct write, keeping the partial block left
    /// at the front of the stage. A file system that refuses the write (`EINVAL`: no
    /// `O_DIRECT` after all) gets those bytes, and every later one, through the page cache.
    fn write_stage(&mut self) -> io::Result<()> {
        let Some(direct) = &mut self.direct else {
            return Ok(());
        };
        let whole = direct.staged / ALIGN * ALIGN;
        if whole == 0 {
            return Ok(());
        }
        let start = self.end - direct.staged as u64;
        let stage: &mut [u8] = bytemuck::cast_slice_mut(&mut direct.stage);
        match direct.file.write_all_at(&stage[..whole], start) {
            Ok(()) => {
                stage.copy_within(whole..direct.staged, 0);
                direct.staged -= whole;
                Ok(())
            }
            Err(err) if err.raw_os_error() == Some(libc::EINVAL) => {
                tracing::debug!(%err, "direct writes refused; writing through the page cache");
                self.file.write_all_at(&stage[..direct.staged], start)?;
                self.direct = None;
                self.writeback = Some(Writeback::start(&self.file, self.end)?);
                Ok(())
            }
            Err(err) => Err(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::OpenOptionsExt;

    /// Bytes that tell their positions apart.
    fn content(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 251) as u8).collect()
    }

    /// An appender to a new file in `dir` holding `held` bytes of `content`, with direct
    /// writes when the file system takes them.
    fn appender(dir: &std::path::Path, whole: &[u8], held: usize) -> Appender {
        let path = dir.join("partial");
        std::fs::write(&path, &whole[..held]).unwrap();
        let file = File::options().read(true).write(true).open(&path).unwrap();
        let direct = File::options()
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(&path)
            .ok();
        Appender::new(file, direct, held as u64).unwrap()
    }

    #[test]
    fn any_split_from_any_offset_leaves_the_same_file() {
        let dir = tempfile::tempdir().unwrap();
        let whole = content(3 * STAGE_LEN + 5000);
        for held in [0, 1, ALIGN - 1, ALIGN, ALIGN + 17, STAGE_LEN + 3] {
            for piece in [1000, ALIGN, 65_537, STAGE_LEN] {
                let mut appender = appender(dir.path(), &whole, held);
                for chunk in whole[held..].chunks(piece) {
                    appender.write(chunk).unwrap();
                }
                appender.flush().unwrap();
                let written = std::fs::read(dir.path().join("partial")).unwrap();
                assert!(written == whole, "held {held}, pieces of {piece}");
            }
        }
    }

    #[test]
    fn direct_writes_are_used_where_the_file_system_takes_them() {
        let dir = tempfile::tempdir().unwrap();
        let whole = content(2 * STAGE_LEN);
        let mut appender = appender(dir.path(), &whole, 0);
        let took_direct = appender.is_direct();
        appender.write(&whole).unwrap();
        assert_eq!(appender.is_direct(), took_direct, "no fallback on the way");
        appender.flush().unwrap();
        assert!(std::fs::read(dir.path().join("partial")).unwrap() == whole);
        if !took_direct {
            eprintln!("SKIPPED direct path: the test's file system refuses O_DIRECT");
        }
    }

    #[test]
    fn without_direct_writes_everything_goes_through_the_page_cache() {
        let dir = tempfile::tempdir().unwrap();
        let whole = content(STAGE_LEN + 123);
        let path = dir.path().join("partial");
        let file = File::create(&path).unwrap();
        let mut appender = Appender::new(file, None, 0).unwrap();
        appender.write(&whole).unwrap();
        appender.flush().unwrap();
        assert!(std::fs::read(&path).unwrap() == whole);
    }
}
