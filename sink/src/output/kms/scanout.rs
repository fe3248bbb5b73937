//! Scanout buffers of our own (the composite path draws into them): GBM
//! buffer objects where GBM serves, dumb buffers otherwise; each with its
//! framebuffer and exported as a writable DMA-BUF for a renderer to draw
//! into in place.

use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::sync::Arc;

use dmabuf::{Dmabuf, Plane};
use drm::buffer::{DrmFourcc, DrmModifier};

use super::device::Card;
use super::error::KmsError;
use super::framebuffer::{DumbBuffer, Framebuffer};

/// A scanout buffer: its memory, its framebuffer, and its memory exported
/// as a DMA-BUF (writable: the renderer draws into it).
#[derive(Debug)]
pub struct ScanoutBuffer {
    pub fb: Arc<Framebuffer>,
    /// The memory, exported; its modifier is GBM's (`Invalid`: implicit),
    /// or `Linear` for a dumb buffer.
    pub export: Dmabuf,
    /// Kept alive while the framebuffer and the export use it.
    _backing: Backing,
}

#[derive(Debug)]
enum Backing {
    /// A GBM buffer object (allocated for scanout and rendering).
    Gbm(#[allow(dead_code)] gbm::BufferObject<()>),
    /// A dumb buffer (linear).
    Dumb(#[allow(dead_code)] DumbBuffer),
}

impl ScanoutBuffer {
    pub fn size(&self) -> (u32, u32) {
        self.fb.size()
    }

    pub fn fourcc(&self) -> DrmFourcc {
        self.fb.fourcc()
    }

    /// `count` GBM buffer objects, allocated through a second open of the
    /// card (so that GBM's GEM handles never mix with the ones our
    /// framebuffers count on `card`'s fd: they come over as DMA-BUFs, like
    /// a guest's), with one of `modifiers` (empty: GBM's choice).
    pub fn gbm(
        card: &Arc<Card>,
        (width, height): (u32, u32),
        fourcc: DrmFourcc,
        modifiers: &[DrmModifier],
        count: usize,
    ) -> Result<Vec<ScanoutBuffer>, KmsError> {
        let file = std::fs::File::options()
            .read(true)
            .write(true)
            .open(card.path())
            .map_err(|source| KmsError::Open {
                device: card.path().to_owned(),
                source,
            })?;
        let device =
            gbm::Device::new(file).map_err(card.err("gbm_create_device (a second open)"))?;
        let usage = gbm::BufferObjectFlags::SCANOUT | gbm::BufferObjectFlags::RENDERING;
        let mut buffers = Vec::with_capacity(count);
        for _ in 0..count {
            let bo = if modifiers.is_empty() {
                device.create_buffer_object::<()>(width, height, fourcc, usage)
            } else {
                device.create_buffer_object_with_modifiers2::<()>(
                    width,
                    height,
                    fourcc,
                    modifiers.iter().copied(),
                    usage,
                )
            }
            .map_err(card.err("gbm_bo_create"))?;
            let mut planes = Vec::new();
            for plane in 0..bo.plane_count() as i32 {
                // Exported writable (gbm_bo_get_fd_for_plane's fd is
                // read-only on some drivers, e.g. kms_swrast).
                // SAFETY: a GBM BO on a DRM device has a GEM handle in the u32.
                let handle = unsafe { bo.handle_for_plane(plane).u32_ };
                let prime = drm_ffi::gem::handle_to_fd(
                    device.as_fd(),
                    handle,
                    (libc::O_CLOEXEC | libc::O_RDWR) as u32,
                )
                .map_err(card.err("DRM_IOCTL_PRIME_HANDLE_TO_FD"))?;
                // SAFETY: the ioctl returned a new fd that is ours.
                let fd = unsafe { OwnedFd::from_raw_fd(prime.fd) };
                planes.push(Plane {
                    fd,
                    offset: bo.offset(plane),
                    stride: bo.stride_for_plane(plane),
                });
            }
            let export = Dmabuf {
                width,
                height,
                fourcc,
                modifier: bo.modifier(),
                planes,
            };
            let fb = Framebuffer::import(card, &export)?;
            if buffers.is_empty() {
                tracing::info!(
                    "scanout buffers: GBM ({}), {fourcc:?}, modifier {:#x}",
                    device.backend_name(),
                    u64::from(bo.modifier())
                );
            }
            buffers.push(ScanoutBuffer {
                fb: Arc::new(fb),
                export,
                _backing: Backing::Gbm(bo),
            });
        }
        Ok(buffers)
    }

    /// `count` dumb buffers (linear).
    pub fn dumb(
        card: &Arc<Card>,
        (width, height): (u32, u32),
        fourcc: DrmFourcc,
        count: usize,
    ) -> Result<Vec<ScanoutBuffer>, KmsError> {
        let mut buffers = Vec::with_capacity(count);
        for _ in 0..count {
            let dumb = DumbBuffer::create(card, width, height, fourcc)?;
            let fb = Arc::new(dumb.framebuffer()?);
            let fd = dumb.export()?;
            buffers.push(ScanoutBuffer {
                fb,
                export: Dmabuf {
                    width,
                    height,
                    fourcc,
                    modifier: DrmModifier::Linear,
                    planes: vec![Plane {
                        fd,
                        offset: 0,
                        stride: dumb.stride(),
                    }],
                },
                _backing: Backing::Dumb(dumb),
            });
        }
        Ok(buffers)
    }
}
