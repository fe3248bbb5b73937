//! The Vdmabuf RFC's user ABI (its v4 patches' uapi header, byte by byte) as
//! tests speak it: the `#[repr(C)]` structs, the three ioctls, a [`Producer`]
//! on `/dev/virtio-vdmabuf` (exports DMA-BUFs, reads release notices) and a
//! [`Consumer`] on `/dev/vhost-vdmabuf` (reads export events, imports,
//! releases), and a [`PacedProducer`] that exports a few udmabufs
//! round-robin, rewriting each only after its release notice came.
//!
//! The nodes exist only in the lab, where `scripts/lab/run.sh` loads the
//! loopback module built from `tests/vdmabuf-loopback/` (both nodes in one
//! kernel). The layouts and numbers are x86-64's, as the RFC's were.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::mem::{offset_of, size_of};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use drm_fourcc::DrmFourcc;
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use sink::frame::monotonic_now;

use crate::udmabuf::Udmabuf;

/// The producer ("guest") node.
pub const PRODUCER_NODE: &str = "/dev/virtio-vdmabuf";
/// The consumer ("host") node.
pub const CONSUMER_NODE: &str = "/dev/vhost-vdmabuf";
/// The loopback module's name (`modprobe`, `/sys/module/<name>`).
pub const MODULE: &str = "vdmabuf_loopback";
/// Private data is at most this many bytes.
pub const MAX_PRIVATE: usize = 192;
/// An event queue holds at most this many events; a full one drops its oldest.
pub const MAX_EVENTS: usize = 32;

/// `virtio_vdmabuf_buf_id_t`: unique per export. The RFC put the VM's pid in
/// the upper 32 bits of `id` and a counter in the lower 32; `rng_key` is
/// random. All 16 bytes name the buffer.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct BufId {
    pub id: u64,
    pub rng_key: [i32; 2],
}

/// `struct virtio_vdmabuf_e_hdr`: an event is this header, then `size`
/// bytes of private data (0 in a release notice).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EventHeader {
    pub buf_id: BufId,
    pub size: i32,
    /// Implicit padding in the RFC's struct.
    pub pad: u32,
}

/// `struct virtio_vdmabuf_import`, for IMPORT and RELEASE.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Import {
    pub buf_id: BufId,
    /// 0 or `O_CLOEXEC`.
    pub flags: i32,
    /// Out (IMPORT): the new DMA-BUF fd.
    pub fd: i32,
}

/// `struct virtio_vdmabuf_export`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Export {
    pub fd: i32,
    pub pad0: u32,
    /// Out.
    pub buf_id: BufId,
    pub sz_priv: i32,
    pub pad1: u32,
    /// `char *priv`.
    pub private: *const u8,
}

/// The private data QEMU's RFC consumer expected with each export: one
/// plane's geometry.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Blob {
    pub width: u32,
    pub height: u32,
    pub stride: u32,
    /// DRM fourcc.
    pub format: u32,
    pub modifier: u64,
}

// The layouts of the ABI document, byte by byte.
const _: () = {
    assert!(size_of::<BufId>() == 16);
    assert!(offset_of!(BufId, id) == 0);
    assert!(offset_of!(BufId, rng_key) == 8);
    assert!(size_of::<EventHeader>() == 24);
    assert!(offset_of!(EventHeader, buf_id) == 0);
    assert!(offset_of!(EventHeader, size) == 16);
    assert!(size_of::<Import>() == 24);
    assert!(offset_of!(Import, flags) == 16);
    assert!(offset_of!(Import, fd) == 20);
    assert!(size_of::<Export>() == 40);
    assert!(offset_of!(Export, fd) == 0);
    assert!(offset_of!(Export, buf_id) == 8);
    assert!(offset_of!(Export, sz_priv) == 24);
    assert!(offset_of!(Export, private) == 32);
    assert!(size_of::<Blob>() == 24);
    assert!(offset_of!(Blob, height) == 4);
    assert!(offset_of!(Blob, stride) == 8);
    assert!(offset_of!(Blob, format) == 12);
    assert!(offset_of!(Blob, modifier) == 16);
};

