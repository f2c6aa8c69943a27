//! File names from the network: one plain path component, or nothing.

use std::fmt;

/// The hidden directory inside the store root where partial uploads and bookkeeping live.
/// Names starting with it are reserved.
pub const BOOKKEEPING_DIR: &str = ".sockit";

/// Longest name, in bytes (the usual file-system limit for one component).
pub const MAX_NAME_LEN: usize = 255;

/// A validated store file name: exactly one path component that cannot escape the root, carry
/// terminal escapes, hide characters or pass for another name by a look-alike of `/`, `\\` or
/// the space.
///
/// Names are taken byte for byte, without Unicode normalisation: `café` written with `é`
/// (U+00E9) and with `e` and a combining accent (U+0065 U+0301) are two names, as they are
/// two files on Linux. A client that wants one spelling normalises before it asks.
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
    /// Contains NUL or another control character (C0, DEL, C1).
    #[error("file name may not contain {}, a control character", CodePoint(*.0))]
    Control(char),
    /// Contains a character that shows nothing, or changes how the text around it shows: a
    /// format character (Unicode category Cf: zero-width characters, the byte order mark,
    /// bidirectional-text controls, …), a line or paragraph separator, or a blank filler.
    #[error("file name may not contain {}, an invisible or formatting character", CodePoint(*.0))]
    Invisible(char),
    /// Contains a character made to look like another: a slash, a backslash or a space that
    /// is not one.
    #[error("file name may not contain {}, which looks like {like} but is not", CodePoint(*.ch))]
    LookAlike {
        /// The character.
        ch: char,
        /// What it passes for.
        like: &'static str,
    },
    /// Starts with the bookkeeping directory's name.
    #[error("file names starting with `.sockit` are reserved")]
    Reserved,
}

/// A character written as its code point, `U+XXXX`, the way it can be told apart from others.
#[derive(Debug, Clone, Copy)]
struct CodePoint(char);

impl fmt::Display for CodePoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "U+{:04X}", u32::from(self.0))
    }
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
        if let Some(err) = name.chars().find_map(refused_char) {
            return Err(err);
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

/// Why `c` may not be in a name, if it may not: control characters (C0, DEL, C1: the start
/// of every terminal escape), invisible and formatting characters, and look-alikes of `/`, `\`
/// and the space.
fn refused_char(c: char) -> Option<NameError> {
    if c.is_control() {
        Some(NameError::Control(c))
    } else if is_invisible(c) {
        Some(NameError::Invisible(c))
    } else {
        look_alike(c).map(|like| NameError::LookAlike { ch: c, like })
    }
}

/// The format characters (general category Cf, Unicode 15.1: zero-width space and joiners,
/// word joiner, the byte order mark, the bidirectional-text marks, embeddings, overrides and
/// isolates, invisible operators, tags, …), the line and paragraph separators, the combining
/// grapheme joiner and the blank fillers (Hangul, Braille).
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        // Cf
        '\u{00AD}'
            | '\u{0600}'..='\u{0605}'
            | '\u{061C}'
            | '\u{06DD}'
            | '\u{070F}'
            | '\u{0890}'..='\u{0891}'
            | '\u{08E2}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206F}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}'
            | '\u{110BD}'
            | '\u{110CD}'
            | '\u{13430}'..='\u{1343F}'
            | '\u{1BCA0}'..='\u{1BCA3}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0001}'
            | '\u{E0020}'..='\u{E007F}'
            // Line and paragraph separators (Zl, Zp), which break lines where they are shown.
            | '\u{2028}'
            | '\u{2029}'
            // Combining grapheme joiner, Mongolian free variation selectors.
            | '\u{034F}'
            | '\u{180B}'..='\u{180D}'
            | '\u{180F}'
            // Blank fillers.
            | '\u{115F}'
            | '\u{1160}'
            | '\u{3164}'
            | '\u{FFA0}'
            | '\u{2800}'
    )
}

