//! The console's 2D picture, in two halves that share no lock.
//!
//! [`Painter`] is the D-Bus side's: it keeps the picture up to date in RGBA
//! as messages come (`Scanout`/`Update` decoded from the message, shared
//! memory read with `pread` at `ScanoutMap`/`UpdateMap`), and hands it on by
//! swapping buffers. [`Surface`] sits in the shared state: the newest
//! picture, the cursor and the pointer. The shared lock is held for a swap,
//! never for a decode: QEMU's next message never waits for an output.
//! Rules that need the current state (an update before any scanout, a
//! rectangle outside the surface) live here; the message-level checks were
//! done at the D-Bus edge.

use std::collections::VecDeque;

use capture::{decode_row, RgbaFrame};
use dbus_interfaces::validate::{self, InvalidInput};
use dbus_interfaces::{Cursor, PixelFormat, Pixels, Rect, SharedMap};

/// The picture in RGBA and which change of the painter's it shows.
#[derive(Debug, Default)]
pub struct SurfacePicture {
    pub frame: RgbaFrame,
    /// `None`: unknown (never painted): copied whole before it is reused.
    version: Option<u64>,
}

impl SurfacePicture {
    /// The picture with `cursor` (position, size, ARGB) drawn over it, into
    /// `frame` (reusing its allocation).
    pub fn compose(&self, frame: &mut RgbaFrame, cursor: Option<CursorCopy<'_>>) {
        frame.clone_from(&self.frame);
        if let Some(((x, y, w, h), argb)) = cursor {
            frame.blend_argb(x, y, w, h, argb);
        }
    }
}

/// A cursor copied out of the shared state: position, size, ARGB pixels.
pub type CursorCopy<'a> = ((i64, i64, u32, u32), &'a [u8]);

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

/// The shared half: the newest picture, the cursor and the pointer.
#[derive(Debug, Default)]
pub struct Surface {
    /// The newest picture, until an output swaps it for its own.
    picture: SurfacePicture,
    /// The version and size of the newest picture; `None` until the first
    /// scanout (or since the source was forgotten).
    latest: Option<(u64, (u32, u32))>,
    cursor: Option<CursorImage>,
    pointer: Option<(i32, i32)>,
}

impl Surface {
    /// The newest picture's size; `None` before the first scanout.
    pub fn size(&self) -> Option<(u32, u32)> {
        self.latest.map(|(_, size)| size)
    }

    /// Gives the output the newest picture, if `mine` is not it already, by
    /// a swap (no copy: the lock is held for no longer). False when there is
    /// nothing to show yet.
    pub fn take_picture(&mut self, mine: &mut SurfacePicture) -> bool {
        let Some((latest, _)) = self.latest else {
            return false;
        };
        if mine.version != Some(latest) && self.picture.version == Some(latest) {
            std::mem::swap(mine, &mut self.picture);
        }
        true
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

    /// Forgets the picture (the source went away); the output keeps the
    /// buffer it holds.
    pub fn forget_picture(&mut self) {
        self.latest = None;
    }
}

/// Where the painter's pixels come from now.
#[derive(Debug)]
enum Source {
    /// Nothing shown yet, or `Disable`d: black at the last known size.
    Blank,
    /// Copies (`Scanout`/`Update`) in this format.
    Copies(PixelFormat),
    /// QEMU's shared memory, read at each `UpdateMap`.
    Mapped(SharedMap),
}

/// How many changes back a returned buffer can be brought up to date by
/// copying what they changed (older ones are copied whole).
const DAMAGE_HISTORY: usize = 16;
/// Shared memory is read in runs of rows of about this many bytes: few
/// system calls, and the run stays in the cache while it is decoded.
const READ_CHUNK: usize = 256 * 1024;

/// The D-Bus side's half: the console's picture, painted as messages come.
#[derive(Debug)]
pub struct Painter {
    /// Always the current picture.
    work: RgbaFrame,
    source: Source,
    /// `None` until the first scanout.
    size: Option<(u32, u32)>,
    /// The console's `Width`/`Height` as last announced on the bus: it may
    /// come before or after the updates that need it (both orders seen).
    console_size: Option<(u32, u32)>,
    /// Counts changes of `work`; never goes back (outputs hold versions).
    version: u64,
    /// The rectangle each of the last changes painted, oldest first.
    damage: VecDeque<(u64, Rect)>,
    /// Brought up to date, then swapped into the shared [`Surface`].
    spare: SurfacePicture,
    /// Rows read from shared memory, before they are decoded.
    scratch: Vec<u8>,
}

impl Default for Painter {
    fn default() -> Self {
        Painter {
            work: RgbaFrame::default(),
            source: Source::Blank,
            size: None,
            console_size: None,
            version: 0,
            damage: VecDeque::with_capacity(DAMAGE_HISTORY),
            spare: SurfacePicture::default(),
            scratch: Vec::new(),
        }
    }
}

fn full(width: u32, height: u32) -> Rect {
    Rect::of_size((width, height))
}

fn row(frame: &RgbaFrame, y: u32) -> &[u8] {
    let w = frame.width as usize * 4;
    &frame.pixels[y as usize * w..(y as usize + 1) * w]
}

/// Decodes `width` pixels of `src` into `frame` at (`x`, `y`).
fn decode_into(
    frame: &mut RgbaFrame,
    format: PixelFormat,
    x: u32,
    y: u32,
    src: &[u8],
    width: u32,
) -> Result<(), InvalidInput> {
    let dst = &mut frame.row_mut(y)[x as usize * 4..(x + width) as usize * 4];
    // Formats were checked at the edge; capture decodes every one of them.
    decode_row(format.fourcc, src, dst).map_err(|e| InvalidInput::Map(e.to_string()))
}

impl Painter {
    pub fn size(&self) -> Option<(u32, u32)> {
        self.size
    }

