//! GLES: textures (uploaded or imported), output-sized targets, one textured
//! quad per composition, fences, readback.
//!
//! Orientation, everywhere in this crate: a target's memory row 0 is GL window
//! y = 0 and a texture's memory row 0 is t = 0, so rectangles are given in
//! memory rows (top = 0) and a top-down source needs no flip (LAB.md,
//! "Orientation"). Only a bottom-up (`y0_top`) source is flipped.

use std::ffi::c_void;
use std::os::fd::AsFd;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use capture::RgbaFrame;
use dmabuf::{Dmabuf, DrmFourcc, Rect};
use glow::HasContext;
use khronos_egl as khr;

use crate::egl::{has_extension, proc_address, Context, DeviceInfo, Egl, RenderDevice};
use crate::format::{ignores_alpha, upload};
use crate::import::{create_image, image_attributes, FormatTable, ImportedImage};
use crate::{egl_err, RenderError};

/// `GL_TEXTURE_EXTERNAL_OES`.
const TEXTURE_EXTERNAL_OES: u32 = 0x8D65;

type ImageTargetTexture2dOes = unsafe extern "system" fn(target: u32, image: *const c_void);
type ImageTargetRenderbufferStorageOes =
    unsafe extern "system" fn(target: u32, image: *const c_void);

const VERTEX: &str = "#version 300 es
uniform highp vec4 u_dst; // x0, y0, x1, y1 in clip space
uniform highp vec4 u_src; // s0, t0, s1, t1
out highp vec2 v_tex;
void main() {
    highp vec2 corner = vec2(float(gl_VertexID & 1), float(gl_VertexID >> 1));
    gl_Position = vec4(mix(u_dst.xy, u_dst.zw, corner), 0.0, 1.0);
    v_tex = mix(u_src.xy, u_src.zw, corner);
}
";

fn fragment(external: bool) -> String {
    let (extension, sampler) = if external {
        (
            "#extension GL_OES_EGL_image_external_essl3 : require\n",
            "samplerExternalOES",
        )
    } else {
        ("", "sampler2D")
    };
    format!(
        "#version 300 es
{extension}precision highp float;
uniform {sampler} u_tex;
uniform float u_opaque;
in highp vec2 v_tex;
out vec4 color;
void main() {{
    vec4 c = texture(u_tex, v_tex);
    color = vec4(c.rgb, max(c.a, u_opaque));
}}
"
    )
}

struct Program {
    program: glow::Program,
    dst: Option<glow::UniformLocation>,
    src: Option<glow::UniformLocation>,
    opaque: Option<glow::UniformLocation>,
}

/// The GL context and its EGL display, shared by the renderer and every
/// object made with it: an object frees itself on drop (on the renderer's
/// thread: `Rc` keeps them there), and the context outlives them all.
pub(crate) struct Gl {
    gl: glow::Context,
    pub(crate) ctx: Context,
}

impl std::ops::Deref for Gl {
    type Target = glow::Context;
    fn deref(&self) -> &glow::Context {
        &self.gl
    }
}

impl std::fmt::Debug for Gl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Gl")
    }
}

impl Gl {
    /// Destroys an EGLImage of this display (once).
    pub(crate) fn destroy_image(&self, image: khr::Image) {
        if let Err(e) = self.ctx.egl.destroy_image(self.ctx.display, image) {
            tracing::warn!("eglDestroyImage: {e}");
        }
    }
}

/// A texture the renderer uploaded from CPU pixels; freed on drop.
#[derive(Debug)]
pub struct Texture {
    gl: Rc<Gl>,
    texture: glow::Texture,
    pub width: u32,
    pub height: u32,
    pub fourcc: DrmFourcc,
}

/// An output-sized render target: a framebuffer over a texture of the
/// renderer's own, or over an imported DMA-BUF (a scanout buffer that KMS
/// shows, drawn into in place). Freed on drop.
#[derive(Debug)]
pub struct Target {
    gl: Rc<Gl>,
    framebuffer: glow::Framebuffer,
    storage: TargetStorage,
    pub width: u32,
    pub height: u32,
}

