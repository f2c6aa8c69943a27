//! Front ends: the ways in, each a thin adapter between a transport's grammar and the
//! operations of [`crate::core`].
//!
//! - [`framed`]: the framed protocol (length-prefixed JSON headers and bodies) over any
//!   stream, TCP today.

pub(crate) mod framed;
