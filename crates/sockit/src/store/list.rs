//! Listing the store one page at a time, in memory bounded by the page, not the store.
//!
//! A page is the entries whose names come after a cursor (`after`), in byte order of their
//! UTF-8 names, at most `limit` of them and at most [`MAX_LIST_PAGE_BYTES`] of JSON. It is
//! made in one pass over the root directory:
//!
//! 1. every directory entry is offered to [`Smallest`], a max-heap that keeps only the `limit`
//!    smallest names greater than the cursor (and no more names than could fit in a page);
//!    entries that are not regular files (by the directory entry's file type) or whose names
//!    are not valid store names are passed over, so symbolic links are never listed;
//! 2. only the names kept are `lstat`ed, in order, and written as the JSON array the protocol
//!    sends, stopping before the array would exceed the byte cap.
//!
//! Whether anything was left out (by the heap or by the byte cap) is the page's `more`. A name
//! chosen in step 1 that has vanished (or stopped being a regular file) by step 2 is skipped.

use std::collections::BinaryHeap;
use std::fs;
use std::io;
use std::path::Path;

use super::{file_info, FileName, Store};

/// Most entries one `list` page holds, and the page size when the request names none.
pub const MAX_LIST_ENTRIES: usize = 100_000;
/// Most bytes of JSON in the body of one `list` page: 8 MiB, half of what a client holds in
/// memory for one reply by default.
pub const MAX_LIST_PAGE_BYTES: usize = 8 * 1024 * 1024;

/// The fewest bytes one entry adds to a page, besides its name:
/// `{"name":"","length":0,"modified":0}` and the comma before the next entry.
const ENTRY_JSON_FLOOR: usize = 36;

/// One page of the listing, ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListPage {
    /// The JSON array of the page's entries (`name`, `length`, `modified`), sorted by name,
    /// exactly as the `list` reply's body carries it.
    pub json: Vec<u8>,
    /// How many entries `json` holds.
    pub count: usize,
    /// Whether entries after the page's last one exist.
    pub more: bool,
}

impl Store {
    /// The page of stored files whose names come after `after` (all, when `None`), at most
    /// `limit` entries (clamped to `1..=`[`MAX_LIST_ENTRIES`]) and at most
    /// [`MAX_LIST_PAGE_BYTES`] of JSON. The next page starts after the last name in this one.
    ///
    /// # Errors
    ///
    /// When the root cannot be read.
    pub fn list_page(&self, after: Option<&str>, limit: usize) -> io::Result<ListPage> {
        let limit = limit.clamp(1, MAX_LIST_ENTRIES);
        list_page_within(&self.root, after, limit, MAX_LIST_PAGE_BYTES)
    }
}

/// [`Store::list_page`] of the directory `root`, with the byte cap as a parameter.
///
/// A page that would be empty only because its chosen entries vanished before they were
/// `lstat`ed is made again from after them, so a page with `more` set is never empty.
fn list_page_within(
    root: &Path,
    after: Option<&str>,
    limit: usize,
    max_bytes: usize,
) -> io::Result<ListPage> {
    let mut cursor = after.map(str::to_owned);
    loop {
        let chosen = smallest_after(root, cursor.as_deref(), limit, max_bytes)?;
        let last_chosen = chosen.names.last().cloned();
        let (json, count, cut) = write_page(root, &chosen.names, max_bytes);
        let more = chosen.left_out || cut;
        match last_chosen {
            Some(last) if count == 0 && more => cursor = Some(last),
            _ => return Ok(ListPage { json, count, more }),
        }
    }
}

/// The names kept by one pass over a directory, in ascending order.
#[derive(Debug)]
struct Chosen {
    names: Vec<String>,
    /// Whether a listable entry after the cursor was passed over.
    left_out: bool,
}

/// Reads `root` once and keeps the (at most `limit`) smallest names of listable entries greater
/// than `after`.
fn smallest_after(
    root: &Path,
    after: Option<&str>,
    limit: usize,
    max_bytes: usize,
) -> io::Result<Chosen> {
    let mut smallest = Smallest::new(limit, max_bytes);
    for entry in fs::read_dir(root)? {
        let entry = entry?;
        let file_name = entry.file_name();
        let Some(name) = file_name.to_str() else {
            continue;
        };
        if after.is_some_and(|after| name <= after) {
            continue;
        }
        let wanted = smallest.wants(name);
        if !wanted && smallest.left_out {
            continue;
        }
        if !is_listable(&entry, name) {
            continue;
        }
        if wanted {
            smallest.keep(name.to_owned());
        } else {
            smallest.left_out = true;
        }
    }
    Ok(smallest.into_chosen())
}