#[derive(Debug)]
enum TargetStorage {
    Texture(glow::Texture),
    Dmabuf {
        renderbuffer: glow::Renderbuffer,
        image: khr::Image,
    },
}

impl Drop for Texture {
    fn drop(&mut self) {
        // SAFETY: an object of this context, deleted once.
        unsafe { self.gl.delete_texture(self.texture) };
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        // SAFETY: objects of this context and display, deleted once.
        unsafe {
            self.gl.delete_framebuffer(self.framebuffer);
            match self.storage {
                TargetStorage::Texture(texture) => self.gl.delete_texture(texture),
                TargetStorage::Dmabuf {
                    renderbuffer,
                    image,
                } => {
                    self.gl.delete_renderbuffer(renderbuffer);
                    self.gl.destroy_image(image);
                }
            }
        }
    }
}

/// What a composition samples.
#[derive(Debug, Clone, Copy)]
pub enum Source<'a> {
    Texture(&'a Texture),
    Image(&'a ImportedImage),
}

impl Source<'_> {
    fn size(&self) -> (u32, u32) {
        match self {
            Source::Texture(t) => (t.width, t.height),
            Source::Image(i) => (i.width, i.height),
        }
    }
}

/// One source rectangle drawn into one target rectangle (both in pixels,
/// rows counted from the top of memory).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Composition {
    pub src: Rect,
    pub dst: Rect,
    /// The source is bottom-up (QEMU's `y0_top`).
    pub flip_y: bool,
    /// Blend by the source's alpha (the cursor); else replace.
    pub blend: bool,
}

impl Composition {
    /// The whole `src` rectangle, scaled to fit `target` with its aspect
    /// ratio kept and centred (letterbox or pillarbox).
    pub fn fit(src: Rect, target: (u32, u32), flip_y: bool) -> Composition {
        Composition {
            src,
            dst: src.fit_into(target),
            flip_y,
            blend: false,
        }
    }

    /// Where a point of the source lands in the target (the guest's
    /// pointer on the output, for the cursor).
    pub fn map_point(&self, x: i64, y: i64) -> (i64, i64) {
        let (s, d) = (self.src, self.dst);
        let scale = |v: i64, from: i32, to: i32, span_from: u32, span_to: u32| {
            i64::from(to) + (v - i64::from(from)) * i64::from(span_to) / i64::from(span_from.max(1))
        };
        (
            scale(x, s.x, d.x, s.width, d.width),
            scale(y, s.y, d.y, s.height, d.height),
        )
    }
}

/// A GPU fence: signalled when the GPU has finished the commands before it.
pub struct Fence {
    egl: Arc<Egl>,
    display: khr::Display,
    sync: khr::Sync,
}

impl Fence {
    /// Waits at most `timeout`; true once the GPU is done.
    pub fn wait(&self, timeout: Duration) -> bool {
        let nanos = u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX);
        // SAFETY: a live sync object of this display.
        let status = unsafe {
            self.egl
                .client_wait_sync(self.display, self.sync, khr::SYNC_FLUSH_COMMANDS_BIT, nanos)
        };
        matches!(status, Ok(khr::CONDITION_SATISFIED))
    }
}

impl Drop for Fence {
    fn drop(&mut self) {
        // SAFETY: destroyed once, on the display that made it.
        let _ = unsafe { self.egl.destroy_sync(self.display, self.sync) };
    }
}

/// EGL display, GLES context and the objects drawn with: one per output
/// thread, never shared.
pub struct Renderer {
    gl: Rc<Gl>,
    pub device: DeviceInfo,
    pub formats: FormatTable,
    program: Program,
    external_program: Option<Program>,
    vertex_array: glow::VertexArray,
    image_target_texture: ImageTargetTexture2dOes,
    image_target_renderbuffer: Option<ImageTargetRenderbufferStorageOes>,
    bgra_upload: bool,
}

