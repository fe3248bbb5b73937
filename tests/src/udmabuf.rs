//! A DMA-BUF frame producer that needs no GPU: a sealed memfd turned into a
//! DMA-BUF by `/dev/udmabuf`, filled with a known pattern that can be
//! rewritten between frames, and the RGBA picture a reader must see.
//!
//! `/dev/udmabuf` exists only in the lab (`scripts/lab/`); the pattern and
//! its encodings work anywhere.

use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use capture::RgbaFrame;
use drm_fourcc::DrmFourcc;
use gl_renderer::{Dmabuf, DrmModifier, Plane};
use nix::fcntl::{fcntl, FcntlArg, SealFlag};
use nix::sys::memfd::{memfd_create, MFdFlags};

use crate::dmabuf::{with_cpu_access, Access, Layout, Mapping};

/// The formats the producer writes.
pub const FORMATS: [DrmFourcc; 5] = [
    DrmFourcc::Xrgb8888,
    DrmFourcc::Argb8888,
    DrmFourcc::Xbgr8888,
    DrmFourcc::Abgr8888,
    DrmFourcc::Rgb565,
];

/// What an X (padding) byte is written as: not 0xff, so that a reader that
/// takes it for alpha shows it.
const X_BYTE: u8 = 0x00;
/// What the bytes between a row's last pixel and the next row hold: a reader
/// that ignores the stride reads them as pixels.
const ROW_PADDING: u8 = 0xe7;

/// The test picture for frame `frame`, in RGBA: gradients that tell every
/// row and column within a 256-pixel block apart, the block's coordinates
/// (so that a shift by 256 shows), and alpha varying on its own. Each frame
/// moves every channel, so consecutive frames differ in every pixel.
pub fn pattern(x: u32, y: u32, frame: u32) -> [u8; 4] {
    let r = x.wrapping_add(frame.wrapping_mul(85));
    let g = y.wrapping_add(frame.wrapping_mul(51));
    let b = ((x >> 8) * 16 + (y >> 8) * 64 + ((x ^ y) & 15)).wrapping_add(frame.wrapping_mul(119));
    let a = (x.wrapping_mul(3) ^ y.wrapping_mul(5)).wrapping_add(frame.wrapping_mul(29));
    [r as u8, g as u8, b as u8, a as u8]
}

/// Writes one RGBA pixel as `fourcc` into `dst` (exactly its bytes per pixel).
///
/// Panics for a format outside [`FORMATS`].
pub fn encode(fourcc: DrmFourcc, [r, g, b, a]: [u8; 4], dst: &mut [u8]) {
    // DRM names a packed little-endian word from its high bits down.
    match fourcc {
        DrmFourcc::Xrgb8888 => dst.copy_from_slice(&[b, g, r, X_BYTE]),
        DrmFourcc::Argb8888 => dst.copy_from_slice(&[b, g, r, a]),
        DrmFourcc::Xbgr8888 => dst.copy_from_slice(&[r, g, b, X_BYTE]),
        DrmFourcc::Abgr8888 => dst.copy_from_slice(&[r, g, b, a]),
        DrmFourcc::Rgb565 => {
            let v = ((u16::from(r) >> 3) << 11) | ((u16::from(g) >> 2) << 5) | (u16::from(b) >> 3);
            dst.copy_from_slice(&v.to_le_bytes());
        }
        other => panic!("the udmabuf producer does not write {other:?}"),
    }
}

/// Bytes per pixel of a format in [`FORMATS`].
pub fn bytes_per_pixel(fourcc: DrmFourcc) -> usize {
    capture::bytes_per_pixel(fourcc).unwrap_or_else(|| panic!("no pixel size for {fourcc:?}"))
}

/// The picture a reader of frame `frame` must see: the pattern as `fourcc`
/// stores it (565 drops low bits, X formats are opaque), decoded back the
/// way `capture` decodes every fourcc.
pub fn expected(width: u32, height: u32, fourcc: DrmFourcc, frame: u32) -> RgbaFrame {
    let bpp = bytes_per_pixel(fourcc);
    let mut row = vec![0u8; width as usize * bpp];
    let mut picture = RgbaFrame::default();
    picture.reset(width, height);
    for y in 0..height {
        for (x, px) in row.chunks_exact_mut(bpp).enumerate() {
            encode(fourcc, pattern(x as u32, y, frame), px);
        }
        capture::decode_row(fourcc, &row, picture.row_mut(y)).expect("decodable format");
    }
    picture
}

