//! DMA-BUF → EGLImage: the format/modifier table the display supports, and
//! the import itself, every plane with its fd, offset and pitch.

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd};
use std::rc::Rc;

use dmabuf::{Dmabuf, DrmFourcc, DrmModifier};
use khronos_egl as khr;

use crate::egl::{has_extension, proc_address, Context};
use crate::gles::Gl;
use crate::{egl_err, RenderError};

const LINUX_DMA_BUF_EXT: khr::Enum = 0x3270;
const LINUX_DRM_FOURCC_EXT: khr::Attrib = 0x3271;
/// FD, OFFSET, PITCH, MODIFIER_LO, MODIFIER_HI for planes 0..3.
const PLANE_ATTRIBUTES: [[khr::Attrib; 5]; 4] = [
    [0x3272, 0x3273, 0x3274, 0x3443, 0x3444],
    [0x3275, 0x3276, 0x3277, 0x3445, 0x3446],
    [0x3278, 0x3279, 0x327A, 0x3447, 0x3448],
    [0x3440, 0x3441, 0x3442, 0x3449, 0x344A],
];

type QueryDmaBufFormats = unsafe extern "system" fn(
    dpy: *mut libc::c_void,
    max: i32,
    formats: *mut i32,
    count: *mut i32,
) -> u32;
type QueryDmaBufModifiers = unsafe extern "system" fn(
    dpy: *mut libc::c_void,
    format: i32,
    max: i32,
    modifiers: *mut u64,
    external_only: *mut u32,
    count: *mut i32,
) -> u32;

/// What the display can import: fourcc → (modifier, external-only).
#[derive(Debug, Clone, Default)]
pub struct FormatTable {
    formats: HashMap<u32, Vec<(DrmModifier, bool)>>,
    /// `EGL_EXT_image_dma_buf_import_modifiers`: explicit modifiers allowed.
    pub modifiers_supported: bool,
}

impl FormatTable {
    pub(crate) fn query(ctx: &Context) -> Result<FormatTable, RenderError> {
        if !has_extension(&ctx.extensions, "EGL_EXT_image_dma_buf_import") {
            return Err(RenderError::Unsupported(
                "the EGL display lacks EGL_EXT_image_dma_buf_import".into(),
            ));
        }
        let mut table = FormatTable::default();
        if !has_extension(&ctx.extensions, "EGL_EXT_image_dma_buf_import_modifiers") {
            return Ok(table);
        }
        table.modifiers_supported = true;
        // SAFETY: the prototypes from EGL_EXT_image_dma_buf_import_modifiers.
        let query_formats: QueryDmaBufFormats =
            unsafe { proc_address(&ctx.egl, "eglQueryDmaBufFormatsEXT")? };
        let query_modifiers: QueryDmaBufModifiers =
            unsafe { proc_address(&ctx.egl, "eglQueryDmaBufModifiersEXT")? };
        let dpy = ctx.display.as_ptr();
        let mut count = 0;
        // SAFETY: a count query (max 0, no array), then a fill of `count`.
        unsafe { query_formats(dpy, 0, std::ptr::null_mut(), &mut count) };
        let mut formats = vec![0i32; count.max(0) as usize];
        // SAFETY: `formats` holds `count` entries.
        unsafe { query_formats(dpy, count, formats.as_mut_ptr(), &mut count) };
        formats.truncate(count.max(0) as usize);
        for format in formats {
            let mut n = 0;
            // SAFETY: as above, per format. A driver may fail this for a
            // format it listed (NVIDIA): then it has no explicit modifiers.
            let ok = unsafe {
                query_modifiers(
                    dpy,
                    format,
                    0,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    &mut n,
                )
            };
            let mut modifiers = vec![0u64; n.max(0) as usize];
            let mut external = vec![0u32; n.max(0) as usize];
            if ok == khr::TRUE && n > 0 {
                // SAFETY: both arrays hold `n` entries.
                unsafe {
                    query_modifiers(
                        dpy,
                        format,
                        n,
                        modifiers.as_mut_ptr(),
                        external.as_mut_ptr(),
                        &mut n,
                    )
                };
            }
            let entries = modifiers
                .into_iter()
                .zip(external)
                .take(n.max(0) as usize)
                .map(|(m, e)| (DrmModifier::from(m), e != 0))
                .collect();
            table.formats.insert(format as u32, entries);
        }
        Ok(table)
    }

    /// Whether `fourcc` imports at all (with any or an implicit modifier).
    pub fn supports(&self, fourcc: DrmFourcc) -> bool {
        !self.modifiers_supported || self.formats.contains_key(&(fourcc as u32))
    }

