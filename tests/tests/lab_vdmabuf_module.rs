//! The vdmabuf loopback module (`tests/vdmabuf-loopback/`) against the ABI
//! of `tests/src/vdmabuf.rs` (the RFC's uapi): export → event → import →
//! release → notice, every bad call's errno, full queues, whole-event reads,
//! what closing a node does, and 1000 cycles that leave no fd, no DMA-BUF
//! reference and no module reference behind (the module is removed and
//! loaded again at the end).
//!
//! Starts: nothing but udmabufs; the module is loaded by `scripts/lab/run.sh`.
//! Every test needs the lab.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::process::Command;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use drm_fourcc::DrmFourcc;
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::sys::memfd::{memfd_create, MFdFlags};
use tests::dmabuf::{exporter, read_picture};
use tests::lab::require_lab;
use tests::udmabuf::{assert_picture_eq, Udmabuf};
use tests::vdmabuf::*;

/// How long an event may take to show up (it is queued before the ioctl
/// returns; this only covers a slow lab).
const WAIT: Duration = Duration::from_secs(5);

/// DRM_FORMAT_MOD_LINEAR.
const LINEAR: u64 = 0;

/// The module's counters and consumers are shared by everything that opens
/// its nodes: tests in one process take turns (`scripts/lab/test.sh` runs
/// each in its own process anyway).
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

fn nodes() -> (Producer, Consumer) {
    wait_for_nodes(Duration::from_secs(5)).expect("the vdmabuf nodes");
    (
        Producer::open().expect("opening the producer node"),
        Consumer::open().expect("opening the consumer node"),
    )
}

/// A small XR24 frame whose stride is not width × 4, so that the blob's
/// fields all differ.
fn frame() -> Udmabuf {
    Udmabuf::with_stride(64, 32, 64 * 4 + 64, DrmFourcc::Xrgb8888).expect("a udmabuf")
}

fn blob_of(buffer: &Udmabuf) -> Blob {
    Blob::new(
        buffer.width(),
        buffer.height(),
        buffer.stride(),
        buffer.fourcc(),
        LINEAR,
    )
}

fn inode(fd: impl AsFd) -> u64 {
    nix::sys::stat::fstat(fd).expect("fstat").st_ino
}

fn cloexec(fd: impl AsFd) -> bool {
    let flags = fcntl(fd, FcntlArg::F_GETFD).expect("F_GETFD");
    FdFlag::from_bits_truncate(flags).contains(FdFlag::FD_CLOEXEC)
}

fn counter(name: &str) -> u64 {
    module_counter(name).expect("reading the module's counter")
}

/// File references on the DMA-BUF `buffer` (our fd counts one).
fn refs(buffer: &Udmabuf) -> Option<u64> {
    dmabuf_file_count(inode(buffer.fd())).expect("reading dma_buf/bufinfo")
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("listing /proc/self/fd")
        .count()
}

/// The one event `events` must be.
fn only(events: Vec<Event>, what: &str) -> Event {
    assert_eq!(
        events.len(),
        1,
        "{what}: expected one event, got {events:?}"
    );
    events.into_iter().next().unwrap()
}