fn gl_object<T>(what: &str, r: Result<T, String>) -> Result<T, RenderError> {
    r.map_err(|e| RenderError::GlObject(format!("{what}: {e}")))
}

impl Renderer {
    /// Loads EGL, opens `device`, makes a GLES 3 context current on this
    /// thread and compiles the shaders.
    pub fn new(device: &RenderDevice) -> Result<Renderer, RenderError> {
        let egl = crate::egl::load()?;
        let (ctx, info) = Context::open(&egl, device)?;
        let gl = ctx.gl();
        let formats = FormatTable::query(&ctx).unwrap_or_else(|err| {
            tracing::warn!("no DMA-BUF import on this display: {err}");
            FormatTable::default()
        });
        // SAFETY: the prototype from GL_OES_EGL_image.
        let image_target_texture: ImageTargetTexture2dOes =
            unsafe { proc_address(&ctx.egl, "glEGLImageTargetTexture2DOES")? };
        // SAFETY: the prototype from GL_OES_EGL_image.
        let image_target_renderbuffer: Option<ImageTargetRenderbufferStorageOes> =
            unsafe { proc_address(&ctx.egl, "glEGLImageTargetRenderbufferStorageOES").ok() };
        let extensions = gl.supported_extensions();
        let bgra_upload = extensions.contains("GL_EXT_texture_format_BGRA8888");
        let external = extensions.contains("GL_OES_EGL_image_external_essl3");
        let program = compile(&gl, &fragment(false))?;
        let external_program = if external {
            Some(compile(&gl, &fragment(true))?)
        } else {
            None
        };
        // SAFETY: a plain object creation on the current context.
        let vertex_array = gl_object("vertex array", unsafe { gl.create_vertex_array() })?;
        tracing::info!(
            "renderer: {} ({} DMA-BUF formats{})",
            info.renderer,
            formats.len(),
            if has_extension(&ctx.extensions, "EGL_EXT_image_dma_buf_import_modifiers") {
                ", explicit modifiers"
            } else {
                ""
            }
        );
        Ok(Renderer {
            gl: Rc::new(Gl { gl, ctx }),
            device: info,
            formats,
            program,
            external_program,
            vertex_array,
            image_target_texture,
            image_target_renderbuffer,
            bgra_upload,
        })
    }

    fn check(&self, call: &'static str) -> Result<(), RenderError> {
        // SAFETY: a plain query on the current context.
        match unsafe { self.gl.get_error() } {
            glow::NO_ERROR => Ok(()),
            code => Err(RenderError::Gl { call, code }),
        }
    }

    /// An output-sized RGBA8 target.
    pub fn create_target(&mut self, width: u32, height: u32) -> Result<Target, RenderError> {
        let gl = &self.gl;
        // SAFETY: GL calls on the current context with objects it creates.
        unsafe {
            let texture = gl_object("target texture", gl.create_texture())?;
            gl.bind_texture(glow::TEXTURE_2D, Some(texture));
            gl.tex_storage_2d(
                glow::TEXTURE_2D,
                1,
                glow::RGBA8,
                width as i32,
                height as i32,
            );
            let framebuffer = gl_object("framebuffer", gl.create_framebuffer())?;
            gl.bind_framebuffer(glow::FRAMEBUFFER, Some(framebuffer));
            gl.framebuffer_texture_2d(
                glow::FRAMEBUFFER,
                glow::COLOR_ATTACHMENT0,
                glow::TEXTURE_2D,
                Some(texture),
                0,
            );
            let target = Target {
                gl: self.gl.clone(),
                framebuffer,
                storage: TargetStorage::Texture(texture),
                width,
                height,
            };
            self.complete(target)
        }
    }

