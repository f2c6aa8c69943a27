//! A frame's JSON header: validated once, envelope fields located without copying.
//!
//! The headers nearly every client sends are read by a one-pass scanner ([`crate::plain`]);
//! the rest by `serde_json`, with the same results.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::plain::Plain;
use crate::{EnvelopeError, FrameError, Limits, MAX_ID_LEN};

/// The decoded header of one frame.
///
/// It keeps the header's JSON text and the facts every frame needs: the body length (from
/// `size`, else `file_size`, `total_size`, `data_size`), the `op` and the `id`. Operations read
/// their own fields with [`Header::parse`] into a typed struct.
#[derive(Clone)]
pub struct Header {
    json: Bytes,
    body_len: u64,
    op: Option<OpText>,
    id: Option<Range<usize>>,
    envelope_error: Option<EnvelopeError>,
    /// A reply's `ok`, when the fast path saw it plainly.
    ok: Option<bool>,
}

/// Where the `op` string lives: inside the header text, or unescaped on its own.
#[derive(Clone)]
enum OpText {
    Slice(Range<usize>),
    Owned(Box<str>),
}

/// The fields every frame shares, borrowed from the header text.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow, default)]
    op: Option<&'a RawValue>,
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    size: Option<&'a RawValue>,
    #[serde(borrow, default)]
    file_size: Option<&'a RawValue>,
    #[serde(borrow, default)]
    total_size: Option<&'a RawValue>,
    #[serde(borrow, default)]
    data_size: Option<&'a RawValue>,
}

impl Header {
    /// Validates header text against `limits` and locates its envelope fields.
    ///
    /// # Errors
    ///
    /// [`FrameError`] when the text is not UTF-8, not JSON, not an object, nested too deeply,
    /// has a size key that is not a non-negative integer, or declares a body over the limit.
    pub fn parse_json(json: Bytes, limits: &Limits) -> Result<Header, FrameError> {
        // A plain header is a flat object: its depth, 1, is within any limit.
        match crate::plain::scan(&json) {
            Some(plain) => Header::from_plain(json, plain, limits),
            None => Header::parse_json_general(json, limits),
        }
    }

    /// A header the fast path read whole.
    fn from_plain(json: Bytes, plain: Plain, limits: &Limits) -> Result<Header, FrameError> {
        if plain.body_len > limits.max_body_len() {
            return Err(FrameError::BodyTooLarge {
                len: plain.body_len,
                max: limits.max_body_len(),
            });
        }
        Ok(Header {
            json,
            body_len: plain.body_len,
            op: plain.op.map(OpText::Slice),
            id: plain.id,
            envelope_error: None,
            ok: plain.ok,
        })
    }

    /// [`Header::parse_json`] without its fast path for plain headers: the general parser,
    /// which any header may take. Public only so that the fuzz targets can hold the two paths
    /// to the same answers.
    ///
    /// # Errors
    ///
    /// As [`Header::parse_json`].
    #[doc(hidden)]
    pub fn parse_json_general(json: Bytes, limits: &Limits) -> Result<Header, FrameError> {
        let text = std::str::from_utf8(&json).map_err(|_| FrameError::HeaderNotUtf8)?;
        if !text.trim_start().starts_with('{') {
            return Err(match serde_json::from_str::<serde::de::IgnoredAny>(text) {
                Ok(_) => FrameError::HeaderNotObject,
                Err(err) => FrameError::HeaderNotJson(err.to_string()),
            });
        }
        if nesting_exceeds(text.as_bytes(), limits.max_depth()) {
            return Err(FrameError::HeaderTooDeep {
                max: limits.max_depth(),
            });
        }
        let envelope: Envelope<'_> =
            serde_json::from_str(text).map_err(|err| FrameError::HeaderNotJson(err.to_string()))?;

        let body_len = body_len(&envelope)?;
        if body_len > limits.max_body_len() {
            return Err(FrameError::BodyTooLarge {
                len: body_len,
                max: limits.max_body_len(),
            });
        }

        let mut envelope_error = None;
        let op = match envelope.op {
            None => None,
            Some(raw) => match serde_json::from_str::<Cow<'_, str>>(raw.get()) {
                Ok(Cow::Borrowed(op)) => Some(OpText::Slice(range_within(text, op))),
                Ok(Cow::Owned(op)) => Some(OpText::Owned(op.into_boxed_str())),
                Err(_) => {
                    envelope_error = Some(EnvelopeError::OpNotString);
                    None
                }
            },
        };
        let id = match envelope.id.map(|raw| check_id(raw.get())) {
            Some(Ok(id)) => Some(range_within(text, id)),
            Some(Err(err)) => {
                // A bad id is never echoed: the error reply goes without one.
                envelope_error.get_or_insert(err);
                None
            }
            None => None,
        };