    /// A copy of the current picture (for tests and tools: the output
    /// takes published pictures instead). False before the first scanout.
    pub fn copy_to(&self, frame: &mut RgbaFrame) -> bool {
        frame.clone_from(&self.work);
        self.size.is_some()
    }

    fn changed(&mut self, rect: Rect) {
        self.version += 1;
        if self.damage.len() == DAMAGE_HISTORY {
            self.damage.pop_front();
        }
        self.damage.push_back((self.version, rect));
    }

    /// A black picture of `width` x `height`, all of it changed.
    fn reset(&mut self, width: u32, height: u32) {
        self.work.reset(width, height);
        self.size = Some((width, height));
        self.changed(full(width, height));
    }

    /// A new surface with all its pixels.
    pub fn scanout(&mut self, pixels: &Pixels<'_>) {
        let l = pixels.layout;
        if self.size != Some((l.width, l.height)) {
            self.reset(l.width, l.height);
        } else {
            self.changed(full(l.width, l.height));
        }
        self.source = Source::Copies(l.format);
        for y in 0..l.height {
            // Cannot fail: the format was checked at the edge.
            let _ = decode_into(&mut self.work, l.format, 0, y, pixels.row(y), l.width);
        }
    }

    /// Pixels for the rectangle at (`x`, `y`). One that reaches past the
    /// surface grows it to the console's announced size if that holds it
    /// (QEMU resizes without a new scanout: VGA text mode); what still lies
    /// outside is cut off, and nothing grows to a claimed coordinate.
    pub fn update(&mut self, x: u32, y: u32, pixels: &Pixels<'_>) -> Result<(), InvalidInput> {
        let (width, height) = self.size.ok_or(InvalidInput::NoScanout)?;
        let format = match &self.source {
            Source::Blank => return Err(InvalidInput::NoScanout),
            Source::Copies(format) => *format,
            Source::Mapped(map) => map.layout.format,
        };
        if pixels.layout.format != format {
            return Err(InvalidInput::FormatMismatch {
                update: pixels.layout.format.fourcc as u32,
                surface: format.fourcc as u32,
            });
        }
        // QEMU went back to copies: they land on what the map showed.
        self.source = Source::Copies(format);
        // Checked at the edge: x and y lie within the size cap.
        let rect = Rect::new(
            x as i32,
            y as i32,
            pixels.layout.width,
            pixels.layout.height,
        );
        if !rect.is_within((width, height)) {
            if let Some(console) = self.console_size {
                if rect.is_within(console) {
                    self.resize(console.0, console.1);
                }
            }
        }
        let (width, height) = self.size.unwrap_or((width, height));
        if let Err(outside) = validate::check_within(rect, (width, height)) {
            if x >= width || y >= height {
                return Err(outside);
            }
            tracing::warn!("cutting Update from QEMU to the surface: {outside}");
        }
        let visible = Rect {
            width: rect.width.min(width - x),
            height: rect.height.min(height - y),
            ..rect
        };
        self.changed(visible);
        let bpp = format.bytes_per_pixel as usize;
        for row in 0..visible.height {
            let src = &pixels.row(row)[..visible.width as usize * bpp];
            let _ = decode_into(&mut self.work, format, x, y + row, src, visible.width);
        }
        Ok(())
    }

