//! `ScanoutMap` and `UpdateMap` as QEMU may send them: a memfd of some
//! size, an offset and a layout, checked, then rectangles checked against
//! the map and read, and the picture published now and then. The file may
//! shrink under the sink at any point (QEMU does not seal it): that must
//! fail a read, never fault (issue 15 item 1).
#![no_main]

use std::io::Write;

use capture::RgbaFrame;
use libfuzzer_sys::fuzz_target;
use nix::sys::memfd::{memfd_create, MFdFlags};
use qemu_sink_fuzz::{Input, PIXMAN_FORMATS};
use sink::surface::{Painter, Surface, SurfacePicture};

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
    let ours = file.try_clone().expect("dup");
    let Ok(map) = dbus_interfaces::SharedMap::new(file.into(), offset, layout) else {
        return;
    };
    let mut painter = Painter::default();
    let mut surface = Surface::default();
    let mut picture = SurfacePicture::default();
    let mut frame = RgbaFrame::default();
    if painter.scanout_map(map).is_err() {
        return;
    }
    while !input.is_empty() {
        match input.u8() % 4 {
            0 => {
                let shrink_to = u64::from(input.u32()) % (file_len + 1);
                ours.set_len(shrink_to).expect("shrinking the memfd");
            }
            1 => {
                painter.prepare();
                painter.publish(&mut surface);
                if surface.take_picture(&mut picture) {
                    picture.compose(&mut frame, None);
                    assert_eq!((frame.width, frame.height), (width, height));
                }
            }
            _ => {
                let rect = dbus_interfaces::validate::rect_from_wire(
                    input.size() as i32,
                    input.size() as i32,
                    input.size() as i32,
                    input.size() as i32,
                );
                if let Ok(rect) = rect {
                    let _ = painter.update_map(rect);
                }
            }
        }
    }
});