        Ok(Header {
            body_len,
            op,
            id,
            envelope_error,
            json,
            ok: None,
        })
    }

    /// Length of the body that follows this header.
    pub fn body_len(&self) -> u64 {
        self.body_len
    }

    /// The request's `op`, if it has one.
    ///
    /// # Errors
    ///
    /// [`EnvelopeError`] when `op` is not a string or `id` is not a scalar.
    pub fn op(&self) -> Result<Option<&str>, EnvelopeError> {
        if let Some(err) = self.envelope_error {
            return Err(err);
        }
        Ok(match &self.op {
            None => None,
            Some(OpText::Slice(range)) => Some(self.text(range.clone())),
            Some(OpText::Owned(op)) => Some(op),
        })
    }

    /// The request's `id` as JSON text, ready to be copied into the reply.
    pub fn id(&self) -> Option<&str> {
        self.id.clone().map(|range| self.text(range))
    }

    /// A reply's `ok` when the header states it plainly (a flat header with one `ok` that is
    /// `true` or `false`, as every sockit server writes it); `None` when it must be read with
    /// [`Header::parse`], which then gives the same answer or says why there is none.
    pub fn plain_ok(&self) -> Option<bool> {
        self.ok
    }

    /// The header's JSON text.
    pub fn json(&self) -> &[u8] {
        &self.json
    }

    /// Deserialises the header into an operation's own request type.
    ///
    /// # Errors
    ///
    /// When a field the type requires is missing or has the wrong type.
    pub fn parse<'de, T: Deserialize<'de>>(&'de self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.json)
    }

    fn text(&self, range: Range<usize>) -> &str {
        std::str::from_utf8(&self.json[range]).expect("header was validated as UTF-8")
    }
}

/// Two headers are equal when they have the same text and read the same (wherever each keeps
/// its `op`).
impl PartialEq for Header {
    fn eq(&self, other: &Header) -> bool {
        self.json == other.json
            && self.body_len == other.body_len
            && self.op() == other.op()
            && self.id() == other.id()
    }
}

impl Eq for Header {}

impl fmt::Debug for Header {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Header")
            .field("json", &String::from_utf8_lossy(&self.json))
            .field("body_len", &self.body_len)
            .finish()
    }
}

/// An `id` fit to be copied into a reply: a JSON scalar of at most [`MAX_ID_LEN`] bytes that
/// any JSON reader takes back (no lone surrogate, no number out of range).
fn check_id(id: &str) -> Result<&str, EnvelopeError> {
    if id.starts_with(['{', '[']) {
        return Err(EnvelopeError::IdNotScalar);
    }
    if id.len() > MAX_ID_LEN {
        return Err(EnvelopeError::IdTooLong);
    }
    serde_json::from_str::<serde_json::Value>(id).map_err(|_| EnvelopeError::IdInvalid)?;
    Ok(id)
}

