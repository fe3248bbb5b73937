//! Buffers as framebuffers: DMA-BUFs imported through PRIME (GEM handles
//! counted per card, so the same buffer imported twice shares its handle
//! until the last user is gone) and dumb buffers (CPU-mappable, exportable
//! as DMA-BUFs: the composite path's scanout buffers, rendered into
//! through EGLImages). A [`Framebuffer`] is removed (RMFB) on drop.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use dmabuf::Dmabuf;
use drm::buffer::{self, DrmFourcc, DrmModifier, PlanarBuffer};
use drm::control::{dumbbuffer, framebuffer, Device as ControlDevice, FbCmd2Flags};

use super::device::Card;
use super::error::KmsError;

/// A GEM handle on a card, counted: the kernel gives one handle per buffer
/// and file, so it is closed only when its last holder drops it.
#[derive(Debug)]
pub struct GemHandle {
    card: Arc<Card>,
    handle: buffer::Handle,
}

impl GemHandle {
    /// Imports a DMA-BUF (`DRM_IOCTL_PRIME_FD_TO_HANDLE`).
    pub fn import(card: &Arc<Card>, dmabuf: BorrowedFd<'_>) -> Result<GemHandle, KmsError> {
        let handle = card.import_gem(dmabuf)?;
        Ok(GemHandle {
            card: card.clone(),
            handle,
        })
    }

    pub fn handle(&self) -> buffer::Handle {
        self.handle
    }

    pub fn card(&self) -> &Arc<Card> {
        &self.card
    }
}

impl Clone for GemHandle {
    fn clone(&self) -> GemHandle {
        self.card.retain_gem(self.handle);
        GemHandle {
            card: self.card.clone(),
            handle: self.handle,
        }
    }
}

impl Drop for GemHandle {
    fn drop(&mut self) {
        self.card.release_gem(self.handle);
    }
}

/// What AddFB2 gets: up to four planes of GEM handles.
struct Planes {
    size: (u32, u32),
    fourcc: DrmFourcc,
    /// `Some` only with `DRM_MODE_FB_MODIFIERS`.
    modifier: Option<DrmModifier>,
    handles: [Option<buffer::Handle>; 4],
    pitches: [u32; 4],
    offsets: [u32; 4],
}

impl PlanarBuffer for Planes {
    fn size(&self) -> (u32, u32) {
        self.size
    }
    fn format(&self) -> DrmFourcc {
        self.fourcc
    }
    fn modifier(&self) -> Option<DrmModifier> {
        self.modifier
    }
    fn pitches(&self) -> [u32; 4] {
        self.pitches
    }
    fn handles(&self) -> [Option<buffer::Handle>; 4] {
        self.handles
    }
    fn offsets(&self) -> [u32; 4] {
        self.offsets
    }
}

/// A framebuffer on a card; RMFB on drop. Keep it alive while a plane
/// shows it (until the flip that replaces it has completed): removing a
/// framebuffer in use turns its plane off.
#[derive(Debug)]
pub struct Framebuffer {
    card: Arc<Card>,
    handle: framebuffer::Handle,
    size: (u32, u32),
    fourcc: DrmFourcc,
    modifier: DrmModifier,
    gem: Vec<GemHandle>,
}

impl Framebuffer {
    /// Imports `dmabuf`'s planes (one GEM handle each, shared with earlier
    /// imports of the same buffer) and adds them as a framebuffer: AddFB2
    /// with `DRM_MODE_FB_MODIFIERS` for a real modifier on a card that
    /// takes them, plain AddFB2 for an implicit one (or LINEAR on a card
    /// without modifiers, where implicit is linear).
    pub fn import<F: AsFd>(card: &Arc<Card>, dmabuf: &Dmabuf<F>) -> Result<Framebuffer, KmsError> {
        let bad = |why: String| KmsError::BadBuffer {
            device: card.path().to_owned(),
            why,
        };
        if dmabuf.planes.is_empty() || dmabuf.planes.len() > 4 {
            return Err(bad(format!("{} planes", dmabuf.planes.len())));
        }
        if dmabuf.width == 0 || dmabuf.height == 0 {
            return Err(bad(format!("{}x{}", dmabuf.width, dmabuf.height)));
        }
        let modifier = match dmabuf.modifier {
            DrmModifier::Invalid => None,
            m if card.caps().addfb2_modifiers => Some(m),
            DrmModifier::Linear => None,
            m => {
                return Err(bad(format!(
                    "modifier {:#x}, but the driver takes no modifiers (ADDFB2_MODIFIERS 0)",
                    u64::from(m)
                )))
            }
        };
        let mut gem = Vec::with_capacity(dmabuf.planes.len());
        let mut planes = Planes {
            size: (dmabuf.width, dmabuf.height),
            fourcc: dmabuf.fourcc,
            modifier,
            handles: [None; 4],
            pitches: [0; 4],
            offsets: [0; 4],
        };
        for (i, plane) in dmabuf.planes.iter().enumerate() {
            let handle = GemHandle::import(card, plane.fd.as_fd())?;
            planes.handles[i] = Some(handle.handle());
            planes.pitches[i] = plane.stride;
            planes.offsets[i] = plane.offset;
            gem.push(handle);
        }
        Framebuffer::add(card, &planes, dmabuf.modifier, gem)
    }

