//! Every vdmabuf id the sink reads is RELEASEd exactly once, whatever
//! becomes of it: exports whose blob is short, many exports landing in one
//! read, an IMPORT that fails (EMFILE), and a producer that closes while the
//! sink holds its ids. The producer sees each release as a notice; the sink
//! must hold at most three imported buffers at a time and must not hang.
//!
//! Starts: the vdmabuf loopback module's nodes, the qemu-sink binary
//! (`capture`, software rendering); udmabufs. Every test needs the lab
//! (`scripts/lab/test.sh vdmabuf_release`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use drm_fourcc::DrmFourcc;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::os::unix::fs::MetadataExt;

use tests::lab::{inode, require_lab, set_soft_limit};
use tests::sink_run::{opaque, wait_for_picture, Sink};
use tests::udmabuf::Udmabuf;
use tests::vdmabuf::{module_counter, module_refcount, Blob, BufId, Producer, CONSUMER_NODE};
use tests::TempDir;

const TIMEOUT: Duration = Duration::from_secs(60);

/// `qemu-sink capture --source vdmabuf`, once it has opened the consumer
/// node (events go only to the consumers open at export time).
fn capture(out: &std::path::Path) -> Sink {
    let node = format!("vdmabuf={CONSUMER_NODE}");
    let opened = module_refcount().unwrap();
    let sink = Sink::capture(out, &["--source", &node, "--render-device", "software"]);
    let deadline = Instant::now() + TIMEOUT;
    while module_refcount().unwrap() <= opened {
        assert!(
            Instant::now() < deadline,
            "the sink never opened {CONSUMER_NODE}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    sink
}

/// Reads notices until each of `ids` came once (or `timeout`); fails on a
/// notice for anything else or a second one for the same id.
fn wait_released_once(
    producer: &Producer,
    ids: &[BufId],
    timeout: Duration,
    log: impl Fn() -> String,
) {
    let mut seen: HashMap<BufId, usize> = HashMap::new();
    let deadline = Instant::now() + timeout;
    while ids.iter().any(|id| !seen.contains_key(id)) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "not released within {timeout:?}: {:?}; the sink's log:\n{}",
            ids.iter()
                .filter(|id| !seen.contains_key(id))
                .collect::<Vec<_>>(),
            log()
        );
        if producer.poll(left).unwrap() {
            for notice in producer.notices().unwrap() {
                *seen.entry(notice.id()).or_default() += 1;
            }
        }
    }
    // A second notice for an id would come now, if ever.
    std::thread::sleep(Duration::from_millis(500));
    for notice in producer.notices().unwrap() {
        *seen.entry(notice.id()).or_default() += 1;
    }
    for (id, count) in &seen {
        assert!(ids.contains(id), "a notice for {id:?}, never exported here");
        assert_eq!(*count, 1, "{id:?} released {count} times");
    }
}

/// How many fds of `pid` are the buffer with inode `ino` (the sink's own
/// GL buffers are DMA-BUFs too, so only the producer's buffer is counted).
fn fds_of(pid: u32, ino: u64) -> usize {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return 0;
    };
    dir.filter_map(|entry| std::fs::metadata(entry.ok()?.path()).ok())
        .filter(|meta| meta.ino() == ino)
        .count()
}

