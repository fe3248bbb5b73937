//! The console's 2D surface as the sink keeps it: pixels copied from
//! `Scanout`/`Update`, or shared memory from `ScanoutMap` read in place, plus
//! the cursor. Rules that need the current state (an update before any
//! scanout, a rectangle outside the map) live here; the message-level checks
//! were done at the D-Bus edge.

use capture::{decode_row, RgbaFrame};
use dbus_interfaces::{Cursor, InvalidInput, Layout, Pixels, Rect, SharedMap};

/// Where the surface's pixels are.
#[derive(Debug)]
enum Pixmap {
    /// Nothing shown yet, or `Disable`d: black at the last known size.
    Blank,
    /// Our own copy, in the format QEMU sent.
    Owned { layout: Layout, data: Vec<u8> },
    /// QEMU's shared memory, read in place.
    Mapped(SharedMap),
}

#[derive(Debug, Default, Clone)]
struct CursorImage {
    width: u32,
    height: u32,
    hot_x: i32,
    hot_y: i32,
    argb: Vec<u8>,
}

/// A cursor image placed in guest coordinates.
#[derive(Debug, Clone, Copy)]
pub struct CursorOverlay<'a> {
    pub x: i64,
    pub y: i64,
    pub width: u32,
    pub height: u32,
    pub argb: &'a [u8],
}

impl CursorOverlay<'_> {
    /// An owned copy, to draw after the lock is gone.
    pub fn to_owned_overlay(&self, buffer: &mut Vec<u8>) -> (i64, i64, u32, u32) {
        buffer.clear();
        buffer.extend_from_slice(self.argb);
        (self.x, self.y, self.width, self.height)
    }
}

/// The surface and cursor of one console.
#[derive(Debug)]
pub struct Surface {
    pixmap: Pixmap,
    /// Last known size; `None` until the first scanout.
    size: Option<(u32, u32)>,
    cursor: Option<CursorImage>,
    pointer: Option<(i32, i32)>,
    /// The console's `Width`/`Height` as last announced on the bus: it may
    /// come before or after the updates that need it (both orders seen).
    console_size: Option<(u32, u32)>,
}

impl Default for Surface {
    fn default() -> Self {
        Surface {
            pixmap: Pixmap::Blank,
            size: None,
            cursor: None,
            pointer: None,
            console_size: None,
        }
    }
}

impl Surface {
    pub fn size(&self) -> Option<(u32, u32)> {
        self.size
    }

    /// A new surface with all its pixels (one copy, reusing the allocation).
    pub fn scanout(&mut self, pixels: &Pixels<'_>) {
        let layout = pixels.layout;
        let mut data = match std::mem::replace(&mut self.pixmap, Pixmap::Blank) {
            Pixmap::Owned { data, .. } => data,
            _ => Vec::new(),
        };
        let packed = Layout {
            stride: layout.row_bytes() as u32,
            ..layout
        };
        data.clear();
        data.reserve(packed.row_bytes() * layout.height as usize);
        for y in 0..layout.height {
            data.extend_from_slice(pixels.row(y));
        }
        self.pixmap = Pixmap::Owned {
            layout: packed,
            data,
        };
        self.size = Some((layout.width, layout.height));
    }

    /// Pixels for the rectangle at (`x`, `y`). An update that reaches past
    /// the surface grows it: QEMU resizes without a new scanout (VGA text mode).
    pub fn update(&mut self, x: u32, y: u32, pixels: &Pixels<'_>) -> Result<(), InvalidInput> {
        let (width, height) = self.size.ok_or(InvalidInput::NoScanout)?;
        self.make_owned()?;
        if let Pixmap::Owned { layout, .. } = &self.pixmap {
            if pixels.layout.format != layout.format {
                return Err(InvalidInput::FormatMismatch {
                    update: pixels.layout.format.fourcc as u32,
                    surface: layout.format.fourcc as u32,
                });
            }
        }
        let right = x + pixels.layout.width;
        let bottom = y + pixels.layout.height;
        if right > width || bottom > height {
            // The console's announced size, if it holds the update; else
            // just large enough.
            let size = match self.console_size {
                Some((w, h)) if right <= w && bottom <= h => (w, h),
                _ => (width.max(right), height.max(bottom)),
            };
            self.resize(size.0, size.1);
        }
        let Pixmap::Owned { layout, data } = &mut self.pixmap else {
            unreachable!("make_owned leaves an owned pixmap");
        };
        let bpp = layout.format.bytes_per_pixel as usize;
        let stride = layout.stride as usize;
        for row in 0..pixels.layout.height {
            let start = (y + row) as usize * stride + x as usize * bpp;
            let src = pixels.row(row);
            data[start..start + src.len()].copy_from_slice(src);
        }
        Ok(())
    }