    fn add(
        card: &Arc<Card>,
        planes: &Planes,
        modifier: DrmModifier,
        gem: Vec<GemHandle>,
    ) -> Result<Framebuffer, KmsError> {
        let flags = if planes.modifier.is_some() {
            FbCmd2Flags::MODIFIERS
        } else {
            FbCmd2Flags::empty()
        };
        // On failure `gem` drops here and closes what it alone held.
        let handle = card
            .add_planar_framebuffer(planes, flags)
            .map_err(card.err("DRM_IOCTL_MODE_ADDFB2"))?;
        tracing::trace!(
            "{}: FB {handle:?} {}x{} {:?} modifier {:#x}{}",
            card.path().display(),
            planes.size.0,
            planes.size.1,
            planes.fourcc,
            u64::from(modifier),
            if flags.is_empty() { " (implicit)" } else { "" }
        );
        Ok(Framebuffer {
            card: card.clone(),
            handle,
            size: planes.size,
            fourcc: planes.fourcc,
            modifier,
            gem,
        })
    }

    pub fn handle(&self) -> framebuffer::Handle {
        self.handle
    }

    pub fn size(&self) -> (u32, u32) {
        self.size
    }

    pub fn fourcc(&self) -> DrmFourcc {
        self.fourcc
    }

    /// As given (`Invalid`: implicit).
    pub fn modifier(&self) -> DrmModifier {
        self.modifier
    }

    /// The GEM handle of each plane.
    pub fn gem_handles(&self) -> Vec<buffer::Handle> {
        self.gem.iter().map(GemHandle::handle).collect()
    }

    pub fn card(&self) -> &Arc<Card> {
        &self.card
    }
}

impl Drop for Framebuffer {
    fn drop(&mut self) {
        if let Err(err) = self.card.destroy_framebuffer(self.handle) {
            tracing::warn!(
                "DRM_IOCTL_MODE_RMFB of {:?} on {}: {err}",
                self.handle,
                self.card.path().display()
            );
        }
        // Then `gem` drops: the handles close once nothing else holds them.
    }
}

/// Bits per pixel of the single-plane formats a dumb buffer can hold
/// (those `capture` decodes; drm-fourcc 2.2 has no XR48/AR48).
fn bits_per_pixel(fourcc: DrmFourcc) -> Option<u32> {
    capture::bytes_per_pixel(fourcc).map(|b| b as u32 * 8)
}

/// A dumb buffer: linear memory the CPU can map, scanned out as a
/// framebuffer and exported as a DMA-BUF (for the GL renderer to draw into
/// through an EGLImage). Destroyed when it and every framebuffer made from
/// it are gone.
#[derive(Debug)]
pub struct DumbBuffer {
    raw: dumbbuffer::DumbBuffer,
    fourcc: DrmFourcc,
    gem: GemHandle,
}

impl DumbBuffer {
    /// `width` x `height` of `fourcc` (a single-plane RGB format).
    pub fn create(
        card: &Arc<Card>,
        width: u32,
        height: u32,
        fourcc: DrmFourcc,
    ) -> Result<DumbBuffer, KmsError> {
        let bpp = bits_per_pixel(fourcc).ok_or_else(|| KmsError::BadBuffer {
            device: card.path().to_owned(),
            why: format!("no dumb buffers of {fourcc:?}"),
        })?;
        let raw = card
            .create_dumb_buffer((width, height), fourcc, bpp)
            .map_err(card.err("DRM_IOCTL_MODE_CREATE_DUMB"))?;
        let handle = buffer::Buffer::handle(&raw);
        card.retain_gem(handle);
        Ok(DumbBuffer {
            raw,
            fourcc,
            gem: GemHandle {
                card: card.clone(),
                handle,
            },
        })
    }

    pub fn size(&self) -> (u32, u32) {
        buffer::Buffer::size(&self.raw)
    }

    pub fn stride(&self) -> u32 {
        buffer::Buffer::pitch(&self.raw)
    }

    pub fn fourcc(&self) -> DrmFourcc {
        self.fourcc
    }

    pub fn gem(&self) -> &GemHandle {
        &self.gem
    }

    /// Maps the buffer for the CPU (`DRM_IOCTL_MODE_MAP_DUMB` + mmap);
    /// unmapped when the mapping drops.
    pub fn map(&mut self) -> Result<dumbbuffer::DumbMapping<'_>, KmsError> {
        let card = self.gem.card.clone();
        card.map_dumb_buffer(&mut self.raw)
            .map_err(card.err("DRM_IOCTL_MODE_MAP_DUMB"))
    }

    /// A DMA-BUF of this buffer (`DRM_CLOEXEC | DRM_RDWR`: writable, so a
    /// renderer can draw into it).
    pub fn export(&self) -> Result<OwnedFd, KmsError> {
        let card = &self.gem.card;
        card.buffer_to_prime_fd(self.gem.handle, drm::CLOEXEC | drm::RDWR)
            .map_err(card.err("DRM_IOCTL_PRIME_HANDLE_TO_FD"))
    }

    /// The buffer as a framebuffer (plain AddFB2: dumb buffers are linear,
    /// the implicit layout). It keeps the buffer alive.
    pub fn framebuffer(&self) -> Result<Framebuffer, KmsError> {
        let planes = Planes {
            size: self.size(),
            fourcc: self.fourcc,
            modifier: None,
            handles: [Some(self.gem.handle), None, None, None],
            pitches: [self.stride(), 0, 0, 0],
            offsets: [0; 4],
        };
        Framebuffer::add(
            &self.gem.card,
            &planes,
            DrmModifier::Invalid,
            vec![self.gem.clone()],
        )
    }
}
