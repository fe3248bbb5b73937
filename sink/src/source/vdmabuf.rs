//! vdmabuf export events as a frame source (the Vdmabuf RFC v4 consumer
//! ABI, `shared/reference/vdmabuf-abi.md`): each export event is a new
//! frame; its buffer is IMPORTed as a DMA-BUF, checked, and handed to the
//! output as the same typed events the D-Bus source makes. The frame's
//! release RELEASEs its id, exactly once.
//!
//! The node is read on this source's own thread (poll, no busy loop); the
//! sink holds at most [`MAX_HELD`] ids at a time, so that a producer with
//! three buffers never starves.

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use dbus_interfaces::validate::check_size;
use dbus_interfaces::{DmabufScanout, InvalidInput};
use dmabuf::{Dmabuf, DrmModifier, Plane, Rect};
use drm_fourcc::DrmFourcc;

use crate::frame::{monotonic_now, DmabufEvent, FrameRecord, FrameRelease};
use crate::state::Shared;

/// The consumer node of the RFC.
pub const DEFAULT_NODE: &str = "/dev/vhost-vdmabuf";
/// Ids the sink may hold (imported, not yet released) at once.
pub const MAX_HELD: usize = 3;
/// Private data is at most this long (the RFC's limit).
const MAX_PRIVATE: usize = 192;

/// The ABI's types, byte for byte (x86-64).
mod abi {
    /// `buf_id`: 64-bit id plus 8 random bytes; all 16 bytes name the buffer.
    #[repr(C)]
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
    pub struct BufId {
        pub id: u64,
        pub rng_key: [i32; 2],
    }

    /// `e_hdr`: an event is this header, then `size` bytes of private data.
    #[repr(C)]
    #[derive(Debug, Clone, Copy, Default)]
    pub struct EventHeader {
        pub buf_id: BufId,
        pub size: i32,
        pub pad: u32,
    }

    /// `import`, for IMPORT and RELEASE.
    #[repr(C)]
    #[derive(Debug, Clone, Copy, Default)]
    pub struct Import {
        pub buf_id: BufId,
        pub flags: i32,
        pub fd: i32,
    }

    pub const HEADER: usize = std::mem::size_of::<EventHeader>();
    /// width, height, stride, fourcc (u32 each), modifier (u64).
    pub const BLOB: usize = 24;

    const _: () = {
        assert!(std::mem::size_of::<BufId>() == 16);
        assert!(std::mem::size_of::<EventHeader>() == 24);
        assert!(std::mem::size_of::<Import>() == 24);
        assert!(std::mem::offset_of!(Import, fd) == 20);
    };

    // `_IOC(_IOC_NONE, 'G', nr, size)`: the size bits are set although the
    // direction is NONE, so the whole number is spelled out.
    nix::ioctl_readwrite_bad!(import, 0x0018_4702, Import);
    nix::ioctl_write_ptr_bad!(release, 0x0018_4703, Import);
}

#[derive(Debug, thiserror::Error)]
pub enum VdmabufError {
    #[error("opening {path}: {source} (is a vdmabuf driver loaded?)")]
    Open {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
}

/// How many ids are held, and a way to wait for one to be given back.
#[derive(Debug, Default)]
struct Held {
    count: Mutex<usize>,
    freed: Condvar,
}

/// RELEASEs its id when dropped: the frame's release token.
#[derive(Debug)]
pub struct VdmabufRelease {
    node: Arc<OwnedFd>,
    id: abi::BufId,
    held: Arc<Held>,
}

impl Drop for VdmabufRelease {
    fn drop(&mut self) {
        let arg = abi::Import {
            buf_id: self.id,
            ..abi::Import::default()
        };
        // SAFETY: RELEASE reads one `Import` from a valid pointer.
        if let Err(err) = unsafe { abi::release(self.node.as_raw_fd(), &arg) } {
            tracing::warn!("vdmabuf RELEASE of id {:#x}: {err}", self.id.id);
        }
        let mut count = self.held.count.lock().unwrap_or_else(|p| p.into_inner());
        *count = count.saturating_sub(1);
        self.held.freed.notify_all();
    }
}

/// The geometry the producer sent with an export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Blob {
    width: u32,
    height: u32,
    stride: u32,
    fourcc: u32,
    modifier: u64,
}

