//! How a peer proves that it receives what the room sends it: the room sends it a line with a
//! token (`* send /confirm TOKEN to keep receiving the room`), and the peer sends back the line
//! `/confirm TOKEN`.
//!
//! A source address can be forged; a token can only be sent back by whoever receives at that
//! address. The token is a MAC of the peer's address under a key the server draws at random
//! when it starts ([`ConfirmKey`]), so checking it needs no state kept for the peer before it
//! has proved itself. Tools find the token with the pattern `/confirm ([A-Za-z0-9]{8,32})`.

use std::fmt;

/// The room's answer to a `/confirm` from a peer that has proved it receives.
pub const CONFIRMED: &str = "* confirmed";

/// Characters in a token: 64 bits, as lowercase hex.
pub const TOKEN_LEN: usize = 16;

/// The least budget for a peer that has not proved it receives: room for the ask, and more.
pub const MIN_BUDGET: usize = 128;

/// The line that asks a peer to prove it receives, with its token (without the trailing `\n`).
pub fn ask_line(token: &str) -> String {
    format!("* send /confirm {token} to keep receiving the room")
}

/// The token in a line from the room that asks for one ([`ask_line`]), if `line` is one. Only a
/// line in that exact form counts: a member's words reach others as `<NAME> text`, so no member
/// can make another's client confirm a token of its choosing.
pub fn asked_token(line: &str) -> Option<&str> {
    let rest = line.strip_prefix("* send /confirm ")?;
    let (token, tail) = rest.split_once(' ')?;
    let valid = (8..=32).contains(&token.len()) && token.bytes().all(|b| b.is_ascii_alphanumeric());
    (valid && tail.trim_end() == "to keep receiving the room").then_some(token)
}

/// The server's secret for tokens, drawn at random when the room starts.
pub struct ConfirmKey([u8; 32]);

impl fmt::Debug for ConfirmKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ConfirmKey(..)")
    }
}

impl ConfirmKey {
    /// A key from the operating system's random source.
    ///
    /// # Errors
    ///
    /// The operating system has no random source to give.
    pub fn random() -> Result<ConfirmKey, getrandom::Error> {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key)?;
        Ok(ConfirmKey(key))
    }

    /// The token for the peer known by `peer` (its address, as bytes).
    pub fn token(&self, peer: &[u8]) -> String {
        let mac = blake3::keyed_hash(&self.0, peer);
        hex::encode(&mac.as_bytes()[..TOKEN_LEN / 2])
    }

    /// Whether `token` is the peer's token; compared in constant time.
    pub fn verify(&self, peer: &[u8], token: &str) -> bool {
        let expected = self.token(peer);
        expected.len() == token.len()
            && expected
                .bytes()
                .zip(token.bytes())
                .fold(0u8, |diff, (a, b)| diff | (a ^ b))
                == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_belongs_to_one_peer_and_one_server() {
        let key = ConfirmKey::random().unwrap();
        let token = key.token(b"127.0.0.1:5000");
        assert_eq!(token.len(), TOKEN_LEN);
        assert!(token.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert!(key.verify(b"127.0.0.1:5000", &token));
        assert!(!key.verify(b"127.0.0.1:5001", &token));
        assert!(!key.verify(b"127.0.0.1:5000", &token[1..]));
        assert!(!key.verify(b"127.0.0.1:5000", ""));
        assert!(!ConfirmKey::random()
            .unwrap()
            .verify(b"127.0.0.1:5000", &token));
    }

    #[test]
    fn the_ask_fits_in_the_least_budget() {
        let key = ConfirmKey::random().unwrap();
        let with_newline = ask_line(&key.token(b"[::1]:65535")).len() + 1;
        assert_eq!(with_newline, 60);
        assert!(with_newline <= MIN_BUDGET / 2);
    }

    #[test]
    fn the_asked_token_is_found_only_in_the_rooms_own_line() {
        let line = ask_line("0123456789abcdef");
        assert_eq!(asked_token(&line), Some("0123456789abcdef"));
        assert_eq!(asked_token(&format!("{line}\n")), Some("0123456789abcdef"));
        assert_eq!(asked_token(&format!("<mallory> {line}")), None);
        assert_eq!(
            asked_token("* send /confirm short to keep receiving the room"),
            None
        );
        assert_eq!(asked_token("* send /confirm 0123456789abcdef!"), None);
    }
}
