//! Checks on everything QEMU (or the guest behind it) sends, before anything
//! is mapped or read. Each rule is one error variant, so the log line for a
//! dropped message says exactly which rule it broke.

use dmabuf::Rect;

use crate::format::{self, PixelFormat};

/// No surface, update or buffer may be larger than this in either direction.
pub const MAX_SURFACE_DIM: u32 = 16384;

/// The most padding a row may have beyond its pixels (the same for 2D
/// surfaces, shared memory and DMA-BUFs).
pub use dmabuf::MAX_ROW_PADDING;

/// The largest cursor image accepted in either direction (QEMU's are 64x64
/// or smaller).
pub const MAX_CURSOR_DIM: u32 = 1024;

/// Why a message from QEMU was dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidInput {
    #[error("unknown pixel format {0:#010x}")]
    UnknownFormat(u32),
    #[error("size {width}x{height} is zero or over the {MAX_SURFACE_DIM}x{MAX_SURFACE_DIM} cap")]
    BadSize { width: u32, height: u32 },
    #[error("stride {stride} is below width {width} x {bytes_per_pixel} bytes per pixel")]
    StrideTooSmall {
        stride: u32,
        width: u32,
        bytes_per_pixel: u32,
    },
    #[error("stride {stride} is over width {width} x {bytes_per_pixel} bytes per pixel + {MAX_ROW_PADDING} bytes of padding")]
    StrideTooLarge {
        stride: u32,
        width: u32,
        bytes_per_pixel: u32,
    },
    #[error("data is {len} bytes, {needed} needed for {height} rows of stride {stride}")]
    DataTooShort {
        len: usize,
        needed: u64,
        height: u32,
        stride: u32,
    },
    #[error("rectangle ({x},{y}) {width}x{height} is empty, negative or beyond the size cap")]
    BadRect {
        x: i32,
        y: i32,
        width: i32,
        height: i32,
    },
    #[error("rectangle ({x},{y}) {width}x{height} lies outside the {surface_width}x{surface_height} surface")]
    RectOutsideSurface {
        x: i32,
        y: i32,
        width: u32,
        height: u32,
        surface_width: u32,
        surface_height: u32,
    },
    #[error("update in format {update:#010x} on a surface in {surface:#010x} (DRM fourccs)")]
    FormatMismatch { update: u32, surface: u32 },
    #[error("update with no current scanout")]
    NoScanout,
    #[error("shared memory: {0}")]
    Map(String),
    #[error("DMA-BUF: {0}")]
    Dmabuf(String),
    #[error("DMA-BUF: {0}")]
    Buffer(#[from] dmabuf::DmabufError),
    #[error("cursor {width}x{height} is zero or over {MAX_CURSOR_DIM}x{MAX_CURSOR_DIM}, or its data is {len} bytes")]
    BadCursor { width: i32, height: i32, len: usize },
}

/// Checks a rectangle as QEMU sends it (`iiii`): a non-negative origin
/// and a non-zero size, all of it within the size cap.
pub fn rect_from_wire(x: i32, y: i32, width: i32, height: i32) -> Result<Rect, InvalidInput> {
    let bad = InvalidInput::BadRect {
        x,
        y,
        width,
        height,
    };
    let (Ok(ux), Ok(uy), Ok(uw), Ok(uh)) = (
        u32::try_from(x),
        u32::try_from(y),
        u32::try_from(width),
        u32::try_from(height),
    ) else {
        return Err(bad);
    };
    if uw == 0 || uh == 0 || ux + uw > MAX_SURFACE_DIM || uy + uh > MAX_SURFACE_DIM {
        // ux, uy < 2^31 and uw, uh < 2^31: the sums cannot overflow u32.
        return Err(bad);
    }
    Ok(Rect::new(x, y, uw, uh))
}

/// Checks that `rect` lies within a surface of `size`.
pub fn check_within(rect: Rect, size: (u32, u32)) -> Result<(), InvalidInput> {
    if rect.is_within(size) {
        Ok(())
    } else {
        Err(InvalidInput::RectOutsideSurface {
            x: rect.x,
            y: rect.y,
            width: rect.width,
            height: rect.height,
            surface_width: size.0,
            surface_height: size.1,
        })
    }
}

