//! A `login` request from the network, as the server reads it: the header's fields, the
//! choice of proof (a password alone, or a key with its signature over a challenge), then the
//! key's and the signature's decoding. Nothing may panic; a proof is chosen exactly when the
//! fields offer one; and no key proof the fuzzer makes verifies against a fresh challenge.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sockit::auth::keys::{verify_login, PublicKey, CHALLENGE_LEN};
use sockit::auth::proof::{Proof, ProofError};
use sockit_proto::message::{LoginRequest, Request};
use sockit_proto::{Header, Limits};

fuzz_target!(|data: &[u8]| {
    // The first byte says whether the session holds a challenge; the rest is the header.
    let Some((&flags, json)) = data.split_first() else {
        return;
    };
    let Ok(header) = Header::parse_json(Bytes::copy_from_slice(json), &Limits::default()) else {
        return;
    };
    let Ok(Request::Login(request)) = Request::parse(&header) else {
        return;
    };
    let challenge = (flags & 1 == 1).then_some([flags; CHALLENGE_LEN]);
    check(&request, challenge);
});

fn check(request: &LoginRequest<'_>, challenge: Option<[u8; CHALLENGE_LEN]>) {
    let fields = (
        request.password.is_some(),
        request.key.is_some(),
        request.signature.is_some(),
    );
    match Proof::of(request, challenge) {
        Ok(Proof::Password(password)) => {
            assert_eq!(fields, (true, false, false));
            assert_eq!(Some(password), request.password.as_deref());
        }
        Ok(Proof::Key {
            key,
            signature,
            challenge: signed,
        }) => {
            assert_eq!(fields, (false, true, true));
            assert_eq!(Some(signed), challenge);
            if let Ok(key) = key.parse::<PublicKey>() {
                // The fuzzer holds no private key: nothing it sends verifies, and a challenge
                // it never saw is certainly not signed.
                let fresh = [signed[0] ^ 0xff; CHALLENGE_LEN];
                assert!(!verify_login(
                    key.verifying_key(),
                    &fresh,
                    &request.user,
                    signature
                ));
                let _ = verify_login(key.verifying_key(), &signed, &request.user, signature);
            }
        }
        Err(ProofError::NoChallenge) => {
            assert_eq!((fields, challenge), ((false, true, true), None));
        }
        Err(_) => assert!(fields != (true, false, false) && fields != (false, true, true)),
    }
}
