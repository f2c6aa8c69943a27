//! The stable error words carried in a failed reply's `code`.

use std::fmt;

/// Why a request failed, as the short stable word in a reply's `"code"`.
///
/// Clients match on these words; they never change meaning. [`ErrorCode::as_str`] gives the
/// word, [`ErrorCode::parse`] reads one back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// The bytes are not a valid frame; the connection is closed after the reply.
    BadFrame,
    /// A length exceeds a limit.
    TooLarge,
    /// The frame is well formed but the request is not (missing or mistyped fields).
    BadRequest,
    /// The `op` is not one this server knows.
    UnknownOp,
    /// Not logged in, or the credentials are wrong.
    Unauthorized,
    /// No such file.
    NotFound,
    /// The name is taken and overwrite was not asked for.
    Exists,
    /// A file name that is not one plain path component.
    BadName,
    /// The data does not match its declared BLAKE3 hash.
    HashMismatch,
    /// The operation is switched off on this server.
    Disabled,
    /// A deadline passed before the peer finished sending.
    Timeout,
    /// The server is at a connection limit, or the resource is in use by another request.
    Busy,
    /// A resume `offset` the server cannot continue from.
    BadOffset,
    /// The server's disk is full.
    NoSpace,
    /// Too many failed logins from this address or for this user; the reply's `retry_after`
    /// says how many seconds to wait.
    RateLimited,
    /// The server failed on its side (I/O error, disk full).
    Internal,
    /// The server is shutting down and cut the request short; what arrived of an upload is
    /// kept, so the same request again (to this server once it is back) resumes it.
    ShuttingDown,
    /// A plain frame reached a TLS listener: connect again with TLS. The connection closes
    /// after this reply, the only plain bytes such a listener ever sends.
    TlsRequired,
}

impl ErrorCode {
    /// Every code, for documentation and tests.
    pub const ALL: [ErrorCode; 18] = [
        ErrorCode::BadFrame,
        ErrorCode::TooLarge,
        ErrorCode::BadRequest,
        ErrorCode::UnknownOp,
        ErrorCode::Unauthorized,
        ErrorCode::NotFound,
        ErrorCode::Exists,
        ErrorCode::BadName,
        ErrorCode::HashMismatch,
        ErrorCode::Disabled,
        ErrorCode::Timeout,
        ErrorCode::Busy,
        ErrorCode::BadOffset,
        ErrorCode::NoSpace,
        ErrorCode::RateLimited,
        ErrorCode::Internal,
        ErrorCode::ShuttingDown,
        ErrorCode::TlsRequired,
    ];

    /// The word on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadFrame => "bad_frame",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UnknownOp => "unknown_op",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Exists => "exists",
            ErrorCode::BadName => "bad_name",
            ErrorCode::HashMismatch => "hash_mismatch",
            ErrorCode::Disabled => "disabled",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Busy => "busy",
            ErrorCode::BadOffset => "bad_offset",
            ErrorCode::NoSpace => "no_space",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Internal => "internal",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::TlsRequired => "tls_required",
        }
    }

    /// The code for a word, if it is one of ours.
    pub fn parse(word: &str) -> Option<ErrorCode> {
        ErrorCode::ALL
            .into_iter()
            .find(|code| code.as_str() == word)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_through_its_word() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(code.as_str()), Some(code));
        }
        assert_eq!(ErrorCode::parse("no_such_code"), None);
    }
}
