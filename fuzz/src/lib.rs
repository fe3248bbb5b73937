//! What the fuzz targets share: reading typed fields off the fuzzer's bytes.

/// The fuzzer's bytes as a stream of fields; past the end, every field is 0.
pub struct Input<'a>(pub &'a [u8]);

impl<'a> Input<'a> {
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.0.len());
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        head
    }

    pub fn u8(&mut self) -> u8 {
        self.bytes(1).first().copied().unwrap_or(0)
    }

    pub fn u16(&mut self) -> u16 {
        let mut b = [0; 2];
        let got = self.bytes(2);
        b[..got.len()].copy_from_slice(got);
        u16::from_le_bytes(b)
    }

    pub fn u32(&mut self) -> u32 {
        let mut b = [0; 4];
        let got = self.bytes(4);
        b[..got.len()].copy_from_slice(got);
        u32::from_le_bytes(b)
    }

    pub fn i32(&mut self) -> i32 {
        self.u32() as i32
    }

    pub fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | (u64::from(self.u32()) << 32)
    }

    /// A size field: mostly small (what a real message holds), sometimes
    /// any 32-bit value (what a hostile one may claim).
    pub fn size(&mut self) -> u32 {
        match self.u8() % 4 {
            0 => self.u32(),
            _ => u32::from(self.u16() % 300),
        }
    }

    /// A 32-bit field that is mostly one of `known`, sometimes anything.
    pub fn one_of(&mut self, known: &[u32]) -> u32 {
        let pick = self.u8() as usize;
        match known.get(pick % (known.len() + 1)) {
            Some(&value) => value,
            None => self.u32(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

use dbus_interfaces::format::*;
use drm_fourcc::DrmFourcc;

/// The pixman codes the sink knows (anything else comes from `one_of`).
pub const PIXMAN_FORMATS: &[u32] = &[
    PIXMAN_X8R8G8B8,
    PIXMAN_A8R8G8B8,
    PIXMAN_X8B8G8R8,
    PIXMAN_A8B8G8R8,
    PIXMAN_B8G8R8X8,
    PIXMAN_B8G8R8A8,
    PIXMAN_R8G8B8X8,
    PIXMAN_R8G8B8A8,
    PIXMAN_R8G8B8,
    PIXMAN_B8G8R8,
    PIXMAN_R5G6B5,
    PIXMAN_B5G6R5,
];

/// DRM fourccs the sink decodes, and a few it does not.
pub const FOURCCS: &[u32] = &[
    DrmFourcc::Xrgb8888 as u32,
    DrmFourcc::Argb8888 as u32,
    DrmFourcc::Xbgr8888 as u32,
    DrmFourcc::Abgr8888 as u32,
    DrmFourcc::Bgrx8888 as u32,
    DrmFourcc::Bgra8888 as u32,
    DrmFourcc::Rgbx8888 as u32,
    DrmFourcc::Rgba8888 as u32,
    DrmFourcc::Rgb888 as u32,
    DrmFourcc::Bgr888 as u32,
    DrmFourcc::Rgb565 as u32,
    DrmFourcc::Bgr565 as u32,
    DrmFourcc::Nv12 as u32,
    DrmFourcc::Xrgb2101010 as u32,
];