/// `_IOC(_IOC_NONE, 'G', nr, size)`: direction NONE (0), yet the size bits
/// hold the struct's size. nix's `request_code_none!` would put 0 there.
const fn request_none(nr: u32, size: usize) -> u32 {
    ((size as u32) << 16) | ((b'G' as u32) << 8) | nr
}

pub const IOCTL_IMPORT: u32 = 0x0018_4702;
pub const IOCTL_RELEASE: u32 = 0x0018_4703;
pub const IOCTL_EXPORT: u32 = 0x0028_4704;

const _: () = {
    assert!(request_none(2, size_of::<Import>()) == IOCTL_IMPORT);
    assert!(request_none(3, size_of::<Import>()) == IOCTL_RELEASE);
    assert!(request_none(4, size_of::<Export>()) == IOCTL_EXPORT);
};

// The kernel copies each struct in and (IMPORT, EXPORT) out again.
nix::ioctl_readwrite_bad!(vdmabuf_import, IOCTL_IMPORT, Import);
nix::ioctl_write_ptr_bad!(vdmabuf_release, IOCTL_RELEASE, Import);
nix::ioctl_readwrite_bad!(vdmabuf_export, IOCTL_EXPORT, Export);

impl Blob {
    pub fn new(width: u32, height: u32, stride: u32, fourcc: DrmFourcc, modifier: u64) -> Blob {
        Blob {
            width,
            height,
            stride,
            format: fourcc as u32,
            modifier,
        }
    }

    /// The 24 bytes sent as private data (native byte order, as the C struct).
    pub fn to_bytes(&self) -> [u8; 24] {
        let mut bytes = [0u8; 24];
        bytes[0..4].copy_from_slice(&self.width.to_ne_bytes());
        bytes[4..8].copy_from_slice(&self.height.to_ne_bytes());
        bytes[8..12].copy_from_slice(&self.stride.to_ne_bytes());
        bytes[12..16].copy_from_slice(&self.format.to_ne_bytes());
        bytes[16..24].copy_from_slice(&self.modifier.to_ne_bytes());
        bytes
    }

    /// A blob from private data of exactly 24 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Option<Blob> {
        let bytes: &[u8; 24] = bytes.try_into().ok()?;
        let u32_at = |at: usize| u32::from_ne_bytes(bytes[at..at + 4].try_into().unwrap());
        Some(Blob {
            width: u32_at(0),
            height: u32_at(4),
            stride: u32_at(8),
            format: u32_at(12),
            modifier: u64::from_ne_bytes(bytes[16..24].try_into().unwrap()),
        })
    }
}

/// One event as `read()` returned it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub header: EventHeader,
    /// The `header.size` bytes that followed the header.
    pub private: Vec<u8>,
}

impl Event {
    pub fn id(&self) -> BufId {
        self.header.buf_id
    }

    /// The private data as a [`Blob`], when it is one (24 bytes).
    pub fn blob(&self) -> Option<Blob> {
        Blob::from_bytes(&self.private)
    }
}

/// Splits what one `read()` returned into whole events; fails on anything
/// else (a truncated event, a size outside 0..=192).
pub fn parse_events(mut bytes: &[u8]) -> io::Result<Vec<Event>> {
    const HEADER: usize = size_of::<EventHeader>();
    let bad = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
    let mut events = Vec::new();
    while !bytes.is_empty() {
        if bytes.len() < HEADER {
            return Err(bad(format!(
                "{} bytes left, short of a header",
                bytes.len()
            )));
        }
        let word = |at: usize| i32::from_ne_bytes(bytes[at..at + 4].try_into().unwrap());
        let header = EventHeader {
            buf_id: BufId {
                id: u64::from_ne_bytes(bytes[0..8].try_into().unwrap()),
                rng_key: [word(8), word(12)],
            },
            size: word(16),
            pad: word(20) as u32,
        };
        let size = usize::try_from(header.size)
            .ok()
            .filter(|&size| size <= MAX_PRIVATE)
            .ok_or_else(|| bad(format!("event with private data size {}", header.size)))?;
        let end = HEADER + size;
        if bytes.len() < end {
            return Err(bad(format!(
                "event of {end} bytes truncated to {}",
                bytes.len()
            )));
        }
        events.push(Event {
            header,
            private: bytes[HEADER..end].to_vec(),
        });
        bytes = &bytes[end..];
    }
    Ok(events)
}

