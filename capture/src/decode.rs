//! DRM fourcc → RGBA8, one row at a time. X bytes become opaque alpha;
//! 16-bit channels widen by bit replication, as pixman (and so QEMU's
//! `screendump`) does, so captures equal the ground truth exactly.

use drm_fourcc::DrmFourcc;

use crate::CaptureError;

pub use dmabuf::bytes_per_pixel;

/// Where each of R, G, B, A sits in a 4-byte little-endian pixel
/// (`None` for an X byte).
fn byte_order(fourcc: DrmFourcc) -> Option<([usize; 3], Option<usize>)> {
    use DrmFourcc::*;
    // DRM names the packed word from the high bits down; memory is little-endian.
    Some(match fourcc {
        Xrgb8888 => ([2, 1, 0], None),
        Argb8888 => ([2, 1, 0], Some(3)),
        Xbgr8888 => ([0, 1, 2], None),
        Abgr8888 => ([0, 1, 2], Some(3)),
        Bgrx8888 => ([1, 2, 3], None),
        Bgra8888 => ([1, 2, 3], Some(0)),
        Rgbx8888 => ([3, 2, 1], None),
        Rgba8888 => ([3, 2, 1], Some(0)),
        _ => return None,
    })
}

fn widen5(v: u16) -> u8 {
    let v = (v & 0x1f) as u8;
    (v << 3) | (v >> 2)
}

fn widen6(v: u16) -> u8 {
    let v = (v & 0x3f) as u8;
    (v << 2) | (v >> 4)
}

/// Decodes one row of `fourcc` pixels into RGBA8. `src` holds at least
/// `dst.len() / 4` pixels.
pub fn decode_row(fourcc: DrmFourcc, src: &[u8], dst: &mut [u8]) -> Result<(), CaptureError> {
    use DrmFourcc::*;
    if let Some((rgb, alpha)) = byte_order(fourcc) {
        for (d, s) in dst.chunks_exact_mut(4).zip(src.chunks_exact(4)) {
            d[0] = s[rgb[0]];
            d[1] = s[rgb[1]];
            d[2] = s[rgb[2]];
            d[3] = alpha.map_or(255, |a| s[a]);
        }
        return Ok(());
    }
    match fourcc {
        // RGB888 is [B, G, R] in memory; BGR888 is [R, G, B].
        Rgb888 | Bgr888 => {
            let order = if fourcc == Rgb888 {
                [2, 1, 0]
            } else {
                [0, 1, 2]
            };
            for (d, s) in dst.chunks_exact_mut(4).zip(src.chunks_exact(3)) {
                d[0] = s[order[0]];
                d[1] = s[order[1]];
                d[2] = s[order[2]];
                d[3] = 255;
            }
        }
        Rgb565 | Bgr565 => {
            for (d, s) in dst.chunks_exact_mut(4).zip(src.chunks_exact(2)) {
                let v = u16::from_le_bytes([s[0], s[1]]);
                let (hi, lo) = (widen5(v >> 11), widen5(v));
                let (r, b) = if fourcc == Rgb565 { (hi, lo) } else { (lo, hi) };
                d[0] = r;
                d[1] = widen6(v >> 5);
                d[2] = b;
                d[3] = 255;
            }
        }
        other => return Err(CaptureError::UnsupportedFormat(other)),
    }
    Ok(())
}

/// An RGBA8 picture, top row first, kept and reused between captures.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RgbaFrame {
    pub width: u32,
    pub height: u32,
    pub pixels: Vec<u8>,
}

impl RgbaFrame {
    /// Resizes (reusing the allocation) and fills with opaque black.
    pub fn reset(&mut self, width: u32, height: u32) {
        self.width = width;
        self.height = height;
        self.pixels.clear();
        self.pixels.resize(width as usize * height as usize * 4, 0);
        for px in self.pixels.chunks_exact_mut(4) {
            px[3] = 255;
        }
    }

