//! The clients' answer decoder (the module reads it inside sshd) on any bytes: an answer
//! or an error, never a panic, and a decoded answer encodes back to exactly its bytes.
#![no_main]

use apppass_proto::Response;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    if let Ok(response) = Response::decode(body) {
        assert_eq!(&response.encode()[..], body, "not canonical");
    }
});
