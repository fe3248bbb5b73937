//! The guest's cursor on this output: on the cursor plane (its image
//! copied into the plane's buffer when it changes; a move is a commit of
//! the plane alone), or drawn by GL where there is no cursor plane.

use std::sync::Arc;

use drm::buffer::DrmFourcc;
use gl_renderer::{Composition, Renderer, Source, Target, Texture};

use crate::output::kms::{Card, DumbBuffer, Framebuffer, KmsError, PlaneConfig, Rect};

/// The largest cursor-plane buffer made, whatever size the driver asks.
const MAX_CURSOR_PLANE: u64 = 512;

/// The cursor plane's buffer (ARGB8888 of the size the driver asks for).
struct CursorPlane {
    buffer: DumbBuffer,
    fb: Arc<Framebuffer>,
    size: (u32, u32),
}

/// The guest's cursor (position minus hot spot, size) and its pixels, and
/// where it goes: the cursor plane, or a texture GL draws.
pub struct Cursor {
    plane: Option<CursorPlane>,
    /// Position (hot spot subtracted) and size; `None`: hidden.
    pub shape: Option<(i64, i64, u32, u32)>,
    argb: Vec<u8>,
    /// What the plane's buffer or the texture holds now.
    written: Vec<u8>,
    /// The source's cursor change counter last seen.
    pub seen: u64,
    /// The cursor changed since the last commit (cursor plane only).
    pub dirty: bool,
    texture: Option<Texture>,
}

impl Cursor {
    /// On the cursor plane if the pipe has one and `use_plane`, else GL.
    pub fn new(card: &Arc<Card>, has_plane: bool, use_plane: bool) -> Cursor {
        let plane = match (has_plane, use_plane) {
            (true, true) => match cursor_plane(card) {
                Ok(plane) => Some(plane),
                Err(err) => {
                    tracing::info!("no cursor plane buffer ({err}): the cursor is drawn by GL");
                    None
                }
            },
            _ => None,
        };
        Cursor {
            plane,
            shape: None,
            argb: Vec::new(),
            written: Vec::new(),
            seen: 0,
            dirty: false,
            texture: None,
        }
    }

    pub fn on_plane(&self) -> bool {
        self.plane.is_some()
    }

    /// Is a cursor to be drawn by GL over the picture?
    pub fn drawn_by_gl(&self) -> bool {
        self.plane.is_none() && self.shape.is_some()
    }

    /// The cursor as last copied from the source, to draw into a picture.
    pub fn copy(&self) -> Option<crate::surface::CursorCopy<'_>> {
        self.shape.map(|at| (at, &self.argb[..]))
    }

    /// The source's cursor: copied (a change of image is written to the
    /// plane's buffer; a move alone writes nothing).
    pub fn update(&mut self, overlay: Option<crate::surface::CursorOverlay<'_>>) {
        self.shape = overlay.map(|c| c.to_owned_overlay(&mut self.argb));
        self.dirty = self.plane.is_some();
        if let (Some(plane), Some((_, _, w, h))) = (self.plane.as_mut(), self.shape) {
            if self.written != self.argb {
                if let Err(err) = write_cursor(plane, w, h, &self.argb) {
                    tracing::warn!("writing the cursor image: {err}");
                }
                self.written.clone_from(&self.argb);
            }
        }
    }

    /// The cursor plane's configuration for a picture placed by `picture`:
    /// `Some(None)` turns the plane off, `None` means no cursor plane.
    pub fn plane_config(&self, picture: Option<Composition>) -> Option<Option<PlaneConfig<'_>>> {
        let plane = self.plane.as_ref()?;
        let at = self
            .shape
            .zip(picture)
            .map(|((x, y, _, _), picture)| picture.map_point(x, y));
        Some(at.map(|(x, y)| PlaneConfig {
            fb: &plane.fb,
            src: Rect::of_size(plane.size),
            dst: Rect {
                x: x.clamp(-4096, 16384) as i32,
                y: y.clamp(-4096, 16384) as i32,
                width: plane.size.0,
                height: plane.size.1,
            },
        }))
    }

    /// Uploads the cursor's image as a texture when it changed (no
    /// cursor plane).
    pub fn upload(&mut self, renderer: &mut Renderer) {
        let Some((_, _, w, h)) = self.shape else {
            return;
        };
        if self.texture.is_some() && self.written == self.argb {
            return;
        }
        self.texture = None;
        match renderer.upload(DrmFourcc::Argb8888, w, h, w * 4, &self.argb) {
            Ok(texture) => {
                self.texture = Some(texture);
                self.written.clone_from(&self.argb);
            }
            Err(err) => tracing::warn!("uploading the cursor: {err}"),
        }
    }

    /// Blends the cursor over `target` (no cursor plane), unscaled, at the
    /// pointer on a picture placed by `picture`.
    pub fn draw(
        &mut self,
        renderer: &mut Renderer,
        target: &Target,
        picture: Option<Composition>,
    ) -> Result<(), gl_renderer::RenderError> {
        if self.plane.is_some() {
            return Ok(());
        }
        let (Some((x, y, w, h)), Some(picture)) = (self.shape, picture) else {
            return Ok(());
        };
        self.upload(renderer);
        let Some(texture) = &self.texture else {
            return Ok(());
        };
        let (x, y) = picture.map_point(x, y);
        let how = Composition {
            src: Rect::of_size((w, h)),
            dst: Rect::new(
                x.clamp(-16384, 16384) as i32,
                y.clamp(-16384, 16384) as i32,
                w,
                h,
            ),
            flip_y: false,
            blend: true,
        };
        renderer.draw(target, Source::Texture(texture), &how)
    }
}

/// A dumb buffer for the cursor plane, of the size the driver asks for.
fn cursor_plane(card: &Arc<Card>) -> Result<CursorPlane, KmsError> {
    use drm::{Device as _, DriverCapability};
    let cap = |c| card.get_driver_capability(c).ok().filter(|&v| v > 0);
    let width = cap(DriverCapability::CursorWidth)
        .unwrap_or(64)
        .min(MAX_CURSOR_PLANE) as u32;
    let height = cap(DriverCapability::CursorHeight)
        .unwrap_or(64)
        .min(MAX_CURSOR_PLANE) as u32;
    let buffer = DumbBuffer::create(card, width, height, DrmFourcc::Argb8888)?;
    let fb = Arc::new(buffer.framebuffer()?);
    Ok(CursorPlane {
        buffer,
        fb,
        size: (width, height),
    })
}

/// Copies a `w` x `h` ARGB8888 cursor into the plane's buffer (cropped to
/// it), transparent around it.
fn write_cursor(plane: &mut CursorPlane, w: u32, h: u32, argb: &[u8]) -> Result<(), KmsError> {
    let (pw, ph) = plane.size;
    let stride = plane.buffer.stride() as usize;
    let mut map = plane.buffer.map()?;
    let bytes: &mut [u8] = map.as_mut();
    bytes.fill(0);
    let (cw, ch) = (w.min(pw) as usize, h.min(ph) as usize);
    for row in 0..ch {
        let src = row * w as usize * 4;
        let Some(line) = argb.get(src..src + cw * 4) else {
            break;
        };
        bytes[row * stride..row * stride + cw * 4].copy_from_slice(line);
    }
    Ok(())
}
