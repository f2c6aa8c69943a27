//! `sockit ls`: the stored files with their sizes and modification times.
//!
//! The listing is asked for page by page and each page is printed as it arrives, so a store of
//! millions of files is listed completely in bounded memory. `--json` prints one JSON array
//! over all pages, byte for byte what one `serde_json` array of the entries would be.

use std::io::{self, Write};

use sockit::store::FileInfo;

use super::remote::{self, LoginArgs};
use super::{CmdResult, TimeoutArg};
use crate::cmd::CmdError;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Print the listing as JSON, for scripts.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    login: LoginArgs,
    #[command(flatten)]
    pub(crate) timeout: TimeoutArg,
}

/// Lists the store, printing each page as it arrives; any failure, mid-way too, is the error.
pub(crate) async fn run(args: Args) -> CmdResult {
    let mut client = remote::connect(&args.login).await?;
    let mut listing = Listing::new(args.json);
    let mut pages = client.list_pages(None);
    while let Some(page) = pages.next().await? {
        listing.page(&page).map_err(write_failed)?;
    }
    listing.finish().map_err(write_failed)
}

/// The one-line message for a failed write to standard output, or a quiet end.
fn write_failed(err: io::Error) -> CmdError {
    super::out::failed(err)
}

/// The listing being printed on standard output, one page at a time.
struct Listing {
    json: bool,
    /// Entries printed so far.
    printed: u64,
}

impl Listing {
    fn new(json: bool) -> Listing {
        Listing { json, printed: 0 }
    }

    /// Prints one page and flushes it.
    fn page(&mut self, files: &[FileInfo]) -> io::Result<()> {
        let mut out = io::BufWriter::new(io::stdout().lock());
        if self.json {
            write_json_entries(&mut out, files, self.printed == 0)?;
        } else {
            write_lines(&mut out, files)?;
        }
        self.printed += files.len() as u64;
        out.flush()
    }

    /// Ends the listing: closes the JSON array (`[]` when there was nothing).
    fn finish(self) -> io::Result<()> {
        if !self.json {
            return Ok(());
        }
        let mut out = io::stdout().lock();
        out.write_all(if self.printed == 0 { b"[]\n" } else { b"]\n" })?;
        out.flush()
    }
}

/// The entries as JSON objects, each after `[` (the first of the whole listing) or `,`.
fn write_json_entries(out: &mut impl Write, files: &[FileInfo], first: bool) -> io::Result<()> {
    for (i, file) in files.iter().enumerate() {
        out.write_all(if first && i == 0 { b"[" } else { b"," })?;
        serde_json::to_writer(&mut *out, file)?;
    }
    Ok(())
}

/// One line per file: size (right-aligned across the page), modification time, name.
fn write_lines(out: &mut impl Write, files: &[FileInfo]) -> io::Result<()> {
    let width = files
        .iter()
        .map(|f| f.length.to_string().len())
        .max()
        .unwrap_or(0);
    for file in files {
        writeln!(
            out,
            "{:>width$}  {}  {}",
            file.length,
            utc_time(file.modified),
            shell_quoted(&sockit::client::printable(&file.name))
        )?;
    }
    Ok(())
}

/// A name as a shell reads it back: as it is when it is plain, else in single quotes (GNU ls's
/// default on a terminal), so that a name with spaces is one word on the screen.
fn shell_quoted(name: &str) -> String {
    let plain = !name.is_empty()
        && !name.starts_with(['-', '~'])
        && !name.chars().any(|c| {
            c.is_whitespace()
                || matches!(
                    c,
                    '\'' | '"'
                        | '\\'
                        | '$'
                        | '`'
                        | '!'
                        | '*'
                        | '?'
                        | '['
                        | ']'
                        | '('
                        | ')'
                        | '{'
                        | '}'
                        | '<'
                        | '>'
                        | '|'
                        | '&'
                        | ';'
                        | '#'
                )
        });
    if plain {
        name.to_owned()
    } else {
        format!("'{}'", name.replace('\'', "'\\''"))
    }
}

/// Seconds since the Unix epoch as RFC 3339 UTC, `YYYY-MM-DDTHH:MM:SSZ`.
fn utc_time(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Days to civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use sockit::store::FileInfo;

    fn file(name: &str, length: u64) -> FileInfo {
        FileInfo {
            name: name.to_owned(),
            length,
            modified: 1_795_320_267,
        }
    }

    #[test]
    fn json_written_page_by_page_is_one_serde_json_array() {
        let files = [file("a", 1), file("b\"q", 22), file("c", 333)];
        let whole = serde_json::to_string(&files[..]).unwrap();
        for split in 0..=files.len() {
            let mut out = Vec::new();
            super::write_json_entries(&mut out, &files[..split], true).unwrap();
            super::write_json_entries(&mut out, &files[split..], split == 0).unwrap();
            out.extend_from_slice(b"]");
            assert_eq!(String::from_utf8(out).unwrap(), whole, "split at {split}");
        }
    }

    #[test]
    fn sizes_are_aligned_across_a_page() {
        let mut out = Vec::new();
        super::write_lines(&mut out, &[file("a", 6), file("b", 70_000)]).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "    6  2026-11-22T04:04:27Z  a\n70000  2026-11-22T04:04:27Z  b\n"
        );
    }

    #[test]
    fn utc_time_matches_known_dates() {
        assert_eq!(super::utc_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::utc_time(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(super::utc_time(1_795_320_267), "2026-11-22T04:04:27Z");
    }

    #[test]
    fn names_that_a_shell_would_split_are_quoted() {
        assert_eq!(super::shell_quoted("a.txt"), "a.txt");
        assert_eq!(super::shell_quoted("日本.txt"), "日本.txt");
        assert_eq!(super::shell_quoted("my file.txt"), "'my file.txt'");
        assert_eq!(super::shell_quoted("it's"), "'it'\\''s'");
        assert_eq!(super::shell_quoted("-rf"), "'-rf'");
    }
}