    /// Checks the framebuffer bound for `target` (which frees itself if
    /// incomplete).
    fn complete(&mut self, target: Target) -> Result<Target, RenderError> {
        // The calls that made it first (its storage may have failed with
        // GL_OUT_OF_MEMORY): an error left pending would be blamed on the
        // next call checked, e.g. the next buffer's import.
        self.check("creating a target")?;
        // SAFETY: a plain query on the current context.
        let status = unsafe { self.gl.check_framebuffer_status(glow::FRAMEBUFFER) };
        if status != glow::FRAMEBUFFER_COMPLETE {
            return Err(RenderError::GlObject(format!(
                "target framebuffer incomplete: {status:#x}"
            )));
        }
        Ok(target)
    }

    /// A target drawn straight into `buffer`'s memory (a scanout buffer):
    /// the DMA-BUF as an EGLImage behind a renderbuffer. After a
    /// [`Fence`] signals, the buffer holds the picture; no copy.
    pub fn import_target<F: AsFd>(&mut self, buffer: &Dmabuf<F>) -> Result<Target, RenderError> {
        let storage = self.image_target_renderbuffer.ok_or_else(|| {
            RenderError::Unsupported("glEGLImageTargetRenderbufferStorageOES is missing".into())
        })?;
        let modifier = buffer.explicit_modifier();
        if self.formats.external_only(buffer.fourcc, modifier) {
            return Err(RenderError::Unsupported(format!(
                "{:?} imports as external-only: it cannot be drawn into",
                buffer.fourcc
            )));
        }
        let attributes = image_attributes(buffer, modifier, &self.formats)?;
        let image = create_image(&self.gl.ctx, &attributes)?;
        let gl = &self.gl;
        // SAFETY: GL calls on the current context with objects it creates
        // and a live EGLImage of this display.
        unsafe {
            let renderbuffer = match gl_object("renderbuffer", gl.create_renderbuffer()) {
                Ok(r) => r,
                Err(e) => {
                    gl.destroy_image(image);
                    return Err(e);
                }
            };
            gl.bind_renderbuffer(glow::RENDERBUFFER, Some(renderbuffer));
            storage(glow::RENDERBUFFER, image.as_ptr());
            let framebuffer = match gl_object("framebuffer", gl.create_framebuffer()) {
                Ok(f) => f,
                Err(e) => {
                    gl.delete_renderbuffer(renderbuffer);
                    gl.destroy_image(image);
                    return Err(e);
                }
            };
            gl.bind_framebuffer(glow::FRAMEBUFFER, Some(framebuffer));
            gl.framebuffer_renderbuffer(
                glow::FRAMEBUFFER,
                glow::COLOR_ATTACHMENT0,
                glow::RENDERBUFFER,
                Some(renderbuffer),
            );
            let target = Target {
                gl: self.gl.clone(),
                framebuffer,
                storage: TargetStorage::Dmabuf {
                    renderbuffer,
                    image,
                },
                width: buffer.width,
                height: buffer.height,
            };
            self.complete(target)
        }
    }

    /// Uploads CPU pixels as a new texture.
    pub fn upload(
        &mut self,
        fourcc: DrmFourcc,
        width: u32,
        height: u32,
        stride: u32,
        data: &[u8],
    ) -> Result<Texture, RenderError> {
        let fmt = self.upload_format(fourcc)?;
        let gl = &self.gl;
        // SAFETY: GL calls on the current context; `data` holds `height` rows
        // of `stride` bytes (checked below) for the unpack.
        let texture = unsafe {
            let texture = gl_object("texture", gl.create_texture())?;
            gl.bind_texture(glow::TEXTURE_2D, Some(texture));
            gl.tex_parameter_i32(
                glow::TEXTURE_2D,
                glow::TEXTURE_MIN_FILTER,
                glow::LINEAR as i32,
            );
            gl.tex_parameter_i32(
                glow::TEXTURE_2D,
                glow::TEXTURE_MAG_FILTER,
                glow::LINEAR as i32,
            );
            clamp_to_edge(gl, glow::TEXTURE_2D);
            gl.tex_image_2d(
                glow::TEXTURE_2D,
                0,
                fmt.internal_format as i32,
                width as i32,
                height as i32,
                0,
                fmt.format,
                fmt.ty,
                glow::PixelUnpackData::Slice(None),
            );
            texture
        };
        let texture = Texture {
            gl: self.gl.clone(),
            texture,
            width,
            height,
            fourcc,
        };
        self.update_texture(&texture, Rect::of_size((width, height)), stride, data)?;
        Ok(texture)
    }