    /// A new surface in shared memory: nothing is copied.
    pub fn scanout_map(&mut self, map: SharedMap) {
        self.size = Some((map.layout.width, map.layout.height));
        self.pixmap = Pixmap::Mapped(map);
    }

    /// The shared memory changed in `rect`; it is read when rendered.
    pub fn update_map(&mut self, rect: Rect) -> Result<(), InvalidInput> {
        match &self.pixmap {
            Pixmap::Mapped(map) => rect.check_within(map.layout.width, map.layout.height),
            _ => Err(InvalidInput::NoScanout),
        }
    }

    /// Blank until the next scanout.
    pub fn disable(&mut self) {
        self.pixmap = Pixmap::Blank;
    }

    /// The console announced its size (`Width`/`Height`): remembered for
    /// updates that outgrow the surface, and applied to a surface that has
    /// a different size. True when the surface changed.
    pub fn set_console_size(&mut self, width: u32, height: u32) -> bool {
        self.console_size = Some((width, height));
        if self.size.is_some_and(|size| size != (width, height)) {
            self.resize(width, height);
            return self.size == Some((width, height));
        }
        false
    }

    /// The console's size changed (its `Width`/`Height` properties): keep
    /// what overlaps, black elsewhere. A shared-memory surface has its size
    /// from QEMU's map and waits for the next `ScanoutMap`.
    pub fn resize(&mut self, width: u32, height: u32) {
        if self.size == Some((width, height)) || matches!(self.pixmap, Pixmap::Mapped(_)) {
            return;
        }
        if let Pixmap::Owned { layout, data } = &mut self.pixmap {
            let bpp = layout.format.bytes_per_pixel as usize;
            let new_stride = width as usize * bpp;
            let mut grown = vec![0u8; new_stride * height as usize];
            let copy = layout.width.min(width) as usize * bpp;
            for y in 0..layout.height.min(height) as usize {
                let src = y * layout.stride as usize;
                grown[y * new_stride..y * new_stride + copy]
                    .copy_from_slice(&data[src..src + copy]);
            }
            *data = grown;
            layout.width = width;
            layout.height = height;
            layout.stride = new_stride as u32;
        }
        self.size = Some((width, height));
    }

    pub fn define_cursor(&mut self, cursor: &Cursor<'_>) {
        let len = cursor.width as usize * cursor.height as usize * 4;
        let image = self.cursor.get_or_insert_with(CursorImage::default);
        image.width = cursor.width;
        image.height = cursor.height;
        image.hot_x = cursor.hot_x;
        image.hot_y = cursor.hot_y;
        image.argb.clear();
        image.argb.extend_from_slice(&cursor.data[..len]);
    }