#[test]
#[ignore = "needs the lab"]
fn vdmabuf_export_import_release_round_trip() {
    require_lab();
    let _serial = serial();
    let (producer, consumer) = nodes();
    let mut buffer = frame();
    let blob = blob_of(&buffer);
    let exported = counter("exported");
    assert_eq!(refs(&buffer), Some(1), "only our fd holds the new udmabuf");
    assert!(
        !consumer.poll(Duration::ZERO).unwrap(),
        "no event before an export"
    );

    // EXPORT: an id from our pid, a counter and a key; the module holds a
    // reference from now on.
    let id = producer.export_blob(buffer.fd(), &blob).expect("EXPORT");
    assert_eq!(
        id.id >> 32,
        u64::from(std::process::id()),
        "upper half of {id:?}"
    );
    assert_ne!(id.id & 0xffff_ffff, 0, "counter half of {id:?}");
    assert_eq!(counter("exported"), exported + 1);
    assert_eq!(refs(&buffer), Some(2), "EXPORT holds one reference");

    // The consumer's event: the header, then the blob, byte for byte.
    assert!(
        consumer.poll(WAIT).unwrap(),
        "poll() shows the export event"
    );
    let event = only(consumer.events().unwrap(), "after one export");
    assert_eq!(event.header.buf_id, id);
    assert_eq!(event.header.size, 24);
    assert_eq!(event.header.pad, 0, "padding leaks nothing");
    assert_eq!(event.private, blob.to_bytes());
    assert_eq!(
        event.blob(),
        Some(Blob {
            width: 64,
            height: 32,
            stride: 320,
            format: u32::from_le_bytes(*b"XR24"),
            modifier: LINEAR,
        })
    );
    assert!(
        !consumer.poll(Duration::ZERO).unwrap(),
        "one export, one event"
    );
    assert!(consumer.events().unwrap().is_empty());

    // IMPORT: a new fd for the very same dma_buf (its inode), O_CLOEXEC as
    // asked, showing the producer's pixels and later writes (no copy).
    let imported = consumer.import(id).expect("IMPORT");
    assert_ne!(imported.as_raw_fd(), buffer.fd().as_raw_fd());
    assert_eq!(inode(&imported), inode(buffer.fd()), "the same dma_buf");
    assert_eq!(
        exporter(imported.as_fd()).unwrap().as_deref(),
        Some("udmabuf")
    );
    assert!(cloexec(&imported), "IMPORT with O_CLOEXEC");
    assert_eq!(refs(&buffer), Some(3), "the imported fd holds its own");
    let second = consumer
        .import_with_flags(id, 0)
        .expect("IMPORT without flags");
    assert!(!cloexec(&second), "IMPORT with flags 0");
    assert_eq!(inode(&second), inode(buffer.fd()));
    drop(second);
    let layout = buffer.layout();
    let seen = read_picture(&imported, layout).expect("reading the imported buffer");
    assert_picture_eq("imported frame 0", &seen, &buffer.expected(0));
    buffer.fill(1).unwrap();
    let seen = read_picture(&imported, layout).expect("reading the imported buffer");
    assert_picture_eq("imported frame 1", &seen, &buffer.expected(1));
    drop(imported);
    assert_eq!(refs(&buffer), Some(2));

    // RELEASE: the module lets go; the producer gets a bare header.
    assert!(
        !producer.poll(Duration::ZERO).unwrap(),
        "no notice before RELEASE"
    );
    consumer.release(id).expect("RELEASE");
    assert_eq!(counter("exported"), exported);
    assert_eq!(
        refs(&buffer),
        Some(1),
        "RELEASE dropped the module's reference"
    );
    let notice = only(producer.wait_notices(WAIT).unwrap(), "after RELEASE");
    assert_eq!(notice.header.buf_id, id);
    assert_eq!(notice.header.size, 0);
    assert_eq!(notice.header.pad, 0);
    assert!(notice.private.is_empty());
    assert!(!producer.poll(Duration::ZERO).unwrap());
    assert_eq!(
        consumer.import(id).err(),
        Some(Errno::ENOENT),
        "released ids are gone"
    );
}

