//! The decoder: a two-state machine that turns buffered bytes into headers and body chunks.

use bytes::{Buf, Bytes, BytesMut};

use crate::{FrameError, Header, Limits, HEADER_LEN_PREFIX};

/// One step of decoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A complete header. [`Header::body_len`] bytes of body follow, delivered as
    /// [`Event::Body`] chunks.
    Header(Header),
    /// The next piece of the current body, split off the buffer without copying. The body is
    /// complete when [`Decoder::body_remaining`] is 0.
    Body(Bytes),
}

/// Decodes frames from a byte buffer, one [`Event`] at a time.
///
/// Feed it whatever the socket produced; it returns `Ok(None)` when it needs more bytes, which is
/// the normal case and not an error. It never reserves memory on a peer's say-so beyond the
/// header limit, and bodies are handed out as they arrive, so their size is not bounded by memory.
///
/// Errors are final: after one, the stream cannot be trusted to be in step any more.
#[derive(Debug, Clone)]
pub struct Decoder {
    limits: Limits,
    body_remaining: u64,
}

impl Decoder {
    /// A decoder enforcing `limits`.
    pub fn new(limits: Limits) -> Decoder {
        Decoder {
            limits,
            body_remaining: 0,
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Bytes of the current frame's body not yet returned; 0 between frames.
    pub fn body_remaining(&self) -> u64 {
        self.body_remaining
    }

    /// Decodes the next event from `buf`, consuming the bytes it covers.
    ///
    /// # Errors
    ///
    /// [`FrameError`] when the bytes are not a valid frame. Nothing is allocated on behalf of
    /// the bad frame.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Event>, FrameError> {
        if self.body_remaining > 0 {
            return Ok(self.decode_body_chunk(buf).map(Event::Body));
        }
        let Some(header) = self.decode_header(buf)? else {
            return Ok(None);
        };
        self.body_remaining = header.body_len();
        Ok(Some(Event::Header(header)))
    }

    /// Records that `n` bytes of the current body were read by other means (straight from the
    /// socket into the caller's buffer, bypassing the decoder's).
    ///
    /// # Panics
    ///
    /// If `n` is more than the body has left.
    pub fn consume_body(&mut self, n: u64) {
        assert!(
            n <= self.body_remaining,
            "consumed past the end of the body"
        );
        self.body_remaining -= n;
    }

    /// Takes the whole rest of the current body if it is all in `buf`.
    ///
    /// The fast path for small frames: one split, no copy.
    pub fn take_whole_body(&mut self, buf: &mut BytesMut) -> Option<Bytes> {
        let remaining = usize::try_from(self.body_remaining).ok()?;
        if remaining == 0 || buf.len() < remaining {
            return None;
        }
        self.body_remaining = 0;
        Some(buf.split_to(remaining).freeze())
    }

    fn decode_body_chunk(&mut self, buf: &mut BytesMut) -> Option<Bytes> {
        if buf.is_empty() {
            return None;
        }
        let take = usize::try_from(self.body_remaining).map_or(buf.len(), |n| n.min(buf.len()));
        self.body_remaining -= take as u64;
        Some(buf.split_to(take).freeze())
    }

    fn decode_header(&mut self, buf: &mut BytesMut) -> Result<Option<Header>, FrameError> {
        let Some(prefix) = buf.get(..HEADER_LEN_PREFIX) else {
            return Ok(None);
        };
        let len = i32::from_le_bytes(prefix.try_into().expect("prefix is 4 bytes"));
        let header_len = match usize::try_from(len) {
            Ok(0) | Err(_) => return Err(FrameError::BadHeaderLength { len }),
            Ok(n) if n > self.limits.max_header_len() => {
                return Err(FrameError::HeaderTooLong {
                    len,
                    max: self.limits.max_header_len(),
                })
            }
            Ok(n) => n,
        };
        let frame_start = HEADER_LEN_PREFIX + header_len;
        if buf.len() < frame_start {
            // Bounded by max_header_len, which was checked above.
            buf.reserve(frame_start - buf.len());
            return Ok(None);
        }
        buf.advance(HEADER_LEN_PREFIX);
        let json = buf.split_to(header_len).freeze();
        Header::parse_json(json, &self.limits).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(json: &str, body: &[u8]) -> Vec<u8> {
        let mut out = (json.len() as i32).to_le_bytes().to_vec();
        out.extend_from_slice(json.as_bytes());
        out.extend_from_slice(body);
        out
    }

    fn decoder() -> Decoder {
        Decoder::new(Limits::default())
    }

    #[test]
    fn read_incomplete_head() {
        let mut buf = BytesMut::from(&[5u8, 0][..]);
        assert_eq!(decoder().decode(&mut buf), Ok(None));
        assert_eq!(buf.len(), 2, "nothing consumed");
    }

    #[test]
    fn read_incomplete_header() {
        let bytes = frame(r#"{"op":"ping"}"#, b"");
        let mut buf = BytesMut::from(&bytes[..bytes.len() - 1]);
        assert_eq!(decoder().decode(&mut buf), Ok(None));
    }

    #[test]
    fn read_frame_with_body_in_chunks() {
        let bytes = frame(r#"{"op":"echo","size":6}"#, b"abcdef");
        let mut decoder = decoder();
        let mut buf = BytesMut::from(&bytes[..bytes.len() - 4]);
        let Some(Event::Header(header)) = decoder.decode(&mut buf).unwrap() else {
            panic!("expected a header")
        };
        assert_eq!(header.body_len(), 6);
        assert_eq!(
            decoder.decode(&mut buf).unwrap(),
            Some(Event::Body(Bytes::from_static(b"ab")))
        );
        assert_eq!(decoder.body_remaining(), 4);
        assert_eq!(decoder.decode(&mut buf).unwrap(), None);
        buf.extend_from_slice(b"cdef");
        assert_eq!(decoder.take_whole_body(&mut buf).unwrap(), &b"cdef"[..]);
        assert_eq!(decoder.body_remaining(), 0);
    }

    #[test]
    fn body_bytes_never_spill_into_the_next_frame() {
        let mut bytes = frame(r#"{"size":2}"#, b"xy");
        bytes.extend(frame(r#"{"op":"ping"}"#, b""));
        let mut buf = BytesMut::from(&bytes[..]);
        let mut decoder = decoder();
        assert!(matches!(
            decoder.decode(&mut buf).unwrap(),
            Some(Event::Header(_))
        ));
        assert_eq!(
            decoder.decode(&mut buf).unwrap(),
            Some(Event::Body(Bytes::from_static(b"xy")))
        );
        let Some(Event::Header(ping)) = decoder.decode(&mut buf).unwrap() else {
            panic!("expected the second header")
        };
        assert_eq!(ping.op(), Ok(Some("ping")));
        assert!(buf.is_empty());
    }

    #[test]
    fn read_bad_header_lengths() {
        for len in [0i32, -1, i32::MIN] {
            let mut buf = BytesMut::from(&len.to_le_bytes()[..]);
            assert_eq!(
                decoder().decode(&mut buf),
                Err(FrameError::BadHeaderLength { len })
            );
        }
    }

    #[test]
    fn read_max_header_len() {
        let limits = Limits::builder().max_header_len(16).build().unwrap();
        for len in [17i32, i32::MAX] {
            let mut buf = BytesMut::from(&len.to_le_bytes()[..]);
            let before = buf.capacity();
            assert_eq!(
                Decoder::new(limits).decode(&mut buf),
                Err(FrameError::HeaderTooLong { len, max: 16 })
            );
            assert_eq!(
                buf.capacity(),
                before,
                "nothing reserved for a refused frame"
            );
        }
    }
}
