//! Typed errors of the codec, each mapped to the reply code a peer sees.

use crate::ErrorCode;

/// A byte stream that is not a valid sequence of frames.
///
/// After any of these the stream cannot be resynchronised: the peer gets one error reply and the
/// connection is closed. [`FrameError::code`] gives the reply's `code`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The header length prefix is zero or negative.
    #[error("header length {len} is not positive")]
    BadHeaderLength {
        /// The declared length.
        len: i32,
    },
    /// The header length prefix exceeds [`Limits::max_header_len`](crate::Limits::max_header_len).
    #[error("header length {len} exceeds the limit of {max} bytes")]
    HeaderTooLong {
        /// The declared length.
        len: i32,
        /// The limit.
        max: usize,
    },
    /// The header bytes are not UTF-8.
    #[error("header is not valid UTF-8")]
    HeaderNotUtf8,
    /// The header is not JSON at all.
    #[error("header is not valid JSON: {0}")]
    HeaderNotJson(String),
    /// The header is JSON but not an object.
    #[error("header is not a JSON object")]
    HeaderNotObject,
    /// The header nests arrays and objects deeper than the limit.
    #[error("header nests deeper than {max} levels")]
    HeaderTooDeep {
        /// The limit.
        max: usize,
    },
    /// A size key does not hold a non-negative integer.
    #[error("`{key}` must be a non-negative integer, not {found}")]
    BadSize {
        /// Which key.
        key: &'static str,
        /// The JSON found there (shortened).
        found: String,
    },
    /// A frame that may not have a body declares one (a `put` trailer, say).
    #[error("{0}")]
    UnexpectedBody(&'static str),
    /// The declared body exceeds [`Limits::max_body_len`](crate::Limits::max_body_len).
    #[error("body of {len} bytes exceeds the limit of {max} bytes")]
    BodyTooLarge {
        /// The declared length.
        len: u64,
        /// The limit.
        max: u64,
    },
}

impl FrameError {
    /// The reply code for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            FrameError::HeaderTooLong { .. } | FrameError::BodyTooLarge { .. } => {
                ErrorCode::TooLarge
            }
            _ => ErrorCode::BadFrame,
        }
    }
}

/// A well-framed request whose envelope fields (`op`, `id`) are malformed.
///
/// Unlike [`FrameError`] this is recoverable: the body length is known, so the stream stays in
/// step and the connection stays usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// `op` is present but not a string.
    #[error("`op` must be a string")]
    OpNotString,
    /// `id` is present but an array or object.
    #[error("`id` must be a JSON scalar (string, number, boolean or null)")]
    IdNotScalar,
    /// `id` is longer than [`MAX_ID_LEN`](crate::MAX_ID_LEN) bytes of JSON text.
    #[error("`id` must be at most {} bytes of JSON", crate::MAX_ID_LEN)]
    IdTooLong,
    /// `id` is a string that is not Unicode (a lone surrogate escape such as `"\ud800"`), or a
    /// number out of range.
    #[error("`id` must be a valid JSON scalar: a string of Unicode text, or a number in range")]
    IdInvalid,
}

impl EnvelopeError {
    /// The reply code for this error.
    pub fn code(&self) -> ErrorCode {
        ErrorCode::BadRequest
    }
}

/// A frame that cannot be encoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// A header value failed to serialise.
    #[error("header field `{key}` cannot be encoded: {source}")]
    Field {
        /// The key being written.
        key: String,
        /// Why.
        source: serde_json::Error,
    },
    /// The encoded header does not fit the `i32` length prefix.
    #[error("encoded header of {len} bytes does not fit the length prefix")]
    HeaderTooLong {
        /// The encoded length.
        len: usize,
    },
}

impl From<EncodeError> for std::io::Error {
    fn from(err: EncodeError) -> Self {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, err)
    }
}

impl From<FrameError> for std::io::Error {
    fn from(err: FrameError) -> Self {
        std::io::Error::new(std::io::ErrorKind::InvalidData, err)
    }
}
