//! One datagram (or message) of the chat room as a member sent it: checked, then either text
//! for the room or a command. No sockets and no state, so it is fuzzed on its own
//! (`fuzz/fuzz_targets/chat_line.rs`).

/// Longest line accepted, in bytes, whatever carries it (one datagram, one message).
pub const MAX_LINE: usize = 4096;

/// What a member sent, once checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Line<'a> {
    /// Nothing at all (an empty datagram): nothing to say, and nothing is said back.
    Empty,
    /// Words for the room, without the trailing `\n` or `\r\n`; not yet sanitised.
    Text(&'a str),
    /// `/VERB ARG`: the verb is what follows `/` up to the first whitespace, the argument the
    /// rest with surrounding whitespace trimmed (empty when there is none).
    Command {
        /// The command's name, without the `/`.
        verb: &'a str,
        /// Everything after the verb, trimmed.
        arg: &'a str,
    },
}

/// Why a datagram is not a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    /// Longer than [`MAX_LINE`].
    #[error("message too long (limit {MAX_LINE} bytes)")]
    TooLong,
    /// Not UTF-8 text.
    #[error("not UTF-8")]
    NotUtf8,
}

/// Reads one line as a member sent it: at most [`MAX_LINE`] bytes of UTF-8, one trailing `\n`
/// (or `\r\n`) removed.
///
/// # Errors
///
/// [`LineError::TooLong`] or [`LineError::NotUtf8`]; the room answers each with `! ` and the
/// error's text.
pub fn parse_line(data: &[u8]) -> Result<Line<'_>, LineError> {
    if data.is_empty() {
        return Ok(Line::Empty);
    }
    if data.len() > MAX_LINE {
        return Err(LineError::TooLong);
    }
    let text = std::str::from_utf8(data).map_err(|_| LineError::NotUtf8)?;
    let line = text.strip_suffix('\n').unwrap_or(text);
    let line = line.strip_suffix('\r').unwrap_or(line);
    Ok(match line.strip_prefix('/') {
        Some(command) => {
            let (verb, arg) = command
                .split_once(char::is_whitespace)
                .map_or((command, ""), |(verb, arg)| (verb, arg.trim()));
            Line::Command { verb, arg }
        }
        None => Line::Text(line),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_text_or_commands() {
        assert_eq!(parse_line(b""), Ok(Line::Empty));
        assert_eq!(parse_line(b"\n"), Ok(Line::Text("")));
        assert_eq!(parse_line(b"hello\r\n"), Ok(Line::Text("hello")));
        assert_eq!(parse_line(b"two\n\n"), Ok(Line::Text("two\n")));
        assert_eq!(
            parse_line(b"/nick  bob \n"),
            Ok(Line::Command {
                verb: "nick",
                arg: "bob"
            })
        );
        assert_eq!(
            parse_line(b"/who"),
            Ok(Line::Command {
                verb: "who",
                arg: ""
            })
        );
        let padded = format!("/confirm{}", " ".repeat(100));
        assert_eq!(
            parse_line(padded.as_bytes()),
            Ok(Line::Command {
                verb: "confirm",
                arg: ""
            })
        );
    }

    #[test]
    fn too_long_or_not_utf8_is_refused() {
        assert_eq!(parse_line(&[b'x'; MAX_LINE]).map(|_| ()), Ok(()));
        assert_eq!(parse_line(&[b'x'; MAX_LINE + 1]), Err(LineError::TooLong));
        assert_eq!(parse_line(b"\xff"), Err(LineError::NotUtf8));
        assert_eq!(
            LineError::TooLong.to_string(),
            "message too long (limit 4096 bytes)"
        );
    }
}