/// Room for a whole queue of the largest events.
const READ_ALL: usize = MAX_EVENTS * (size_of::<EventHeader>() + MAX_PRIVATE);

fn open_node(path: &str, nonblocking: bool) -> io::Result<File> {
    let mut flags = libc::O_CLOEXEC;
    if nonblocking {
        flags |= libc::O_NONBLOCK;
    }
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(flags)
        .open(path)
        .map_err(|err| {
            io::Error::new(
                err.kind(),
                format!("opening {path} (only the lab loads {MODULE}): {err}"),
            )
        })
}

/// Whether `node` has something to read within `timeout`.
fn poll_in(node: BorrowedFd<'_>, timeout: Duration) -> io::Result<bool> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut fds = [PollFd::new(node, PollFlags::POLLIN)];
        let left = PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX);
        match nix::poll::poll(&mut fds, left) {
            Ok(0) => return Ok(false),
            Ok(_) => {
                let revents = fds[0].revents().unwrap_or(PollFlags::empty());
                return Ok(revents.contains(PollFlags::POLLIN));
            }
            Err(Errno::EINTR) => continue,
            Err(errno) => return Err(errno.into()),
        }
    }
}

/// One `read()` into `buf`: its byte count (0: the next event does not fit).
fn read_into(mut node: &File, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match node.read(buf) {
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// Every queued event, in one `read()`; none (not an error) when nothing is
/// queued on a non-blocking node.
fn read_events(node: &File) -> io::Result<Vec<Event>> {
    let mut buf = vec![0u8; READ_ALL];
    match read_into(node, &mut buf) {
        Ok(n) => parse_events(&buf[..n]),
        Err(err) if err.kind() == io::ErrorKind::WouldBlock => Ok(Vec::new()),
        Err(err) => Err(err),
    }
}

/// Waits up to `timeout` for events and reads all that are queued.
fn wait_events(node: &File, timeout: Duration) -> io::Result<Vec<Event>> {
    if !poll_in(node.as_fd(), timeout)? {
        return Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no vdmabuf event within {timeout:?}"),
        ));
    }
    read_events(node)
}

/// EXPORT on `node` (the producer node; elsewhere the module answers
/// ENOTTY): `fd` with `sz_priv` bytes of private data from `private`, or a
/// null `priv` when `private` is `None`. `sz_priv` may be anything (bad
/// calls are tested), but never more than `private` holds, so the kernel
/// reads only this slice.
pub fn export_on(
    node: BorrowedFd<'_>,
    fd: RawFd,
    sz_priv: i32,
    private: Option<&[u8]>,
) -> nix::Result<BufId> {
    if let Some(private) = private {
        assert!(
            usize::try_from(sz_priv).is_ok_and(|size| size <= private.len()) || sz_priv < 0,
            "sz_priv {sz_priv} exceeds the {} bytes given",
            private.len()
        );
    }
    let mut request = Export {
        fd,
        pad0: 0,
        buf_id: BufId::default(),
        sz_priv,
        pad1: 0,
        private: private.map_or(std::ptr::null(), <[u8]>::as_ptr),
    };
    // SAFETY: `request` is a live `struct virtio_vdmabuf_export` the kernel
    // reads and writes back in place; `priv` is null or points to at least
    // `sz_priv` bytes (checked above) that stay borrowed through the call,
    // which the kernel only reads. `fd` is only looked up, not consumed.
    unsafe { vdmabuf_export(node.as_raw_fd(), &mut request) }?;
    Ok(request.buf_id)
}

/// IMPORT on `node` (the consumer node): a new fd for buffer `id`; `flags`
/// 0 or `O_CLOEXEC` (anything else is tested to fail).
pub fn import_on(node: BorrowedFd<'_>, id: BufId, flags: i32) -> nix::Result<OwnedFd> {
    let mut request = Import {
        buf_id: id,
        flags,
        fd: -1,
    };
    // SAFETY: `request` is a live `struct virtio_vdmabuf_import` the kernel
    // reads and writes back in place.
    unsafe { vdmabuf_import(node.as_raw_fd(), &mut request) }?;
    if request.fd < 0 {
        return Err(Errno::EBADF);
    }
    // SAFETY: on success the kernel installed `request.fd`, a new descriptor
    // that nothing else in this process owns.
    Ok(unsafe { OwnedFd::from_raw_fd(request.fd) })
}