/// Checks a cursor image as QEMU sends it (`ii` size, then ARGB words).
pub fn check_cursor(width: i32, height: i32, len: usize) -> Result<(u32, u32), InvalidInput> {
    let dim = |d: i32| {
        u32::try_from(d)
            .ok()
            .filter(|d| (1..=MAX_CURSOR_DIM).contains(d))
    };
    match (dim(width), dim(height)) {
        (Some(w), Some(h)) if len >= w as usize * h as usize * 4 => Ok((w, h)),
        _ => Err(InvalidInput::BadCursor { width, height, len }),
    }
}

/// Checks a stride against its row: at least the row, at most the row plus
/// [`MAX_ROW_PADDING`].
pub fn check_stride(stride: u32, width: u32, bytes_per_pixel: u32) -> Result<(), InvalidInput> {
    let row = u64::from(width) * u64::from(bytes_per_pixel);
    if u64::from(stride) < row {
        return Err(InvalidInput::StrideTooSmall {
            stride,
            width,
            bytes_per_pixel,
        });
    }
    if u64::from(stride) > row + u64::from(MAX_ROW_PADDING) {
        return Err(InvalidInput::StrideTooLarge {
            stride,
            width,
            bytes_per_pixel,
        });
    }
    Ok(())
}

/// Checks a surface size against the cap.
pub fn check_size(width: u32, height: u32) -> Result<(), InvalidInput> {
    if width == 0 || height == 0 || width > MAX_SURFACE_DIM || height > MAX_SURFACE_DIM {
        Err(InvalidInput::BadSize { width, height })
    } else {
        Ok(())
    }
}

/// The layout of a `width` x `height` image with `stride` bytes per row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub width: u32,
    pub height: u32,
    pub stride: u32,
    pub format: PixelFormat,
}

impl Layout {
    /// Checks size, format and stride; the result can address its rows safely
    /// in any buffer of at least [`Layout::min_len`] bytes.
    pub fn new(width: u32, height: u32, stride: u32, pixman: u32) -> Result<Layout, InvalidInput> {
        let format = format::from_pixman(pixman).ok_or(InvalidInput::UnknownFormat(pixman))?;
        Layout::with_format(width, height, stride, format)
    }

    pub fn with_format(
        width: u32,
        height: u32,
        stride: u32,
        format: PixelFormat,
    ) -> Result<Layout, InvalidInput> {
        check_size(width, height)?;
        check_stride(stride, width, format.bytes_per_pixel)?;
        Ok(Layout {
            width,
            height,
            stride,
            format,
        })
    }

    /// Bytes of one row's pixels (without padding).
    pub fn row_bytes(&self) -> usize {
        self.width as usize * self.format.bytes_per_pixel as usize
    }

    /// The fewest bytes that hold every row: the last one needs no padding.
    pub fn min_len(&self) -> u64 {
        u64::from(self.stride) * u64::from(self.height - 1) + self.row_bytes() as u64
    }

    /// Checks that `len` bytes hold the image.
    pub fn check_len(&self, len: usize) -> Result<(), InvalidInput> {
        if (len as u64) < self.min_len() {
            Err(InvalidInput::DataTooShort {
                len,
                needed: self.min_len(),
                height: self.height,
                stride: self.stride,
            })
        } else {
            Ok(())
        }
    }
}

/// Pixels borrowed from a message, checked to hold the whole image.
#[derive(Debug, Clone, Copy)]
pub struct Pixels<'a> {
    pub layout: Layout,
    data: &'a [u8],
}

