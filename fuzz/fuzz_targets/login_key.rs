//! The parts of a key `login` request that come from the network: the public key text and the
//! signature text. Neither may panic, and a key that parses prints back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sockit::auth::keys::{verify_login, PublicKey};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (key_text, signature) = text.split_once('\n').unwrap_or((text, text));
    if let Ok(key) = key_text.parse::<PublicKey>() {
        let again: PublicKey = key.to_string().parse().expect("a printed key parses");
        assert_eq!(again.verifying_key(), key.verifying_key());
        assert!(!verify_login(key.verifying_key(), &[0; 32], "user", signature));
    }
});
