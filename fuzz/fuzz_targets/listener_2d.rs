//! A sequence of 2D listener messages (`Scanout`, `Update`, `CursorDefine`,
//! `MouseSet`, `Disable`) and console sizes, as QEMU may send them: each is
//! checked at the D-Bus edge and painted (the D-Bus side's half), and now
//! and then the picture is published and composed with the cursor (the
//! output's half). Updates far outside the console may not grow the picture
//! past the console's announced size (issue 15 item 4).
#![no_main]

use capture::RgbaFrame;
use libfuzzer_sys::fuzz_target;
use qemu_sink_fuzz::{Input, PIXMAN_FORMATS};
use sink::surface::{Painter, Surface, SurfacePicture};

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let mut painter = Painter::default();
    let mut surface = Surface::default();
    let mut picture = SurfacePicture::default();
    let mut frame = RgbaFrame::default();
    let mut cursor_copy = Vec::new();
    let mut largest_console = (0u32, 0u32);
    let mut largest_scanout = (0u32, 0u32);
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
                    largest_scanout.0 = largest_scanout.0.max(width);
                    largest_scanout.1 = largest_scanout.1.max(height);
                    painter.scanout(&pixels);
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
                    let _ = painter.update(x, y, &pixels);
                }
            }
            2 => {
                let (width, height) = (input.size() as i32, input.size() as i32);
                let (hot_x, hot_y) = (input.i32(), input.i32());
                let len = usize::from(input.u16());
                let bytes = input.bytes(len);
                if let Ok(cursor) =
                    dbus_interfaces::check_cursor_define(width, height, hot_x, hot_y, bytes)
                {
                    surface.define_cursor(&cursor);
                }
            }
            3 => surface.set_pointer(input.i32(), input.i32(), input.u8() & 1 == 1),
            4 => painter.disable(),
            5 => {
                let (width, height) = (input.size(), input.size());
                if dbus_interfaces::validate::check_size(width, height).is_ok() {
                    largest_console.0 = largest_console.0.max(width);
                    largest_console.1 = largest_console.1.max(height);
                    painter.set_console_size(width, height);
                }
            }
            _ => {
                painter.prepare();
                painter.publish(&mut surface);
                let cursor = surface
                    .cursor_overlay()
                    .filter(|_| input.u8() & 1 == 1)
                    .map(|overlay| overlay.to_owned_overlay(&mut cursor_copy));
                if surface.take_picture(&mut picture) {
                    picture.compose(&mut frame, cursor.map(|c| (c, cursor_copy.as_slice())));
                    assert_eq!(
                        frame.pixels.len(),
                        frame.width as usize * frame.height as usize * 4
                    );
                }
            }
        }
        // Memory follows the pictures QEMU announced, not claimed corners.
        if let Some((width, height)) = painter.size() {
            assert!(width <= largest_console.0.max(largest_scanout.0));
            assert!(height <= largest_console.1.max(largest_scanout.1));
        }
    }
});
