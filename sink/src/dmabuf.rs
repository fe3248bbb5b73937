//! Buffer-level checks on a guest DMA-BUF before anything imports it: is
//! each fd a DMA-BUF, do the planes fit the buffer, and which buffer is it
//! (QEMU sends a new fd for the same buffer: identify it by inode).

use std::os::fd::{AsFd, BorrowedFd};

use dbus_interfaces::validate::check_stride;
use dbus_interfaces::{DmabufScanout, InvalidInput};

/// `DMA_BUF_MAGIC` from `<linux/magic.h>`: the dmabuf file system.
const DMA_BUF_MAGIC: i64 = 0x444d_4142;
pub const MOD_LINEAR: u64 = 0;
pub const MOD_INVALID: u64 = 0x00ff_ffff_ffff_ffff;

/// Which buffer an fd refers to: the same for every fd of one DMA-BUF.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BufferKey {
    pub dev: u64,
    pub ino: u64,
}

fn invalid(message: String) -> InvalidInput {
    InvalidInput::Dmabuf(message)
}

/// The size of the DMA-BUF behind `fd` (its `lseek(SEEK_END)`), or why it
/// is not a DMA-BUF.
pub fn dmabuf_size(fd: BorrowedFd<'_>) -> Result<u64, InvalidInput> {
    let fs = nix::sys::statfs::fstatfs(fd).map_err(|e| invalid(format!("fstatfs: {e}")))?;
    if fs.filesystem_type().0 as i64 != DMA_BUF_MAGIC {
        return Err(invalid("the fd is not a DMA-BUF".into()));
    }
    let end = nix::unistd::lseek(fd, 0, nix::unistd::Whence::SeekEnd)
        .map_err(|e| invalid(format!("lseek(SEEK_END): {e}")))?;
    u64::try_from(end).map_err(|_| invalid(format!("negative size {end}")))
}

pub fn buffer_key(fd: BorrowedFd<'_>) -> Result<BufferKey, InvalidInput> {
    let st = nix::sys::stat::fstat(fd).map_err(|e| invalid(format!("fstat: {e}")))?;
    Ok(BufferKey {
        dev: st.st_dev,
        ino: st.st_ino,
    })
}

/// The exporter's name (`exp_name` in `/proc/self/fdinfo`), e.g. "udmabuf".
pub fn exporter(fd: BorrowedFd<'_>) -> Option<String> {
    use std::os::fd::AsRawFd;
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd())).ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("exp_name:"))
        .map(|name| name.trim().to_owned())
}

/// Checks every plane: a DMA-BUF whose size holds the plane's rows.
/// Returns the buffer's identity.
pub fn check_scanout(scanout: &DmabufScanout) -> Result<BufferKey, InvalidInput> {
    let bpp = capture::bytes_per_pixel(scanout.fourcc);
    for (i, plane) in scanout.planes.iter().enumerate() {
        let size = dmabuf_size(plane.fd.as_fd())?;
        // Single-plane formats we know: every row of the backing buffer must
        // fit. Others: at least the plane must start inside the buffer.
        let needed = match (bpp, scanout.planes.len()) {
            (Some(bpp), 1) => {
                let row = u64::from(scanout.backing_width) * bpp as u64;
                check_stride(plane.stride, scanout.backing_width, bpp as u32)
                    .map_err(|why| invalid(why.to_string()))?;
                u64::from(plane.offset)
                    + u64::from(plane.stride) * u64::from(scanout.backing_height - 1)
                    + row
            }
            _ => u64::from(plane.offset) + 1,
        };
        if needed > size {
            return Err(invalid(format!(
                "plane {i} needs {needed} bytes (offset {}, stride {}), the buffer has {size}",
                plane.offset, plane.stride
            )));
        }
    }
    let first = scanout
        .planes
        .first()
        .ok_or_else(|| invalid("no planes".into()))?;
    buffer_key(first.fd.as_fd())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_memfd_is_not_a_dmabuf() {
        let fd =
            nix::sys::memfd::memfd_create("x", nix::sys::memfd::MFdFlags::MFD_CLOEXEC).unwrap();
        nix::unistd::ftruncate(&fd, 4096).unwrap();
        let err = dmabuf_size(fd.as_fd()).unwrap_err();
        assert_eq!(err, InvalidInput::Dmabuf("the fd is not a DMA-BUF".into()));
    }
}
