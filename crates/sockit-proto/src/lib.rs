//! The sockit wire format, with no I/O.
//!
//! A frame is a 4-byte little-endian `i32` header length, a UTF-8 JSON object header of that many
//! bytes, and a body whose length the header declares:
//!
//! ```text
//! +------------------+------------------------------+-----------------------------+
//! | hlen: i32, LE    | header: hlen bytes, UTF-8    | body: `size` bytes          |
//! | (struct '<i')    | one JSON object              | (absent when size is 0)     |
//! +------------------+------------------------------+-----------------------------+
//! ```
//!
//! This is the format of the Python tutorials sockit grew from (`struct.pack('i', len(header))`),
//! made strict: every length is checked against [`Limits`] before anything is allocated, and the
//! body is handed out in chunks so that a body far larger than memory can be streamed.
//!
//! The crate is deliberately free of sockets, clocks and async runtimes. [`Decoder`] is a state
//! machine fed from a [`bytes::BytesMut`]; [`HeaderWriter`] appends frames to one. That makes
//! the codec deterministic, fuzzable and property-testable: however a byte stream is cut into
//! reads, it decodes to the same frames.
//!
//! ```
//! use bytes::BytesMut;
//! use sockit_proto::{Decoder, Event, HeaderWriter, Limits};
//!
//! let mut wire = BytesMut::new();
//! let mut header = HeaderWriter::new(&mut wire);
//! header.field("op", "echo");
//! header.finish(5).unwrap();
//! wire.extend_from_slice(b"hello");
//!
//! let mut decoder = Decoder::new(Limits::default());
//! let Some(Event::Header(head)) = decoder.decode(&mut wire).unwrap() else { panic!() };
//! assert_eq!(head.op().unwrap(), Some("echo"));
//! assert_eq!(head.body_len(), 5);
//! let Some(Event::Body(body)) = decoder.decode(&mut wire).unwrap() else { panic!() };
//! assert_eq!(&body[..], b"hello");
//! ```

mod code;
mod decode;
mod encode;
mod error;
mod header;
mod limits;
pub mod message;
mod plain;

pub use code::ErrorCode;
pub use decode::{Decoder, Event};
pub use encode::HeaderWriter;
pub use error::{EncodeError, EnvelopeError, FrameError};
pub use header::Header;
pub use limits::{
    Limits, LimitsBuilder, LimitsError, DEFAULT_MAX_BODY_LEN, DEFAULT_MAX_BUFFERED_BODY,
    DEFAULT_MAX_DEPTH, DEFAULT_MAX_HEADER_LEN, MAX_DEPTH_CEILING,
};

/// Length in bytes of the header-length prefix that starts every frame.
pub const HEADER_LEN_PREFIX: usize = 4;

/// The longest request `id`, in bytes of JSON text; a longer one is refused (`bad_request`),
/// so an echoed `id` never makes a reply header too long for a client.
pub const MAX_ID_LEN: usize = 256;

/// Header keys that declare the body length, in the order they are honoured.
///
/// `size` is sockit's own; the others are the keys of the tutorials' clients.
pub const SIZE_KEYS: [&str; 4] = ["size", "file_size", "total_size", "data_size"];