    fn upload_format(&self, fourcc: DrmFourcc) -> Result<crate::format::GlUpload, RenderError> {
        let fmt = upload(fourcc)
            .ok_or_else(|| RenderError::Unsupported(format!("cannot upload {fourcc:?}")))?;
        if fmt.format == 0x80E1 && !self.bgra_upload {
            return Err(RenderError::Unsupported(format!(
                "{fourcc:?} needs GL_EXT_texture_format_BGRA8888"
            )));
        }
        Ok(fmt)
    }

    /// Rewrites `rect` of `texture` from `data` (rows of `stride` bytes,
    /// the rectangle's top-left pixel first).
    pub fn update_texture(
        &mut self,
        texture: &Texture,
        rect: Rect,
        stride: u32,
        data: &[u8],
    ) -> Result<(), RenderError> {
        let fmt = self.upload_format(texture.fourcc)?;
        let ((x, y), (w, h)) = (rect.origin(), rect.size());
        let row = w as usize * fmt.bytes_per_pixel as usize;
        let needed = (h as usize).saturating_sub(1) * stride as usize + row;
        if !rect.is_within((texture.width, texture.height))
            || data.len() < needed
            || (stride as usize) < row
        {
            return Err(RenderError::Unsupported(format!(
                "update {rect:?} (stride {stride}, {} bytes) does not fit a {}x{} texture",
                data.len(),
                texture.width,
                texture.height
            )));
        }
        let gl = &self.gl;
        // SAFETY: bounds checked above; UNPACK_ROW_LENGTH makes GL step
        // `stride` bytes per row (stride is a whole number of pixels when it
        // divides evenly; otherwise rows are uploaded one by one).
        unsafe {
            gl.bind_texture(glow::TEXTURE_2D, Some(texture.texture));
            gl.pixel_store_i32(glow::UNPACK_ALIGNMENT, 1);
            if stride.is_multiple_of(fmt.bytes_per_pixel) {
                gl.pixel_store_i32(
                    glow::UNPACK_ROW_LENGTH,
                    (stride / fmt.bytes_per_pixel) as i32,
                );
                gl.tex_sub_image_2d(
                    glow::TEXTURE_2D,
                    0,
                    x as i32,
                    y as i32,
                    w as i32,
                    h as i32,
                    fmt.format,
                    fmt.ty,
                    glow::PixelUnpackData::Slice(Some(&data[..needed])),
                );
                gl.pixel_store_i32(glow::UNPACK_ROW_LENGTH, 0);
            } else {
                for r in 0..h {
                    let start = r as usize * stride as usize;
                    gl.tex_sub_image_2d(
                        glow::TEXTURE_2D,
                        0,
                        x as i32,
                        (y + r) as i32,
                        w as i32,
                        1,
                        fmt.format,
                        fmt.ty,
                        glow::PixelUnpackData::Slice(Some(&data[start..start + row])),
                    );
                }
            }
        }
        self.check("glTexSubImage2D")
    }

