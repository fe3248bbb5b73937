//! The bytes of one read of a vdmabuf consumer node: events framed, each
//! export's blob parsed and checked; every byte read is accounted for.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sink::source::vdmabuf::{check_blob, frame_events, parse_blob, MAX_PRIVATE};

fuzz_target!(|data: &[u8]| {
    let framed = frame_events(data);
    let mut used = 0;
    for (_, private) in &framed.events {
        assert!(private.len() <= MAX_PRIVATE);
        used += 24 + private.len();
        if let Ok(blob) = parse_blob(private) {
            let _ = check_blob(&blob);
        }
    }
    assert!(used <= data.len());
    assert_eq!(used == data.len(), framed.broken.is_none());
});
