//! Decoding one row of any format into RGBA, with any lengths.
#![no_main]

use drm_fourcc::DrmFourcc;
use libfuzzer_sys::fuzz_target;
use qemu_sink_fuzz::{Input, FOURCCS};

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let Ok(fourcc) = DrmFourcc::try_from(input.one_of(FOURCCS)) else {
        return;
    };
    let pixels = usize::from(input.u16() % 2048);
    let mut dst = vec![0u8; pixels * 4];
    let src = input.0;
    let _ = capture::decode_row(fourcc, src, &mut dst);
});
