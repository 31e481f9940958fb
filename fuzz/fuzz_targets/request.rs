//! apppassd's request decoder on any bytes: a request or an error, never a panic, and a
//! decoded request encodes back to exactly the bytes it came from.
#![no_main]

use apppass_proto::Request;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    if let Ok(request) = Request::decode(body) {
        assert_eq!(&request.encode()[..], body, "not canonical");
    }
});
