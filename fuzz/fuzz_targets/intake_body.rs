//! Any HTTP body through intake's decoding and naming: an error is fine, a panic is not.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = cdrmunch::domain::submission::prepare(data, Some("uuid=a_0d2e4c6a-1111-2222-3333-444455556666"), "127.0.0.1", 0);
});