/// Fills `bytes` (a whole buffer of `layout`) with frame `frame`.
pub fn fill(bytes: &mut [u8], layout: Layout, frame: u32) {
    let bpp = bytes_per_pixel(layout.fourcc);
    let row_bytes = layout.width as usize * bpp;
    for y in 0..layout.height {
        let start = layout.offset as usize + y as usize * layout.stride as usize;
        let row = &mut bytes[start..start + layout.stride as usize];
        let (pixels, padding) = row.split_at_mut(row_bytes);
        for (x, px) in pixels.chunks_exact_mut(bpp).enumerate() {
            encode(layout.fourcc, pattern(x as u32, y, frame), px);
        }
        padding.fill(ROW_PADDING);
    }
}

/// `struct udmabuf_create` (linux/udmabuf.h).
#[repr(C)]
struct UdmabufCreate {
    memfd: u32,
    flags: u32,
    offset: u64,
    size: u64,
}

const UDMABUF_FLAGS_CLOEXEC: u32 = 0x01;

nix::ioctl_write_ptr!(udmabuf_create, b'u', 0x42, UdmabufCreate);

fn page_size() -> usize {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .map_or(4096, |size| size as usize)
}

/// A DMA-BUF made from a sealed memfd by `/dev/udmabuf`, with one packed
/// plane of `layout`, written through a mapping of the memfd.
#[derive(Debug)]
pub struct Udmabuf {
    layout: Layout,
    dmabuf: OwnedFd,
    map: Mapping,
    _memfd: OwnedFd,
}

impl Udmabuf {
    /// `width` x `height` of `fourcc`, rows packed (stride = width × bytes
    /// per pixel), filled with frame 0.
    pub fn new(width: u32, height: u32, fourcc: DrmFourcc) -> io::Result<Udmabuf> {
        let stride = width * bytes_per_pixel(fourcc) as u32;
        Udmabuf::with_stride(width, height, stride, fourcc)
    }

    /// As [`new`](Self::new) with an explicit stride (at least a row's bytes).
    pub fn with_stride(
        width: u32,
        height: u32,
        stride: u32,
        fourcc: DrmFourcc,
    ) -> io::Result<Udmabuf> {
        let layout = Layout {
            width,
            height,
            stride,
            offset: 0,
            fourcc,
        };
        let row_bytes = width as usize * bytes_per_pixel(fourcc);
        if width == 0 || height == 0 || (stride as usize) < row_bytes {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("bad udmabuf layout {layout:?}"),
            ));
        }
        // udmabuf takes whole pages: round the memfd up.
        let page = page_size();
        let size = (stride as usize * height as usize).div_ceil(page) * page;

        let memfd = memfd_create(
            c"qemu-sink-test-frame",
            MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
        )?;
        nix::unistd::ftruncate(&memfd, size as libc::off_t)?;
        // udmabuf insists on F_SEAL_SHRINK (its pages must stay) and refuses
        // F_SEAL_WRITE (we keep writing frames into it).
        fcntl(&memfd, FcntlArg::F_ADD_SEALS(SealFlag::F_SEAL_SHRINK))?;

        let device = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/udmabuf")
            .map_err(|err| {
                io::Error::new(
                    err.kind(),
                    format!("opening /dev/udmabuf (only the lab has it): {err}"),
                )
            })?;
        let request = UdmabufCreate {
            memfd: memfd.as_raw_fd() as u32,
            flags: UDMABUF_FLAGS_CLOEXEC,
            offset: 0,
            size: size as u64,
        };
        // SAFETY: `request` is a live `struct udmabuf_create` the kernel only
        // reads; on success the ioctl returns a new fd that nothing else owns.
        let dmabuf = unsafe {
            let fd = udmabuf_create(device.as_raw_fd(), &request)
                .map_err(|errno| io::Error::other(format!("UDMABUF_CREATE: {errno}")))?;
            OwnedFd::from_raw_fd(fd)
        };
        let map = Mapping::new(memfd.as_fd(), size, true)?;
        let mut buffer = Udmabuf {
            layout,
            dmabuf,
            map,
            _memfd: memfd,
        };
        buffer.fill(0)?;
        Ok(buffer)
    }

    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// The buffer as a producer describes it, with `modifier`.
    pub fn describe(&self, modifier: DrmModifier) -> Dmabuf<BorrowedFd<'_>> {
        let layout = self.layout;
        Dmabuf {
            width: layout.width,
            height: layout.height,
            fourcc: layout.fourcc,
            modifier,
            planes: vec![Plane {
                fd: self.fd(),
                offset: layout.offset,
                stride: layout.stride,
            }],
        }
    }

    pub fn width(&self) -> u32 {
        self.layout.width
    }

    pub fn height(&self) -> u32 {
        self.layout.height
    }

    pub fn stride(&self) -> u32 {
        self.layout.stride
    }

    pub fn fourcc(&self) -> DrmFourcc {
        self.layout.fourcc
    }

    /// The buffer's size in bytes (whole pages).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The DMA-BUF (borrowed: importers dup or import it).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.dmabuf.as_fd()
    }

    /// A new fd for the same DMA-BUF, e.g. to send to another process.
    pub fn try_clone_fd(&self) -> io::Result<OwnedFd> {
        self.dmabuf.try_clone()
    }

    /// Rewrites the whole buffer with frame `frame` of the pattern.
    pub fn fill(&mut self, frame: u32) -> io::Result<()> {
        let layout = self.layout;
        self.write(|bytes| fill(bytes, layout, frame))
    }

    /// Lets `f` write the buffer's bytes, inside DMA-BUF write access.
    pub fn write<T>(&mut self, f: impl FnOnce(&mut [u8]) -> T) -> io::Result<T> {
        let Udmabuf { dmabuf, map, .. } = self;
        with_cpu_access(dmabuf.as_fd(), Access::Write, || f(map.as_mut_slice()))
    }

    /// The picture in the buffer now (e.g. after a device wrote it).
    pub fn read(&self) -> io::Result<RgbaFrame> {
        with_cpu_access(self.fd(), Access::Read, || {
            self.layout.decode(self.map.as_slice())
        })?
    }

    /// The picture of frame `frame` as a reader must see it.
    pub fn expected(&self, frame: u32) -> RgbaFrame {
        expected(self.width(), self.height(), self.fourcc(), frame)
    }
}