/// RELEASE on `node` (the consumer node): ends the export of `id`.
pub fn release_on(node: BorrowedFd<'_>, id: BufId) -> nix::Result<()> {
    let request = Import {
        buf_id: id,
        flags: 0,
        fd: -1,
    };
    // SAFETY: `request` is a live `struct virtio_vdmabuf_import` that the
    // kernel only reads.
    unsafe { vdmabuf_release(node.as_raw_fd(), &request) }?;
    Ok(())
}

/// Any `request` on `node`, for checking that the module refuses what it
/// does not know. `arg` (null when `None`) must hold at least the size that
/// the request's size bits name, since a driver may copy that much either
/// way.
pub fn ioctl_raw(node: BorrowedFd<'_>, request: u32, arg: Option<&mut [u8]>) -> nix::Result<i32> {
    let size = ((request >> 16) & 0x3fff) as usize;
    let ptr = match arg {
        Some(arg) => {
            assert!(
                arg.len() >= size,
                "request {request:#x} names {size} bytes, the argument has {}",
                arg.len()
            );
            arg.as_mut_ptr()
        }
        None => std::ptr::null_mut(),
    };
    // SAFETY: `ptr` is null (the kernel then fails with EFAULT or ignores it)
    // or points to a live, exclusively borrowed buffer at least as long as
    // the size encoded in `request`, which is all a driver may touch.
    let ret = unsafe { libc::ioctl(node.as_raw_fd(), request as libc::c_ulong, ptr) };
    Errno::result(ret)
}

/// The producer ("guest") side: exports DMA-BUFs, reads release notices.
#[derive(Debug)]
pub struct Producer {
    node: File,
}

impl Producer {
    /// Opens the producer node, non-blocking (reads wait through `poll`).
    pub fn open() -> io::Result<Producer> {
        Ok(Producer {
            node: open_node(PRODUCER_NODE, true)?,
        })
    }

    /// Exports `dmabuf` with `private` as its private data.
    pub fn export(&self, dmabuf: BorrowedFd<'_>, private: &[u8]) -> nix::Result<BufId> {
        self.export_raw(dmabuf.as_raw_fd(), private)
    }

    /// Exports `dmabuf` with `blob` as its private data (what QEMU's RFC
    /// consumer expected).
    pub fn export_blob(&self, dmabuf: BorrowedFd<'_>, blob: &Blob) -> nix::Result<BufId> {
        self.export(dmabuf, &blob.to_bytes())
    }

    /// EXPORT with any fd number (a closed one, a memfd…) and all of
    /// `private` (even more than 192 bytes).
    pub fn export_raw(&self, fd: RawFd, private: &[u8]) -> nix::Result<BufId> {
        let size = i32::try_from(private.len()).map_err(|_| Errno::E2BIG)?;
        export_on(self.node.as_fd(), fd, size, Some(private))
    }

    /// Release notices queued now (none is not an error).
    pub fn notices(&self) -> io::Result<Vec<Event>> {
        read_events(&self.node)
    }

    /// Waits up to `timeout` for release notices and reads all queued.
    pub fn wait_notices(&self, timeout: Duration) -> io::Result<Vec<Event>> {
        wait_events(&self.node, timeout)
    }

    /// Whether a notice arrives within `timeout` (nothing is read).
    pub fn poll(&self, timeout: Duration) -> io::Result<bool> {
        poll_in(self.node.as_fd(), timeout)
    }

    /// One `read()` of at most `buf.len()` bytes.
    pub fn read_raw(&self, buf: &mut [u8]) -> io::Result<usize> {
        read_into(&self.node, buf)
    }
}

impl AsFd for Producer {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.node.as_fd()
    }
}

/// The consumer ("host") side: reads export events, imports, releases.
#[derive(Debug)]
pub struct Consumer {
    node: File,
}