#[test]
#[ignore = "needs the lab"]
fn vdmabuf_bad_calls_get_their_errno() {
    require_lab();
    let _serial = serial();
    let (producer, consumer) = nodes();
    let buffer = frame();
    let blob = blob_of(&buffer).to_bytes();
    let exported = counter("exported");

    // Ids nobody exported, or that differ from one in any part.
    let unknown = BufId {
        id: 0xdead_beef,
        rng_key: [1, 2],
    };
    assert_eq!(consumer.import(unknown).err(), Some(Errno::ENOENT));
    assert_eq!(consumer.release(unknown).err(), Some(Errno::ENOENT));
    let id = producer.export(buffer.fd(), &blob).expect("EXPORT");
    for wrong in [
        BufId {
            id: id.id + 1,
            ..id
        },
        BufId {
            rng_key: [id.rng_key[0] ^ 1, id.rng_key[1]],
            ..id
        },
        BufId {
            rng_key: [id.rng_key[0], !id.rng_key[1]],
            ..id
        },
    ] {
        assert_eq!(
            consumer.import(wrong).err(),
            Some(Errno::ENOENT),
            "{wrong:?}"
        );
        assert_eq!(
            consumer.release(wrong).err(),
            Some(Errno::ENOENT),
            "{wrong:?}"
        );
    }

    // EXPORT of what is not a DMA-BUF: EINVAL; of what is not an fd: EBADF.
    let memfd: OwnedFd = memfd_create(c"not-a-dmabuf", MFdFlags::MFD_CLOEXEC).unwrap();
    assert_eq!(
        producer.export_raw(memfd.as_raw_fd(), &blob).err(),
        Some(Errno::EINVAL)
    );
    assert_eq!(
        producer
            .export_raw(producer.as_fd().as_raw_fd(), &blob)
            .err(),
        Some(Errno::EINVAL),
        "the producer node itself"
    );
    assert_eq!(producer.export_raw(-1, &blob).err(), Some(Errno::EBADF));
    assert_eq!(
        producer.export_raw(1 << 20, &blob).err(),
        Some(Errno::EBADF)
    );

    // Private data: 0 to 192 bytes.
    let big = [0xa5u8; MAX_PRIVATE + 1];
    assert_eq!(
        producer.export(buffer.fd(), &big).err(),
        Some(Errno::EINVAL),
        "193 bytes"
    );
    let fd = buffer.fd().as_raw_fd();
    assert_eq!(
        export_on(producer.as_fd(), fd, -1, Some(&[])).err(),
        Some(Errno::EINVAL)
    );
    assert_eq!(
        export_on(producer.as_fd(), fd, i32::MIN, None).err(),
        Some(Errno::EINVAL)
    );
    assert_eq!(
        export_on(producer.as_fd(), fd, 24, None).err(),
        Some(Errno::EINVAL),
        "24 bytes of private data at a null pointer"
    );
    let full = producer
        .export(buffer.fd(), &big[..MAX_PRIVATE])
        .expect("192 bytes");
    let empty = export_on(producer.as_fd(), fd, 0, None).expect("no private data");

    // IMPORT flags: 0 or O_CLOEXEC.
    for flags in [libc::O_RDWR, libc::O_CLOEXEC | libc::O_NONBLOCK, -1] {
        assert_eq!(
            consumer.import_with_flags(id, flags).err(),
            Some(Errno::EINVAL),
            "flags {flags:#x}"
        );
    }

    // Each call on the wrong node; other request numbers (nix's
    // `ioctl_none!` and `ioctl_readwrite!` encodings of IMPORT, IMPORT's
    // number with another size, EXPORT on the consumer node); a null
    // argument.
    let mut scratch = [0u8; 64];
    assert_eq!(
        export_on(consumer.as_fd(), fd, 24, Some(&blob)).err(),
        Some(Errno::ENOTTY)
    );
    assert_eq!(
        import_on(producer.as_fd(), id, 0).err(),
        Some(Errno::ENOTTY)
    );
    assert_eq!(release_on(producer.as_fd(), id).err(), Some(Errno::ENOTTY));
    let none = nix::request_code_none!(b'G', 2) as u32;
    let readwrite = nix::request_code_readwrite!(b'G', 2, size_of::<Import>()) as u32;
    for request in [none, readwrite, IOCTL_IMPORT + (1 << 16), IOCTL_EXPORT] {
        assert_eq!(
            ioctl_raw(consumer.as_fd(), request, Some(&mut scratch)).err(),
            Some(Errno::ENOTTY),
            "request {request:#x}"
        );
    }
    assert_eq!(
        ioctl_raw(consumer.as_fd(), IOCTL_IMPORT, None).err(),
        Some(Errno::EFAULT)
    );
    assert_eq!(
        ioctl_raw(consumer.as_fd(), IOCTL_RELEASE, None).err(),
        Some(Errno::EFAULT)
    );
    assert_eq!(
        ioctl_raw(producer.as_fd(), IOCTL_EXPORT, None).err(),
        Some(Errno::EFAULT)
    );

    // Only the three good EXPORTs happened: three events, three buffers.
    let events = consumer.wait_events(WAIT).unwrap();
    let ids: Vec<BufId> = events.iter().map(Event::id).collect();
    assert_eq!(ids, [id, full, empty]);
    assert_eq!(events[1].private, big[..MAX_PRIVATE]);
    assert_eq!(events[2].header.size, 0);
    assert_eq!(counter("exported"), exported + 3);

    // Double release; import after release.
    for id in [id, full, empty] {
        consumer.release(id).expect("RELEASE");
        assert_eq!(
            consumer.release(id).err(),
            Some(Errno::ENOENT),
            "second RELEASE"
        );
        assert_eq!(
            consumer.import(id).err(),
            Some(Errno::ENOENT),
            "IMPORT after RELEASE"
        );
    }
    let notices: Vec<BufId> = producer
        .wait_notices(WAIT)
        .unwrap()
        .iter()
        .map(Event::id)
        .collect();
    assert_eq!(
        notices,
        [id, full, empty],
        "one notice each, double releases none"
    );
    assert_eq!(counter("exported"), exported);
    assert_eq!(refs(&buffer), Some(1));
}

