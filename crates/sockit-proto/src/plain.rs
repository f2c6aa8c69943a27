//! The fast path for the headers nearly every client sends: one flat JSON object whose keys
//! and strings are plain printable ASCII and whose other values are integers, `true`, `false`
//! or `null` — `{"op":"echo","id":7,"size":32}`, or the tutorials' `{"op": "put", ...}` with
//! spaces.
//!
//! [`scan`] reads such a header in one pass with no allocation and locates what the envelope
//! needs. It only ever says yes to text that the general parser ([`super::header`]) would
//! accept with the same result; anything else — an escape, a non-ASCII byte, a nested value, a
//! fraction, a duplicated envelope key, a size that is not a plain non-negative integer, an
//! `op` that is not a string, an `id` the general parser would look at twice — makes it return
//! `None`, and the general parser decides. A property test and the `header` fuzz target hold
//! the two paths to the same answers.

use std::ops::Range;

use crate::{MAX_ID_LEN, SIZE_KEYS};

/// What the fast path found in a plain header.
#[derive(Debug, Default)]
pub(crate) struct Plain {
    /// The body length: the value of the first of [`SIZE_KEYS`] present, else 0.
    pub(crate) body_len: u64,
    /// Where the `op` string's text (without its quotes) is.
    pub(crate) op: Option<Range<usize>>,
    /// Where the `id` value's JSON text is.
    pub(crate) id: Option<Range<usize>>,
    /// A reply's `ok`, when it is `true` or `false`.
    pub(crate) ok: Option<bool>,
}

/// A value of the plain shape, by where it lies in the text.
enum Value {
    /// A string: the range of its text, without the quotes.
    Str(Range<usize>),
    /// An integer that fits a `u64`.
    Unsigned(u64),
    /// Any other integer, `true`, `false` or `null`.
    Other,
}

/// Scans `json` as a plain header; `None` when it is anything else (which need not be wrong:
/// the general parser decides).
pub(crate) fn scan(json: &[u8]) -> Option<Plain> {
    let mut scanner = Scanner { text: json, at: 0 };
    let mut plain = Plain::default();
    let mut sizes: [Option<u64>; SIZE_KEYS.len()] = [None; SIZE_KEYS.len()];
    let mut seen_ok = false;
    scanner.skip_space();
    scanner.expect(b'{')?;
    scanner.skip_space();
    if scanner.peek() == Some(b'}') {
        scanner.at += 1;
    } else {
        loop {
            let key = scanner.string()?;
            scanner.skip_space();
            scanner.expect(b':')?;
            scanner.skip_space();
            let start = scanner.at;
            let value = scanner.value()?;
            let end = scanner.at;
            match &json[key] {
                b"op" => match value {
                    Value::Str(text) if plain.op.is_none() => plain.op = Some(text),
                    _ => return None,
                },
                b"id" => match value {
                    Value::Str(_) | Value::Unsigned(_)
                        if plain.id.is_none() && end - start <= MAX_ID_LEN =>
                    {
                        plain.id = Some(start..end);
                    }
                    _ => return None,
                },
                // Not part of the envelope, but what every reply is read for first. A second
                // `ok` is for the general parser to judge.
                b"ok" if !std::mem::replace(&mut seen_ok, true) => {
                    plain.ok = match &json[start..end] {
                        b"true" => Some(true),
                        b"false" => Some(false),
                        _ => None,
                    };
                }
                b"ok" => return None,
                key => {
                    if let Some(slot) = SIZE_KEYS.iter().position(|k| k.as_bytes() == key) {
                        match value {
                            Value::Unsigned(n) if sizes[slot].is_none() => sizes[slot] = Some(n),
                            _ => return None,
                        }
                    }
                }
            }
            scanner.skip_space();
            match scanner.next()? {
                b',' => scanner.skip_space(),
                b'}' => break,
                _ => return None,
            }
        }
    }
    scanner.skip_space();
    if scanner.at != json.len() {
        return None;
    }
    plain.body_len = sizes.into_iter().flatten().next().unwrap_or(0);
    Some(plain)
}

/// A cursor over the header text.
struct Scanner<'a> {
    text: &'a [u8],
    at: usize,
}

impl Scanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.text.get(self.at).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let byte = self.peek()?;
        self.at += 1;
        Some(byte)
    }

    fn expect(&mut self, byte: u8) -> Option<()> {
        (self.next()? == byte).then_some(())
    }

    /// Skips JSON's whitespace (and only JSON's).
    fn skip_space(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.at += 1;
        }
    }

    /// A string of printable ASCII with no escape: the range of its text.
    fn string(&mut self) -> Option<Range<usize>> {
        self.expect(b'"')?;
        let start = self.at;
        let len = self.text[start..]
            .iter()
            .position(|&b| b == b'"' || b == b'\\' || !(0x20..=0x7e).contains(&b))?;
        self.at = start + len;
        self.expect(b'"')?;
        Some(start..start + len)
    }

    fn value(&mut self) -> Option<Value> {
        match self.peek()? {
            b'"' => self.string().map(Value::Str),
            b'-' => {
                self.at += 1;
                self.unsigned().map(|_| Value::Other)
            }
            b'0'..=b'9' => self.unsigned().map(Value::Unsigned),
            b't' => self.word(b"true"),
            b'f' => self.word(b"false"),
            b'n' => self.word(b"null"),
            _ => None,
        }
    }

    /// JSON's integer grammar without a sign (no leading zero), which must fit a `u64` and
    /// must not go on as a fraction or an exponent.
    fn unsigned(&mut self) -> Option<u64> {
        let start = self.at;
        while let Some(b'0'..=b'9') = self.peek() {
            self.at += 1;
        }
        let digits = &self.text[start..self.at];
        if digits.is_empty() || (digits.len() > 1 && digits[0] == b'0') {
            return None;
        }
        if let Some(b'.' | b'e' | b'E') = self.peek() {
            return None;
        }
        digits.iter().try_fold(0u64, |n, digit| {
            n.checked_mul(10)?.checked_add(u64::from(digit - b'0'))
        })
    }

    fn word(&mut self, word: &[u8]) -> Option<Value> {
        let end = self.at + word.len();
        (self.text.get(self.at..end)? == word).then(|| {
            self.at = end;
            Value::Other
        })
    }
}