/// Whether a directory entry is one `list` shows: a regular file (by the entry's own file
/// type, so a symbolic link never is) with a valid store name.
fn is_listable(entry: &fs::DirEntry, name: &str) -> bool {
    entry.file_type().is_ok_and(|kind| kind.is_file()) && FileName::new(name).is_ok()
}

/// `lstat`s `names` (ascending) and writes the JSON array of those still regular files,
/// stopping before the array would pass `max_bytes` (the first entry is always written).
/// Returns the array, its entry count, and whether it stopped early.
fn write_page(root: &Path, names: &[String], max_bytes: usize) -> (Vec<u8>, usize, bool) {
    let mut json = Vec::with_capacity(max_bytes.min(64 * 1024));
    json.push(b'[');
    let mut entry = Vec::new();
    let mut count = 0;
    for name in names {
        let Ok(meta) = fs::symlink_metadata(root.join(name)) else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        entry.clear();
        serde_json::to_writer(&mut entry, &file_info(name, &meta))
            .expect("a file entry always serialises");
        let separator = usize::from(count > 0);
        if count > 0 && json.len() + separator + entry.len() + 1 > max_bytes {
            json.push(b']');
            return (json, count, true);
        }
        if separator == 1 {
            json.push(b',');
        }
        json.extend_from_slice(&entry);
        count += 1;
    }
    json.push(b']');
    (json, count, false)
}

/// The smallest names offered so far: at most `limit` of them, and no more than could share one
/// page of `max_bytes`. A max-heap, so the largest kept name is the one to compare with and to
/// drop.
#[derive(Debug)]
struct Smallest {
    heap: BinaryHeap<String>,
    limit: usize,
    /// Sum of [`entry_floor`] over the names kept.
    bytes: usize,
    max_bytes: usize,
    /// Whether a listable name was dropped or refused.
    left_out: bool,
}

impl Smallest {
    fn new(limit: usize, max_bytes: usize) -> Smallest {
        Smallest {
            heap: BinaryHeap::new(),
            limit,
            bytes: 0,
            max_bytes,
            left_out: false,
        }
    }

    /// Whether `name` would be kept if offered now: there is room for it, or it is smaller than
    /// the largest name kept (which it would push out).
    fn wants(&self, name: &str) -> bool {
        let room = self.heap.len() < self.limit && self.bytes + entry_floor(name) <= self.max_bytes;
        self.heap.is_empty()
            || room
            || self
                .heap
                .peek()
                .is_some_and(|largest| name < largest.as_str())
    }

    /// Keeps `name` (which [`Smallest::wants`]), dropping the largest names until the kept ones
    /// fit the limits again. One name always stays.
    fn keep(&mut self, name: String) {
        self.bytes += entry_floor(&name);
        self.heap.push(name);
        while self.heap.len() > self.limit || (self.bytes > self.max_bytes && self.heap.len() > 1) {
            let dropped = self.heap.pop().expect("the heap holds more than one name");
            self.bytes -= entry_floor(&dropped);
            self.left_out = true;
        }
    }

    fn into_chosen(self) -> Chosen {
        Chosen {
            names: self.heap.into_sorted_vec(),
            left_out: self.left_out,
        }
    }
}

