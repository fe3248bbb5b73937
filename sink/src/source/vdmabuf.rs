//! vdmabuf export events as a frame source (the Vdmabuf RFC v4 consumer
//! ABI, spelled out in the module `vdmabuf` of the tests crate): each export event is a new
//! frame; its buffer is IMPORTed as a DMA-BUF, checked, and handed to the
//! output as the same typed events the D-Bus source makes.
//!
//! Every id read is RELEASEd exactly once, whatever becomes of it: a shown
//! frame's when its release token drops, an unusable export's (short blob,
//! failed IMPORT, bad geometry, an event that cannot be framed) at once, and
//! the ids read but not yet imported when the source stops.
//!
//! The node is read on this source's own thread (poll, no busy loop: a node
//! that keeps failing or returns nothing is backed off). The sink imports at
//! most [`MAX_HELD`] ids at a time, so that a producer with three buffers
//! never starves; events of one read beyond that wait, not imported, until
//! an id is given back.

use std::collections::VecDeque;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use dbus_interfaces::validate::check_size;
use dbus_interfaces::{DmabufScanout, InvalidInput};
use dmabuf::{Dmabuf, DrmModifier, Plane, Rect};
use drm_fourcc::DrmFourcc;
use nix::errno::Errno;
use nix::poll::PollFlags;

use crate::frame::{monotonic_now, DmabufEvent, FrameRecord, FrameRelease, Releaser};
use crate::state::Shared;

/// The consumer node of the RFC.
pub const DEFAULT_NODE: &str = "/dev/vhost-vdmabuf";
/// Ids the sink may hold (imported, not yet released) at once.
pub const MAX_HELD: usize = 3;
/// Private data is at most this long (the RFC's limit).
pub const MAX_PRIVATE: usize = 192;
/// The longest event: a header and the most private data.
const MAX_EVENT: usize = abi::HEADER + MAX_PRIVATE;
/// A whole queue of the longest events (the RFC queues at most 32).
const READ_BUFFER: usize = 32 * MAX_EVENT;
/// Backing off a node that fails or returns nothing: from this…
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// …doubling up to this.
const BACKOFF_MAX: Duration = Duration::from_secs(1);

pub use abi::BufId;

/// The ABI's types, byte for byte (x86-64).
mod abi {
    /// `buf_id`: 64-bit id plus 8 random bytes; all 16 bytes name the buffer.
    #[repr(C)]
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
    pub struct BufId {
        pub id: u64,
        pub rng_key: [i32; 2],
    }

    impl BufId {
        /// All 16 bytes as one number (how frames carry it).
        pub fn to_bits(self) -> u128 {
            let key = u64::from(self.rng_key[0] as u32) | (u64::from(self.rng_key[1] as u32) << 32);
            u128::from(self.id) | (u128::from(key) << 64)
        }