#[test]
#[ignore = "needs the lab"]
fn vdmabuf_full_queues_drop_the_oldest_events() {
    require_lab();
    let _serial = serial();
    let (producer, consumer) = nodes();
    let buffer = frame();
    let dropped = counter("events_dropped");
    const N: usize = MAX_EVENTS + 8;

    let ids: Vec<BufId> = (0..N)
        .map(|i| producer.export(buffer.fd(), &[i as u8; 8]).expect("EXPORT"))
        .collect();
    assert_eq!(
        refs(&buffer),
        Some(1 + N as u64),
        "every export holds a reference"
    );

    // The consumer's queue kept the newest 32, in order.
    let events = consumer.wait_events(WAIT).unwrap();
    assert_eq!(events.len(), MAX_EVENTS);
    for (event, i) in events.iter().zip(N - MAX_EVENTS..) {
        assert_eq!(event.id(), ids[i], "event for export {i}");
        assert_eq!(event.private, [i as u8; 8], "private data of export {i}");
    }
    assert!(consumer.events().unwrap().is_empty());
    assert_eq!(counter("events_dropped"), dropped + 8);

    // A dropped event is not a dropped buffer: the oldest is still there.
    let oldest = consumer
        .import(ids[0])
        .expect("IMPORT of a buffer whose event was dropped");
    assert_eq!(inode(&oldest), inode(buffer.fd()));
    drop(oldest);

    // The producer's queue too.
    for &id in &ids {
        consumer.release(id).expect("RELEASE");
    }
    let notices: Vec<BufId> = producer
        .wait_notices(WAIT)
        .unwrap()
        .iter()
        .map(Event::id)
        .collect();
    assert_eq!(notices, ids[N - MAX_EVENTS..]);
    assert_eq!(counter("events_dropped"), dropped + 16);
    assert_eq!(refs(&buffer), Some(1));
}