impl<'a> Pixels<'a> {
    pub fn new(layout: Layout, data: &'a [u8]) -> Result<Pixels<'a>, InvalidInput> {
        layout.check_len(data.len())?;
        Ok(Pixels { layout, data })
    }

    /// Row `y` (`y < height`): exactly `row_bytes` bytes.
    pub fn row(&self, y: u32) -> &'a [u8] {
        let start = y as usize * self.layout.stride as usize;
        &self.data[start..start + self.layout.row_bytes()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{PIXMAN_R5G6B5, PIXMAN_X8R8G8B8};

    #[test]
    fn layout_rejects_zero_absurd_and_short_strides() {
        assert!(matches!(
            Layout::new(0, 10, 40, PIXMAN_X8R8G8B8),
            Err(InvalidInput::BadSize { .. })
        ));
        assert!(matches!(
            Layout::new(10, 0, 40, PIXMAN_X8R8G8B8),
            Err(InvalidInput::BadSize { .. })
        ));
        assert!(matches!(
            Layout::new(16385, 10, 65540, PIXMAN_X8R8G8B8),
            Err(InvalidInput::BadSize { .. })
        ));
        assert!(matches!(
            Layout::new(10, 10, 39, PIXMAN_X8R8G8B8),
            Err(InvalidInput::StrideTooSmall { .. })
        ));
        assert!(matches!(
            Layout::new(10, 10, 40, 0x1234_5678),
            Err(InvalidInput::UnknownFormat(0x1234_5678))
        ));
        assert!(Layout::new(16384, 16384, 65536, PIXMAN_X8R8G8B8).is_ok());
        assert!(Layout::new(10, 10, 20, PIXMAN_R5G6B5).is_ok());
    }

    #[test]
    fn strides_are_bounded_by_the_row_and_its_padding() {
        assert!(Layout::new(640, 480, 2560 + MAX_ROW_PADDING, PIXMAN_X8R8G8B8).is_ok());
        assert!(matches!(
            Layout::new(640, 480, 2561 + MAX_ROW_PADDING, PIXMAN_X8R8G8B8),
            Err(InvalidInput::StrideTooLarge { .. })
        ));
        // The largest surface's rows: no overflow at the top of the range.
        assert!(Layout::new(16384, 1, u32::MAX, PIXMAN_X8R8G8B8).is_err());
        assert!(check_stride(u32::MAX, 16384, 4).is_err());
        assert!(check_stride(65536 + MAX_ROW_PADDING, 16384, 4).is_ok());
    }

    #[test]
    fn cursors_up_to_the_cap_and_the_message_names_it() {
        let full = |w: i32, h: i32| (w * h * 4) as usize;
        assert_eq!(check_cursor(1024, 1024, full(1024, 1024)), Ok((1024, 1024)));
        assert_eq!(check_cursor(1, 1, 4), Ok((1, 1)));
        for (w, h) in [(1025, 1), (1, 1025), (0, 1), (-1, 4), (i32::MIN, 1)] {
            let err = check_cursor(w, h, usize::MAX).unwrap_err();
            assert!(err.to_string().contains("over 1024x1024"), "{err}");
        }
        assert!(check_cursor(8, 8, full(8, 8) - 1).is_err());
    }

    #[test]
    fn pixels_need_every_row_but_not_the_last_padding() {
        let layout = Layout::new(2, 3, 16, PIXMAN_X8R8G8B8).unwrap();
        assert_eq!(layout.min_len(), 16 * 2 + 8);
        assert!(matches!(
            Pixels::new(layout, &[0; 39]),
            Err(InvalidInput::DataTooShort {
                len: 39,
                needed: 40,
                ..
            })
        ));
        let data: Vec<u8> = (0..40).collect();
        let pixels = Pixels::new(layout, &data).unwrap();
        assert_eq!(pixels.row(2), &data[32..40]);
    }

    #[test]
    fn rects_must_be_positive_and_within_the_cap() {
        assert!(rect_from_wire(-1, 0, 10, 10).is_err());
        assert!(rect_from_wire(0, -5, 10, 10).is_err());
        assert!(rect_from_wire(0, 0, -10, 10).is_err());
        assert!(rect_from_wire(0, 0, 0, 10).is_err());
        assert!(rect_from_wire(0, 0, 10, 0).is_err());
        assert!(rect_from_wire(i32::MAX, 0, i32::MAX, 1).is_err());
        assert!(rect_from_wire(16000, 0, 385, 1).is_err());
        let r = rect_from_wire(16000, 1, 384, 2).unwrap();
        assert_eq!((r.right(), r.bottom()), (16384, 3));
        assert!(check_within(r, (16384, 3)).is_ok());
        assert!(matches!(
            check_within(r, (16384, 2)),
            Err(InvalidInput::RectOutsideSurface { .. })
        ));
    }
}