impl Consumer {
    /// Opens the consumer node, non-blocking (reads wait through `poll`).
    pub fn open() -> io::Result<Consumer> {
        Ok(Consumer {
            node: open_node(CONSUMER_NODE, true)?,
        })
    }

    /// Opens the consumer node in blocking mode: `read()` waits for an event.
    pub fn open_blocking() -> io::Result<Consumer> {
        Ok(Consumer {
            node: open_node(CONSUMER_NODE, false)?,
        })
    }

    /// Export events queued now (none is not an error; on a blocking node
    /// this waits for the first).
    pub fn events(&self) -> io::Result<Vec<Event>> {
        read_events(&self.node)
    }

    /// Waits up to `timeout` for export events and reads all queued.
    pub fn wait_events(&self, timeout: Duration) -> io::Result<Vec<Event>> {
        wait_events(&self.node, timeout)
    }

    /// Whether an event arrives within `timeout` (nothing is read).
    pub fn poll(&self, timeout: Duration) -> io::Result<bool> {
        poll_in(self.node.as_fd(), timeout)
    }

    /// One `read()` of at most `buf.len()` bytes.
    pub fn read_raw(&self, buf: &mut [u8]) -> io::Result<usize> {
        read_into(&self.node, buf)
    }

    /// IMPORT with `O_CLOEXEC`: a new fd for the buffer exported as `id`.
    pub fn import(&self, id: BufId) -> nix::Result<OwnedFd> {
        import_on(self.node.as_fd(), id, libc::O_CLOEXEC)
    }

    /// IMPORT with explicit `flags`.
    pub fn import_with_flags(&self, id: BufId, flags: i32) -> nix::Result<OwnedFd> {
        import_on(self.node.as_fd(), id, flags)
    }

    /// RELEASE: the consumer is done with `id`; its producer gets a notice.
    pub fn release(&self, id: BufId) -> nix::Result<()> {
        release_on(self.node.as_fd(), id)
    }
}

impl AsFd for Consumer {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.node.as_fd()
    }
}

// ---- A producer that paces itself on release notices ---------------------------

/// How a [`PacedProducer`] spaces its exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// Each frame as soon as its buffer is free again.
    AsFastAsReleased,
    /// Frame k is due `k` periods after the first export (a fixed grid,
    /// not drifting); a frame whose buffer is not free by then goes late.
    Every(Duration),
}

/// One export of a [`PacedProducer`]. Times are CLOCK_MONOTONIC since boot
/// ([`sink::frame::monotonic_now`]), the clock of the sink's `--report`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportRecord {
    /// The frame number: 0, 1, … in export order; its pixels are
    /// `Udmabuf::fill(frame)`'s pattern.
    pub frame: u32,
    /// Which of the producer's buffers (`frame % buffers`).
    pub buffer: usize,
    pub id: BufId,
    /// When the frame was due (its pattern already rendered) and the
    /// producer started to wait for its buffer.
    pub wanted: Duration,
    /// How long it waited for the buffer's release notice (0 when the
    /// buffer was free).
    pub waited: Duration,
    /// How long rendering the pattern into CPU memory took, before the
    /// wait (0 when it was [prerendered](PacedProducer::prerender)).
    pub rendered_in: Duration,
    /// How long copying it into the buffer took (inside DMA-BUF write
    /// access), after the wait.
    pub written_in: Duration,
    /// Just after EXPORT returned.
    pub exported: Duration,
    /// When the release notice of `id` was read (`None`: not yet).
    pub released: Option<Duration>,
}

/// A release notice the producer could not match to an outstanding export:
/// an id it never exported, or one released a second time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StrayNotice {
    pub id: BufId,
    pub at: Duration,
}

