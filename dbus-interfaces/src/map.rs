//! `ScanoutMap`'s shared memory: checked against the fd's size when it
//! comes, and read with `pread`, never mapped. QEMU does not seal its surface
//! memfds against shrinking (QEMU 10: `F_SEAL_SEAL` only): a mapping of a
//! file truncated later faults (SIGBUS) where `pread` returns short.

use std::os::fd::{AsFd, OwnedFd};

use nix::sys::stat::fstat;

use crate::validate::{InvalidInput, Layout};

/// A QEMU display surface in shared memory.
///
/// QEMU keeps writing into it (tearing is possible, as with any shared
/// surface); the sink only reads rows that [`Layout`] says are there.
#[derive(Debug)]
pub struct SharedMap {
    fd: OwnedFd,
    offset: u64,
    pub layout: Layout,
}

fn map_err(what: &str, err: impl std::fmt::Display) -> InvalidInput {
    InvalidInput::Map(format!("{what}: {err}"))
}

impl SharedMap {
    /// Takes `fd` as the surface `layout` at `offset`, after checking that the
    /// file is at least that long.
    pub fn new(fd: OwnedFd, offset: u32, layout: Layout) -> Result<SharedMap, InvalidInput> {
        let stat = fstat(fd.as_fd()).map_err(|e| map_err("fstat", e))?;
        if stat.st_mode & libc::S_IFMT != libc::S_IFREG {
            return Err(map_err("fd", "not a regular file or memfd"));
        }
        let file_len = u64::try_from(stat.st_size).unwrap_or(0);
        let needed = u64::from(offset) + layout.min_len();
        if file_len < needed {
            return Err(InvalidInput::Map(format!(
                "fd holds {file_len} bytes, {needed} needed (offset {offset} + {}x{} stride {})",
                layout.width, layout.height, layout.stride
            )));
        }
        Ok(SharedMap {
            fd,
            offset: u64::from(offset),
            layout,
        })
    }

    /// Reads rows `first..first + count` into `buf` (resized to hold them,
    /// `stride` apart, the last without its padding). Fails, instead of
    /// faulting, when QEMU shrank the file since.
    pub fn read_rows(&self, first: u32, count: u32, buf: &mut Vec<u8>) -> Result<(), InvalidInput> {
        let l = &self.layout;
        if count == 0 || u64::from(first) + u64::from(count) > u64::from(l.height) {
            return Err(map_err("rows", format!("{first}+{count} of {}", l.height)));
        }
        let len = l.stride as usize * (count as usize - 1) + l.row_bytes();
        buf.resize(len, 0);
        let mut done = 0;
        let start = self.offset + u64::from(first) * u64::from(l.stride);
        while done < len {
            let at = i64::try_from(start + done as u64).map_err(|e| map_err("offset", e))?;
            match nix::sys::uio::pread(self.fd.as_fd(), &mut buf[done..], at) {
                Ok(0) => {
                    let now = fstat(self.fd.as_fd()).map_or(-1, |s| s.st_size);
                    return Err(InvalidInput::Map(format!(
                        "the file shrank to {now} bytes under the {}x{} surface",
                        l.width, l.height
                    )));
                }
                Ok(n) => done += n,
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(map_err("pread", e)),
            }
        }
        Ok(())
    }
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
        let mut buf = Vec::new();
        map.read_rows(0, 2, &mut buf).unwrap();
        assert_eq!(buf, [7; 16]);
        map.read_rows(1, 1, &mut buf).unwrap();
        assert_eq!(buf, [7; 8]);
        assert!(map.read_rows(1, 2, &mut buf).is_err());
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
    fn a_file_shrunk_after_the_map_fails_to_read() {
        let layout = Layout::new(16, 16, 64, PIXMAN_X8R8G8B8).unwrap();
        let fd = memfd_with(&[1; 1024]);
        let map = SharedMap::new(fd.try_clone().unwrap(), 0, layout).unwrap();
        nix::unistd::ftruncate(&fd, 100).unwrap();
        let mut buf = Vec::new();
        let err = map.read_rows(0, 16, &mut buf).unwrap_err();
        assert!(err.to_string().contains("shrank to 100 bytes"), "{err}");
        assert!(map.read_rows(0, 1, &mut buf).is_ok());
    }

    #[test]
    fn refuses_what_is_not_a_file() {
        let layout = Layout::new(1, 1, 4, PIXMAN_X8R8G8B8).unwrap();
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let err = SharedMap::new(a.into(), 0, layout).unwrap_err();
        assert!(matches!(err, InvalidInput::Map(_)));
    }
}
