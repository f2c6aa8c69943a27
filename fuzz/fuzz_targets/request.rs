//! Parses arbitrary bytes as a request header, as the server does before dispatch: a header
//! that validates either becomes a typed request, which writes back to a header that parses
//! to the same operation, or is refused with a code.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use sockit_proto::message::Request;
use sockit_proto::{Header, HeaderWriter, Limits};

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    let Ok(header) = Header::parse_json(Bytes::copy_from_slice(data), &limits) else {
        return;
    };
    match Request::parse(&header) {
        Ok(request) => {
            let mut wire = BytesMut::new();
            let mut writer = HeaderWriter::new(&mut wire);
            request.write(&mut writer);
            if writer.finish(header.body_len()).is_err() {
                return; // a header longer than the prefix allows
            }
            let written = Header::parse_json(wire.split_off(4).freeze(), &limits)
                .expect("a written request is a valid header");
            let again = Request::parse(&written).expect("a written request parses back");
            assert_eq!(again.op(), request.op());
        }
        Err(err) => {
            let _ = err.code();
        }
    }
});
