//! EGL and GLES on the software device of `EGL_EXT_platform_device`, for
//! lab tests that import DMA-BUFs and read back what GL sees.
//!
//! Why the device platform: with a DRM node in use Mesa picks kms_swrast,
//! which maps imported buffers with `MODE_MAP_DUMB` and reads zeros (or
//! crashes llvmpipe). The device with `EGL_MESA_device_software` renders
//! with llvmpipe on plain memory and imports exactly (see LAB.md).

use std::ffi::{c_char, c_void, CStr};
use std::os::fd::{AsRawFd, BorrowedFd};

use anyhow::{bail, ensure, Context as _};
use capture::RgbaFrame;
use drm::buffer::DrmModifier;
use glow::HasContext;
use khronos_egl as egl;

use crate::dmabuf::Layout;

// Extension constants (eglext.h); khronos-egl has only the core ones.
const PLATFORM_DEVICE_EXT: egl::Enum = 0x313F;
const DRM_DEVICE_FILE_EXT: egl::Int = 0x3233;
const LINUX_DMA_BUF_EXT: egl::Enum = 0x3270;
const LINUX_DRM_FOURCC_EXT: egl::Attrib = 0x3271;
const DMA_BUF_PLANE0_FD_EXT: egl::Attrib = 0x3272;
const DMA_BUF_PLANE0_OFFSET_EXT: egl::Attrib = 0x3273;
const DMA_BUF_PLANE0_PITCH_EXT: egl::Attrib = 0x3274;
const DMA_BUF_PLANE0_MODIFIER_LO_EXT: egl::Attrib = 0x3443;
const DMA_BUF_PLANE0_MODIFIER_HI_EXT: egl::Attrib = 0x3444;

type EglDevice = *mut c_void;
type QueryDevicesExt = unsafe extern "system" fn(
    max_devices: egl::Int,
    devices: *mut EglDevice,
    num_devices: *mut egl::Int,
) -> egl::Boolean;
type QueryDeviceStringExt =
    unsafe extern "system" fn(device: EglDevice, name: egl::Int) -> *const c_char;
type ImageTargetTexture2dOes = unsafe extern "system" fn(target: u32, image: *const c_void);

/// Looks up an extension function and casts it to its real type `F`.
///
/// # Safety
/// `F` must be the function pointer type of `name`'s C prototype.
unsafe fn proc_address<F: Copy>(
    egl: &egl::DynamicInstance<egl::EGL1_5>,
    name: &str,
) -> anyhow::Result<F> {
    const { assert!(std::mem::size_of::<F>() == std::mem::size_of::<extern "system" fn()>()) };
    let f = egl
        .get_proc_address(name)
        .with_context(|| format!("eglGetProcAddress({name}) found nothing"))?;
    // SAFETY: same size (checked above); the caller vouches for the type.
    Ok(unsafe { std::mem::transmute_copy::<extern "system" fn(), F>(&f) })
}

fn has_extension(list: &str, name: &str) -> bool {
    list.split_ascii_whitespace().any(|e| e == name)
}

/// A GLES 3 context, current on the creating thread, on the software EGL
/// device, without surfaces or configs.
pub struct SoftwareEgl {
    egl: egl::DynamicInstance<egl::EGL1_5>,
    display: egl::Display,
    context: egl::Context,
    gl: glow::Context,
    image_target_texture_2d: ImageTargetTexture2dOes,
    /// The chosen device's extensions.
    pub device_extensions: String,
    /// `GL_RENDERER`, e.g. "llvmpipe (LLVM 15.0.7, 256 bits)".
    pub renderer: String,
    /// `GL_VERSION`.
    pub version: String,
}