        pub fn from_bits(bits: u128) -> BufId {
            let key = (bits >> 64) as u64;
            BufId {
                id: bits as u64,
                rng_key: [key as u32 as i32, (key >> 32) as u32 as i32],
            }
        }
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

impl Held {
    fn count(&self) -> usize {
        *self.count.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// RELEASE of `id` on `node`; a failure is logged (the id is ours no more
/// either way).
fn release(node: BorrowedFd<'_>, id: BufId) {
    let arg = abi::Import {
        buf_id: id,
        ..abi::Import::default()
    };
    // SAFETY: RELEASE reads one `Import` from a valid pointer.
    if let Err(err) = unsafe { abi::release(node.as_raw_fd(), &arg) } {
        tracing::warn!("vdmabuf RELEASE of id {:#x}: {err}", id.id);
    }
}

/// The open consumer node and the count of ids lent to outputs: what the
/// frames it made give their ids back to.
#[derive(Debug)]
struct Node {
    fd: OwnedFd,
    held: Held,
}

impl Releaser for Node {
    fn release(&self, id: u128) {
        release(self.fd.as_fd(), BufId::from_bits(id));
        let mut count = self.held.count.lock().unwrap_or_else(|p| p.into_inner());
        *count = count.saturating_sub(1);
        self.held.freed.notify_all();
    }
}

/// The geometry the producer sent with an export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blob {
    pub width: u32,
    pub height: u32,
    pub stride: u32,
    pub fourcc: u32,
    pub modifier: u64,
}

/// What one read held: its whole events in order, then (when the rest
/// cannot be framed) why, with the id of the event where framing stopped
/// if its header was whole.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Framed<'a> {
    pub events: Vec<(BufId, &'a [u8])>,
    pub broken: Option<Broken>,
}

/// Where a read stopped making sense.
#[derive(Debug, PartialEq, Eq)]
pub struct Broken {
    /// The id of the event that broke the framing, when its header is whole:
    /// it was read, so it is released like any other.
    pub id: Option<BufId>,
    pub why: String,
}

/// Splits the bytes of one read into events (`e_hdr`, then `size` bytes of
/// private data each). Never reads past `bytes`; a size outside 0..=192 or
/// past the end stops the framing, as nothing after it can be trusted.
pub fn frame_events(mut bytes: &[u8]) -> Framed<'_> {
    let mut framed = Framed::default();
    while !bytes.is_empty() {
        let Some(header) = bytes.get(..abi::HEADER) else {
            framed.broken = Some(Broken {
                id: None,
                why: format!("a short event ({} bytes)", bytes.len()),
            });
            break;
        };
        let i32_at = |at: usize| i32::from_ne_bytes(header[at..at + 4].try_into().expect("4"));
        let id = BufId {
            id: u64::from_ne_bytes(header[0..8].try_into().expect("8")),
            rng_key: [i32_at(8), i32_at(12)],
        };
        let size = i32_at(16);
        match usize::try_from(size) {
            Ok(size) if size <= MAX_PRIVATE && abi::HEADER + size <= bytes.len() => {
                let (event, rest) = bytes.split_at(abi::HEADER + size);
                framed.events.push((id, &event[abi::HEADER..]));
                bytes = rest;
            }
            _ => {
                framed.broken = Some(Broken {
                    id: Some(id),
                    why: format!(
                        "private data size {size} in an event of {} bytes read (at most {MAX_PRIVATE})",
                        bytes.len()
                    ),
                });
                break;
            }
        }
    }
    framed
}

/// The blob at the start of an export's private data (more is ignored).
pub fn parse_blob(private: &[u8]) -> Result<Blob, InvalidInput> {
    let Some(bytes) = private.get(..abi::BLOB) else {
        return Err(InvalidInput::Dmabuf(format!(
            "export event with {} bytes of private data, {} needed",
            private.len(),
            abi::BLOB
        )));
    };
    let u32_at = |i: usize| u32::from_ne_bytes(bytes[i..i + 4].try_into().expect("4 bytes"));
    Ok(Blob {
        width: u32_at(0),
        height: u32_at(4),
        stride: u32_at(8),
        fourcc: u32_at(12),
        modifier: u64::from_ne_bytes(bytes[16..24].try_into().expect("8 bytes")),
    })
}

/// What a blob asks for, checked before anything touches the buffer: a
/// size within the cap and a format the sink knows. (The stride and the
/// buffer's length are checked against the fd, in [`Dmabuf::check`].)
pub fn check_blob(blob: &Blob) -> Result<DrmFourcc, InvalidInput> {
    check_size(blob.width, blob.height)?;
    let fourcc =
        DrmFourcc::try_from(blob.fourcc).map_err(|_| InvalidInput::UnknownFormat(blob.fourcc))?;
    if dmabuf::bytes_per_pixel(fourcc).is_none() {
        return Err(InvalidInput::UnknownFormat(blob.fourcc));
    }
    Ok(fourcc)
}

/// Checks a blob against the imported buffer and makes the scanout.
fn scanout(blob: Blob, fd: OwnedFd) -> Result<DmabufScanout, InvalidInput> {
    let fourcc = check_blob(&blob)?;
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

/// An export read and not yet imported (waiting for a held id to go).
struct Pending {
    id: BufId,
    blob: Blob,
    received: Duration,
}

/// A node that misbehaves (fails, hangs up, or is readable with nothing to
/// read) is polled less and less often, and said so once per bad streak.
#[derive(Debug, Default)]
struct Backoff {
    next: Option<Duration>,
}

impl Backoff {
    /// A bad turn: logs the first of a streak, then waits.
    fn fail(&mut self, path: &Path, why: &str) {
        let wait = match self.next {
            None => {
                tracing::warn!(
                    "vdmabuf node {}: {why}; polling it less often until it reads again",
                    path.display()
                );
                BACKOFF_MIN
            }
            Some(wait) => {
                tracing::debug!("vdmabuf node {}: {why}", path.display());
                wait
            }
        };
        self.next = Some((wait * 2).min(BACKOFF_MAX));
        std::thread::sleep(wait);
    }

    fn ok(&mut self) {
        self.next = None;
    }
}

/// Reads export events from the consumer node and feeds them to `shared`.
pub struct VdmabufSource {
    node: Arc<Node>,
    path: PathBuf,
    /// Exports read, in order, beyond what may be held now.
    pending: VecDeque<Pending>,
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
            node: Arc::new(Node {
                fd,
                held: Held::default(),
            }),
            path: path.to_owned(),
            pending: VecDeque::new(),
        })
    }

