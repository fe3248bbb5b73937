//! The vocabulary the sink's crates share about a guest's buffers: a
//! DMA-BUF as its producer describes it ([`Dmabuf`], over owned or borrowed
//! fds), which buffer an fd refers to ([`BufferKey`]), the checks made
//! before anything maps or imports it, and the one rectangle type
//! ([`Rect`]) scanouts, planes and compositions are measured in.
//!
//! A leaf: the D-Bus layer builds a `Dmabuf<OwnedFd>` from QEMU's message,
//! the renderer and the KMS layer import any `Dmabuf<F: AsFd>` as it is.

mod rect;

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

pub use drm_fourcc::{DrmFourcc, DrmModifier};
pub use rect::Rect;

/// `DMA_BUF_MAGIC` from `<linux/magic.h>`: the dmabuf file system.
const DMA_BUF_MAGIC: i64 = 0x444d_4142;
/// The most padding a row may have beyond its pixels. Real layouts pad to
/// an alignment (pixman 4 bytes, GPUs 64 to 4096); a stride far beyond the
/// row only makes the sink address (and read) memory that holds no picture.
pub const MAX_ROW_PADDING: u32 = 64 * 1024;
/// DRM formats have at most four planes.
pub const MAX_PLANES: usize = 4;

/// Why a buffer cannot be taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DmabufError {
    #[error("the fd is not a DMA-BUF")]
    NotDmabuf,
    #[error("{call}: {errno}")]
    Call {
        call: &'static str,
        errno: nix::errno::Errno,
    },
    #[error("{0} planes (1 to 4)")]
    PlaneCount(usize),
    #[error("stride {stride} below {width} x {bytes_per_pixel} bytes")]
    StrideTooSmall {
        stride: u32,
        width: u32,
        bytes_per_pixel: u32,
    },
    #[error(
        "stride {stride} over {width} x {bytes_per_pixel} bytes + {MAX_ROW_PADDING} of padding"
    )]
    StrideTooLarge {
        stride: u32,
        width: u32,
        bytes_per_pixel: u32,
    },
    #[error("plane {plane} needs {needed} bytes (offset {offset}, stride {stride}), the buffer has {size}")]
    PlaneOutside {
        plane: usize,
        needed: u64,
        offset: u32,
        stride: u32,
        size: u64,
    },
}

/// One plane: where its rows start in `fd` and how far apart they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plane<F> {
    pub fd: F,
    pub offset: u32,
    pub stride: u32,
}

/// A whole DMA-BUF (not the scanout rectangle within it): `width` x
/// `height` pixels of `fourcc` laid out by `modifier` over 1 to 4 planes.
/// `DrmModifier::Invalid` means implicit: the exporter's own layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dmabuf<F = OwnedFd> {
    pub width: u32,
    pub height: u32,
    pub fourcc: DrmFourcc,
    pub modifier: DrmModifier,
    pub planes: Vec<Plane<F>>,
}

/// Which buffer an fd refers to: the same for every fd of one DMA-BUF
/// (QEMU sends a new fd for the same buffer at each scanout).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BufferKey {
    pub dev: u64,
    pub ino: u64,
}

impl<F: AsFd> Dmabuf<F> {
    /// Which buffer this is (by its first plane's fd).
    pub fn key(&self) -> Result<BufferKey, DmabufError> {
        let first = self.planes.first().ok_or(DmabufError::PlaneCount(0))?;
        buffer_key(first.fd.as_fd())
    }

    /// The exporter's name, e.g. "udmabuf".
    pub fn exporter(&self) -> Option<String> {
        exporter(self.planes.first()?.fd.as_fd())
    }

    /// The modifier to pass to an importer, `None` for implicit. A udmabuf
    /// is linear memory whatever its producer says: an implicit one is
    /// taken as LINEAR (an importer guessing its own tiling would scramble
    /// it).
    pub fn explicit_modifier(&self) -> Option<DrmModifier> {
        match self.modifier {
            DrmModifier::Invalid if self.exporter().as_deref() == Some("udmabuf") => {
                Some(DrmModifier::Linear)
            }
            DrmModifier::Invalid => None,
            m => Some(m),
        }
    }