#[test]
#[ignore = "needs the lab"]
fn vdmabuf_reads_return_whole_events() {
    require_lab();
    let _serial = serial();
    let (producer, consumer) = nodes();
    let buffer = frame();
    let blob = blob_of(&buffer).to_bytes();

    let a = producer.export(buffer.fd(), &blob).unwrap(); // 48 bytes
    let b = producer.export(buffer.fd(), &blob).unwrap(); // 48
    let c = producer.export(buffer.fd(), &[]).unwrap(); // 24
    let d = producer.export(buffer.fd(), &blob).unwrap(); // 48

    let mut buf = [0u8; 1024];
    // Too small for the first: 0 bytes (as DRM's read()), and it stays.
    assert_eq!(consumer.read_raw(&mut buf[..47]).unwrap(), 0);
    assert!(
        consumer.poll(Duration::ZERO).unwrap(),
        "the event stayed queued"
    );
    // QEMU's RFC consumer read exactly 48 bytes: one event.
    let n = consumer.read_raw(&mut buf[..48]).unwrap();
    assert_eq!(n, 48);
    assert_eq!(
        only(parse_events(&buf[..n]).unwrap(), "48-byte read").id(),
        a
    );
    // 100 bytes: b (48) and c (24); d (48) does not fit in the 28 left.
    let n = consumer.read_raw(&mut buf[..100]).unwrap();
    assert_eq!(n, 72);
    let ids: Vec<BufId> = parse_events(&buf[..n])
        .unwrap()
        .iter()
        .map(Event::id)
        .collect();
    assert_eq!(ids, [b, c]);
    let n = consumer.read_raw(&mut buf).unwrap();
    assert_eq!(only(parse_events(&buf[..n]).unwrap(), "last").id(), d);
    let err = consumer.read_raw(&mut buf).unwrap_err();
    assert_eq!(
        err.kind(),
        std::io::ErrorKind::WouldBlock,
        "non-blocking, empty: EAGAIN"
    );

    // A blocking read waits for the next export; every open consumer gets it.
    let blocking = Consumer::open_blocking().unwrap();
    let e = std::thread::scope(|scope| {
        let reader = scope.spawn(|| blocking.events());
        std::thread::sleep(Duration::from_millis(200));
        assert!(!reader.is_finished(), "read() returned with nothing queued");
        let e = producer.export(buffer.fd(), &blob).unwrap();
        let got = only(reader.join().unwrap().unwrap(), "blocking read");
        assert_eq!(got.id(), e);
        e
    });
    assert_eq!(
        only(consumer.wait_events(WAIT).unwrap(), "the other consumer").id(),
        e
    );

    for id in [a, b, c, d, e] {
        consumer.release(id).unwrap();
    }
    assert_eq!(producer.wait_notices(WAIT).unwrap().len(), 5);
    assert_eq!(refs(&buffer), Some(1));
}

#[test]
#[ignore = "needs the lab"]
fn vdmabuf_closing_nodes_keeps_or_withdraws_what_they_should() {
    require_lab();
    let _serial = serial();
    let (producer, consumer) = nodes();
    let buffer = frame();
    let blob = blob_of(&buffer).to_bytes();
    let exported = counter("exported");

    // Closing a producer withdraws what it exported and was not released;
    // fds already imported keep working.
    let ids: Vec<BufId> = (0..3)
        .map(|_| producer.export(buffer.fd(), &blob).unwrap())
        .collect();
    assert_eq!(consumer.wait_events(WAIT).unwrap().len(), 3);
    let imported = consumer.import(ids[1]).unwrap();
    assert_eq!(refs(&buffer), Some(1 + 3 + 1));
    drop(producer);
    assert_eq!(counter("exported"), exported);
    assert_eq!(refs(&buffer), Some(2), "our fd and the imported one");
    for &id in &ids {
        assert_eq!(consumer.import(id).err(), Some(Errno::ENOENT));
        assert_eq!(consumer.release(id).err(), Some(Errno::ENOENT));
    }
    let seen = read_picture(&imported, buffer.layout()).unwrap();
    assert_picture_eq(
        "imported after the producer closed",
        &seen,
        &buffer.expected(0),
    );
    drop(imported);
    assert_eq!(refs(&buffer), Some(1));

    // Closing a consumer keeps the buffers: another consumer may release.
    let producer = Producer::open().unwrap();
    let id = producer.export(buffer.fd(), &blob).unwrap();
    drop(consumer);
    assert_eq!(counter("exported"), exported + 1);
    let late = Consumer::open().unwrap();
    assert!(
        late.events().unwrap().is_empty(),
        "events go to consumers open at export"
    );
    assert_eq!(inode(late.import(id).unwrap()), inode(buffer.fd()));
    late.release(id).unwrap();
    assert_eq!(
        only(producer.wait_notices(WAIT).unwrap(), "late release").id(),
        id
    );
    assert_eq!(counter("exported"), exported);
    assert_eq!(refs(&buffer), Some(1));
}