impl SoftwareEgl {
    pub fn new() -> anyhow::Result<SoftwareEgl> {
        // SAFETY: loads libEGL.so.1, whose initialisers are trusted like any
        // system library's.
        let egl = unsafe { egl::DynamicInstance::<egl::EGL1_5>::load_required() }
            .context("loading libEGL.so.1 (EGL 1.5)")?;
        let client = egl
            .query_string(None, egl::EXTENSIONS)
            .context("eglQueryString(EGL_NO_DISPLAY, EGL_EXTENSIONS)")?
            .to_string_lossy()
            .into_owned();
        for needed in ["EGL_EXT_device_enumeration", "EGL_EXT_platform_device"] {
            ensure!(
                has_extension(&client, needed),
                "EGL lacks {needed} (client extensions: {client})"
            );
        }
        // SAFETY: the prototypes from EGL_EXT_device_enumeration/_query.
        let query_devices: QueryDevicesExt = unsafe { proc_address(&egl, "eglQueryDevicesEXT")? };
        let query_device_string: QueryDeviceStringExt =
            unsafe { proc_address(&egl, "eglQueryDeviceStringEXT")? };

        let mut count: egl::Int = 0;
        // SAFETY: with max_devices 0 and no array, only the count is written.
        let ok = unsafe { query_devices(0, std::ptr::null_mut(), &mut count) };
        ensure!(ok == egl::TRUE, "eglQueryDevicesEXT (count) failed");
        let mut devices: Vec<EglDevice> = vec![std::ptr::null_mut(); count.max(0) as usize];
        // SAFETY: `devices` has room for `count` handles.
        let ok = unsafe { query_devices(count, devices.as_mut_ptr(), &mut count) };
        ensure!(ok == egl::TRUE, "eglQueryDevicesEXT failed");
        devices.truncate(count.max(0) as usize);

        let device_string = |device: EglDevice, name: egl::Int| -> Option<String> {
            // SAFETY: `device` came from eglQueryDevicesEXT; the result is
            // NULL or a NUL-terminated string owned by EGL.
            let s = unsafe { query_device_string(device, name) };
            // SAFETY: non-null strings from EGL are NUL-terminated and live
            // as long as the device.
            (!s.is_null()).then(|| unsafe { CStr::from_ptr(s) }.to_string_lossy().into_owned())
        };
        let mut seen = Vec::new();
        let mut chosen = None;
        for &device in &devices {
            let extensions = device_string(device, egl::EXTENSIONS).unwrap_or_default();
            if has_extension(&extensions, "EGL_MESA_device_software") {
                chosen = Some((device, extensions));
                break;
            }
            seen.push(
                device_string(device, DRM_DEVICE_FILE_EXT)
                    .unwrap_or_else(|| format!("[{extensions}]")),
            );
        }
        let Some((device, device_extensions)) = chosen else {
            bail!("no EGL device has EGL_MESA_device_software (devices: {seen:?})");
        };

        // SAFETY: for EGL_PLATFORM_DEVICE_EXT the native display is an
        // EGLDeviceEXT from eglQueryDevicesEXT.
        let display =
            unsafe { egl.get_platform_display(PLATFORM_DEVICE_EXT, device, &[egl::ATTRIB_NONE]) }
                .context("eglGetPlatformDisplay(EGL_PLATFORM_DEVICE_EXT)")?;
        egl.initialize(display).context("eglInitialize")?;
        let display_extensions = egl
            .query_string(Some(display), egl::EXTENSIONS)
            .context("eglQueryString(EGL_EXTENSIONS)")?
            .to_string_lossy()
            .into_owned();
        for needed in [
            "EGL_EXT_image_dma_buf_import",
            "EGL_EXT_image_dma_buf_import_modifiers",
            "EGL_KHR_no_config_context",
            "EGL_KHR_surfaceless_context",
        ] {
            ensure!(
                has_extension(&display_extensions, needed),
                "the software EGL display lacks {needed}"
            );
        }
        egl.bind_api(egl::OPENGL_ES_API).context("eglBindAPI")?;
        // SAFETY: EGL_NO_CONFIG_KHR (null) is valid with EGL_KHR_no_config_context.
        let no_config = unsafe { egl::Config::from_ptr(std::ptr::null_mut()) };
        let context = egl
            .create_context(
                display,
                no_config,
                None,
                &[egl::CONTEXT_MAJOR_VERSION, 3, egl::NONE],
            )
            .context("eglCreateContext (GLES 3, configless)")?;
        egl.make_current(display, None, None, Some(context))
            .context("eglMakeCurrent (surfaceless)")?;

        // SAFETY: the prototype from GL_OES_EGL_image.
        let image_target_texture_2d: ImageTargetTexture2dOes =
            unsafe { proc_address(&egl, "glEGLImageTargetTexture2DOES")? };
        // SAFETY: a context is current on this thread; the loader returns
        // GLES entry points of that context (or null for unknown names).
        let gl = unsafe {
            glow::Context::from_loader_function(|name| {
                egl.get_proc_address(name)
                    .map_or(std::ptr::null(), |f| f as *const c_void)
            })
        };
        // SAFETY: plain queries on the current context.
        let (renderer, version) = unsafe {
            (
                gl.get_parameter_string(glow::RENDERER),
                gl.get_parameter_string(glow::VERSION),
            )
        };
        Ok(SoftwareEgl {
            egl,
            display,
            context,
            gl,
            image_target_texture_2d,
            device_extensions,
            renderer,
            version,
        })
    }