    /// Imports a DMA-BUF as an EGLImage bound to a texture (`GL_TEXTURE_2D`,
    /// or `GL_TEXTURE_EXTERNAL_OES` where the format requires it).
    /// An implicit modifier is passed as such, but for a udmabuf (plain
    /// memory: linear).
    pub fn import<F: AsFd>(&mut self, buffer: &Dmabuf<F>) -> Result<ImportedImage, RenderError> {
        let modifier = buffer.explicit_modifier();
        let attributes = image_attributes(buffer, modifier, &self.formats)?;
        let image = create_image(&self.gl.ctx, &attributes)?;
        let external = self.formats.external_only(buffer.fourcc, modifier);
        if external && self.external_program.is_none() {
            self.gl.destroy_image(image);
            return Err(RenderError::Unsupported(format!(
                "{:?} imports as external-only, and GL has no GL_OES_EGL_image_external_essl3",
                buffer.fourcc
            )));
        }
        let target = if external {
            TEXTURE_EXTERNAL_OES
        } else {
            glow::TEXTURE_2D
        };
        // SAFETY: a texture object of the current context.
        let texture = match gl_object("texture", unsafe { self.gl.create_texture() }) {
            Ok(t) => t,
            Err(e) => {
                self.gl.destroy_image(image);
                return Err(e);
            }
        };
        let imported = ImportedImage {
            gl: self.gl.clone(),
            image,
            texture,
            target,
            width: buffer.width,
            height: buffer.height,
            fourcc: buffer.fourcc,
        };
        self.rebind(&imported)?;
        Ok(imported)
    }

    /// Re-binds the EGLImage to its texture: the guest rewrote the pixels
    /// (`UpdateDMABUF`), and some drivers sample a stale copy otherwise.
    pub fn rebind(&mut self, image: &ImportedImage) -> Result<(), RenderError> {
        // SAFETY: a live EGLImage of this display and a texture of this context.
        unsafe {
            self.gl.bind_texture(image.target, Some(image.texture));
            self.gl
                .tex_parameter_i32(image.target, glow::TEXTURE_MIN_FILTER, glow::LINEAR as i32);
            self.gl
                .tex_parameter_i32(image.target, glow::TEXTURE_MAG_FILTER, glow::LINEAR as i32);
            clamp_to_edge(&self.gl, image.target);
            (self.image_target_texture)(image.target, image.image.as_ptr());
        }
        self.check("glEGLImageTargetTexture2DOES")
    }

    /// Fills the whole target with opaque black.
    pub fn clear(&mut self, target: &Target) {
        let gl = &self.gl;
        // SAFETY: GL state calls on the current context.
        unsafe {
            gl.bind_framebuffer(glow::FRAMEBUFFER, Some(target.framebuffer));
            gl.viewport(0, 0, target.width as i32, target.height as i32);
            gl.clear_color(0.0, 0.0, 0.0, 1.0);
            gl.clear(glow::COLOR_BUFFER_BIT);
        }
    }