/// Loads the module again if a test removed it and failed before it could.
struct Reload;

impl Drop for Reload {
    fn drop(&mut self) {
        if !module_loaded() {
            let _ = Command::new("modprobe").arg(MODULE).status();
        }
    }
}

fn run(program: &str, args: &[&str]) {
    let output = Command::new(program).args(args).output().expect(program);
    assert!(
        output.status.success(),
        "{program} {args:?}: {}; {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
#[ignore = "needs the lab"]
fn vdmabuf_1000_cycles_leave_no_fd_and_no_module_reference() {
    const CYCLES: usize = 1000;
    require_lab();
    let _serial = serial();
    let _reload = Reload;
    let (producer, consumer) = nodes();
    let buffer = frame();
    let blob = blob_of(&buffer);
    let ino = inode(buffer.fd());
    let exported = counter("exported");
    let fds = open_fds();

    let start = Instant::now();
    for cycle in 0..CYCLES {
        let id = producer.export_blob(buffer.fd(), &blob).expect("EXPORT");
        let event = only(consumer.wait_events(WAIT).unwrap(), "export event");
        assert_eq!(
            (event.id(), event.blob()),
            (id, Some(blob)),
            "cycle {cycle}"
        );
        let imported = consumer.import(id).expect("IMPORT");
        assert_eq!(inode(&imported), ino, "cycle {cycle}");
        drop(imported);
        consumer.release(id).expect("RELEASE");
        let notice = only(producer.wait_notices(WAIT).unwrap(), "release notice");
        assert_eq!((notice.id(), notice.header.size), (id, 0), "cycle {cycle}");
    }
    let elapsed = start.elapsed();
    println!(
        "{CYCLES} export/event/import/release/notice cycles in {elapsed:.2?} ({:.0} µs each)",
        elapsed.as_secs_f64() * 1e6 / CYCLES as f64
    );

    assert_eq!(open_fds(), fds, "fds left behind in this process");
    assert_eq!(counter("exported"), exported, "buffers left exported");
    assert_eq!(refs(&buffer), Some(1), "references left on the dma_buf");
    drop(buffer);
    assert_eq!(dmabuf_file_count(ino).unwrap(), None, "the dma_buf is gone");

    // With its files closed, nothing holds the module: it unloads and
    // loads again.
    drop((producer, consumer));
    assert_eq!(module_refcount().unwrap(), 0, "module references left");
    let start = Instant::now();
    run("rmmod", &[MODULE]);
    assert!(!module_loaded());
    assert!(!std::path::Path::new(CONSUMER_NODE).exists());
    run("modprobe", &[MODULE]);
    wait_for_nodes(Duration::from_secs(5)).unwrap();
    println!("rmmod + modprobe in {:.2?}", start.elapsed());
    assert_eq!((counter("exported"), counter("events_dropped")), (0, 0));

    // And works.
    let (producer, consumer) = nodes();
    let buffer = frame();
    let id = producer
        .export_blob(buffer.fd(), &blob_of(&buffer))
        .unwrap();
    assert_eq!(
        only(consumer.wait_events(WAIT).unwrap(), "after reload").id(),
        id
    );
    assert_eq!(inode(consumer.import(id).unwrap()), inode(buffer.fd()));
    consumer.release(id).unwrap();
    assert_eq!(
        only(producer.wait_notices(WAIT).unwrap(), "after reload").id(),
        id
    );
}