    /// The cursor image where it is drawn now (pointer minus hot spot),
    /// if there is a cursor and the pointer is visible.
    pub fn cursor_overlay(&self) -> Option<CursorOverlay<'_>> {
        let (image, (x, y)) = (self.cursor.as_ref()?, self.pointer?);
        Some(CursorOverlay {
            x: i64::from(x) - i64::from(image.hot_x),
            y: i64::from(y) - i64::from(image.hot_y),
            width: image.width,
            height: image.height,
            argb: &image.argb,
        })
    }

    pub fn set_pointer(&mut self, x: i32, y: i32, visible: bool) {
        self.pointer = visible.then_some((x, y));
    }

    fn make_owned(&mut self) -> Result<(), InvalidInput> {
        match std::mem::replace(&mut self.pixmap, Pixmap::Blank) {
            owned @ Pixmap::Owned { .. } => {
                self.pixmap = owned;
                Ok(())
            }
            // QEMU went back to copies: continue from a copy of the shared memory.
            Pixmap::Mapped(map) => {
                self.scanout(&Pixels::new(map.layout, map.bytes())?);
                Ok(())
            }
            Pixmap::Blank => Err(InvalidInput::NoScanout),
        }
    }

    /// Renders the surface (and, with `cursor`, the pointer) into `frame`,
    /// reusing its allocation. Returns false when there is nothing to show yet.
    pub fn render(&self, frame: &mut RgbaFrame, cursor: bool) -> bool {
        let Some((width, height)) = self.size else {
            return false;
        };
        if (frame.width, frame.height) != (width, height) || matches!(self.pixmap, Pixmap::Blank) {
            frame.reset(width, height);
        }
        let (layout, bytes) = match &self.pixmap {
            Pixmap::Blank => (None, &[][..]),
            Pixmap::Owned { layout, data } => (Some(*layout), &data[..]),
            Pixmap::Mapped(map) => (Some(map.layout), map.bytes()),
        };
        if let Some(layout) = layout {
            let row_bytes = layout.row_bytes();
            for y in 0..layout.height {
                let start = y as usize * layout.stride as usize;
                let src = &bytes[start..start + row_bytes];
                // Formats were checked at the edge; capture decodes every one of them.
                if let Err(err) = decode_row(layout.format.fourcc, src, frame.row_mut(y)) {
                    tracing::warn!("cannot render the surface: {err}");
                    return false;
                }
            }
        }
        if let (true, Some(overlay)) = (cursor, self.cursor_overlay()) {
            frame.blend_argb(
                overlay.x,
                overlay.y,
                overlay.width,
                overlay.height,
                overlay.argb,
            );
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dbus_interfaces::format::{PIXMAN_R5G6B5, PIXMAN_X8R8G8B8};

    fn xrgb(width: u32, height: u32, fill: impl Fn(u32, u32) -> u32) -> (Layout, Vec<u8>) {
        let layout = Layout::new(width, height, width * 4, PIXMAN_X8R8G8B8).unwrap();
        let mut data = Vec::new();
        for y in 0..height {
            for x in 0..width {
                data.extend_from_slice(&fill(x, y).to_le_bytes());
            }
        }
        (layout, data)
    }

    fn rgb_at(frame: &RgbaFrame, x: u32, y: u32) -> [u8; 3] {
        let i = ((y * frame.width + x) * 4) as usize;
        [frame.pixels[i], frame.pixels[i + 1], frame.pixels[i + 2]]
    }

    fn rendered(surface: &Surface) -> RgbaFrame {
        let mut frame = RgbaFrame::default();
        assert!(surface.render(&mut frame, true));
        frame
    }

    #[test]
    fn scanout_then_update() {
        let mut s = Surface::default();
        let (layout, data) = xrgb(4, 3, |_, _| 0x00_10_20_30);
        s.scanout(&Pixels::new(layout, &data).unwrap());
        let (layout, data) = xrgb(2, 1, |_, _| 0x00_ff_00_00);
        s.update(1, 2, &Pixels::new(layout, &data).unwrap())
            .unwrap();
        let f = rendered(&s);
        assert_eq!((f.width, f.height), (4, 3));
        assert_eq!(rgb_at(&f, 0, 0), [0x10, 0x20, 0x30]);
        assert_eq!(rgb_at(&f, 1, 2), [0xff, 0, 0]);
        assert_eq!(rgb_at(&f, 3, 2), [0x10, 0x20, 0x30]);
    }

    #[test]
    fn padded_scanout_rows_are_packed() {
        let layout = Layout::new(1, 2, 8, PIXMAN_X8R8G8B8).unwrap();
        let data = [1, 2, 3, 0, 9, 9, 9, 9, 4, 5, 6, 0];
        let mut s = Surface::default();
        s.scanout(&Pixels::new(layout, &data).unwrap());
        let f = rendered(&s);
        assert_eq!(rgb_at(&f, 0, 1), [6, 5, 4]);
    }

    #[test]
    fn update_before_any_scanout_is_refused() {
        let mut s = Surface::default();
        let (layout, data) = xrgb(2, 1, |_, _| 0);
        assert_eq!(
            s.update(0, 0, &Pixels::new(layout, &data).unwrap()),
            Err(InvalidInput::NoScanout)
        );
        assert!(!s.render(&mut RgbaFrame::default(), false));
    }

    #[test]
    fn out_of_range_updates_grow_the_surface() {
        let mut s = Surface::default();
        let (layout, data) = xrgb(4, 4, |_, _| 0x00_01_01_01);
        s.scanout(&Pixels::new(layout, &data).unwrap());
        let (layout, data) = xrgb(6, 1, |_, _| 0x00_ff_ff_ff);
        s.update(0, 5, &Pixels::new(layout, &data).unwrap())
            .unwrap();
        assert_eq!(s.size(), Some((6, 6)));
        let f = rendered(&s);
        assert_eq!(rgb_at(&f, 3, 3), [1, 1, 1]);
        assert_eq!(rgb_at(&f, 5, 3), [0, 0, 0]);
        assert_eq!(rgb_at(&f, 5, 5), [255, 255, 255]);
        // The console then announces the real size.
        s.resize(6, 5);
        let f = rendered(&s);
        assert_eq!((f.width, f.height), (6, 5));
        assert_eq!(rgb_at(&f, 0, 0), [1, 1, 1]);
    }

    #[test]
    fn the_announced_console_size_wins_in_either_order() {
        // Announced before the growing updates: they grow to it at once.
        let mut s = Surface::default();
        s.set_console_size(6, 5);
        let (layout, data) = xrgb(4, 4, |_, _| 0);
        s.scanout(&Pixels::new(layout, &data).unwrap());
        let (layout, data) = xrgb(6, 1, |_, _| 0);
        s.update(0, 0, &Pixels::new(layout, &data).unwrap())
            .unwrap();
        assert_eq!(s.size(), Some((6, 5)));
        // Announced after: the grown surface is cut to it.
        let mut s = Surface::default();
        let (layout, data) = xrgb(4, 4, |_, _| 0);
        s.scanout(&Pixels::new(layout, &data).unwrap());
        let (layout, data) = xrgb(6, 1, |_, _| 0);
        s.update(0, 0, &Pixels::new(layout, &data).unwrap())
            .unwrap();
        assert_eq!(s.size(), Some((6, 4)));
        assert!(s.set_console_size(6, 3));
        assert_eq!(s.size(), Some((6, 3)));
    }

    #[test]
    fn updates_in_another_format_are_refused() {
        let mut s = Surface::default();
        let (layout, data) = xrgb(2, 2, |_, _| 0);
        s.scanout(&Pixels::new(layout, &data).unwrap());
        let layout = Layout::new(1, 1, 2, PIXMAN_R5G6B5).unwrap();
        assert!(s
            .update(0, 0, &Pixels::new(layout, &[0xff, 0xff]).unwrap())
            .is_err());
        assert_eq!(rgb_at(&rendered(&s), 0, 0), [0, 0, 0]);
    }

    #[test]
    fn disable_blanks_until_the_next_scanout() {
        let mut s = Surface::default();
        let (layout, data) = xrgb(2, 2, |_, _| 0x00_ff_ff_ff);
        s.scanout(&Pixels::new(layout, &data).unwrap());
        s.disable();
        assert_eq!(rgb_at(&rendered(&s), 1, 1), [0, 0, 0]);
        let (layout, data) = xrgb(1, 1, |_, _| 0);
        assert!(s
            .update(0, 0, &Pixels::new(layout, &data).unwrap())
            .is_err());
    }

    #[test]
    fn update_map_outside_the_map_is_refused() {
        let mut s = Surface::default();
        assert!(s.update_map(Rect::from_wire(0, 0, 1, 1).unwrap()).is_err());
    }

    #[test]
    fn cursor_is_drawn_at_the_pointer_minus_hotspot() {
        let mut s = Surface::default();
        let (layout, data) = xrgb(4, 4, |_, _| 0);
        s.scanout(&Pixels::new(layout, &data).unwrap());
        let red = [0u8, 0, 255, 255];
        s.define_cursor(&Cursor {
            width: 1,
            height: 1,
            hot_x: 1,
            hot_y: 1,
            data: &red,
        });
        s.set_pointer(3, 2, true);
        assert_eq!(rgb_at(&rendered(&s), 2, 1), [255, 0, 0]);
        let mut f = RgbaFrame::default();
        s.render(&mut f, false);
        assert_eq!(rgb_at(&f, 2, 1), [0, 0, 0]);
        s.set_pointer(3, 2, false);
        assert_eq!(rgb_at(&rendered(&s), 2, 1), [0, 0, 0]);
    }
}
