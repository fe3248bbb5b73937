//! DMA-BUF helpers for tests: shared mappings, CPU access bracketed by
//! `DMA_BUF_IOCTL_SYNC`, who exported a buffer, and a decoded picture of one.

use std::io;
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::ptr::NonNull;

use capture::RgbaFrame;
use drm_fourcc::DrmFourcc;
use nix::sys::mman::{mmap, munmap, MapFlags, ProtFlags};

/// `struct dma_buf_sync` (linux/dma-buf.h).
#[repr(C)]
pub struct DmaBufSync {
    pub flags: u64,
}

const SYNC_READ: u64 = 1 << 0;
const SYNC_WRITE: u64 = 1 << 1;
const SYNC_START: u64 = 0;
const SYNC_END: u64 = 1 << 2;

// DMA_BUF_IOCTL_SYNC is _IOW('b', 0, struct dma_buf_sync): a write-pointer
// ioctl (`ioctl_readwrite!` would encode another number: ENOTTY).
nix::ioctl_write_ptr!(dma_buf_ioctl_sync, b'b', 0, DmaBufSync);

/// What the CPU is about to do with a DMA-BUF's memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
    ReadWrite,
}

impl Access {
    fn flags(self) -> u64 {
        match self {
            Access::Read => SYNC_READ,
            Access::Write => SYNC_WRITE,
            Access::ReadWrite => SYNC_READ | SYNC_WRITE,
        }
    }
}

fn sync(dmabuf: BorrowedFd<'_>, flags: u64) -> io::Result<()> {
    let arg = DmaBufSync { flags };
    loop {
        // SAFETY: `arg` is a live, correctly laid out `struct dma_buf_sync`
        // for the duration of the call; the kernel only reads it.
        match unsafe { dma_buf_ioctl_sync(dmabuf.as_raw_fd(), &arg) } {
            Ok(_) => return Ok(()),
            Err(nix::errno::Errno::EINTR | nix::errno::Errno::EAGAIN) => continue,
            Err(errno) => return Err(io::Error::from(errno)),
        }
    }
}

/// Runs `f` between `DMA_BUF_SYNC_START` and `DMA_BUF_SYNC_END` for `access`,
/// so the exporter can flush or invalidate caches around CPU access.
pub fn with_cpu_access<T>(
    dmabuf: BorrowedFd<'_>,
    access: Access,
    f: impl FnOnce() -> T,
) -> io::Result<T> {
    sync(dmabuf, SYNC_START | access.flags())?;
    let out = f();
    sync(dmabuf, SYNC_END | access.flags())?;
    Ok(out)
}

/// The exporter's name (`exp_name` in `/proc/self/fdinfo/N`: "udmabuf",
/// "vgem", …), or `None` when `fd` is not a DMA-BUF.
pub fn exporter(fd: BorrowedFd<'_>) -> io::Result<Option<String>> {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd()))?;
    Ok(info
        .lines()
        .find_map(|line| line.strip_prefix("exp_name:"))
        .map(|name| name.trim().to_owned()))
}

/// The buffer's size in bytes (a DMA-BUF reports it through `lseek(SEEK_END)`).
pub fn size(fd: BorrowedFd<'_>) -> io::Result<usize> {
    let end = nix::unistd::lseek(fd, 0, nix::unistd::Whence::SeekEnd)?;
    nix::unistd::lseek(fd, 0, nix::unistd::Whence::SeekSet)?;
    Ok(end as usize)
}

/// A shared mapping of a memfd or a DMA-BUF, unmapped on drop.
#[derive(Debug)]
pub struct Mapping {
    ptr: NonNull<libc::c_void>,
    len: usize,
}

// SAFETY: the mapping is plain shared memory, not tied to a thread.
unsafe impl Send for Mapping {}

impl Mapping {
    /// Maps the first `len` bytes of `fd`, shared; read-only unless `writable`.
    pub fn new(fd: BorrowedFd<'_>, len: usize, writable: bool) -> io::Result<Mapping> {
        let length = NonZeroUsize::new(len)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty mapping"))?;
        let prot = if writable {
            ProtFlags::PROT_READ | ProtFlags::PROT_WRITE
        } else {
            ProtFlags::PROT_READ
        };
        // SAFETY: a fresh mapping chosen by the kernel (no address hint), so
        // it aliases no Rust object; it lives until `Drop` unmaps it.
        let ptr = unsafe { mmap(None, length, prot, MapFlags::MAP_SHARED, fd, 0) }?;
        Ok(Mapping { ptr, len })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: `ptr` maps `len` readable bytes for as long as `self`
        // lives. Another device may write the memory meanwhile; callers read
        // only between SYNC_START and SYNC_END, when the producer is done.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().cast::<u8>(), self.len) }
    }

    /// Panics on a read-only mapping's first write (SIGSEGV): map it writable.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`; `&mut self` makes this the only Rust view.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr().cast::<u8>(), self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly what mmap returned, and no slice
        // borrowed from `self` outlives it.
        let _ = unsafe { munmap(self.ptr, self.len) };
    }
}

/// Where a picture sits in a buffer: one plane, packed rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub width: u32,
    pub height: u32,
    pub stride: u32,
    pub offset: u32,
    pub fourcc: DrmFourcc,
}

impl Layout {
    /// Bytes from the buffer's start to the end of the last pixel.
    pub fn extent(&self) -> Option<usize> {
        let bpp = capture::bytes_per_pixel(self.fourcc)?;
        let rows = (self.height as usize).checked_sub(1)?;
        Some(self.offset as usize + rows * self.stride as usize + self.width as usize * bpp)
    }

    /// Decodes the picture from `bytes` (the whole buffer), top row first.
    pub fn decode(&self, bytes: &[u8]) -> io::Result<RgbaFrame> {
        let bpp = capture::bytes_per_pixel(self.fourcc).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::Unsupported,
                format!("cannot decode {:?}", self.fourcc),
            )
        })?;
        if self.extent().is_none_or(|end| end > bytes.len()) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{self:?} does not fit in {} bytes", bytes.len()),
            ));
        }
        let mut frame = RgbaFrame::default();
        frame.reset(self.width, self.height);
        for y in 0..self.height {
            let start = self.offset as usize + y as usize * self.stride as usize;
            let row = &bytes[start..start + self.width as usize * bpp];
            capture::decode_row(self.fourcc, row, frame.row_mut(y)).map_err(io::Error::other)?;
        }
        Ok(frame)
    }
}

/// Maps a DMA-BUF and decodes the picture in it (for buffers that others
/// export, such as QEMU's `ScanoutDMABUF`).
pub fn read_picture(dmabuf: impl AsFd, layout: Layout) -> io::Result<RgbaFrame> {
    let fd = dmabuf.as_fd();
    let map = Mapping::new(fd, size(fd)?, false)?;
    with_cpu_access(fd, Access::Read, || layout.decode(map.as_slice()))?
}
