//! Any bytes through the CDR parser and the normalizer: an error is fine, a panic is not.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(raw) = cdrmunch::domain::cdr::parse(data) {
        let _ = cdrmunch::domain::normalize::normalize(&raw, &Default::default());
    }
});