/// The events in one read: each a header and its private data, or (last)
/// why the rest cannot be framed.
struct Events<'a>(&'a [u8]);

impl<'a> Iterator for Events<'a> {
    type Item = Result<(abi::BufId, &'a [u8]), String>;

    fn next(&mut self) -> Option<Self::Item> {
        let bytes = std::mem::take(&mut self.0);
        if bytes.is_empty() {
            return None;
        }
        if bytes.len() < abi::HEADER {
            return Some(Err(format!("a short event ({} bytes)", bytes.len())));
        }
        // SAFETY: HEADER bytes are there; read_unaligned copies them out.
        let header: abi::EventHeader =
            unsafe { bytes.as_ptr().cast::<abi::EventHeader>().read_unaligned() };
        match usize::try_from(header.size) {
            Ok(size) if size <= MAX_PRIVATE && abi::HEADER + size <= bytes.len() => {
                let (event, rest) = bytes.split_at(abi::HEADER + size);
                self.0 = rest;
                Some(Ok((header.buf_id, &event[abi::HEADER..])))
            }
            _ => Some(Err(format!(
                "private data size {} in an event of {} bytes read (at most {MAX_PRIVATE})",
                header.size,
                bytes.len()
            ))),
        }
    }
}

fn parse_blob(private: &[u8]) -> Result<Blob, InvalidInput> {
    if private.len() < abi::BLOB {
        return Err(InvalidInput::Dmabuf(format!(
            "export event with {} bytes of private data, {} needed",
            private.len(),
            abi::BLOB
        )));
    }
    let u32_at = |i: usize| u32::from_ne_bytes(private[i..i + 4].try_into().expect("4 bytes"));
    Ok(Blob {
        width: u32_at(0),
        height: u32_at(4),
        stride: u32_at(8),
        fourcc: u32_at(12),
        modifier: u64::from_ne_bytes(private[16..24].try_into().expect("8 bytes")),
    })
}

/// Checks a blob against the imported buffer and makes the scanout.
fn scanout(blob: Blob, fd: OwnedFd) -> Result<DmabufScanout, InvalidInput> {
    check_size(blob.width, blob.height)?;
    let fourcc =
        DrmFourcc::try_from(blob.fourcc).map_err(|_| InvalidInput::UnknownFormat(blob.fourcc))?;
    if dmabuf::bytes_per_pixel(fourcc).is_none() {
        return Err(InvalidInput::UnknownFormat(blob.fourcc));
    }
    let buffer = Dmabuf {
        width: blob.width,
        height: blob.height,
        fourcc,
        modifier: DrmModifier::from(blob.modifier),
        planes: vec![Plane {
            fd,
            offset: 0,
            stride: blob.stride,
        }],
    };
    buffer.check()?;
    Ok(DmabufScanout {
        rect: Rect::of_size((blob.width, blob.height)),
        buffer,
        y0_top: false,
    })
}

/// Reads export events from the consumer node and feeds them to `shared`.
pub struct VdmabufSource {
    node: Arc<OwnedFd>,
    path: PathBuf,
    held: Arc<Held>,
}

impl VdmabufSource {
    pub fn open(path: &Path) -> Result<VdmabufSource, VdmabufError> {
        use nix::fcntl::{open, OFlag};
        let fd = open(
            path,
            OFlag::O_RDWR | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(|source| VdmabufError::Open {
            path: path.to_owned(),
            source,
        })?;
        tracing::info!("reading vdmabuf export events from {}", path.display());
        Ok(VdmabufSource {
            node: Arc::new(fd),
            path: path.to_owned(),
            held: Arc::new(Held::default()),
        })
    }

    /// Starts the source's thread; it ends when `shared` is told to stop.
    pub fn spawn(self, shared: Arc<Shared>) -> std::thread::JoinHandle<()> {
        std::thread::Builder::new()
            .name("vdmabuf".into())
            .spawn(move || self.run(&shared))
            .expect("spawning a thread")
    }

    fn run(self, shared: &Shared) {
        // Whole events only: a header and at most 192 bytes each.
        let mut buffer = vec![0u8; 32 * (abi::HEADER + MAX_PRIVATE)];
        while shared.lock().stop.is_none() {
            // Hold at most MAX_HELD ids: wait for a release before reading on.
            {
                let count = self.held.count.lock().unwrap_or_else(|p| p.into_inner());
                if *count >= MAX_HELD {
                    let _ = self
                        .held
                        .freed
                        .wait_timeout(count, Duration::from_millis(100));
                    continue;
                }
            }
            let mut fds = [nix::poll::PollFd::new(
                self.node.as_fd(),
                nix::poll::PollFlags::POLLIN,
            )];
            match nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(100u16)) {
                Ok(0) => continue,
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(err) => {
                    tracing::error!(
                        "polling {}: {err}; the vdmabuf source stops",
                        self.path.display()
                    );
                    return;
                }
            }
            // Read only as many events as the sink may still hold.
            let free = MAX_HELD - *self.held.count.lock().unwrap_or_else(|p| p.into_inner());
            let want = (free * (abi::HEADER + MAX_PRIVATE)).min(buffer.len());
            let n = match nix::unistd::read(&*self.node, &mut buffer[..want]) {
                Ok(0) | Err(nix::errno::Errno::EAGAIN) => continue,
                Ok(n) => n,
                Err(err) => {
                    tracing::warn!("reading {}: {err}", self.path.display());
                    continue;
                }
            };
            self.events(&buffer[..n], shared);
        }
    }