    /// A new surface in shared memory, read whole now.
    pub fn scanout_map(&mut self, map: SharedMap) -> Result<(), InvalidInput> {
        let l = map.layout;
        if self.size != Some((l.width, l.height)) {
            self.reset(l.width, l.height);
        }
        self.source = Source::Mapped(map);
        self.read_map(full(l.width, l.height))
    }

    /// The shared memory changed in `rect`: read it now.
    pub fn update_map(&mut self, rect: Rect) -> Result<(), InvalidInput> {
        match &self.source {
            Source::Mapped(map) => {
                validate::check_within(rect, (map.layout.width, map.layout.height))?
            }
            _ => return Err(InvalidInput::NoScanout),
        }
        self.read_map(rect)
    }

    /// Reads and decodes `rect` of the map. A file QEMU shrank fails the
    /// read: the map is dropped (the picture keeps what was read), and the
    /// next `UpdateMap` is refused until a new `ScanoutMap`.
    fn read_map(&mut self, rect: Rect) -> Result<(), InvalidInput> {
        let Source::Mapped(map) = &self.source else {
            return Err(InvalidInput::NoScanout);
        };
        let l = map.layout;
        let bpp = l.format.bytes_per_pixel as usize;
        let stride = l.stride as usize;
        let per_read = (READ_CHUNK / stride).max(1) as u32;
        // Within the map (checked by the callers): origin and end are exact.
        let ((x, mut first), (_, bottom)) = (rect.origin(), rect.end());
        let mut result = Ok(());
        while first < bottom {
            let count = per_read.min(bottom - first);
            if let Err(why) = map.read_rows(first, count, &mut self.scratch) {
                result = Err(why);
                break;
            }
            for i in 0..count as usize {
                let start = i * stride + x as usize * bpp;
                let src = &self.scratch[start..start + rect.width as usize * bpp];
                let _ = decode_into(
                    &mut self.work,
                    l.format,
                    x,
                    first + i as u32,
                    src,
                    rect.width,
                );
            }
            first += count;
        }
        self.changed(rect);
        if result.is_err() {
            self.source = Source::Copies(l.format);
        }
        result
    }

