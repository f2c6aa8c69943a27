//! File names from the network: one plain path component, or nothing.

use std::fmt;

/// The hidden directory inside the store root where partial uploads and bookkeeping live.
/// Names starting with it are reserved.
pub const BOOKKEEPING_DIR: &str = ".sockit";

/// Longest name, in bytes (the usual file-system limit for one component).
pub const MAX_NAME_LEN: usize = 255;

/// A validated store file name: exactly one path component that cannot escape the root or
/// carry terminal escapes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FileName(String);

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    /// The name is empty.
    #[error("file name is empty")]
    Empty,
    /// `.` or `..`.
    #[error("file name may not be `.` or `..`")]
    Dots,
    /// Longer than [`MAX_NAME_LEN`] bytes.
    #[error("file name is {0} bytes long; the limit is 255")]
    TooLong(usize),
    /// Contains `/` or `\`.
    #[error("file name may not contain `/` or `\\`")]
    Separator,
    /// Contains NUL, a control character or a bidirectional-text override.
    #[error("file name may not contain control characters")]
    Control,
    /// Starts with the bookkeeping directory's name.
    #[error("file names starting with `.sockit` are reserved")]
    Reserved,
}

impl FileName {
    /// Validates `name`.
    ///
    /// # Errors
    ///
    /// [`NameError`] saying which rule the name breaks.
    pub fn new(name: &str) -> Result<FileName, NameError> {
        if name.is_empty() {
            return Err(NameError::Empty);
        }
        if name == "." || name == ".." {
            return Err(NameError::Dots);
        }
        if name.len() > MAX_NAME_LEN {
            return Err(NameError::TooLong(name.len()));
        }
        if name.contains(['/', '\\']) {
            return Err(NameError::Separator);
        }
        if name.chars().any(is_unsafe_char) {
            return Err(NameError::Control);
        }
        if name.starts_with(BOOKKEEPING_DIR) {
            return Err(NameError::Reserved);
        }
        Ok(FileName(name.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for FileName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// NUL and other control characters (C0, DEL, C1: the start of every terminal escape), and the
/// invisible marks that reorder text on screen.
fn is_unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_are_accepted() {
        for name in [
            "a.txt",
            "澳门最大线上赌场开业啦.mp4",
            "..hidden",
            ".profile",
            "a b",
            "x".repeat(255).as_str(),
        ] {
            assert_eq!(FileName::new(name).unwrap().as_str(), name);
        }
    }

    #[test]
    fn hostile_names_are_refused() {
        let cases: &[(&str, NameError)] = &[
            ("", NameError::Empty),
            (".", NameError::Dots),
            ("..", NameError::Dots),
            ("../etc/passwd", NameError::Separator),
            ("a/b", NameError::Separator),
            ("/etc/passwd", NameError::Separator),
            ("..\\windows", NameError::Separator),
            ("nul\0byte", NameError::Control),
            ("bell\x07", NameError::Control),
            ("\x1b[31mred", NameError::Control),
            ("c1\u{9b}31m", NameError::Control),
            ("line\nbreak", NameError::Control),
            ("evil\u{202E}txt.exe", NameError::Control),
            (".sockit", NameError::Reserved),
            (".sockit-x", NameError::Reserved),
        ];
        for (name, expected) in cases {
            assert_eq!(FileName::new(name).unwrap_err(), *expected, "{name:?}");
        }
        assert_eq!(
            FileName::new(&"x".repeat(256)).unwrap_err(),
            NameError::TooLong(256)
        );
    }
}