    /// Starts the source's thread; it ends when `shared` is told to stop.
    pub fn spawn(self, shared: Arc<Shared>) -> std::thread::JoinHandle<()> {
        std::thread::Builder::new()
            .name("vdmabuf".into())
            .spawn(move || self.run(&shared))
            .expect("spawning a thread")
    }

    fn run(mut self, shared: &Shared) {
        let mut buffer = vec![0u8; READ_BUFFER];
        let mut backoff = Backoff::default();
        while shared.lock().stop.is_none() {
            // Import what was read while ids may be held; wait for a
            // release when none may.
            while self.node.held.count() < MAX_HELD {
                let Some(next) = self.pending.pop_front() else {
                    break;
                };
                self.import(next, shared);
            }
            if !self.pending.is_empty() {
                let count = self
                    .node
                    .held
                    .count
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                if *count >= MAX_HELD {
                    let _ = self
                        .node
                        .held
                        .freed
                        .wait_timeout(count, Duration::from_millis(100));
                }
                continue;
            }
            let mut fds = [nix::poll::PollFd::new(
                self.node.fd.as_fd(),
                PollFlags::POLLIN,
            )];
            match nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(100u16)) {
                Ok(0) | Err(Errno::EINTR) => continue,
                Ok(_) => {}
                Err(err) => {
                    backoff.fail(&self.path, &format!("poll: {err}"));
                    continue;
                }
            }
            let revents = fds[0].revents().unwrap_or(PollFlags::empty());
            if !revents.contains(PollFlags::POLLIN) {
                backoff.fail(&self.path, &format!("poll gave {revents:?}, not POLLIN"));
                continue;
            }
            let n = match nix::unistd::read(&self.node.fd, &mut buffer) {
                Err(Errno::EAGAIN | Errno::EINTR) => continue,
                // The longest event fits the buffer: a node that has one
                // ready yet gives nothing does not speak the ABI.
                Ok(0) => {
                    backoff.fail(&self.path, "readable, but a read gave 0 bytes");
                    continue;
                }
                Ok(n) => n,
                Err(err) => {
                    backoff.fail(&self.path, &format!("read: {err}"));
                    continue;
                }
            };
            backoff.ok();
            self.events(&buffer[..n]);
        }
        // Read but never imported: ours to give back all the same.
        for pending in std::mem::take(&mut self.pending) {
            release(self.node.fd.as_fd(), pending.id);
        }
    }

    /// Queues the usable exports of one read; releases the others at once.
    fn events(&mut self, bytes: &[u8]) {
        let received = monotonic_now();
        let framed = frame_events(bytes);
        for (id, private) in framed.events {
            match parse_blob(private) {
                Ok(blob) => self.pending.push_back(Pending { id, blob, received }),
                Err(why) => {
                    tracing::warn!("dropping vdmabuf export {:#x}: {why}", id.id);
                    release(self.node.fd.as_fd(), id);
                }
            }
        }
        if let Some(broken) = framed.broken {
            tracing::warn!("dropping vdmabuf events: {}", broken.why);
            // The rest of the read is lost; its first id at least is known.
            if let Some(id) = broken.id {
                release(self.node.fd.as_fd(), id);
            }
        }
    }

    fn import(&self, pending: Pending, shared: &Shared) {
        let Pending { id, blob, received } = pending;
        let mut arg = abi::Import {
            buf_id: id,
            flags: libc::O_CLOEXEC,
            fd: -1,
        };
        // SAFETY: IMPORT reads and writes one `Import` at a valid pointer.
        if let Err(err) = unsafe { abi::import(self.node.fd.as_raw_fd(), &mut arg) } {
            tracing::warn!("dropping vdmabuf export {:#x}: IMPORT failed: {err}", id.id);
            release(self.node.fd.as_fd(), id);
            return;
        }
        // SAFETY: IMPORT succeeded: `fd` is a new descriptor that is ours.
        let fd = unsafe { OwnedFd::from_raw_fd(arg.fd) };
        *self
            .node
            .held
            .count
            .lock()
            .unwrap_or_else(|p| p.into_inner()) += 1;
        // From here the id is released exactly once: when this token drops.
        let release = FrameRelease::until_replaced(self.node.clone(), id.to_bits());
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
                release,
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

    #[test]
    fn a_buffer_id_survives_the_trip_through_a_frame() {
        for id in [
            BufId::default(),
            BufId {
                id: u64::MAX,
                rng_key: [-1, i32::MIN],
            },
            BufId {
                id: 0x0123_4567_89ab_cdef,
                rng_key: [0x7654_3210, -0x1234_5678],
            },
        ] {
            assert_eq!(BufId::from_bits(id.to_bits()), id);
        }
        let id = BufId {
            id: 1,
            rng_key: [2, 3],
        };
        assert_eq!(id.to_bits(), 1 | (2 << 64) | (3 << 96));
    }

    fn event(id: u64, size: i32, private: &[u8]) -> Vec<u8> {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&id.to_ne_bytes());
        bytes.extend_from_slice(&[0; 8]);
        bytes.extend_from_slice(&size.to_ne_bytes());
        bytes.extend_from_slice(&[0; 4]);
        bytes.extend_from_slice(private);
        bytes
    }

    fn id(id: u64) -> BufId {
        BufId {
            id,
            rng_key: [0; 2],
        }
    }

    #[test]
    fn events_are_framed_by_their_size_and_bad_sizes_end_the_read() {
        let blob = [7u8; 24];
        let mut two = event(1, 24, &blob);
        two.extend(event(2, 0, &[]));
        let framed = frame_events(&two);
        assert_eq!(framed.events, vec![(id(1), &blob[..]), (id(2), &[][..])]);
        assert_eq!(framed.broken, None);

        // A good event, then garbage: the good one is kept, and the broken
        // one's id is known whenever its header is whole.
        for (bad, bad_id) in [
            (event(3, -1, &blob), Some(id(3))),      // negative size
            (event(3, 193, &[0; 193]), Some(id(3))), // over the RFC's 192 bytes
            (event(3, 100, &blob), Some(id(3))),     // longer than what was read
            (vec![0; 10], None),                     // shorter than a header
        ] {
            let mut bytes = event(1, 24, &blob);
            bytes.extend(&bad);
            let framed = frame_events(&bytes);
            assert_eq!(framed.events, vec![(id(1), &blob[..])], "{bad:?}");
            assert_eq!(framed.broken.map(|b| b.id), Some(bad_id), "{bad:?}");
        }
    }

    #[test]
    fn many_small_events_of_one_read_are_all_framed() {
        // 20 header-only events (24 bytes each) fit where the reader once
        // counted on 216 bytes an event: every one must come out, each id
        // to be released.
        let bytes: Vec<u8> = (0..20).flat_map(|i| event(i, 0, &[])).collect();
        let framed = frame_events(&bytes);
        let ids: Vec<u64> = framed.events.iter().map(|(id, _)| id.id).collect();
        assert_eq!(ids, (0..20).collect::<Vec<_>>());
        assert_eq!(framed.broken, None);
    }

    #[test]
    fn blobs_need_all_their_bytes() {
        assert!(parse_blob(&[0; 23]).is_err());
        assert!(parse_blob(&[]).is_err());
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
