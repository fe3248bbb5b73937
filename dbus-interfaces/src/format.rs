//! Pixman format codes, as QEMU sends them in `Scanout`, `Update` and
//! `ScanoutMap`, become DRM fourccs here, once. Nothing behind the D-Bus edge
//! sees a pixman code.

use drm_fourcc::DrmFourcc;

/// `PIXMAN_FORMAT(bpp, type, a, r, g, b)`, as in QEMU's `pixman-minimal.h`.
const fn pixman(bpp: u32, ty: u32, a: u32, r: u32, g: u32, b: u32) -> u32 {
    (bpp << 24) | (ty << 16) | (a << 12) | (r << 8) | (g << 4) | b
}

const TYPE_ARGB: u32 = 2;
const TYPE_ABGR: u32 = 3;
const TYPE_BGRA: u32 = 8;
const TYPE_RGBA: u32 = 9;

pub const PIXMAN_X8R8G8B8: u32 = pixman(32, TYPE_ARGB, 0, 8, 8, 8);
pub const PIXMAN_A8R8G8B8: u32 = pixman(32, TYPE_ARGB, 8, 8, 8, 8);
pub const PIXMAN_X8B8G8R8: u32 = pixman(32, TYPE_ABGR, 0, 8, 8, 8);
pub const PIXMAN_A8B8G8R8: u32 = pixman(32, TYPE_ABGR, 8, 8, 8, 8);
pub const PIXMAN_B8G8R8X8: u32 = pixman(32, TYPE_BGRA, 0, 8, 8, 8);
pub const PIXMAN_B8G8R8A8: u32 = pixman(32, TYPE_BGRA, 8, 8, 8, 8);
pub const PIXMAN_R8G8B8X8: u32 = pixman(32, TYPE_RGBA, 0, 8, 8, 8);
pub const PIXMAN_R8G8B8A8: u32 = pixman(32, TYPE_RGBA, 8, 8, 8, 8);
pub const PIXMAN_R8G8B8: u32 = pixman(24, TYPE_ARGB, 0, 8, 8, 8);
pub const PIXMAN_B8G8R8: u32 = pixman(24, TYPE_ABGR, 0, 8, 8, 8);
pub const PIXMAN_R5G6B5: u32 = pixman(16, TYPE_ARGB, 0, 5, 6, 5);
pub const PIXMAN_B5G6R5: u32 = pixman(16, TYPE_ABGR, 0, 5, 6, 5);

/// Pixman codes are host-endian packed words; the DRM fourccs below name the
/// same little-endian memory layout.
const TABLE: &[(u32, DrmFourcc)] = &[
    (PIXMAN_X8R8G8B8, DrmFourcc::Xrgb8888),
    (PIXMAN_A8R8G8B8, DrmFourcc::Argb8888),
    (PIXMAN_X8B8G8R8, DrmFourcc::Xbgr8888),
    (PIXMAN_A8B8G8R8, DrmFourcc::Abgr8888),
    (PIXMAN_B8G8R8X8, DrmFourcc::Bgrx8888),
    (PIXMAN_B8G8R8A8, DrmFourcc::Bgra8888),
    (PIXMAN_R8G8B8X8, DrmFourcc::Rgbx8888),
    (PIXMAN_R8G8B8A8, DrmFourcc::Rgba8888),
    (PIXMAN_R8G8B8, DrmFourcc::Rgb888),
    (PIXMAN_B8G8R8, DrmFourcc::Bgr888),
    (PIXMAN_R5G6B5, DrmFourcc::Rgb565),
    (PIXMAN_B5G6R5, DrmFourcc::Bgr565),
];

/// A pixel format the sink understands: the DRM fourcc and its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PixelFormat {
    pub fourcc: DrmFourcc,
    pub bytes_per_pixel: u32,
}

/// Maps a pixman code to the DRM fourcc with the same memory layout, or
/// `None` for a format the sink does not handle.
pub fn from_pixman(code: u32) -> Option<PixelFormat> {
    let fourcc = TABLE.iter().find(|(p, _)| *p == code)?.1;
    Some(PixelFormat {
        fourcc,
        bytes_per_pixel: code >> 27, // bpp / 8: the top byte of the code is bits per pixel
    })
}

/// The pixman code QEMU would send for `fourcc` (for test producers).
pub fn to_pixman(fourcc: DrmFourcc) -> Option<u32> {
    TABLE.iter().find(|(_, f)| *f == fourcc).map(|(p, _)| *p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_values_match_the_protocol_notes() {
        assert_eq!(PIXMAN_X8R8G8B8, 0x2002_0888);
        assert_eq!(PIXMAN_A8R8G8B8, 0x2002_8888);
        assert_eq!(PIXMAN_X8B8G8R8, 0x2003_0888);
        assert_eq!(PIXMAN_B8G8R8X8, 0x2008_0888);
        assert_eq!(PIXMAN_R5G6B5, 0x1002_0565);
        assert_eq!(PIXMAN_R8G8B8, 0x1802_0888);
    }

    #[test]
    fn maps_to_fourcc_and_size() {
        let f = from_pixman(PIXMAN_X8R8G8B8).unwrap();
        assert_eq!((f.fourcc, f.bytes_per_pixel), (DrmFourcc::Xrgb8888, 4));
        let f = from_pixman(PIXMAN_R5G6B5).unwrap();
        assert_eq!((f.fourcc, f.bytes_per_pixel), (DrmFourcc::Rgb565, 2));
        let f = from_pixman(PIXMAN_B8G8R8).unwrap();
        assert_eq!((f.fourcc, f.bytes_per_pixel), (DrmFourcc::Bgr888, 3));
        for (code, fourcc) in TABLE {
            assert_eq!(to_pixman(*fourcc), Some(*code));
        }
    }

    #[test]
    fn unknown_codes_are_refused() {
        assert!(from_pixman(0).is_none());
        assert!(from_pixman(0x2002_0889).is_none());
        assert!(from_pixman(u32::MAX).is_none());
    }
}
