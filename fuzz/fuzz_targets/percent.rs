//! The percent-decoder never panics, and decoding what FreeSWITCH's encoder wrote gives back
//! the original text.
#![no_main]
use cdrmunch::domain::percent::{fs_url_encode, percent_decode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);
    let _ = percent_decode(&s);
    assert_eq!(percent_decode(&fs_url_encode(s.as_bytes())), s);
});
