//! Reply headers: `"ok"`, the request's `id`, and for failures `"code"` and `"error"`.

use std::fmt::Display;

use bytes::BytesMut;
use sockit_proto::{ErrorCode, HeaderWriter};

/// Starts a successful reply; the caller adds fields and finishes it with the body length.
pub(crate) fn ok<'a>(dst: &'a mut BytesMut, id: Option<&str>) -> HeaderWriter<'a> {
    let mut header = HeaderWriter::new(dst);
    header.field("ok", &true);
    if let Some(id) = id {
        header.raw_field("id", id);
    }
    header
}

/// Appends a complete failed reply with no body.
pub(crate) fn error(dst: &mut BytesMut, id: Option<&str>, code: ErrorCode, message: &dyn Display) {
    error_with(dst, id, code, message, |_| {});
}

/// Appends a complete failed reply with no body and the fields `extra` adds.
pub(crate) fn error_with(
    dst: &mut BytesMut,
    id: Option<&str>,
    code: ErrorCode,
    message: &dyn Display,
    extra: impl FnOnce(&mut HeaderWriter<'_>),
) {
    let mut header = HeaderWriter::new(dst);
    header.field("ok", &false);
    if let Some(id) = id {
        header.raw_field("id", id);
    }
    header
        .field("code", code.as_str())
        .field("error", &message.to_string());
    extra(&mut header);
    header
        .finish(0)
        .expect("an error reply of strings always encodes");
}
