//! The encoder: writes a frame header straight into an output buffer.

use bytes::{BufMut, BytesMut};
use serde::Serialize;

use crate::{EncodeError, HEADER_LEN_PREFIX};

/// Appends one frame header to a buffer, field by field, with no intermediate allocation.
///
/// Fields are written in the order given; [`finish`](HeaderWriter::finish) adds `"size"` when
/// there is a body, closes the object and fills in the length prefix. The caller then appends
/// the body. Like [`std::fmt::DebugStruct`], a failing field is remembered and reported by
/// `finish`, so calls chain.
///
/// ```
/// use bytes::BytesMut;
/// use sockit_proto::HeaderWriter;
///
/// let mut buf = BytesMut::new();
/// HeaderWriter::new(&mut buf).field("ok", &true).finish(3).unwrap();
/// assert_eq!(&buf[..], b"\x14\0\0\0{\"ok\":true,\"size\":3}");
/// ```
#[derive(Debug)]
pub struct HeaderWriter<'a> {
    dst: &'a mut BytesMut,
    start: usize,
    empty: bool,
    finished: bool,
    error: Option<EncodeError>,
}

impl<'a> HeaderWriter<'a> {
    /// Starts a frame at the end of `dst`.
    pub fn new(dst: &'a mut BytesMut) -> HeaderWriter<'a> {
        let start = dst.len();
        dst.put_slice(&[0; HEADER_LEN_PREFIX]);
        dst.put_u8(b'{');
        HeaderWriter {
            dst,
            start,
            empty: true,
            finished: false,
            error: None,
        }
    }

    /// Writes `key: value`.
    pub fn field<V: Serialize + ?Sized>(&mut self, key: &str, value: &V) -> &mut Self {
        if self.error.is_none() {
            self.key(key);
            if let Err(source) = serde_json::to_writer((&mut *self.dst).writer(), value) {
                self.error = Some(EncodeError::Field {
                    key: key.to_owned(),
                    source,
                });
            }
        }
        self
    }

    /// Writes every field of `value`, which must serialise to a JSON object (a struct of
    /// [`crate::message`], say), in its order.
    pub fn fields<V: Serialize + ?Sized>(&mut self, value: &V) -> &mut Self {
        if self.error.is_some() {
            return self;
        }
        assert!(!self.finished, "HeaderWriter used after finish");
        let at = self.dst.len();
        if let Err(source) = serde_json::to_writer((&mut *self.dst).writer(), value) {
            self.dst.truncate(at);
            self.error = Some(EncodeError::Field {
                key: "(fields)".to_owned(),
                source,
            });
            return self;
        }
        let written = &self.dst[at..];
        if written.first() != Some(&b'{') || written.last() != Some(&b'}') {
            self.dst.truncate(at);
            self.error = Some(EncodeError::Field {
                key: "(fields)".to_owned(),
                source: serde::ser::Error::custom("fields must serialise to a JSON object"),
            });
            return self;
        }
        if written.len() == 2 {
            self.dst.truncate(at); // `{}`: nothing to add
            return self;
        }
        // `{"a":1,"b":2}` becomes `,"a":1,"b":2` (or `"a":1,"b":2` first in the header).
        self.dst.truncate(self.dst.len() - 1);
        if std::mem::take(&mut self.empty) {
            self.dst.copy_within(at + 1.., at);
            self.dst.truncate(self.dst.len() - 1);
        } else {
            self.dst[at] = b',';
        }
        self
    }

    /// Writes `key: json` where `json` is already valid JSON text (an `id` copied from a
    /// request, say).
    pub fn raw_field(&mut self, key: &str, json: &str) -> &mut Self {
        if self.error.is_none() {
            self.key(key);
            self.dst.put_slice(json.as_bytes());
        }
        self
    }

    /// Adds `"size": body_len` when it is not 0, closes the header and writes its length.
    ///
    /// # Errors
    ///
    /// The first field that failed to serialise, or a header too long for the prefix. On error
    /// the buffer is restored to what it was before [`HeaderWriter::new`].
    pub fn finish(&mut self, body_len: u64) -> Result<(), EncodeError> {
        if body_len > 0 {
            self.field("size", &body_len);
        }
        assert!(!self.finished, "HeaderWriter::finish called twice");
        self.finished = true;
        if let Some(err) = self.error.take() {
            self.dst.truncate(self.start);
            return Err(err);
        }
        self.dst.put_u8(b'}');
        let len = self.dst.len() - self.start - HEADER_LEN_PREFIX;
        let Ok(prefix) = i32::try_from(len) else {
            self.dst.truncate(self.start);
            return Err(EncodeError::HeaderTooLong { len });
        };
        self.dst[self.start..self.start + HEADER_LEN_PREFIX].copy_from_slice(&prefix.to_le_bytes());
        Ok(())
    }

    fn key(&mut self, key: &str) {
        assert!(!self.finished, "HeaderWriter used after finish");
        if !std::mem::take(&mut self.empty) {
            self.dst.put_u8(b',');
        }
        if key
            .bytes()
            .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
        {
            // Nothing to escape, as in every key of ours.
            self.dst.put_u8(b'"');
            self.dst.put_slice(key.as_bytes());
            self.dst.put_u8(b'"');
        } else {
            serde_json::to_writer((&mut *self.dst).writer(), key).expect("a str always serialises");
        }
        self.dst.put_u8(b':');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_empty_header() {
        let mut buf = BytesMut::new();
        HeaderWriter::new(&mut buf).finish(0).unwrap();
        assert_eq!(&buf[..], b"\x02\0\0\0{}");
    }

    #[test]
    fn encode_fields_in_order_with_raw_id() {
        let mut buf = BytesMut::from(&b"prefix"[..]);
        HeaderWriter::new(&mut buf)
            .field("ok", &false)
            .raw_field("id", "\"x\"")
            .field("error", "quote \" here")
            .finish(0)
            .unwrap();
        let json = br#"{"ok":false,"id":"x","error":"quote \" here"}"#;
        assert_eq!(&buf[..6], b"prefix");
        assert_eq!(&buf[6..10], &(json.len() as i32).to_le_bytes());
        assert_eq!(&buf[10..], json);
    }

    #[test]
    fn encode_the_fields_of_a_struct_in_place() {
        #[derive(Serialize)]
        struct Pair {
            a: u8,
            b: &'static str,
        }
        #[derive(Serialize)]
        struct Nothing {}
        let mut buf = BytesMut::new();
        HeaderWriter::new(&mut buf)
            .fields(&Pair { a: 1, b: "x" })
            .fields(&Nothing {})
            .field("ok", &true)
            .fields(&Pair { a: 2, b: "}" })
            .finish(0)
            .unwrap();
        assert_eq!(&buf[4..], br#"{"a":1,"b":"x","ok":true,"a":2,"b":"}"}"#);
        let mut buf = BytesMut::new();
        let mut writer = HeaderWriter::new(&mut buf);
        writer.fields(&3u8);
        assert!(writer.finish(0).is_err(), "a number has no fields");
        assert!(buf.is_empty());
    }

    #[test]
    fn keys_are_escaped_only_when_they_need_it() {
        let mut buf = BytesMut::new();
        HeaderWriter::new(&mut buf)
            .field("plain key", &1)
            .field("quote\"back\\slash", &2)
            .field("tab\tand é", &3)
            .finish(0)
            .unwrap();
        assert_eq!(
            std::str::from_utf8(&buf[4..]).unwrap(),
            r#"{"plain key":1,"quote\"back\\slash":2,"tab\tand é":3}"#
        );
    }

    #[test]
    fn encode_failing_field_restores_the_buffer() {
        use std::collections::HashMap;
        let mut bad = HashMap::new();
        bad.insert((1, 2), 3); // tuple keys cannot be JSON object keys
        let mut buf = BytesMut::from(&b"keep"[..]);
        let mut writer = HeaderWriter::new(&mut buf);
        writer.field("bad", &bad).field("ok", &true);
        assert!(matches!(
            writer.finish(0),
            Err(EncodeError::Field { ref key, .. }) if key == "bad"
        ));
        assert_eq!(&buf[..], b"keep");
    }
}