/// A test producer as a GBM-locked surface behaves: N buffers (udmabufs of
/// one layout) exported round-robin, frame k into buffer k % N with
/// [`Udmabuf::fill`]'s pattern k, and a buffer is rewritten only after the
/// release notice of its previous export arrived. Every export and every
/// notice is recorded ([`ExportRecord`], [`StrayNotice`]).
///
/// The pattern of the next frame is rendered into CPU memory before the
/// producer waits for the buffer (a client renders while its buffers are
/// busy); after the release only a copy into the buffer is left, so that
/// the pattern's cost does not hide how long the sink held the buffer.
/// Where rendering a frame costs more than a refresh (the lab runs under
/// TCG), [`prerender`](Self::prerender) renders them all up front, so that
/// only the sink's releases pace the producer.
///
/// Keep it open until every notice was read: closing the producer node
/// withdraws whatever is still exported.
#[derive(Debug)]
pub struct PacedProducer {
    producer: Producer,
    buffers: Vec<Udmabuf>,
    blob: Blob,
    pace: Pace,
    /// Per buffer: the record of its export still out.
    in_use: Vec<Option<usize>>,
    records: Vec<ExportRecord>,
    /// Every id exported, to its record.
    by_id: HashMap<BufId, usize>,
    strays: Vec<StrayNotice>,
    /// The next frame's pattern, rendered ahead.
    staging: Vec<u8>,
    staged: Option<u32>,
    /// Patterns rendered up front, by frame (taken when exported).
    prerendered: Vec<Option<Vec<u8>>>,
    /// When frame 0 was exported (for [`Pace::Every`]).
    first: Option<Duration>,
}

impl PacedProducer {
    /// The default number of buffers (triple buffering).
    pub const BUFFERS: usize = 3;

    /// Opens the producer node and makes `buffers` udmabufs of `width` x
    /// `height` `fourcc`, rows packed; paced [`Pace::AsFastAsReleased`].
    pub fn new(
        width: u32,
        height: u32,
        fourcc: DrmFourcc,
        buffers: usize,
    ) -> io::Result<PacedProducer> {
        assert!(buffers > 0, "a producer needs a buffer");
        let buffers = (0..buffers)
            .map(|_| Udmabuf::new(width, height, fourcc))
            .collect::<io::Result<Vec<_>>>()?;
        let first = &buffers[0];
        let blob = Blob::new(width, height, first.stride(), fourcc, 0);
        let staging = vec![0u8; first.len()];
        Ok(PacedProducer {
            producer: Producer::open()?,
            in_use: vec![None; buffers.len()],
            buffers,
            blob,
            pace: Pace::AsFastAsReleased,
            records: Vec::new(),
            by_id: HashMap::new(),
            strays: Vec::new(),
            staging,
            staged: None,
            prerendered: Vec::new(),
            first: None,
        })
    }

    /// Sets how exports are spaced from now on.
    pub fn with_pace(mut self, pace: Pace) -> PacedProducer {
        self.pace = pace;
        self
    }

    pub fn buffers(&self) -> &[Udmabuf] {
        &self.buffers
    }

    /// The private data sent with every export.
    pub fn blob(&self) -> Blob {
        self.blob
    }

    /// Renders the patterns of frames up to `frames` (exclusive) now, in
    /// memory (a buffer's size each, freed as each frame is exported).
    pub fn prerender(&mut self, frames: u32) {
        let layout = self.buffers[0].layout();
        let size = self.staging.len();
        let from = self.records.len();
        let len = self.prerendered.len().max(frames as usize);
        self.prerendered.resize(len, None);
        for frame in from..frames as usize {
            let mut bytes = vec![0u8; size];
            crate::udmabuf::fill(&mut bytes, layout, frame as u32);
            self.prerendered[frame] = Some(bytes);
        }
    }

    /// Every export so far, in order (`records()[k].frame == k`).
    pub fn records(&self) -> &[ExportRecord] {
        &self.records
    }

    /// Notices that matched no outstanding export (should stay empty).
    pub fn strays(&self) -> &[StrayNotice] {
        &self.strays
    }

    /// Exports whose release notice has not come yet.
    pub fn outstanding(&self) -> usize {
        self.in_use.iter().flatten().count()
    }

    /// The record of an id exported by this producer.
    pub fn record_of(&self, id: BufId) -> Option<&ExportRecord> {
        self.by_id.get(&id).map(|&at| &self.records[at])
    }

    /// The underlying producer node (e.g. for raw reads).
    pub fn producer(&self) -> &Producer {
        &self.producer
    }