    /// Handles the whole events in `bytes`.
    fn events(&self, bytes: &[u8], shared: &Shared) {
        for event in Events(bytes) {
            match event {
                Ok((id, private)) => self.export_event(id, private, shared),
                // The rest of the read cannot be framed: drop it. Its ids
                // were never imported, so none is left waiting on us.
                Err(why) => tracing::warn!("dropping vdmabuf events: {why}"),
            }
        }
    }

    fn export_event(&self, id: abi::BufId, private: &[u8], shared: &Shared) {
        let received = monotonic_now();
        let blob = match parse_blob(private) {
            Ok(blob) => blob,
            Err(why) => {
                // Not imported: nothing of ours to release.
                tracing::warn!("dropping vdmabuf export {:#x}: {why}", id.id);
                return;
            }
        };
        let mut arg = abi::Import {
            buf_id: id,
            flags: libc::O_CLOEXEC,
            fd: -1,
        };
        // SAFETY: IMPORT reads and writes one `Import` at a valid pointer.
        if let Err(err) = unsafe { abi::import(self.node.as_raw_fd(), &mut arg) } {
            tracing::warn!("vdmabuf IMPORT of id {:#x} failed: {err}", id.id);
            return;
        }
        // SAFETY: IMPORT succeeded: `fd` is a new descriptor that is ours.
        let fd = unsafe { OwnedFd::from_raw_fd(arg.fd) };
        *self.held.count.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        // From here the id is released exactly once: when this token drops.
        let release = VdmabufRelease {
            node: self.node.clone(),
            id,
            held: self.held.clone(),
        };
        let scanout = match scanout(blob, fd) {
            Ok(scanout) => scanout,
            Err(why) => {
                tracing::warn!("dropping vdmabuf export {:#x}: {why}", id.id);
                return;
            }
        };
        shared.modify(|state| {
            let record = FrameRecord {
                id: state.next_frame_id,
                received,
                ..FrameRecord::default()
            };
            state.next_frame_id += 1;
            state.push_dmabuf(DmabufEvent::Scanout(scanout));
            state.push_dmabuf(DmabufEvent::Update {
                damage: None,
                release: FrameRelease::vdmabuf(release),
                record,
            });
            state.generation += 1;
            state.updates += 1;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dmabuf::DmabufError;

    fn event(id: u64, size: i32, private: &[u8]) -> Vec<u8> {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&id.to_ne_bytes());
        bytes.extend_from_slice(&[0; 8]);
        bytes.extend_from_slice(&size.to_ne_bytes());
        bytes.extend_from_slice(&[0; 4]);
        bytes.extend_from_slice(private);
        bytes
    }

    #[test]
    fn events_are_framed_by_their_size_and_bad_sizes_end_the_read() {
        let blob = [7u8; 24];
        let mut two = event(1, 24, &blob);
        two.extend(event(2, 0, &[]));
        let got: Vec<_> = Events(&two).collect();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].as_ref().unwrap().0.id, 1);
        assert_eq!(got[0].as_ref().unwrap().1, &blob);
        assert_eq!(got[1].as_ref().unwrap().1.len(), 0);

        // A good event, then garbage: the good one is kept.
        for bad in [
            event(3, -1, &blob),      // negative size
            event(3, 193, &[0; 193]), // over the RFC's 192 bytes
            event(3, 100, &blob),     // longer than what was read
            vec![0; 10],              // shorter than a header
        ] {
            let mut bytes = event(1, 24, &blob);
            bytes.extend(&bad);
            let got: Vec<_> = Events(&bytes).collect();
            assert_eq!(got.len(), 2, "{bad:?}");
            assert!(got[0].is_ok());
            assert!(got[1].is_err(), "{bad:?}");
        }
    }

