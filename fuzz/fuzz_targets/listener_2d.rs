//! A sequence of 2D listener messages (`Scanout`, `Update`, `CursorDefine`,
//! `MouseSet`, `Disable`) and console sizes, as QEMU may send them: each is
//! checked at the D-Bus edge, applied to the console's surface, and the
//! surface is rendered (pixel decode, cursor blend) now and then.
#![no_main]

use capture::RgbaFrame;
use libfuzzer_sys::fuzz_target;
use qemu_sink_fuzz::{Input, PIXMAN_FORMATS};
use sink::surface::Surface;

/// Surfaces are kept below this side here: an `Update` far outside the
/// surface grows it to the claimed corner (up to 16384², gigabytes; issue
/// 15 item 4), which is a memory test, not a decoding one.
const SIDE: u32 = 2048;

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let mut surface = Surface::default();
    let mut frame = RgbaFrame::default();
    while !input.is_empty() {
        match input.u8() % 7 {
            0 => {
                let (width, height) = (input.size(), input.size());
                let (stride, pixman) = (input.size(), input.one_of(PIXMAN_FORMATS));
                let len = usize::from(input.u16());
                let bytes = input.bytes(len);
                if let Ok(pixels) =
                    dbus_interfaces::check_scanout(width, height, stride, pixman, bytes)
                {
                    surface.scanout(&pixels);
                }
            }
            1 => {
                let (x, y) = (input.size() as i32, input.size() as i32);
                let (w, h) = (input.size() as i32, input.size() as i32);
                let (stride, pixman) = (input.size(), input.one_of(PIXMAN_FORMATS));
                let len = usize::from(input.u16());
                let bytes = input.bytes(len);
                if let Ok((x, y, pixels)) =
                    dbus_interfaces::check_update(x, y, w, h, stride, pixman, bytes)
                {
                    if x + pixels.layout.width <= SIDE && y + pixels.layout.height <= SIDE {
                        let _ = surface.update(x, y, &pixels);
                    }
                }
            }
            2 => {
                let (width, height) = (input.size() as i32, input.size() as i32);
                let (hot_x, hot_y) = (input.i32(), input.i32());
                let len = usize::from(input.u16());
                let bytes = input.bytes(len);
                if let Ok(cursor) =
                    dbus_interfaces::check_cursor(width, height, hot_x, hot_y, bytes)
                {
                    surface.define_cursor(&cursor);
                }
            }
            3 => surface.set_pointer(input.i32(), input.i32(), input.u8() & 1 == 1),
            4 => surface.disable(),
            5 => {
                let (width, height) = (input.size(), input.size());
                if (1..=SIDE).contains(&width) && (1..=SIDE).contains(&height) {
                    surface.set_console_size(width, height);
                }
            }
            _ => {
                let cursor = input.u8() & 1 == 1;
                if surface.render(&mut frame, cursor) {
                    assert_eq!(
                        frame.pixels.len(),
                        frame.width as usize * frame.height as usize * 4
                    );
                }
            }
        }
    }
    surface.render(&mut frame, true);
});