    /// Reads every queued notice (none is fine) and records it.
    fn read_notices(&mut self) -> io::Result<usize> {
        let notices = self.producer.notices()?;
        let at = monotonic_now();
        for notice in &notices {
            let id = notice.id();
            let matched = self
                .by_id
                .get(&id)
                .copied()
                .filter(|&at| self.records[at].released.is_none());
            match matched {
                Some(record) => {
                    self.records[record].released = Some(at);
                    let buffer = self.records[record].buffer;
                    if self.in_use[buffer] == Some(record) {
                        self.in_use[buffer] = None;
                    }
                }
                None => self.strays.push(StrayNotice { id, at }),
            }
        }
        Ok(notices.len())
    }

    /// Waits up to `timeout` for release notices and records all queued;
    /// how many were read (0 when none came).
    pub fn collect(&mut self, timeout: Duration) -> io::Result<usize> {
        if !self.producer.poll(timeout)? {
            return Ok(0);
        }
        self.read_notices()
    }

    /// Reads notices until at most `at_most` exports are outstanding;
    /// fails with `TimedOut` after `timeout`.
    pub fn wait_outstanding(&mut self, at_most: usize, timeout: Duration) -> io::Result<()> {
        let deadline = Instant::now() + timeout;
        while self.outstanding() > at_most {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "{} exports still outstanding after {timeout:?} (wanted at most {at_most})",
                        self.outstanding()
                    ),
                ));
            }
            self.collect(left)?;
        }
        Ok(())
    }

    /// Exports the next frame: renders its pattern, waits for its pace
    /// (reading notices meanwhile), then for its buffer's release (at most
    /// `timeout`), rewrites the buffer and exports it.
    pub fn export_next(&mut self, timeout: Duration) -> io::Result<&ExportRecord> {
        let frame = u32::try_from(self.records.len()).expect("fewer than 2^32 frames");
        let buffer = frame as usize % self.buffers.len();
        let started = Instant::now();
        let prerendered = self
            .prerendered
            .get_mut(frame as usize)
            .and_then(Option::take);
        if prerendered.is_none() && self.staged != Some(frame) {
            let layout = self.buffers[buffer].layout();
            crate::udmabuf::fill(&mut self.staging, layout, frame);
            self.staged = Some(frame);
        }
        let rendered_in = if prerendered.is_some() {
            Duration::ZERO
        } else {
            started.elapsed()
        };
        if let (Pace::Every(period), Some(first)) = (self.pace, self.first) {
            let due = first + period * frame;
            loop {
                let now = monotonic_now();
                let Some(left) = due.checked_sub(now).filter(|left| !left.is_zero()) else {
                    break;
                };
                self.collect(left)?;
            }
        }
        // Notices already queued count as arrived before the wait.
        self.read_notices()?;
        let wanted = monotonic_now();
        let deadline = Instant::now() + timeout;
        while self.in_use[buffer].is_some() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let held = self.in_use[buffer].map(|at| self.records[at].id);
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "frame {frame}: buffer {buffer} (id {held:?}) not released within {timeout:?}"
                    ),
                ));
            }
            self.collect(left)?;
        }
        let waited = monotonic_now().saturating_sub(wanted);
        let writing = Instant::now();
        let pattern = prerendered.as_deref().unwrap_or(&self.staging);
        self.buffers[buffer].write(|bytes| bytes.copy_from_slice(pattern))?;
        let written_in = writing.elapsed();
        let id = self
            .producer
            .export_blob(self.buffers[buffer].fd(), &self.blob)?;
        let exported = monotonic_now();
        self.first.get_or_insert(exported);
        let at = self.records.len();
        if self.by_id.insert(id, at).is_some() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("EXPORT handed out {id:?} a second time"),
            ));
        }
        self.records.push(ExportRecord {
            frame,
            buffer,
            id,
            wanted,
            waited,
            rendered_in,
            written_in,
            exported,
            released: None,
        });
        self.in_use[buffer] = Some(at);
        Ok(&self.records[at])
    }

    /// Exports `frames` more frames, each within `timeout` of its turn.
    pub fn run(&mut self, frames: usize, timeout: Duration) -> io::Result<()> {
        for _ in 0..frames {
            self.export_next(timeout)?;
        }
        Ok(())
    }
}

