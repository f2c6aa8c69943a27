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
/// use sockit_proto::Limits;
/// let limits = Limits::builder().max_header_len(1024).max_depth(8).build();
/// assert_eq!(limits.max_header_len(), 1024);
/// assert_eq!(limits.max_buffered_body(), 16 * 1024 * 1024);
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

/// Builds [`Limits`]; setters chain and [`build`](LimitsBuilder::build) finishes.
#[derive(Debug, Clone)]
pub struct LimitsBuilder {
    limits: Limits,
}

impl LimitsBuilder {
    /// Sets the largest header length.
    ///
    /// # Panics
    ///
    /// If `len` is 0 or does not fit the `i32` length prefix.
    pub fn max_header_len(&mut self, len: usize) -> &mut Self {
        assert!(
            len >= 1 && len <= i32::MAX as usize,
            "max_header_len must be in 1..=i32::MAX"
        );
        self.limits.max_header_len = len;
        self
    }

    /// Sets the deepest nesting of a header.
    ///
    /// # Panics
    ///
    /// If `depth` is 0 or above 128.
    pub fn max_depth(&mut self, depth: usize) -> &mut Self {
        assert!(
            (1..=MAX_DEPTH_CEILING).contains(&depth),
            "max_depth must be in 1..=128"
        );
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
    pub fn build(&self) -> Limits {
        self.limits
    }
}