/// The fewest bytes the entry for `name` can take in a page: no page whose floors add up to more
/// than the cap can fit under it.
fn entry_floor(name: &str) -> usize {
    name.len() + ENTRY_JSON_FLOOR
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(root: &Path, names: &[&str]) {
        for name in names {
            fs::write(root.join(name), name.as_bytes()).unwrap();
        }
    }

    /// Offers a listable name, as a pass over a directory does.
    fn offer(smallest: &mut Smallest, name: &str) {
        if smallest.wants(name) {
            smallest.keep(name.to_owned());
        } else {
            smallest.left_out = true;
        }
    }

    fn names_of(page: &ListPage) -> Vec<String> {
        let entries: Vec<serde_json::Value> = serde_json::from_slice(&page.json).unwrap();
        assert_eq!(entries.len(), page.count);
        entries
            .iter()
            .map(|e| e["name"].as_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn entry_floor_is_the_smallest_entry_and_its_comma() {
        let info = super::super::FileInfo {
            name: String::new(),
            length: 0,
            modified: 0,
        };
        let json = serde_json::to_vec(&info).unwrap();
        assert_eq!(entry_floor(""), json.len() + 1);
    }

    #[test]
    fn smallest_keeps_the_limit_smallest_names_whatever_the_order() {
        let mut smallest = Smallest::new(3, usize::MAX);
        for name in ["m", "c", "z", "a", "q", "b", "y"] {
            offer(&mut smallest, name);
        }
        let chosen = smallest.into_chosen();
        assert_eq!(chosen.names, ["a", "b", "c"]);
        assert!(chosen.left_out);
    }

    #[test]
    fn smallest_keeps_no_more_names_than_fit_the_byte_cap() {
        // Room for two floors of 1-byte names (37 bytes each), not three.
        let mut smallest = Smallest::new(10, 2 * 37 + 36);
        for name in ["c", "a", "b"] {
            offer(&mut smallest, name);
        }
        let chosen = smallest.into_chosen();
        assert_eq!(chosen.names, ["a", "b"]);
        assert!(chosen.left_out);
    }

    #[test]
    fn pages_follow_the_cursor_and_say_whether_more_follow() {
        let dir = tempfile::tempdir().unwrap();
        touch(dir.path(), &["b", "a", "d", "c", "e"]);
        let page = list_page_within(dir.path(), None, 2, MAX_LIST_PAGE_BYTES).unwrap();
        assert_eq!(
            (names_of(&page), page.more),
            (vec!["a".into(), "b".into()], true)
        );
        let page = list_page_within(dir.path(), Some("b"), 2, MAX_LIST_PAGE_BYTES).unwrap();
        assert_eq!(
            (names_of(&page), page.more),
            (vec!["c".into(), "d".into()], true)
        );
        let page = list_page_within(dir.path(), Some("d"), 2, MAX_LIST_PAGE_BYTES).unwrap();
        assert_eq!((names_of(&page), page.more), (vec!["e".to_owned()], false));
        let page = list_page_within(dir.path(), Some("e"), 2, MAX_LIST_PAGE_BYTES).unwrap();
        assert_eq!(
            (page.json, page.count, page.more),
            (b"[]".to_vec(), 0, false)
        );
    }

    #[test]
    fn the_byte_cap_ends_a_page_early_and_the_next_page_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        touch(dir.path(), &["a", "b", "c"]);
        let one = serde_json::to_vec(&file_info(
            "a",
            &fs::metadata(dir.path().join("a")).unwrap(),
        ))
        .unwrap()
        .len();
        // Room for two entries: `[` entry `,` entry `]`.
        let cap = 2 * one + 3;
        let page = list_page_within(dir.path(), None, 10, cap).unwrap();
        assert!(page.json.len() <= cap, "{} > {cap}", page.json.len());
        assert_eq!(
            (names_of(&page), page.more),
            (vec!["a".into(), "b".into()], true)
        );
        let page = list_page_within(dir.path(), Some("b"), 10, cap).unwrap();
        assert_eq!((names_of(&page), page.more), (vec!["c".to_owned()], false));
    }

    #[test]
    fn a_page_stops_before_its_json_would_pass_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        touch(dir.path(), &["a", "b", "c"]);
        let names = ["a", "b", "c"].map(str::to_owned);
        let (whole, _, _) = write_page(dir.path(), &names, MAX_LIST_PAGE_BYTES);
        let entry = (whole.len() - 2 - 2) / 3;
        for (cap, count) in [
            (whole.len(), 3),
            (whole.len() - 1, 2),
            (2 + entry, 1),
            (1, 1),
        ] {
            let (json, written, cut) = write_page(dir.path(), &names, cap);
            assert_eq!((written, cut), (count, count < 3), "cap {cap}");
            assert!(
                json.len() <= cap || written == 1,
                "cap {cap}: {}",
                json.len()
            );
            let page = ListPage {
                json,
                count: written,
                more: cut,
            };
            assert_eq!(names_of(&page), names[..count]);
        }
    }

    #[test]
    fn names_that_vanished_before_their_lstat_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        touch(dir.path(), &["a", "c"]);
        let names = ["a", "b", "c"].map(str::to_owned);
        let (json, count, cut) = write_page(dir.path(), &names, MAX_LIST_PAGE_BYTES);
        let page = ListPage {
            json,
            count,
            more: cut,
        };
        assert_eq!(names_of(&page), ["a", "c"]);
        assert!(!cut);
    }

    #[test]
    fn links_directories_and_reserved_names_are_never_listed_nor_counted_as_more() {
        let dir = tempfile::tempdir().unwrap();
        touch(dir.path(), &["a", "b"]);
        std::os::unix::fs::symlink(dir.path().join("a"), dir.path().join("c-link")).unwrap();
        fs::create_dir(dir.path().join("d-dir")).unwrap();
        fs::create_dir(dir.path().join(".sockit")).unwrap();
        let page = list_page_within(dir.path(), None, 2, MAX_LIST_PAGE_BYTES).unwrap();
        assert_eq!(
            (names_of(&page), page.more),
            (vec!["a".into(), "b".into()], false)
        );
    }
}