    /// Checks every plane before anything imports the buffer: 1 to 4 of
    /// them, each fd a DMA-BUF holding the plane's rows (all of them for a
    /// packed format; at least the plane's start otherwise). Returns the
    /// buffer's identity.
    pub fn check(&self) -> Result<BufferKey, DmabufError> {
        if self.planes.is_empty() || self.planes.len() > MAX_PLANES {
            return Err(DmabufError::PlaneCount(self.planes.len()));
        }
        let bytes_per_pixel = bytes_per_pixel(self.fourcc).map(|b| b as u32);
        for (i, plane) in self.planes.iter().enumerate() {
            let needed = match (bytes_per_pixel, self.planes.len()) {
                (Some(bpp), 1) => {
                    let row = u64::from(self.width) * u64::from(bpp);
                    if u64::from(plane.stride) < row {
                        return Err(DmabufError::StrideTooSmall {
                            stride: plane.stride,
                            width: self.width,
                            bytes_per_pixel: bpp,
                        });
                    }
                    if u64::from(plane.stride) > row + u64::from(MAX_ROW_PADDING) {
                        return Err(DmabufError::StrideTooLarge {
                            stride: plane.stride,
                            width: self.width,
                            bytes_per_pixel: bpp,
                        });
                    }
                    u64::from(plane.offset)
                        + u64::from(plane.stride) * u64::from(self.height.saturating_sub(1))
                        + row
                }
                _ => u64::from(plane.offset) + 1,
            };
            let size = dmabuf_size(plane.fd.as_fd())?;
            if needed > size {
                return Err(DmabufError::PlaneOutside {
                    plane: i,
                    needed,
                    offset: plane.offset,
                    stride: plane.stride,
                    size,
                });
            }
        }
        self.key()
    }
}

/// Bytes per pixel of the packed RGB formats the sink reads (`None`: a
/// format it does not read pixel by pixel, e.g. a YUV one).
pub fn bytes_per_pixel(fourcc: DrmFourcc) -> Option<usize> {
    use DrmFourcc::*;
    match fourcc {
        Xrgb8888 | Argb8888 | Xbgr8888 | Abgr8888 | Bgrx8888 | Bgra8888 | Rgbx8888 | Rgba8888 => {
            Some(4)
        }
        Rgb888 | Bgr888 => Some(3),
        Rgb565 | Bgr565 => Some(2),
        _ => None,
    }
}

/// The size of the DMA-BUF behind `fd` (its `lseek(SEEK_END)`), or why it
/// is not a DMA-BUF.
pub fn dmabuf_size(fd: BorrowedFd<'_>) -> Result<u64, DmabufError> {
    let fs = nix::sys::statfs::fstatfs(fd).map_err(|errno| DmabufError::Call {
        call: "fstatfs",
        errno,
    })?;
    if fs.filesystem_type().0 as i64 != DMA_BUF_MAGIC {
        return Err(DmabufError::NotDmabuf);
    }
    let end = nix::unistd::lseek(fd, 0, nix::unistd::Whence::SeekEnd).map_err(|errno| {
        DmabufError::Call {
            call: "lseek(SEEK_END)",
            errno,
        }
    })?;
    // lseek never returns a negative offset on success.
    Ok(end.max(0) as u64)
}

/// Which buffer `fd` refers to.
pub fn buffer_key(fd: BorrowedFd<'_>) -> Result<BufferKey, DmabufError> {
    let st = nix::sys::stat::fstat(fd).map_err(|errno| DmabufError::Call {
        call: "fstat",
        errno,
    })?;
    Ok(BufferKey {
        dev: st.st_dev,
        ino: st.st_ino,
    })
}

/// The exporter's name (`exp_name` in `/proc/self/fdinfo`), e.g. "udmabuf".
pub fn exporter(fd: BorrowedFd<'_>) -> Option<String> {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd())).ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("exp_name:"))
        .map(|name| name.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memfd(size: i64) -> OwnedFd {
        let fd =
            nix::sys::memfd::memfd_create("x", nix::sys::memfd::MFdFlags::MFD_CLOEXEC).unwrap();
        nix::unistd::ftruncate(&fd, size).unwrap();
        fd
    }

    fn one_plane(fd: OwnedFd) -> Dmabuf {
        Dmabuf {
            width: 16,
            height: 16,
            fourcc: DrmFourcc::Xrgb8888,
            modifier: DrmModifier::Linear,
            planes: vec![Plane {
                fd,
                offset: 0,
                stride: 64,
            }],
        }
    }

    #[test]
    fn a_memfd_is_not_a_dmabuf() {
        let fd = memfd(4096);
        assert_eq!(dmabuf_size(fd.as_fd()), Err(DmabufError::NotDmabuf));
        assert_eq!(one_plane(fd).check(), Err(DmabufError::NotDmabuf));
    }

    #[test]
    fn plane_counts_outside_one_to_four_are_refused_before_any_fd_is_read() {
        let mut buffer = one_plane(memfd(4096));
        buffer.planes.clear();
        assert_eq!(buffer.check(), Err(DmabufError::PlaneCount(0)));
        assert_eq!(buffer.key(), Err(DmabufError::PlaneCount(0)));
        let fd = memfd(4096);
        buffer.planes = (0..5)
            .map(|_| Plane {
                fd: fd.try_clone().unwrap(),
                offset: 0,
                stride: 64,
            })
            .collect();
        assert_eq!(buffer.check(), Err(DmabufError::PlaneCount(5)));
    }

    #[test]
    fn implicit_stays_implicit_unless_the_exporter_is_udmabuf() {
        let mut buffer = one_plane(memfd(4096));
        buffer.modifier = DrmModifier::Invalid;
        // A memfd has no exporter: nothing to say the layout is linear.
        assert_eq!(buffer.explicit_modifier(), None);
    }
}