    /// Draws `source` into `target` as `how` says.
    pub fn draw(
        &mut self,
        target: &Target,
        source: Source<'_>,
        how: &Composition,
    ) -> Result<(), RenderError> {
        let (tex, tex_target, opaque) = match source {
            Source::Texture(t) => (t.texture, glow::TEXTURE_2D, ignores_alpha(t.fourcc)),
            Source::Image(i) => (i.texture, i.target, ignores_alpha(i.fourcc)),
        };
        let program = if tex_target == TEXTURE_EXTERNAL_OES {
            self.external_program
                .as_ref()
                .expect("import checked for it")
        } else {
            &self.program
        };
        let (sw, sh) = source.size();
        let ((sx, sy), (sw_rect, sh_rect)) = (how.src.origin(), how.src.size());
        let (s0, s1) = (sx as f32 / sw as f32, (sx + sw_rect) as f32 / sw as f32);
        let (mut t0, mut t1) = (sy as f32 / sh as f32, (sy + sh_rect) as f32 / sh as f32);
        if how.flip_y {
            // Bottom-up memory: the picture's top row is the last memory row.
            (t0, t1) = (1.0 - t0, 1.0 - t1);
        }
        let (tw, th) = (target.width as f32, target.height as f32);
        let Rect {
            x: dx,
            y: dy,
            width: dw,
            height: dh,
        } = how.dst;
        let clip = |v: f32, size: f32| 2.0 * v / size - 1.0;
        let gl = &self.gl;
        // SAFETY: GL calls on the current context with its own objects.
        unsafe {
            gl.bind_framebuffer(glow::FRAMEBUFFER, Some(target.framebuffer));
            gl.viewport(0, 0, target.width as i32, target.height as i32);
            gl.use_program(Some(program.program));
            gl.uniform_4_f32(
                program.dst.as_ref(),
                clip(dx as f32, tw),
                clip(dy as f32, th),
                clip(dx as f32 + dw as f32, tw),
                clip(dy as f32 + dh as f32, th),
            );
            gl.uniform_4_f32(program.src.as_ref(), s0, t0, s1, t1);
            // A screen is opaque: alpha only weighs a blended overlay (the cursor).
            let opaque = opaque || !how.blend;
            gl.uniform_1_f32(program.opaque.as_ref(), if opaque { 1.0 } else { 0.0 });
            gl.active_texture(glow::TEXTURE0);
            gl.bind_texture(tex_target, Some(tex));
            // 1:1 draws sample texel centres exactly; scaled ones filter.
            let filter = if (dw, dh) == (sw_rect, sh_rect) {
                glow::NEAREST
            } else {
                glow::LINEAR
            };
            gl.tex_parameter_i32(tex_target, glow::TEXTURE_MIN_FILTER, filter as i32);
            gl.tex_parameter_i32(tex_target, glow::TEXTURE_MAG_FILTER, filter as i32);
            if how.blend {
                gl.enable(glow::BLEND);
                gl.blend_func_separate(
                    glow::SRC_ALPHA,
                    glow::ONE_MINUS_SRC_ALPHA,
                    glow::ZERO,
                    glow::ONE,
                );
            } else {
                gl.disable(glow::BLEND);
            }
            gl.bind_vertex_array(Some(self.vertex_array));
            gl.draw_arrays(glow::TRIANGLE_STRIP, 0, 4);
            gl.disable(glow::BLEND);
        }
        self.check("drawing a composition")
    }

    /// A fence after everything drawn so far (EGL 1.5 `EGL_SYNC_FENCE`).
    pub fn fence(&mut self) -> Result<Fence, RenderError> {
        // SAFETY: a fence sync on our display with no attributes; flushed
        // by the first wait (SYNC_FLUSH_COMMANDS_BIT).
        let sync = unsafe {
            self.gl.ctx.egl.create_sync(
                self.gl.ctx.display,
                khr::SYNC_FENCE as khr::Enum,
                &[khr::ATTRIB_NONE],
            )
        }
        .map_err(egl_err("eglCreateSync(EGL_SYNC_FENCE)"))?;
        Ok(Fence {
            egl: self.gl.ctx.egl.clone(),
            display: self.gl.ctx.display,
            sync,
        })
    }

    /// Reads the target back as RGBA8, top row first, into `frame`
    /// (reusing its allocation).
    pub fn read(&mut self, target: &Target, frame: &mut RgbaFrame) -> Result<(), RenderError> {
        frame.width = target.width;
        frame.height = target.height;
        frame
            .pixels
            .resize(target.width as usize * target.height as usize * 4, 0);
        let gl = &self.gl;
        // SAFETY: `frame.pixels` holds width x height RGBA8 pixels at pack
        // alignment 4 (rows of 4-byte pixels need no padding).
        unsafe {
            gl.bind_framebuffer(glow::FRAMEBUFFER, Some(target.framebuffer));
            gl.pixel_store_i32(glow::PACK_ALIGNMENT, 4);
            gl.read_pixels(
                0,
                0,
                target.width as i32,
                target.height as i32,
                glow::RGBA,
                glow::UNSIGNED_BYTE,
                glow::PixelPackData::Slice(Some(&mut frame.pixels)),
            );
        }
        self.check("glReadPixels")
    }
}

