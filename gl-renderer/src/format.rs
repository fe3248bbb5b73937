//! DRM fourcc → GL, once: how to upload CPU pixels of each format, and
//! whether its alpha byte means anything.

use drm_fourcc::DrmFourcc;

/// How GL takes pixels of a fourcc from memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GlUpload {
    pub internal_format: u32,
    pub format: u32,
    pub ty: u32,
    pub bytes_per_pixel: u32,
}

/// `GL_BGRA_EXT` (EXT_texture_format_BGRA8888; Mesa has it).
const BGRA_EXT: u32 = 0x80E1;

pub(crate) fn upload(fourcc: DrmFourcc) -> Option<GlUpload> {
    use DrmFourcc::*;
    let (internal_format, format, ty, bytes_per_pixel) = match fourcc {
        // Little-endian B, G, R, A/X bytes.
        Xrgb8888 | Argb8888 => (BGRA_EXT, BGRA_EXT, glow::UNSIGNED_BYTE, 4),
        // R, G, B, A/X bytes.
        Xbgr8888 | Abgr8888 => (glow::RGBA8, glow::RGBA, glow::UNSIGNED_BYTE, 4),
        Rgb565 => (glow::RGB565, glow::RGB, glow::UNSIGNED_SHORT_5_6_5, 2),
        _ => return None,
    };
    Some(GlUpload {
        internal_format,
        format,
        ty,
        bytes_per_pixel,
    })
}

/// Formats whose fourth byte is padding: sampled alpha must read as 1.
pub(crate) fn ignores_alpha(fourcc: DrmFourcc) -> bool {
    use DrmFourcc::*;
    matches!(
        fourcc,
        Xrgb8888 | Xbgr8888 | Bgrx8888 | Rgbx8888 | Rgb565 | Bgr565 | Rgb888 | Bgr888
    )
}