    #[test]
    fn blobs_need_all_their_bytes() {
        assert!(parse_blob(&[0; 23]).is_err());
        let mut bytes = [0u8; 24];
        bytes[0..4].copy_from_slice(&64u32.to_ne_bytes());
        bytes[12..16].copy_from_slice(&(DrmFourcc::Xrgb8888 as u32).to_ne_bytes());
        bytes[16..24].copy_from_slice(&u64::MAX.to_ne_bytes());
        let blob = parse_blob(&bytes).unwrap();
        assert_eq!(
            (blob.width, blob.fourcc, blob.modifier),
            (64, DrmFourcc::Xrgb8888 as u32, u64::MAX)
        );
    }

    #[test]
    fn scanouts_are_checked_before_use() {
        let memfd = || {
            let fd =
                nix::sys::memfd::memfd_create("v", nix::sys::memfd::MFdFlags::MFD_CLOEXEC).unwrap();
            nix::unistd::ftruncate(&fd, 1 << 16).unwrap();
            fd
        };
        let good = Blob {
            width: 16,
            height: 16,
            stride: 64,
            fourcc: DrmFourcc::Xrgb8888 as u32,
            modifier: 0,
        };
        let bad_size = Blob { width: 0, ..good };
        let bad_fourcc = Blob {
            fourcc: 0x1234,
            ..good
        };
        let bad_stride = Blob { stride: 60, ..good };
        assert!(matches!(
            scanout(bad_size, memfd()),
            Err(InvalidInput::BadSize { .. })
        ));
        assert!(matches!(
            scanout(bad_fourcc, memfd()),
            Err(InvalidInput::UnknownFormat(0x1234))
        ));
        assert!(matches!(
            scanout(bad_stride, memfd()),
            Err(InvalidInput::Buffer(DmabufError::StrideTooSmall { .. }))
        ));
        // A memfd is not a DMA-BUF: the size check refuses it.
        assert!(matches!(
            scanout(good, memfd()),
            Err(InvalidInput::Buffer(DmabufError::NotDmabuf))
        ));
    }
}
