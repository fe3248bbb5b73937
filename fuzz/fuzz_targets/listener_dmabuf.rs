//! `ScanoutDMABUF`, `ScanoutDMABUF2` and `UpdateDMABUF` as QEMU may send
//! them: the checks at the D-Bus edge (the fds themselves are checked where
//! they are imported, which needs a real DMA-BUF).
#![no_main]

use libfuzzer_sys::fuzz_target;
use qemu_sink_fuzz::{Input, FOURCCS};

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    while !input.is_empty() {
        match input.u8() % 3 {
            0 => {
                let (width, height, fourcc) = (input.size(), input.size(), input.one_of(FOURCCS));
                let modifier = input.u64();
                if let Ok(scanout) = dbus_interfaces::dmabuf_scanout(
                    Vec::new(),
                    fourcc,
                    modifier,
                    (0, 0, width, height),
                    (width, height),
                    input.u8() & 1 == 1,
                ) {
                    assert!(scanout.buffer.width == width && scanout.buffer.height == height);
                }
            }
            1 => {
                let num_planes = input.u32() % 8;
                let counts = (input.u8() % 6, input.u8() % 6, input.u8() % 6);
                let (x, y, width, height) =
                    (input.size(), input.size(), input.size(), input.size());
                let backing = (input.size(), input.size());
                let fourcc = input.one_of(FOURCCS);
                let modifier = input.u64();
                let ok = dbus_interfaces::check_plane_counts(
                    num_planes,
                    counts.0.into(),
                    counts.1.into(),
                    counts.2.into(),
                )
                .is_ok();
                if ok {
                    if let Ok(s) = dbus_interfaces::dmabuf_scanout(
                        Vec::new(),
                        fourcc,
                        modifier,
                        (x, y, width, height),
                        backing,
                        false,
                    ) {
                        assert!(s.rect.is_within((s.buffer.width, s.buffer.height)));
                    }
                }
            }
            _ => {
                let _ = dbus_interfaces::validate::rect_from_wire(
                    input.i32(),
                    input.i32(),
                    input.i32(),
                    input.i32(),
                );
            }
        }
    }
});