/// Asserts that two pictures are equal in every channel, alpha included
/// (`what` names the check); on failure both are kept as PNGs.
pub fn assert_picture_eq(what: &str, got: &RgbaFrame, want: &RgbaFrame) {
    assert_eq!(
        (got.width, got.height),
        (want.width, want.height),
        "{what}: picture sizes differ"
    );
    let mut bad = got
        .pixels
        .chunks_exact(4)
        .zip(want.pixels.chunks_exact(4))
        .enumerate()
        .filter(|(_, (g, w))| g != w);
    let Some((first, (g, w))) = bad.next() else {
        return;
    };
    let count = 1 + bad.count();
    let keep = crate::lab::failure_dir(what);
    let _ = capture::write_png_atomic(&keep.join("got.png"), got);
    let _ = capture::write_png_atomic(&keep.join("want.png"), want);
    let width = got.width as usize;
    panic!(
        "{what}: {count} of {} pixels differ; first at ({}, {}): got {g:?}, want {w:?} \
         (both pictures kept in {})",
        want.pixels.len() / 4,
        first % width,
        first / width,
        keep.display()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pattern_changes_every_pixel_between_frames() {
        for (x, y) in [(0, 0), (1, 0), (0, 1), (255, 255), (256, 0), (1023, 767)] {
            let (a, b) = (pattern(x, y, 0), pattern(x, y, 1));
            for c in 0..4 {
                assert_ne!(a[c], b[c], "channel {c} at ({x}, {y})");
            }
        }
    }

    #[test]
    fn the_pattern_tells_blocks_256_apart() {
        assert_ne!(pattern(3, 5, 0), pattern(3 + 256, 5, 0));
        assert_ne!(pattern(3, 5, 0), pattern(3, 5 + 256, 0));
    }

    #[test]
    fn expected_pictures_round_trip_through_each_format() {
        for fourcc in FORMATS {
            let layout = Layout {
                width: 37,
                height: 11,
                stride: 37 * bytes_per_pixel(fourcc) as u32 + 12,
                offset: 0,
                fourcc,
            };
            let mut bytes = vec![0u8; layout.stride as usize * layout.height as usize];
            fill(&mut bytes, layout, 3);
            let decoded = layout.decode(&bytes).expect("decodes");
            assert_eq!(decoded, expected(37, 11, fourcc, 3), "{fourcc:?}");
        }
    }

    #[test]
    fn formats_keep_what_they_can() {
        let rgba = [0x12, 0x34, 0x56, 0x78];
        let exact = |fourcc| {
            let mut px = vec![0; bytes_per_pixel(fourcc)];
            encode(fourcc, rgba, &mut px);
            let mut out = [0; 4];
            capture::decode_row(fourcc, &px, &mut out).unwrap();
            out
        };
        assert_eq!(exact(DrmFourcc::Argb8888), rgba);
        assert_eq!(exact(DrmFourcc::Abgr8888), rgba);
        assert_eq!(exact(DrmFourcc::Xrgb8888), [0x12, 0x34, 0x56, 0xff]);
        assert_eq!(exact(DrmFourcc::Xbgr8888), [0x12, 0x34, 0x56, 0xff]);
        // 565 keeps the top 5/6/5 bits and widens them back by replication.
        assert_eq!(exact(DrmFourcc::Rgb565), [0x10, 0x34, 0x52, 0xff]);
    }
}