impl Drop for Renderer {
    fn drop(&mut self) {
        // SAFETY: objects of this context, deleted once, before the context
        // itself goes (Context's Drop runs after this).
        unsafe {
            self.gl.delete_vertex_array(self.vertex_array);
            self.gl.delete_program(self.program.program);
            if let Some(p) = &self.external_program {
                self.gl.delete_program(p.program);
            }
        }
    }
}

/// Filtering at a scaled quad's edge must not wrap around to the far side.
///
/// # Safety
/// A texture is bound to `target` on the current context.
unsafe fn clamp_to_edge(gl: &glow::Context, target: u32) {
    // SAFETY: see above.
    unsafe {
        gl.tex_parameter_i32(target, glow::TEXTURE_WRAP_S, glow::CLAMP_TO_EDGE as i32);
        gl.tex_parameter_i32(target, glow::TEXTURE_WRAP_T, glow::CLAMP_TO_EDGE as i32);
    }
}

fn compile(gl: &glow::Context, fragment_source: &str) -> Result<Program, RenderError> {
    // SAFETY: shader and program objects of the current context.
    unsafe {
        let program = gl_object("program", gl.create_program())?;
        let mut shaders = Vec::new();
        for (kind, source) in [
            (glow::VERTEX_SHADER, VERTEX),
            (glow::FRAGMENT_SHADER, fragment_source),
        ] {
            let shader = gl_object("shader", gl.create_shader(kind))?;
            gl.shader_source(shader, source);
            gl.compile_shader(shader);
            if !gl.get_shader_compile_status(shader) {
                let log = gl.get_shader_info_log(shader);
                return Err(RenderError::GlObject(format!("compiling a shader: {log}")));
            }
            gl.attach_shader(program, shader);
            shaders.push(shader);
        }
        gl.link_program(program);
        for shader in shaders {
            gl.detach_shader(program, shader);
            gl.delete_shader(shader);
        }
        if !gl.get_program_link_status(program) {
            return Err(RenderError::GlObject(format!(
                "linking: {}",
                gl.get_program_info_log(program)
            )));
        }
        let uniform = |name| gl.get_uniform_location(program, name);
        let (dst, src, opaque) = (uniform("u_dst"), uniform("u_src"), uniform("u_opaque"));
        gl.use_program(Some(program));
        gl.uniform_1_i32(uniform("u_tex").as_ref(), 0);
        Ok(Program {
            program,
            dst,
            src,
            opaque,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_points_land_through_the_letterbox() {
        // 640x480 pillarboxed on 1920x1080: x 240..1680, scale 2.25.
        let how = Composition::fit(Rect::of_size((640, 480)), (1920, 1080), false);
        assert_eq!(how.map_point(0, 0), (240, 0));
        assert_eq!(how.map_point(640, 480), (1680, 1080));
        assert_eq!(how.map_point(320, 240), (960, 540));
        // A source rect off the origin (a scanout within a larger buffer).
        let inner = Composition::fit(Rect::new(16, 8, 40, 30), (40, 30), false);
        assert_eq!(inner.map_point(16, 8), (0, 0));
        assert_eq!(inner.map_point(-4, 8), (-20, 0));
    }

    #[test]
    fn fit_letterboxes_and_pillarboxes() {
        // 4:3 into 16:9: pillarbox.
        let c = Composition::fit(Rect::of_size((640, 480)), (1920, 1080), false);
        assert_eq!(c.dst, Rect::new(240, 0, 1440, 1080));
        // 16:9 into 4:3: letterbox.
        let c = Composition::fit(Rect::of_size((1920, 1080)), (1024, 768), false);
        assert_eq!(c.dst, Rect::new(0, 96, 1024, 576));
        // Same size: 1:1.
        let src = Rect::new(10, 20, 720, 400);
        let c = Composition::fit(src, (720, 400), true);
        assert_eq!(
            (c.src, c.dst, c.flip_y),
            (src, Rect::of_size((720, 400)), true)
        );
    }
}