    /// Blank until the next scanout.
    pub fn disable(&mut self) {
        self.source = Source::Blank;
        if let Some((w, h)) = self.size {
            self.reset(w, h);
        }
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

    /// The console's size changed: keep what overlaps, black elsewhere. A
    /// shared-memory surface has its size from QEMU's map and waits for the
    /// next `ScanoutMap`.
    pub fn resize(&mut self, width: u32, height: u32) {
        if self.size == Some((width, height)) || matches!(self.source, Source::Mapped(_)) {
            return;
        }
        let mut grown = RgbaFrame::default();
        grown.reset(width, height);
        let copy = self.work.width.min(width) as usize * 4;
        for y in 0..self.work.height.min(height) {
            grown.row_mut(y)[..copy].copy_from_slice(&row(&self.work, y)[..copy]);
        }
        self.work = grown;
        self.size = Some((width, height));
        self.changed(full(width, height));
    }

    /// The source went away: no picture until the next scanout. Versions
    /// go on counting (outputs hold pictures of the old ones).
    pub fn forget(&mut self) {
        self.source = Source::Blank;
        self.size = None;
        self.console_size = None;
        self.work = RgbaFrame::default();
        self.changed(full(0, 0));
    }

    /// What changed since `version`: `Some(None)` nothing, `None` more than
    /// the history knows.
    fn damage_since(&self, version: u64) -> Option<Option<Rect>> {
        if version == self.version {
            return Some(None);
        }
        let oldest = self.damage.front()?.0;
        if version + 1 < oldest || version > self.version {
            return None;
        }
        let rect = self
            .damage
            .iter()
            .filter(|(v, _)| *v > version)
            .map(|(_, r)| *r)
            .reduce(|a, b| a.union(&b));
        Some(rect)
    }

    /// Outside the shared lock: brings the spare buffer up to the current
    /// picture, copying only what changed since the picture it holds.
    pub fn prepare(&mut self) {
        let same_size = (self.spare.frame.width, self.spare.frame.height)
            == (self.work.width, self.work.height);
        let damage = self
            .spare
            .version
            .filter(|_| same_size)
            .and_then(|v| self.damage_since(v));
        let spare = &mut self.spare;
        match damage {
            Some(None) => {}
            Some(Some(rect)) => {
                let (w, h) = (self.work.width, self.work.height);
                let ((x0, y0), (x1, y1)) = (rect.origin(), rect.end());
                let (x0, x1) = (x0.min(w) as usize * 4, x1.min(w) as usize * 4);
                for y in y0.min(h)..y1.min(h) {
                    spare.frame.row_mut(y)[x0..x1].copy_from_slice(&row(&self.work, y)[x0..x1]);
                }
            }
            None => spare.frame.clone_from(&self.work),
        }
        spare.version = Some(self.version);
    }

    /// Under the shared lock: the spare buffer (see [`Painter::prepare`])
    /// becomes the newest picture, and the output's old one the spare.
    pub fn publish(&mut self, surface: &mut Surface) {
        std::mem::swap(&mut self.spare, &mut surface.picture);
        surface.latest = self.size.map(|size| (self.version, size));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dbus_interfaces::format::{PIXMAN_R5G6B5, PIXMAN_X8R8G8B8};
    use dbus_interfaces::Layout;

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

    /// The D-Bus side, the shared surface and an output, as the sink has them.
    #[derive(Default)]
    struct Sink {
        painter: Painter,
        surface: Surface,
        mine: SurfacePicture,
    }

    impl Sink {
        fn scanout(&mut self, (layout, data): (Layout, Vec<u8>)) {
            self.painter.scanout(&Pixels::new(layout, &data).unwrap());
        }

        fn update(
            &mut self,
            x: u32,
            y: u32,
            (layout, data): (Layout, Vec<u8>),
        ) -> Result<(), InvalidInput> {
            self.painter
                .update(x, y, &Pixels::new(layout, &data).unwrap())
        }

        /// Published, taken and composed (with the cursor) as an output does.
        fn shown(&mut self, cursor: bool) -> Option<RgbaFrame> {
            self.painter.prepare();
            self.painter.publish(&mut self.surface);
            if !self.surface.take_picture(&mut self.mine) {
                return None;
            }
            let mut argb = Vec::new();
            let at = self
                .surface
                .cursor_overlay()
                .filter(|_| cursor)
                .map(|c| c.to_owned_overlay(&mut argb));
            let mut frame = RgbaFrame::default();
            self.mine.compose(&mut frame, at.map(|at| (at, &argb[..])));
            Some(frame)
        }

        fn rendered(&mut self) -> RgbaFrame {
            self.shown(true).expect("a picture")
        }
    }

    #[test]
    fn scanout_then_update() {
        let mut s = Sink::default();
        s.scanout(xrgb(4, 3, |_, _| 0x00_10_20_30));
        s.update(1, 2, xrgb(2, 1, |_, _| 0x00_ff_00_00)).unwrap();
        let f = s.rendered();
        assert_eq!((f.width, f.height), (4, 3));
        assert_eq!(rgb_at(&f, 0, 0), [0x10, 0x20, 0x30]);
        assert_eq!(rgb_at(&f, 1, 2), [0xff, 0, 0]);
        assert_eq!(rgb_at(&f, 3, 2), [0x10, 0x20, 0x30]);
    }

    #[test]
    fn padded_scanout_rows_are_packed() {
        let layout = Layout::new(1, 2, 8, PIXMAN_X8R8G8B8).unwrap();
        let data = vec![1, 2, 3, 0, 9, 9, 9, 9, 4, 5, 6, 0];
        let mut s = Sink::default();
        s.scanout((layout, data));
        assert_eq!(rgb_at(&s.rendered(), 0, 1), [6, 5, 4]);
    }

    #[test]
    fn update_before_any_scanout_is_refused() {
        let mut s = Sink::default();
        assert_eq!(
            s.update(0, 0, xrgb(2, 1, |_, _| 0)),
            Err(InvalidInput::NoScanout)
        );
        assert!(s.shown(false).is_none());
    }

    #[test]
    fn updates_past_the_surface_are_cut_without_an_announced_size() {
        let mut s = Sink::default();
        s.scanout(xrgb(4, 4, |_, _| 0x00_01_01_01));
        s.update(2, 3, xrgb(6, 2, |_, _| 0x00_ff_ff_ff)).unwrap();
        assert_eq!(s.painter.size(), Some((4, 4)));
        let f = s.rendered();
        assert_eq!(rgb_at(&f, 1, 3), [1, 1, 1]);
        assert_eq!(rgb_at(&f, 3, 3), [255, 255, 255]);
        // Wholly outside: refused, nothing grows.
        assert!(matches!(
            s.update(16383, 16383, xrgb(1, 1, |_, _| 0)),
            Err(InvalidInput::RectOutsideSurface { .. })
        ));
        assert_eq!(s.painter.size(), Some((4, 4)));
    }

    #[test]
    fn updates_grow_the_surface_only_to_the_announced_console_size() {
        // Announced before the growing updates: they grow to it at once.
        let mut s = Sink::default();
        s.painter.set_console_size(6, 5);
        s.scanout(xrgb(4, 4, |_, _| 0x00_01_01_01));
        s.update(0, 4, xrgb(6, 1, |_, _| 0x00_ff_ff_ff)).unwrap();
        assert_eq!(s.painter.size(), Some((6, 5)));
        let f = s.rendered();
        assert_eq!((f.width, f.height), (6, 5));
        assert_eq!(rgb_at(&f, 3, 3), [1, 1, 1]);
        assert_eq!(rgb_at(&f, 5, 3), [0, 0, 0]);
        assert_eq!(rgb_at(&f, 5, 4), [255, 255, 255]);
        // Never beyond it, whatever the update claims.
        assert!(s.update(9000, 9000, xrgb(1, 1, |_, _| 0)).is_err());
        s.update(5, 4, xrgb(3, 3, |_, _| 0)).unwrap();
        assert_eq!(s.painter.size(), Some((6, 5)));
        // Announced after: the surface is cut to it.
        let mut s = Sink::default();
        s.scanout(xrgb(4, 4, |_, _| 0));
        assert!(s.painter.set_console_size(6, 3));
        assert_eq!(s.painter.size(), Some((6, 3)));
        assert_eq!(s.rendered().height, 3);
    }

    #[test]
    fn updates_in_another_format_are_refused() {
        let mut s = Sink::default();
        s.scanout(xrgb(2, 2, |_, _| 0));
        let layout = Layout::new(1, 1, 2, PIXMAN_R5G6B5).unwrap();
        assert!(s.update(0, 0, (layout, vec![0xff, 0xff])).is_err());
        assert_eq!(rgb_at(&s.rendered(), 0, 0), [0, 0, 0]);
    }

    #[test]
    fn disable_blanks_until_the_next_scanout() {
        let mut s = Sink::default();
        s.scanout(xrgb(2, 2, |_, _| 0x00_ff_ff_ff));
        s.painter.disable();
        assert_eq!(rgb_at(&s.rendered(), 1, 1), [0, 0, 0]);
        assert!(s.update(0, 0, xrgb(1, 1, |_, _| 0)).is_err());
    }

    #[test]
    fn update_map_outside_the_map_is_refused() {
        let mut s = Sink::default();
        assert!(s
            .painter
            .update_map(validate::rect_from_wire(0, 0, 1, 1).unwrap())
            .is_err());
    }

    fn memfd(bytes: &[u8]) -> std::os::fd::OwnedFd {
        let fd =
            nix::sys::memfd::memfd_create("surface-test", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
                .unwrap();
        nix::unistd::ftruncate(&fd, bytes.len() as i64).unwrap();
        nix::sys::uio::pwrite(&fd, bytes, 0).unwrap();
        fd
    }

    #[test]
    fn a_map_shrunk_under_the_sink_keeps_the_last_picture() {
        let (layout, data) = xrgb(8, 8, |x, y| 0x00_01_00_00 * (x + 8 * y));
        let fd = memfd(&data);
        let mut s = Sink::default();
        s.painter
            .scanout_map(SharedMap::new(fd.try_clone().unwrap(), 0, layout).unwrap())
            .unwrap();
        let before = s.rendered();
        assert_eq!(rgb_at(&before, 3, 2), [19, 0, 0]);
        // QEMU writes, then the map is read where it changed.
        nix::sys::uio::pwrite(&fd, &[0, 0, 0xff, 0], 4 * (8 * 2 + 3)).unwrap();
        s.painter
            .update_map(validate::rect_from_wire(3, 2, 1, 1).unwrap())
            .unwrap();
        assert_eq!(rgb_at(&s.rendered(), 3, 2), [255, 0, 0]);
        nix::unistd::ftruncate(&fd, 0).unwrap();
        let err = s
            .painter
            .update_map(validate::rect_from_wire(0, 0, 8, 8).unwrap())
            .unwrap_err();
        assert!(err.to_string().contains("shrank"), "{err}");
        // The map is gone; copies go on from the last picture.
        assert_eq!(
            s.painter
                .update_map(validate::rect_from_wire(0, 0, 1, 1).unwrap()),
            Err(InvalidInput::NoScanout)
        );
        s.update(0, 0, xrgb(1, 1, |_, _| 0x00_00_ff_00)).unwrap();
        let f = s.rendered();
        assert_eq!(rgb_at(&f, 0, 0), [0, 255, 0]);
        assert_eq!(rgb_at(&f, 3, 2), [255, 0, 0]);
        assert_eq!(rgb_at(&f, 7, 7), rgb_at(&before, 7, 7));
    }

    /// Buffers go round between the painter, the shared surface and the
    /// output, each brought up to date by copying only what changed: after
    /// any order of updates, publishes and takes (and more changes than the
    /// history holds), the output shows exactly what a fresh decode shows.
    #[test]
    fn pictures_handed_round_are_always_whole() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |n: u32| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % u64::from(n)) as u32
        };
        let (w, h) = (23, 17);
        let mut s = Sink::default();
        let mut truth = vec![0u32; (w * h) as usize];
        s.scanout(xrgb(w, h, |_, _| 0));
        for round in 0..2000 {
            let (x, y) = (next(w), next(h));
            let (uw, uh) = (1 + next(w - x), 1 + next(h - y));
            let colour = (round * 0x0001_0307) & 0x00ff_ffff;
            s.update(x, y, xrgb(uw, uh, |_, _| colour)).unwrap();
            for yy in y..y + uh {
                for xx in x..x + uw {
                    truth[(yy * w + xx) as usize] = colour;
                }
            }
            // Publish now and then; take now and then (the output may sit
            // on an old picture for many changes).
            if next(3) == 0 {
                s.painter.prepare();
                s.painter.publish(&mut s.surface);
            }
            if next(4) == 0 {
                let got = s.shown(false).unwrap();
                let (layout, data) = xrgb(w, h, |x, y| truth[(y * w + x) as usize]);
                let mut want = Sink::default();
                want.scanout((layout, data));
                assert_eq!(got, want.rendered(), "round {round}");
            }
        }
    }

    #[test]
    fn cursor_is_drawn_at_the_pointer_minus_hotspot() {
        let mut s = Sink::default();
        s.scanout(xrgb(4, 4, |_, _| 0));
        let red = [0u8, 0, 255, 255];
        s.surface.define_cursor(&Cursor {
            width: 1,
            height: 1,
            hot_x: 1,
            hot_y: 1,
            data: &red,
        });
        s.surface.set_pointer(3, 2, true);
        assert_eq!(rgb_at(&s.rendered(), 2, 1), [255, 0, 0]);
        assert_eq!(rgb_at(&s.shown(false).unwrap(), 2, 1), [0, 0, 0]);
        s.surface.set_pointer(3, 2, false);
        assert_eq!(rgb_at(&s.rendered(), 2, 1), [0, 0, 0]);
    }
}