/// What `c` passes for, when it is made to look like a path separator or a space.
fn look_alike(c: char) -> Option<&'static str> {
    match c {
        '\u{2044}' | '\u{2215}' | '\u{2571}' | '\u{29F8}' | '\u{FF0F}' | '\u{1735}' => Some("`/`"),
        '\u{2216}' | '\u{2572}' | '\u{29F5}' | '\u{29F9}' | '\u{FE68}' | '\u{FF3C}' => Some("`\\`"),
        // Every space separator (Zs) but the space itself.
        '\u{00A0}'
        | '\u{1680}'
        | '\u{2000}'..='\u{200A}'
        | '\u{202F}'
        | '\u{205F}'
        | '\u{3000}' => Some("a space"),
        _ => None,
    }
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
            ("nul\0byte", NameError::Control('\0')),
            ("bell\x07", NameError::Control('\x07')),
            ("\x1b[31mred", NameError::Control('\x1b')),
            ("c1\u{9b}31m", NameError::Control('\u{9b}')),
            ("line\nbreak", NameError::Control('\n')),
            ("evil\u{202E}txt.exe", NameError::Invisible('\u{202E}')),
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

    #[test]
    fn invisible_and_formatting_characters_are_refused_by_code_point() {
        for c in [
            '\u{200B}',  // zero-width space
            '\u{200C}',  // zero-width non-joiner
            '\u{200D}',  // zero-width joiner
            '\u{2060}',  // word joiner
            '\u{FEFF}',  // byte order mark
            '\u{00AD}',  // soft hyphen
            '\u{200E}',  // left-to-right mark
            '\u{202A}',  // left-to-right embedding
            '\u{202E}',  // right-to-left override
            '\u{2066}',  // left-to-right isolate
            '\u{2069}',  // pop directional isolate
            '\u{2028}',  // line separator
            '\u{3164}',  // Hangul filler
            '\u{E0041}', // tag latin capital A
        ] {
            for name in [
                format!("{c}a.txt"),
                format!("a{c}.txt"),
                format!("a.txt{c}"),
            ] {
                assert_eq!(
                    FileName::new(&name),
                    Err(NameError::Invisible(c)),
                    "{name:?}"
                );
            }
        }
        assert_eq!(
            FileName::new("report\u{200B}.pdf").unwrap_err().to_string(),
            "file name may not contain U+200B, an invisible or formatting character"
        );
        assert_eq!(
            FileName::new("\u{FEFF}a").unwrap_err().to_string(),
            "file name may not contain U+FEFF, an invisible or formatting character"
        );
        assert_eq!(
            FileName::new("tag\u{E0041}").unwrap_err().to_string(),
            "file name may not contain U+E0041, an invisible or formatting character"
        );
        assert_eq!(
            FileName::new("bell\x07").unwrap_err().to_string(),
            "file name may not contain U+0007, a control character"
        );
    }

    #[test]
    fn look_alikes_of_slash_backslash_and_space_are_refused() {
        for (c, like) in [
            ('\u{2215}', "`/`"),  // division slash
            ('\u{2044}', "`/`"),  // fraction slash
            ('\u{FF0F}', "`/`"),  // fullwidth solidus
            ('\u{29F8}', "`/`"),  // big solidus
            ('\u{2216}', "`\\`"), // set minus
            ('\u{FF3C}', "`\\`"), // fullwidth reverse solidus
            ('\u{00A0}', "a space"),
            ('\u{3000}', "a space"),
        ] {
            let name = format!("etc{c}passwd");
            assert_eq!(
                FileName::new(&name),
                Err(NameError::LookAlike { ch: c, like }),
                "{name:?}"
            );
        }
        assert_eq!(
            FileName::new("..\u{2215}..\u{2215}etc")
                .unwrap_err()
                .to_string(),
            "file name may not contain U+2215, which looks like `/` but is not"
        );
    }

    #[test]
    fn names_are_not_normalised_and_ordinary_unicode_passes() {
        let composed = FileName::new("caf\u{E9}").unwrap();
        let decomposed = FileName::new("cafe\u{301}").unwrap();
        assert_ne!(composed, decomposed);
        assert_eq!(decomposed.as_str(), "cafe\u{301}");
        // An emoji with its variation selector, right-to-left letters, a ligature.
        for name in [
            "\u{2764}\u{FE0F}.png",
            "\u{05E9}\u{05DC}\u{05D5}\u{05DD}.txt",
            "\u{FB01}le",
        ] {
            assert_eq!(FileName::new(name).unwrap().as_str(), name);
        }
    }
}