/// Samples `fds_of(pid, ino)` about every millisecond until dropped; the
/// most seen.
struct FdSampler {
    stop: Arc<AtomicBool>,
    most: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FdSampler {
    fn start(pid: u32, ino: u64) -> FdSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let most = Arc::new(AtomicUsize::new(0));
        let thread = std::thread::spawn({
            let (stop, most) = (stop.clone(), most.clone());
            move || {
                while !stop.load(Ordering::Relaxed) {
                    most.fetch_max(fds_of(pid, ino), Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        });
        FdSampler {
            stop,
            most,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap();
        self.most.load(Ordering::Relaxed)
    }
}

fn signal(sink: &Sink, signal: Signal) {
    kill(Pid::from_raw(sink.pid() as i32), signal).unwrap();
}

/// Private data too short for a blob (none, 10, 23 bytes) is dropped
/// without an import, and its id still comes back once; the module holds
/// nothing more than before once the sink stops.
#[test]
#[ignore = "needs the lab"]
fn vdmabuf_release_short_blobs_are_released_once() {
    require_lab();
    let dir = TempDir::new("vdmabuf-release-short");
    let baseline = module_counter("exported").unwrap();
    let producer = Producer::open().unwrap();
    let sink = capture(&dir.path("out.png"));
    let buffer = Udmabuf::new(16, 16, DrmFourcc::Xrgb8888).unwrap();
    let ids: Vec<BufId> = [&[][..], &[0; 10], &[0; 23]]
        .into_iter()
        .map(|private| producer.export(buffer.fd(), private).unwrap())
        .collect();
    wait_released_once(&producer, &ids, Duration::from_secs(10), String::new);
    // No frame was good, so capture ends non-zero; it must end, though.
    let (_, log) = sink.terminate(Duration::from_secs(10));
    assert_eq!(log.matches("dropping vdmabuf export").count(), 3, "{log}");
    assert_eq!(module_counter("exported").unwrap(), baseline, "{log}");
}

/// Twenty good exports and five short ones queued while the sink is
/// stopped land in one or two reads: the sink imports at most three at a
/// time, shows them, and releases each id exactly once.
#[test]
#[ignore = "needs the lab"]
fn vdmabuf_release_many_events_in_one_read_hold_at_most_three() {
    require_lab();
    let dir = TempDir::new("vdmabuf-release-many");
    let out = dir.path("out.png");
    let baseline = module_counter("exported").unwrap();
    let producer = Producer::open().unwrap();
    let sink = capture(&out);
    let mut buffer = Udmabuf::new(32, 16, DrmFourcc::Xrgb8888).unwrap();
    buffer.fill(5).unwrap();
    let blob = Blob::new(32, 16, buffer.stride(), DrmFourcc::Xrgb8888, 0);

    signal(&sink, Signal::SIGSTOP);
    let mut ids = Vec::new();
    for k in 0..25 {
        let id = if k % 5 == 4 {
            producer.export(buffer.fd(), &[]).unwrap()
        } else {
            producer.export_blob(buffer.fd(), &blob).unwrap()
        };
        ids.push(id);
    }
    let sampler = FdSampler::start(sink.pid(), inode(buffer.fd()));
    signal(&sink, Signal::SIGCONT);
    wait_for_picture("the burst", &out, &opaque(&buffer.expected(5)), TIMEOUT);
    wait_released_once(&producer, &ids, TIMEOUT, String::new);
    let most = sampler.finish();
    // The output keeps its import of the buffer (one scanout's fd, and
    // EGL's own) after the release: what is left at rest is not held.
    let rest = fds_of(sink.pid(), inode(buffer.fd()));
    assert!(
        most <= rest + 3,
        "the sink had {most} fds of the buffer at once, {rest} at rest: more than 3 ids held"
    );
    let log = sink.stop();
    assert_eq!(module_counter("exported").unwrap(), baseline, "{log}");
    assert!(!log.contains("vdmabuf RELEASE of id"), "{log}");
}

/// An IMPORT that fails (EMFILE: the sink's fd limit lowered to its lowest
/// free fd while it was stopped) drops that export and releases its id;
/// with the limit back, the next export is shown.
#[test]
#[ignore = "needs the lab"]
fn vdmabuf_release_failed_import_is_released() {
    require_lab();
    let dir = TempDir::new("vdmabuf-release-emfile");
    let out = dir.path("out.png");
    let baseline = module_counter("exported").unwrap();
    let producer = Producer::open().unwrap();
    let sink = capture(&out);
    let pid = sink.pid();
    let mut buffer = Udmabuf::new(32, 16, DrmFourcc::Xrgb8888).unwrap();
    buffer.fill(3).unwrap();
    let blob = Blob::new(32, 16, buffer.stride(), DrmFourcc::Xrgb8888, 0);

    signal(&sink, Signal::SIGSTOP);
    let open: Vec<u64> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    let lowest_free = (0..).find(|fd| !open.contains(fd)).unwrap();
    let old = set_soft_limit(pid, libc::RLIMIT_NOFILE, lowest_free);
    let refused = producer.export_blob(buffer.fd(), &blob).unwrap();
    signal(&sink, Signal::SIGCONT);
    assert!(
        sink.wait_for_log("EMFILE", Duration::from_secs(10)),
        "the sink's IMPORT did not fail"
    );
    wait_released_once(&producer, &[refused], Duration::from_secs(10), String::new);

    // The old limit goes back.
    set_soft_limit(pid, libc::RLIMIT_NOFILE, old);
    let shown = producer.export_blob(buffer.fd(), &blob).unwrap();
    wait_for_picture("after EMFILE", &out, &opaque(&buffer.expected(3)), TIMEOUT);
    let log = sink.stop();
    wait_released_once(&producer, &[shown], Duration::from_secs(10), || log.clone());
    assert_eq!(module_counter("exported").unwrap(), baseline, "{log}");
}

/// A producer that closes its node while the sink holds its ids (five read
/// while the sink was stopped) withdraws them: the sink neither hangs
/// nor keeps their buffer, shows the next producer's frame, and exits 0.
#[test]
#[ignore = "needs the lab"]
fn vdmabuf_release_producer_closing_with_ids_held_does_not_hang_or_leak() {
    require_lab();
    let dir = TempDir::new("vdmabuf-release-close");
    let out = dir.path("out.png");
    let baseline = module_counter("exported").unwrap();
    let sink = capture(&out);
    let pid = sink.pid();
    let mut buffer = Udmabuf::new(32, 16, DrmFourcc::Xrgb8888).unwrap();
    let blob = Blob::new(32, 16, buffer.stride(), DrmFourcc::Xrgb8888, 0);

    let first = Producer::open().unwrap();
    buffer.fill(1).unwrap();
    let shown = first.export_blob(buffer.fd(), &blob).unwrap();
    wait_for_picture(
        "the first producer",
        &out,
        &opaque(&buffer.expected(1)),
        TIMEOUT,
    );
    wait_released_once(&first, &[shown], TIMEOUT, String::new);
    // The output keeps its import of the buffer (not an id) from here.
    let ino = inode(buffer.fd());
    let rest = fds_of(pid, ino);
    signal(&sink, Signal::SIGSTOP);
    for _ in 0..5 {
        first.export_blob(buffer.fd(), &blob).unwrap();
    }
    drop(first);
    assert_eq!(module_counter("exported").unwrap(), baseline, "withdrawn");
    signal(&sink, Signal::SIGCONT);

    let second = Producer::open().unwrap();
    buffer.fill(2).unwrap();
    let id = second.export_blob(buffer.fd(), &blob).unwrap();
    wait_for_picture(
        "the second producer",
        &out,
        &opaque(&buffer.expected(2)),
        TIMEOUT,
    );
    wait_released_once(&second, &[id], TIMEOUT, String::new);
    // The withdrawn ids went: no more fds of the buffer than before them.
    let deadline = Instant::now() + Duration::from_secs(10);
    while fds_of(pid, ino) > rest {
        assert!(
            Instant::now() < deadline,
            "the sink keeps {} fds of the producer's buffer, {rest} before",
            fds_of(pid, ino)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let started = Instant::now();
    let log = sink.stop();
    assert!(started.elapsed() < Duration::from_secs(5), "{log}");
    assert_eq!(module_counter("exported").unwrap(), baseline, "{log}");
}