// ---- The loopback module from the outside -------------------------------------

fn read_number(path: &Path) -> io::Result<u64> {
    let text = std::fs::read_to_string(path)
        .map_err(|err| io::Error::new(err.kind(), format!("{}: {err}", path.display())))?;
    text.trim().parse().map_err(|err| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {text:?}: {err}", path.display()),
        )
    })
}

/// A read-only counter of the loopback module: `exported` (buffers exported
/// and not yet released) or `events_dropped` (since it was loaded).
pub fn module_counter(name: &str) -> io::Result<u64> {
    read_number(
        &Path::new("/sys/module")
            .join(MODULE)
            .join("parameters")
            .join(name),
    )
}

/// The module's reference count (open files of its nodes, mostly).
pub fn module_refcount() -> io::Result<u64> {
    read_number(&Path::new("/sys/module").join(MODULE).join("refcnt"))
}

/// Whether the module is loaded.
pub fn module_loaded() -> bool {
    Path::new("/sys/module").join(MODULE).exists()
}

/// Waits up to `timeout` until both nodes exist (after a `modprobe`).
pub fn wait_for_nodes(timeout: Duration) -> io::Result<()> {
    let deadline = Instant::now() + timeout;
    while !(Path::new(PRODUCER_NODE).exists() && Path::new(CONSUMER_NODE).exists()) {
        if Instant::now() > deadline {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{PRODUCER_NODE} and {CONSUMER_NODE} missing after {timeout:?}"),
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// The file reference count of the DMA-BUF with inode `ino`, from debugfs'
/// `dma_buf/bufinfo` (every fd, mapping and kernel holder counts one);
/// `None` when no such DMA-BUF exists any more.
pub fn dmabuf_file_count(ino: u64) -> io::Result<Option<u64>> {
    const BUFINFO: &str = "/sys/kernel/debug/dma_buf/bufinfo";
    let text = std::fs::read_to_string(BUFINFO)
        .map_err(|err| io::Error::new(err.kind(), format!("{BUFINFO}: {err}")))?;
    // Rows: size flags mode count exp_name ino name (numbers zero-padded).
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 6 {
            continue;
        }
        if fields[5].parse::<u64>().ok() == Some(ino) {
            let count = fields[3].parse().map_err(|err| {
                io::Error::new(io::ErrorKind::InvalidData, format!("{line:?}: {err}"))
            })?;
            return Ok(Some(count));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_round_trip_through_their_bytes() {
        let blob = Blob::new(1920, 1080, 7680, DrmFourcc::Xrgb8888, 0x0100_0000_0000_0001);
        let bytes = blob.to_bytes();
        assert_eq!(&bytes[12..16], b"XR24");
        assert_eq!(Blob::from_bytes(&bytes), Some(blob));
        assert_eq!(Blob::from_bytes(&bytes[..23]), None);
    }

    #[test]
    fn events_parse_whole_and_refuse_truncation() {
        let mut bytes = Vec::new();
        let push = |bytes: &mut Vec<u8>, id: u64, key: [i32; 2], private: &[u8]| {
            bytes.extend_from_slice(&id.to_ne_bytes());
            bytes.extend_from_slice(&key[0].to_ne_bytes());
            bytes.extend_from_slice(&key[1].to_ne_bytes());
            bytes.extend_from_slice(&(private.len() as i32).to_ne_bytes());
            bytes.extend_from_slice(&[0; 4]);
            bytes.extend_from_slice(private);
        };
        push(&mut bytes, 7, [1, -2], &[9; 24]);
        push(&mut bytes, 8, [3, 4], &[]);
        let events = parse_events(&bytes).unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(
            events[0].id(),
            BufId {
                id: 7,
                rng_key: [1, -2]
            }
        );
        assert_eq!(events[0].private, vec![9; 24]);
        assert_eq!(events[1].header.size, 0);
        assert!(parse_events(&bytes[..30]).is_err());
        assert!(parse_events(&bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn request_numbers_are_not_nix_none_numbers() {
        // What `ioctl_none!` would send: size bits 0, a different request.
        assert_ne!(u64::from(IOCTL_IMPORT), nix::request_code_none!(b'G', 2));
    }
}