    /// Imports a one-plane DMA-BUF as an EGLImage (with an explicit
    /// modifier), binds it to a texture, attaches that to a framebuffer and
    /// reads it back: the picture GL sees, top row (memory row 0) first.
    pub fn read_dmabuf(
        &self,
        dmabuf: BorrowedFd<'_>,
        layout: Layout,
        modifier: DrmModifier,
    ) -> anyhow::Result<RgbaFrame> {
        let modifier = u64::from(modifier);
        let attributes = [
            egl::WIDTH as egl::Attrib,
            layout.width as egl::Attrib,
            egl::HEIGHT as egl::Attrib,
            layout.height as egl::Attrib,
            LINUX_DRM_FOURCC_EXT,
            layout.fourcc as u32 as egl::Attrib,
            DMA_BUF_PLANE0_FD_EXT,
            dmabuf.as_raw_fd() as egl::Attrib,
            DMA_BUF_PLANE0_OFFSET_EXT,
            layout.offset as egl::Attrib,
            DMA_BUF_PLANE0_PITCH_EXT,
            layout.stride as egl::Attrib,
            DMA_BUF_PLANE0_MODIFIER_LO_EXT,
            (modifier & 0xffff_ffff) as egl::Attrib,
            DMA_BUF_PLANE0_MODIFIER_HI_EXT,
            (modifier >> 32) as egl::Attrib,
            egl::ATTRIB_NONE,
        ];
        // SAFETY: EGL_NO_CONTEXT and a null client buffer are what
        // EGL_LINUX_DMA_BUF_EXT requires; the fd is only read (EGL dups it).
        let image = self
            .egl
            .create_image(
                self.display,
                unsafe { egl::Context::from_ptr(egl::NO_CONTEXT) },
                LINUX_DMA_BUF_EXT,
                unsafe { egl::ClientBuffer::from_ptr(std::ptr::null_mut()) },
                &attributes,
            )
            .with_context(|| format!("eglCreateImage(EGL_LINUX_DMA_BUF_EXT, {layout:?})"))?;
        let picture = self.read_image(image, layout.width, layout.height);
        let destroyed = self.egl.destroy_image(self.display, image);
        let picture = picture?;
        destroyed.context("eglDestroyImage")?;
        Ok(picture)
    }

    fn read_image(&self, image: egl::Image, width: u32, height: u32) -> anyhow::Result<RgbaFrame> {
        let gl = &self.gl;
        // SAFETY: GL calls on this thread's current context with objects it
        // created; `image` is a live EGLImage of this display; the read
        // buffer holds width × height RGBA8 pixels (pack alignment 4).
        unsafe {
            let texture = gl.create_texture().map_err(anyhow::Error::msg)?;
            let framebuffer = gl.create_framebuffer().map_err(anyhow::Error::msg)?;
            gl.bind_texture(glow::TEXTURE_2D, Some(texture));
            (self.image_target_texture_2d)(glow::TEXTURE_2D, image.as_ptr());
            let bound = gl.get_error();
            gl.bind_framebuffer(glow::FRAMEBUFFER, Some(framebuffer));
            gl.framebuffer_texture_2d(
                glow::FRAMEBUFFER,
                glow::COLOR_ATTACHMENT0,
                glow::TEXTURE_2D,
                Some(texture),
                0,
            );
            let status = gl.check_framebuffer_status(glow::FRAMEBUFFER);
            let mut pixels = vec![0u8; width as usize * height as usize * 4];
            if bound == glow::NO_ERROR && status == glow::FRAMEBUFFER_COMPLETE {
                gl.read_pixels(
                    0,
                    0,
                    width as i32,
                    height as i32,
                    glow::RGBA,
                    glow::UNSIGNED_BYTE,
                    glow::PixelPackData::Slice(Some(&mut pixels)),
                );
            }
            let read = gl.get_error();
            gl.bind_framebuffer(glow::FRAMEBUFFER, None);
            gl.delete_framebuffer(framebuffer);
            gl.bind_texture(glow::TEXTURE_2D, None);
            gl.delete_texture(texture);
            ensure!(
                bound == glow::NO_ERROR,
                "glEGLImageTargetTexture2DOES: GL error {bound:#x}"
            );
            ensure!(
                status == glow::FRAMEBUFFER_COMPLETE,
                "framebuffer incomplete: {status:#x}"
            );
            ensure!(read == glow::NO_ERROR, "glReadPixels: GL error {read:#x}");
            // glReadPixels' row 0 is GL's y = 0, which is the image's memory
            // row 0 (LAB.md, "Orientation"): no flip.
            Ok(RgbaFrame {
                width,
                height,
                pixels,
            })
        }
    }
}

impl Drop for SoftwareEgl {
    fn drop(&mut self) {
        let _ = self.egl.make_current(self.display, None, None, None);
        let _ = self.egl.destroy_context(self.display, self.context);
        let _ = self.egl.terminate(self.display);
    }
}
