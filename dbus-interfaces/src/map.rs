//! `ScanoutMap`'s shared memory: checked against the fd's size before it is
//! mapped, mapped read-only from the page that holds `offset`.

use std::num::NonZeroUsize;
use std::os::fd::{AsFd, OwnedFd};
use std::ptr::NonNull;

use nix::sys::mman::{mmap, munmap, MapFlags, ProtFlags};
use nix::sys::stat::fstat;

use crate::validate::{InvalidInput, Layout};

/// A read-only shared mapping of a QEMU display surface.
///
/// QEMU keeps writing into it (tearing is possible, as with any shared
/// surface); the sink only reads rows that [`Layout`] says are there.
#[derive(Debug)]
pub struct SharedMap {
    base: NonNull<libc::c_void>,
    map_len: NonZeroUsize,
    /// Where the image starts within the mapping (`offset` minus the page start).
    start: usize,
    len: usize,
    pub layout: Layout,
    /// Kept open for as long as the mapping lives (and for a KMS import later).
    _fd: OwnedFd,
}

// SAFETY: the mapping is only read, through `&self`, and unmapped on drop;
// moving it between threads is as safe as moving a `Box<[u8]>`.
unsafe impl Send for SharedMap {}
// SAFETY: see above: all access is read-only.
unsafe impl Sync for SharedMap {}

fn map_err(what: &str, err: impl std::fmt::Display) -> InvalidInput {
    InvalidInput::Map(format!("{what}: {err}"))
}

impl SharedMap {
    /// Maps `layout.min_len()` bytes of `fd` from `offset`, after checking
    /// that the file is at least that long (a shorter file would SIGBUS).
    pub fn new(fd: OwnedFd, offset: u32, layout: Layout) -> Result<SharedMap, InvalidInput> {
        let stat = fstat(fd.as_fd()).map_err(|e| map_err("fstat", e))?;
        if stat.st_mode & libc::S_IFMT != libc::S_IFREG {
            return Err(map_err("fd", "not a regular file or memfd"));
        }
        // QEMU 10 seals its surface memfds with F_SEAL_SEAL only (seen: seals
        // = 1), not F_SEAL_SHRINK: the size check below holds unless QEMU
        // itself truncates the file later, which it never does.
        let file_len = u64::try_from(stat.st_size).unwrap_or(0);
        let needed = u64::from(offset) + layout.min_len();
        if file_len < needed {
            return Err(InvalidInput::Map(format!(
                "fd holds {file_len} bytes, {needed} needed (offset {offset} + {}x{} stride {})",
                layout.width, layout.height, layout.stride
            )));
        }
        let page = page_size();
        let start = offset as usize % page;
        let map_offset = offset as usize - start;
        let len = usize::try_from(layout.min_len()).map_err(|e| map_err("size", e))?;
        let map_len = NonZeroUsize::new(start + len).ok_or_else(|| map_err("size", "zero"))?;
        // SAFETY: a fresh read-only shared mapping of a file we checked to be
        // long enough; nothing else aliases it as Rust memory.
        let base = unsafe {
            mmap(
                None,
                map_len,
                ProtFlags::PROT_READ,
                MapFlags::MAP_SHARED,
                fd.as_fd(),
                map_offset as libc::off_t,
            )
        }
        .map_err(|e| map_err("mmap", e))?;
        Ok(SharedMap {
            base,
            map_len,
            start,
            len,
            layout,
            _fd: fd,
        })
    }

    /// The image bytes: at least `layout.min_len()`.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `base` maps `start + len` readable bytes for our lifetime.
        unsafe {
            std::slice::from_raw_parts(self.base.as_ptr().cast::<u8>().add(self.start), self.len)
        }
    }
}

impl Drop for SharedMap {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the region `mmap` returned, once.
        if let Err(err) = unsafe { munmap(self.base, self.map_len.get()) } {
            tracing::warn!("munmap of a ScanoutMap surface failed: {err}");
        }
    }
}

fn page_size() -> usize {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|v| usize::try_from(v).ok())
        .unwrap_or(4096)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::PIXMAN_X8R8G8B8;
    use nix::sys::memfd::{memfd_create, MFdFlags};
    use std::io::Write;

    fn memfd_with(bytes: &[u8]) -> OwnedFd {
        let fd = memfd_create("map-test", MFdFlags::MFD_CLOEXEC).unwrap();
        let mut file = std::fs::File::from(fd);
        file.write_all(bytes).unwrap();
        file.into()
    }

    #[test]
    fn maps_at_an_unaligned_offset() {
        let mut bytes = vec![0u8; 5000];
        bytes[4100..4116].copy_from_slice(&[7; 16]);
        let layout = Layout::new(2, 2, 8, PIXMAN_X8R8G8B8).unwrap();
        let map = SharedMap::new(memfd_with(&bytes), 4100, layout).unwrap();
        assert_eq!(map.bytes(), &[7; 16]);
    }

    #[test]
    fn refuses_a_file_that_is_too_small() {
        let layout = Layout::new(100, 100, 400, PIXMAN_X8R8G8B8).unwrap();
        let err = SharedMap::new(memfd_with(&[0; 1000]), 0, layout).unwrap_err();
        assert!(matches!(err, InvalidInput::Map(m) if m.contains("1000 bytes")));
        // Long enough without the offset, too short with it.
        let err = SharedMap::new(memfd_with(&[0; 40_000]), 8, layout).unwrap_err();
        assert!(matches!(err, InvalidInput::Map(_)));
    }

    #[test]
    fn refuses_what_is_not_a_file() {
        let layout = Layout::new(1, 1, 4, PIXMAN_X8R8G8B8).unwrap();
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let err = SharedMap::new(a.into(), 0, layout).unwrap_err();
        assert!(matches!(err, InvalidInput::Map(_)));
    }
}