    /// The modifiers listed for `fourcc`, with their external-only flag.
    pub fn modifiers(&self, fourcc: DrmFourcc) -> &[(DrmModifier, bool)] {
        self.formats
            .get(&(fourcc as u32))
            .map_or(&[], Vec::as_slice)
    }

    /// Must `fourcc` with `modifier` be sampled as `GL_TEXTURE_EXTERNAL_OES`?
    pub fn external_only(&self, fourcc: DrmFourcc, modifier: Option<DrmModifier>) -> bool {
        match modifier {
            Some(m) => self.modifiers(fourcc).iter().any(|&(x, ext)| x == m && ext),
            // Implicit: external only if every listed modifier is.
            None => {
                let list = self.modifiers(fourcc);
                !list.is_empty() && list.iter().all(|&(_, ext)| ext)
            }
        }
    }

    pub fn len(&self) -> usize {
        self.formats.len()
    }

    pub fn is_empty(&self) -> bool {
        self.formats.is_empty()
    }
}

/// An imported DMA-BUF: its EGLImage, bound to a texture; both freed on
/// drop (the DMA-BUF fds are the caller's).
#[derive(Debug)]
pub struct ImportedImage {
    pub(crate) gl: Rc<Gl>,
    pub(crate) image: khr::Image,
    pub(crate) texture: glow::Texture,
    /// `GL_TEXTURE_2D` or `GL_TEXTURE_EXTERNAL_OES`.
    pub(crate) target: u32,
    pub width: u32,
    pub height: u32,
    pub fourcc: DrmFourcc,
}

impl Drop for ImportedImage {
    fn drop(&mut self) {
        // SAFETY: a texture of this context, deleted once.
        unsafe { glow::HasContext::delete_texture(&**self.gl, self.texture) };
        self.gl.destroy_image(self.image);
    }
}

/// The `eglCreateImage` attributes for `buffer`, its modifier (explicit,
/// or `None` for implicit) checked against what the display imports.
pub(crate) fn image_attributes<F: AsFd>(
    buffer: &Dmabuf<F>,
    modifier: Option<DrmModifier>,
    table: &FormatTable,
) -> Result<Vec<khr::Attrib>, RenderError> {
    if buffer.planes.is_empty() || buffer.planes.len() > PLANE_ATTRIBUTES.len() {
        return Err(RenderError::Dmabuf(format!(
            "{} planes",
            buffer.planes.len()
        )));
    }
    if !table.supports(buffer.fourcc) {
        return Err(RenderError::Dmabuf(format!(
            "the display cannot import {:?}",
            buffer.fourcc
        )));
    }
    if let (Some(m), true) = (modifier, table.modifiers_supported) {
        if !table.modifiers(buffer.fourcc).iter().any(|&(x, _)| x == m) {
            return Err(RenderError::Dmabuf(format!(
                "modifier {:#x} is not importable for {:?}",
                u64::from(m),
                buffer.fourcc
            )));
        }
    }
    let mut attributes = vec![
        khr::WIDTH as khr::Attrib,
        buffer.width as khr::Attrib,
        khr::HEIGHT as khr::Attrib,
        buffer.height as khr::Attrib,
        LINUX_DRM_FOURCC_EXT,
        buffer.fourcc as u32 as khr::Attrib,
    ];
    for (plane, names) in buffer.planes.iter().zip(PLANE_ATTRIBUTES) {
        attributes.extend_from_slice(&[
            names[0],
            plane.fd.as_fd().as_raw_fd() as khr::Attrib,
            names[1],
            plane.offset as khr::Attrib,
            names[2],
            plane.stride as khr::Attrib,
        ]);
        if let (Some(m), true) = (modifier, table.modifiers_supported) {
            let m = u64::from(m);
            attributes.extend_from_slice(&[
                names[3],
                (m & 0xffff_ffff) as khr::Attrib,
                names[4],
                (m >> 32) as khr::Attrib,
            ]);
        }
    }
    attributes.push(khr::ATTRIB_NONE);
    Ok(attributes)
}

pub(crate) fn create_image(
    ctx: &Context,
    attributes: &[khr::Attrib],
) -> Result<khr::Image, RenderError> {
    // SAFETY: EGL_NO_CONTEXT and a null client buffer are what
    // EGL_LINUX_DMA_BUF_EXT requires; EGL dups the fds it keeps.
    ctx.egl
        .create_image(
            ctx.display,
            unsafe { khr::Context::from_ptr(khr::NO_CONTEXT) },
            LINUX_DMA_BUF_EXT,
            unsafe { khr::ClientBuffer::from_ptr(std::ptr::null_mut()) },
            attributes,
        )
        .map_err(egl_err("eglCreateImage(EGL_LINUX_DMA_BUF_EXT)"))
}
