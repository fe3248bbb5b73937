//! A plane's `IN_FORMATS` blob as the kernel (or a broken driver) gives it.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(pairs) = sink::output::kms::parse_in_formats(data) {
        // Each pair comes from a set bit of a 24-byte entry in the blob.
        assert!(pairs.len() <= data.len() / 24 * 64);
    }
});