    /// A fast fingerprint of size and pixels, to tell a changed picture
    /// from a re-sent one (QEMU refreshes unchanged text screens).
    pub fn fingerprint(&self) -> u64 {
        let mut hash =
            (u64::from(self.width) << 32 | u64::from(self.height)) ^ 0x9e37_79b9_7f4a_7c15;
        let mut chunks = self.pixels.chunks_exact(8);
        for chunk in &mut chunks {
            let word = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
            hash = (hash ^ word).wrapping_mul(0x100_0000_01b3).rotate_left(29);
        }
        for &byte in chunks.remainder() {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x100_0000_01b3);
        }
        hash
    }

    pub fn row_mut(&mut self, y: u32) -> &mut [u8] {
        let w = self.width as usize * 4;
        &mut self.pixels[y as usize * w..(y as usize + 1) * w]
    }

    /// Draws an ARGB8888 image with its top-left corner at (`x`, `y`),
    /// blended over what is there, clipped to the frame.
    pub fn blend_argb(&mut self, x: i64, y: i64, width: u32, height: u32, argb: &[u8]) {
        for row in 0..i64::from(height) {
            let ty = y + row;
            if ty < 0 || ty >= i64::from(self.height) {
                continue;
            }
            for col in 0..i64::from(width) {
                let tx = x + col;
                if tx < 0 || tx >= i64::from(self.width) {
                    continue;
                }
                let s = ((row * i64::from(width) + col) * 4) as usize;
                let Some(src) = argb.get(s..s + 4) else {
                    return;
                };
                let (b, g, r, a) = (src[0], src[1], src[2], u32::from(src[3]));
                let d = ((ty * i64::from(self.width) + tx) * 4) as usize;
                let dst = &mut self.pixels[d..d + 4];
                for (c, s) in dst.iter_mut().zip([r, g, b]) {
                    *c = ((u32::from(s) * a + u32::from(*c) * (255 - a) + 127) / 255) as u8;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(fourcc: DrmFourcc, src: &[u8]) -> Vec<u8> {
        let n = src.len() / bytes_per_pixel(fourcc).unwrap();
        let mut out = vec![0; n * 4];
        decode_row(fourcc, src, &mut out).unwrap();
        out
    }

    #[test]
    fn thirty_two_bit_orders() {
        // The packed word 0xAARRGGBB = 0x80102030 in little-endian memory.
        let argb = [0x30, 0x20, 0x10, 0x80];
        assert_eq!(decode(DrmFourcc::Xrgb8888, &argb), [0x10, 0x20, 0x30, 255]);
        assert_eq!(decode(DrmFourcc::Argb8888, &argb), [0x10, 0x20, 0x30, 0x80]);
        // 0xAABBGGRR
        let abgr = [0x10, 0x20, 0x30, 0x80];
        assert_eq!(decode(DrmFourcc::Xbgr8888, &abgr), [0x10, 0x20, 0x30, 255]);
        assert_eq!(decode(DrmFourcc::Abgr8888, &abgr), [0x10, 0x20, 0x30, 0x80]);
        // 0xBBGGRRAA
        let bgra = [0x80, 0x10, 0x20, 0x30];
        assert_eq!(decode(DrmFourcc::Bgrx8888, &bgra), [0x10, 0x20, 0x30, 255]);
        assert_eq!(decode(DrmFourcc::Bgra8888, &bgra), [0x10, 0x20, 0x30, 0x80]);
        // 0xRRGGBBAA
        let rgba = [0x80, 0x30, 0x20, 0x10];
        assert_eq!(decode(DrmFourcc::Rgbx8888, &rgba), [0x10, 0x20, 0x30, 255]);
        assert_eq!(decode(DrmFourcc::Rgba8888, &rgba), [0x10, 0x20, 0x30, 0x80]);
    }

    #[test]
    fn twenty_four_bit() {
        assert_eq!(
            decode(DrmFourcc::Rgb888, &[0x30, 0x20, 0x10]),
            [0x10, 0x20, 0x30, 255]
        );
        assert_eq!(
            decode(DrmFourcc::Bgr888, &[0x10, 0x20, 0x30]),
            [0x10, 0x20, 0x30, 255]
        );
    }

    #[test]
    fn rgb565_widens_by_bit_replication() {
        // r=0b10001, g=0b100001, b=0b00011
        let v: u16 = (0b10001 << 11) | (0b100001 << 5) | 0b00011;
        let out = decode(DrmFourcc::Rgb565, &v.to_le_bytes());
        assert_eq!(out, [0b1000_1100, 0b1000_0110, 0b0001_1000, 255]);
        assert_eq!(
            decode(DrmFourcc::Rgb565, &[0xff, 0xff]),
            [255, 255, 255, 255]
        );
        let out = decode(DrmFourcc::Bgr565, &v.to_le_bytes());
        assert_eq!(out, [0b0001_1000, 0b1000_0110, 0b1000_1100, 255]);
    }

    #[test]
    fn unknown_formats_are_an_error() {
        let mut out = [0; 4];
        assert!(decode_row(DrmFourcc::Nv12, &[0; 4], &mut out).is_err());
        assert!(bytes_per_pixel(DrmFourcc::Nv12).is_none());
    }

    #[test]
    fn fingerprint_sees_size_and_pixels() {
        let mut a = RgbaFrame::default();
        a.reset(4, 2);
        let mut b = RgbaFrame::default();
        b.reset(2, 4);
        assert_ne!(a.fingerprint(), b.fingerprint());
        let before = a.fingerprint();
        a.pixels[13] = 1;
        assert_ne!(a.fingerprint(), before);
        a.pixels[13] = 0;
        assert_eq!(a.fingerprint(), before);
    }

    #[test]
    fn cursor_blend_clips_and_mixes() {
        let mut frame = RgbaFrame::default();
        frame.reset(2, 2);
        // A 2x1 cursor: opaque red, half-transparent white; placed at (1, 1)
        // so that only the first pixel lands.
        let cursor = [0, 0, 255, 255, 255, 255, 255, 128];
        frame.blend_argb(1, 1, 2, 1, &cursor);
        assert_eq!(&frame.pixels[12..16], &[255, 0, 0, 255]);
        frame.blend_argb(-1, 0, 2, 1, &cursor);
        assert_eq!(&frame.pixels[0..4], &[128, 128, 128, 255]);
        assert_eq!(&frame.pixels[4..8], &[0, 0, 0, 255]);
    }
}
