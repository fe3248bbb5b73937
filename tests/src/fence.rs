//! A write fence that signals only when the test says so, attached to any
//! DMA-BUF: what a GPU still rendering into a buffer looks like to its
//! readers. vgem (in the lab) makes the fence (`VGEM_FENCE_ATTACH` on a
//! buffer of its own); `DMA_BUF_IOCTL_EXPORT_SYNC_FILE` takes it out as a
//! sync_file and `DMA_BUF_IOCTL_IMPORT_SYNC_FILE` puts it on the target
//! buffer as a write fence, so that every implicit-sync reader (a KMS
//! commit scanning it out, a CPU access bracketed by `DMA_BUF_IOCTL_SYNC`)
//! waits for it. vgem signals it by itself after 10 s at the latest.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;

use drm::control::Device as _;

/// `struct drm_vgem_fence_attach` (uapi/drm/vgem_drm.h).
#[repr(C)]
struct VgemFenceAttach {
    handle: u32,
    flags: u32,
    out_fence: u32,
    pad: u32,
}

/// `struct drm_vgem_fence_signal`.
#[repr(C)]
struct VgemFenceSignal {
    fence: u32,
    flags: u32,
}

/// `struct dma_buf_export_sync_file` and `struct dma_buf_import_sync_file`
/// (the same layout).
#[repr(C)]
struct DmaBufSyncFile {
    flags: u32,
    fd: i32,
}

const VGEM_FENCE_WRITE: u32 = 0x1;
const DMA_BUF_SYNC_READ: u32 = 1 << 0;
const DMA_BUF_SYNC_WRITE: u32 = 1 << 1;

// DRM_COMMAND_BASE (0x40) + DRM_VGEM_FENCE_ATTACH (1) / _SIGNAL (2).
nix::ioctl_readwrite!(vgem_fence_attach, b'd', 0x41, VgemFenceAttach);
nix::ioctl_write_ptr!(vgem_fence_signal, b'd', 0x42, VgemFenceSignal);
nix::ioctl_readwrite!(dma_buf_export_sync_file, b'b', 2, DmaBufSyncFile);
nix::ioctl_write_ptr!(dma_buf_import_sync_file, b'b', 3, DmaBufSyncFile);

struct Card(File);

impl AsFd for Card {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}
impl drm::Device for Card {}
impl drm::control::Device for Card {}

/// An unsignalled vgem fence, already attached as a write fence to the
/// buffers given to [`HeldFence::attach_to`]; signalled by
/// [`HeldFence::signal`] or on drop.
pub struct HeldFence {
    card: Card,
    fence: u32,
    sync_file: OwnedFd,
    signalled: bool,
    _bo: drm::control::dumbbuffer::DumbBuffer,
}

impl HeldFence {
    /// A new fence on the vgem card at `vgem` (its primary node).
    pub fn new(vgem: &Path) -> io::Result<HeldFence> {
        let card = Card(File::options().read(true).write(true).open(vgem)?);
        let bo = card.create_dumb_buffer((64, 64), drm::buffer::DrmFourcc::Xrgb8888, 32)?;
        use drm::buffer::Buffer as _;
        let handle: u32 = bo.handle().into();
        let mut attach = VgemFenceAttach {
            handle,
            flags: VGEM_FENCE_WRITE,
            out_fence: 0,
            pad: 0,
        };
        // SAFETY: a live, correctly laid out struct for the call.
        unsafe { vgem_fence_attach(card.0.as_raw_fd(), &mut attach) }.map_err(io::Error::from)?;
        let dmabuf = card.buffer_to_prime_fd(bo.handle(), drm::CLOEXEC)?;
        let mut export = DmaBufSyncFile {
            flags: DMA_BUF_SYNC_READ | DMA_BUF_SYNC_WRITE,
            fd: -1,
        };
        // SAFETY: as above; on success the kernel hands us a new fd.
        unsafe { dma_buf_export_sync_file(dmabuf.as_raw_fd(), &mut export) }
            .map_err(io::Error::from)?;
        // SAFETY: the fd was just created for us and is owned by nobody else.
        let sync_file = unsafe { OwnedFd::from_raw_fd(export.fd) };
        Ok(HeldFence {
            card,
            fence: attach.out_fence,
            sync_file,
            signalled: false,
            _bo: bo,
        })
    }

    /// Puts the fence on `dmabuf` as a write fence: its implicit-sync
    /// readers wait for it from now on.
    pub fn attach_to(&self, dmabuf: BorrowedFd<'_>) -> io::Result<()> {
        let import = DmaBufSyncFile {
            flags: DMA_BUF_SYNC_WRITE,
            fd: self.sync_file.as_raw_fd(),
        };
        // SAFETY: a live struct; the kernel only reads it (and the fd).
        unsafe { dma_buf_import_sync_file(dmabuf.as_raw_fd(), &import) }
            .map_err(io::Error::from)?;
        Ok(())
    }

    /// Whether the fence has signalled (a poll on its sync_file).
    pub fn is_signalled(&self) -> bool {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let mut fds = [PollFd::new(self.sync_file.as_fd(), PollFlags::POLLIN)];
        matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
    }

    /// Signals it: the readers waiting on it go on.
    pub fn signal(&mut self) -> io::Result<()> {
        if self.signalled {
            return Ok(());
        }
        self.signalled = true;
        let signal = VgemFenceSignal {
            fence: self.fence,
            flags: 0,
        };
        // SAFETY: a live struct; the kernel only reads it.
        match unsafe { vgem_fence_signal(self.card.0.as_raw_fd(), &signal) } {
            Ok(_) => Ok(()),
            // Signalled already (vgem's own 10 s timeout).
            Err(nix::errno::Errno::ETIMEDOUT) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

impl Drop for HeldFence {
    fn drop(&mut self) {
        let _ = self.signal();
    }
}
