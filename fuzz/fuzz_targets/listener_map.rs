//! `ScanoutMap` and `UpdateMap` as QEMU may send them: a memfd of some
//! size, an offset and a layout, checked and mapped, then rectangles
//! checked against the map and the surface rendered from it.
#![no_main]

use std::io::Write;

use capture::RgbaFrame;
use libfuzzer_sys::fuzz_target;
use nix::sys::memfd::{memfd_create, MFdFlags};
use qemu_sink_fuzz::{Input, PIXMAN_FORMATS};
use sink::surface::Surface;

/// The memfd is at most this long (it is written for real each run).
const MAX_FILE: u64 = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let file_len = u64::from(input.u32()) % MAX_FILE;
    let offset = input.size();
    let (width, height) = (input.size(), input.size());
    let (stride, pixman) = (input.size(), input.one_of(PIXMAN_FORMATS));
    let Ok(layout) = dbus_interfaces::Layout::new(width, height, stride, pixman) else {
        return;
    };
    let fd = memfd_create("fuzz-map", MFdFlags::MFD_CLOEXEC).expect("memfd");
    let mut file = std::fs::File::from(fd);
    let fill = input.bytes(file_len as usize);
    file.write_all(fill).expect("writing the memfd");
    file.set_len(file_len).expect("sizing the memfd");
    let Ok(map) = dbus_interfaces::SharedMap::new(file.into(), offset, layout) else {
        return;
    };
    assert!(map.bytes().len() as u64 >= layout.min_len());
    let mut surface = Surface::default();
    surface.scanout_map(map);
    let mut frame = RgbaFrame::default();
    while !input.is_empty() {
        let rect = dbus_interfaces::Rect::from_wire(
            input.size() as i32,
            input.size() as i32,
            input.size() as i32,
            input.size() as i32,
        );
        if let Ok(rect) = rect {
            if surface.update_map(rect).is_ok() {
                surface.render(&mut frame, false);
            }
        }
    }
});
