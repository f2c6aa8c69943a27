//! Limits the decoder enforces on untrusted input, with a builder and documented defaults.

/// Default largest header accepted: 64 KiB.
pub const DEFAULT_MAX_HEADER_LEN: usize = 64 * 1024;
/// Default deepest nesting of arrays and objects accepted in a header.
pub const DEFAULT_MAX_DEPTH: usize = 32;
/// Default largest body an operation may hold in memory: 16 MiB.
pub const DEFAULT_MAX_BUFFERED_BODY: u64 = 16 * 1024 * 1024;
/// Default largest body a frame may declare at all (streamed bodies): 1 TiB.
pub const DEFAULT_MAX_BODY_LEN: u64 = 1 << 40;
/// Hard ceiling on header nesting, below `serde_json`'s own recursion limit.
pub const MAX_DEPTH_CEILING: usize = 128;

/// Bounds on what a peer may declare.
///
/// Every bound is checked against the *declared* length before any buffer is reserved.
///
/// | limit | default | exceeded |
/// |---|---|---|
/// | [`max_header_len`](Limits::max_header_len) | 64 KiB | [`FrameError::HeaderTooLong`](crate::FrameError::HeaderTooLong) |
/// | [`max_depth`](Limits::max_depth) | 32 | [`FrameError::HeaderTooDeep`](crate::FrameError::HeaderTooDeep) |
/// | [`max_body_len`](Limits::max_body_len) | 1 TiB | [`FrameError::BodyTooLarge`](crate::FrameError::BodyTooLarge) |
/// | [`max_buffered_body`](Limits::max_buffered_body) | 16 MiB | checked by operations that hold a body in memory |
///
/// ```
/// use sockit_proto::{Limits, LimitsError};
/// let limits = Limits::builder().max_header_len(1024).max_depth(8).build()?;
/// assert_eq!(limits.max_header_len(), 1024);
/// assert_eq!(limits.max_buffered_body(), 16 * 1024 * 1024);
/// assert_eq!(
///     Limits::builder().max_header_len(0).build(),
///     Err(LimitsError::MaxHeaderLen(0))
/// );
/// # Ok::<(), LimitsError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    max_header_len: usize,
    max_depth: usize,
    max_body_len: u64,
    max_buffered_body: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_len: DEFAULT_MAX_HEADER_LEN,
            max_depth: DEFAULT_MAX_DEPTH,
            max_body_len: DEFAULT_MAX_BODY_LEN,
            max_buffered_body: DEFAULT_MAX_BUFFERED_BODY,
        }
    }
}

impl Limits {
    /// A builder starting from the defaults.
    pub fn builder() -> LimitsBuilder {
        LimitsBuilder {
            limits: Limits::default(),
        }
    }

    /// Largest header, in bytes, excluding the 4-byte length prefix.
    pub fn max_header_len(&self) -> usize {
        self.max_header_len
    }

    /// Deepest nesting of JSON arrays and objects in a header (the header object itself is 1).
    pub fn max_depth(&self) -> usize {
        self.max_depth
    }

    /// Largest body any frame may declare; larger bodies are a framing error.
    pub fn max_body_len(&self) -> u64 {
        self.max_body_len
    }

    /// Largest body an operation that holds its body in memory (such as `echo`) accepts.
    pub fn max_buffered_body(&self) -> u64 {
        self.max_buffered_body
    }
}

/// Builds [`Limits`]; setters chain and [`build`](LimitsBuilder::build) checks and finishes.
#[derive(Debug, Clone)]
pub struct LimitsBuilder {
    limits: Limits,
}

impl LimitsBuilder {
    /// Sets the largest header length: 1 to `i32::MAX`, the most the length prefix can say.
    pub fn max_header_len(&mut self, len: usize) -> &mut Self {
        self.limits.max_header_len = len;
        self
    }

    /// Sets the deepest nesting of a header: 1 to [`MAX_DEPTH_CEILING`].
    pub fn max_depth(&mut self, depth: usize) -> &mut Self {
        self.limits.max_depth = depth;
        self
    }

    /// Sets the largest body any frame may declare.
    pub fn max_body_len(&mut self, len: u64) -> &mut Self {
        self.limits.max_body_len = len;
        self
    }

    /// Sets the largest body an in-memory operation accepts.
    pub fn max_buffered_body(&mut self, len: u64) -> &mut Self {
        self.limits.max_buffered_body = len;
        self
    }

    /// The finished limits.
    ///
    /// # Errors
    ///
    /// A header length of 0 or beyond what the `i32` length prefix can say, or a nesting depth
    /// of 0 or above [`MAX_DEPTH_CEILING`].
    pub fn build(&self) -> Result<Limits, LimitsError> {
        let limits = self.limits;
        if !(1..=MAX_HEADER_LEN_CEILING).contains(&limits.max_header_len) {
            return Err(LimitsError::MaxHeaderLen(limits.max_header_len));
        }
        if !(1..=MAX_DEPTH_CEILING).contains(&limits.max_depth) {
            return Err(LimitsError::MaxDepth(limits.max_depth));
        }
        Ok(limits)
    }
}

/// The most a header length limit can be: the largest length the `i32` prefix can say.
const MAX_HEADER_LEN_CEILING: usize = i32::MAX as usize;

/// A limit [`LimitsBuilder::build`] refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LimitsError {
    /// The largest header length is 0 or more than the length prefix can say.
    #[error("max_header_len must be 1 to {MAX_HEADER_LEN_CEILING} bytes, not {0}")]
    MaxHeaderLen(usize),
    /// The deepest nesting is 0 or above the ceiling.
    #[error("max_depth must be 1 to {MAX_DEPTH_CEILING}, not {0}")]
    MaxDepth(usize),
}