/// The body length declared by the first size key present.
fn body_len(envelope: &Envelope<'_>) -> Result<u64, FrameError> {
    let declared = [
        envelope.size,
        envelope.file_size,
        envelope.total_size,
        envelope.data_size,
    ];
    let Some((key, raw)) = crate::SIZE_KEYS
        .into_iter()
        .zip(declared)
        .find_map(|(key, raw)| Some((key, raw?)))
    else {
        return Ok(0);
    };
    // A JSON integer literal is exactly what u64's parser accepts, minus signs and exponents.
    raw.get()
        .parse::<u64>()
        .ok()
        .filter(|_| raw.get().bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| FrameError::BadSize {
            key,
            found: raw.get().chars().take(40).collect(),
        })
}

/// The byte range of `part` within `whole`; `part` must be a subslice of `whole`.
fn range_within(whole: &str, part: &str) -> Range<usize> {
    let start = part.as_ptr() as usize - whole.as_ptr() as usize;
    start..start + part.len()
}

/// Whether JSON text nests arrays and objects more than `max` deep.
///
/// A linear scan that tracks strings and escapes, run before the parser so that a deeply nested
/// header is refused without recursion.
fn nesting_exceeds(json: &[u8], max: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &byte in json {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Header, FrameError> {
        Header::parse_json(Bytes::copy_from_slice(json.as_bytes()), &Limits::default())
    }

    #[test]
    fn envelope_fields_are_found() {
        let header = parse(r#"{"op":"echo","id":7,"size":5}"#).unwrap();
        assert_eq!(header.op(), Ok(Some("echo")));
        assert_eq!(header.id(), Some("7"));
        assert_eq!(header.body_len(), 5);
    }

    #[test]
    fn escaped_op_is_unescaped() {
        let header = parse(r#"{"op":"p\u0069ng"}"#).unwrap();
        assert_eq!(header.op(), Ok(Some("ping")));
    }

    #[test]
    fn string_id_is_copied_verbatim() {
        let header = parse(r#"{"op":"ping","id":"a\"b"}"#).unwrap();
        assert_eq!(header.id(), Some(r#""a\"b""#));
    }

    #[test]
    fn size_keys_are_honoured_in_order() {
        assert_eq!(parse(r#"{"data_size":3}"#).unwrap().body_len(), 3);
        assert_eq!(
            parse(r#"{"data_size":3,"total_size":2}"#)
                .unwrap()
                .body_len(),
            2
        );
        assert_eq!(
            parse(r#"{"total_size":2,"file_size":1}"#)
                .unwrap()
                .body_len(),
            1
        );
        assert_eq!(parse(r#"{"file_size":1,"size":0}"#).unwrap().body_len(), 0);
        assert_eq!(parse(r#"{"op":"ping"}"#).unwrap().body_len(), 0);
    }

    #[test]
    fn bad_sizes_are_refused() {
        for size in [
            "-1",
            "1.5",
            "1e3",
            "\"5\"",
            "true",
            "[]",
            "18446744073709551616",
        ] {
            let err = parse(&format!(r#"{{"size":{size}}}"#)).unwrap_err();
            assert!(
                matches!(err, FrameError::BadSize { key: "size", .. }),
                "{size}: {err}"
            );
        }
    }

    #[test]
    fn body_over_max_body_len_is_refused() {
        let limits = Limits::builder().max_body_len(10).build().unwrap();
        let err = Header::parse_json(Bytes::from_static(br#"{"size":11}"#), &limits).unwrap_err();
        assert_eq!(err, FrameError::BodyTooLarge { len: 11, max: 10 });
    }

    #[test]
    fn non_objects_are_refused() {
        for json in ["[1]", "\"op\"", "5", "null"] {
            assert_eq!(
                parse(json).unwrap_err(),
                FrameError::HeaderNotObject,
                "{json}"
            );
        }
        assert!(matches!(
            parse("{not json").unwrap_err(),
            FrameError::HeaderNotJson(_)
        ));
        assert!(matches!(
            parse("nope").unwrap_err(),
            FrameError::HeaderNotJson(_)
        ));
        assert!(matches!(
            parse(r#"{"op":"a"} trailing"#).unwrap_err(),
            FrameError::HeaderNotJson(_)
        ));
    }

    #[test]
    fn duplicate_envelope_keys_are_refused() {
        assert!(matches!(
            parse(r#"{"size":1,"size":2}"#).unwrap_err(),
            FrameError::HeaderNotJson(_)
        ));
    }

    #[test]
    fn invalid_utf8_is_refused() {
        let err = Header::parse_json(Bytes::from_static(b"{\"op\":\"\xff\"}"), &Limits::default());
        assert_eq!(err.unwrap_err(), FrameError::HeaderNotUtf8);
    }

    #[test]
    fn deep_nesting_is_refused_without_recursion() {
        let deep = format!("{{\"a\":{}1{}}}", "[".repeat(10_000), "]".repeat(10_000));
        assert_eq!(
            parse(&deep).unwrap_err(),
            FrameError::HeaderTooDeep { max: 32 }
        );
        let brackets_in_strings = format!("{{\"a\":\"{}\"}}", "[".repeat(100));
        assert!(parse(&brackets_in_strings).is_ok());
    }

    #[test]
    fn malformed_envelope_is_recoverable() {
        let header = parse(r#"{"op":5,"size":2}"#).unwrap();
        assert_eq!(header.op(), Err(EnvelopeError::OpNotString));
        assert_eq!(header.body_len(), 2);
        let header = parse(r#"{"op":"ping","id":[1]}"#).unwrap();
        assert_eq!(header.op(), Err(EnvelopeError::IdNotScalar));
    }

    #[test]
    fn ids_up_to_the_limit_are_kept_and_longer_ones_refused() {
        let longest = format!("\"{}\"", "x".repeat(MAX_ID_LEN - 2));
        let header = parse(&format!(r#"{{"op":"ping","id":{longest}}}"#)).unwrap();
        assert_eq!(header.id(), Some(longest.as_str()));
        assert_eq!(header.op(), Ok(Some("ping")));

        let long = format!("\"{}\"", "x".repeat(MAX_ID_LEN - 1));
        let header = parse(&format!(r#"{{"op":"ping","id":{long}}}"#)).unwrap();
        assert_eq!(header.op(), Err(EnvelopeError::IdTooLong));
        assert_eq!(header.id(), None, "a bad id is not echoed");
        let digits = "1".repeat(MAX_ID_LEN + 1);
        let header = parse(&format!(r#"{{"op":"ping","id":{digits}}}"#)).unwrap();
        assert_eq!(header.op(), Err(EnvelopeError::IdTooLong));
    }

    #[test]
    fn ids_no_json_reader_takes_back_are_refused() {
        for id in [r#""\ud800""#, r#""a\udfffb""#, r#""\ud800\u0041""#, "1e999"] {
            let header = parse(&format!(r#"{{"op":"ping","id":{id}}}"#)).unwrap();
            assert_eq!(header.op(), Err(EnvelopeError::IdInvalid), "{id}");
            assert_eq!(header.id(), None, "{id}");
        }
        for id in [r#""\ud83d\ude00""#, "-1.5e3", "true", r#""é""#] {
            let header = parse(&format!(r#"{{"op":"ping","id":{id}}}"#)).unwrap();
            assert_eq!(header.id(), Some(id), "{id}");
        }
    }

    #[test]
    fn operations_parse_their_own_fields() {
        #[derive(Deserialize)]
        struct Get<'a> {
            name: &'a str,
            offset: Option<u64>,
        }
        let header = parse(r#"{"op":"get","name":"a.txt","offset":3}"#).unwrap();
        let get: Get<'_> = header.parse().unwrap();
        assert_eq!((get.name, get.offset), ("a.txt", Some(3)));
    }
}
