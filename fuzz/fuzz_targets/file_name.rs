//! The file-name check, which every name from the network goes through before it touches the
//! disk. It never panics, and a name it accepts is one plain, visible path component: no
//! separator or look-alike of one, no control or invisible character, at most 255 bytes, not
//! `.`, `..` or the bookkeeping directory, and kept byte for byte.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sockit::store::{FileName, BOOKKEEPING_DIR, MAX_NAME_LEN};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(name) = FileName::new(text) else {
        return;
    };
    let accepted = name.as_str();
    assert_eq!(accepted, text, "a name is kept byte for byte");
    assert!(!accepted.is_empty() && accepted.len() <= MAX_NAME_LEN);
    assert!(accepted != "." && accepted != "..");
    assert!(!accepted.starts_with(BOOKKEEPING_DIR));
    assert!(std::path::Path::new(accepted).components().count() == 1);
    for c in accepted.chars() {
        assert!(!c.is_control(), "control {c:?} accepted");
        assert!(
            !matches!(
                c,
                '/' | '\\'
                    | '\u{200B}'..='\u{200F}'
                    | '\u{202A}'..='\u{202E}'
                    | '\u{2060}'
                    | '\u{2066}'..='\u{2069}'
                    | '\u{FEFF}'
                    | '\u{2044}'
                    | '\u{2215}'
                    | '\u{29F8}'
                    | '\u{FF0F}'
                    | '\u{00A0}'
            ),
            "{c:?} accepted in {accepted:?}"
        );
    }
});
