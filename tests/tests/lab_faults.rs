//! Faults under `qemu-sink display` (and one under `capture`), in the lab:
//! QEMU killed with a frame outstanding, a producer's GPU slower than
//! QEMU's deadline, DRM master taken while a flip is queued, a replug with
//! no file descriptor left, one frame whose GL work fails. Each test
//! asserts what a user sees (writeback pixels, the PNG, answer times
//! against QEMU's 1 s, the exit status, the log) and prints one line
//! `fault NAME: ...` with its figures.
//!
//! Starts: dbus-daemon, the fake QEMU (udmabufs) or nested
//! qemu-system-x86_64s, the qemu-sink binary as a user runs it. Every test
//! needs the lab (`scripts/lab/test.sh fault`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use capture::{read_png, RgbaFrame};
use drm_fourcc::DrmFourcc;
use serde_json::Value;
use sink::output::kms::{find_node, NodeKind};
use tests::attached::Attached;
use tests::fake_qemu::{Answer, BufferDesc, FakeQemu};
use tests::fence::HeldFence;
use tests::lab::{
    require_lab, set_soft_limit, two_buffers_the_first_shown, ForcedConnector, MasterThief,
    Observer, PreferredMode,
};
use tests::picture::letterboxed;
use tests::sink_run::{opaque, wait_for_picture, wait_for_picture_within, Sink};
use tests::udmabuf::Udmabuf;
use tests::*;

/// QEMU gives up on an `UpdateDMABUF` answer after 1 s.
const QEMU_TIMEOUT: Duration = Duration::from_secs(1);
/// The sink's listener answers by then whatever the output does.
const DEADLINE: Duration = Duration::from_millis(800);

fn vkms() -> PathBuf {
    find_node(NodeKind::Primary, "vkms").expect("the vkms card")
}

fn vgem() -> PathBuf {
    find_node(NodeKind::Primary, "vgem").expect("the vgem card")
}

/// The fake QEMU with a 640x480 console, and `qemu-sink display --mode
/// 640x480 --report --capture EXTRA` on vkms attached to it.
fn setup(tag: &str, extra: &[&str]) -> Attached {
    let card = vkms();
    Attached::display(tag, (640, 480), card.to_str().unwrap(), extra)
}

fn read_report(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// Every sample of the report: each frame once (ids unique, as many as
/// QEMU sent), each released.
fn assert_each_frame_released_once(report: &Value, sent: usize, log: &str) {
    let samples = report["samples"].as_array().expect("samples");
    assert_eq!(samples.len(), sent, "one record per UpdateDMABUF: {log}");
    let mut ids: Vec<u64> = samples.iter().map(|s| s["id"].as_u64().unwrap()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), sent, "no frame logged twice: {report}");
    for sample in samples {
        assert!(
            sample["released_us"].is_u64(),
            "a frame never released: {sample}"
        );
    }
}

fn assert_no_panic(log: &str) {
    assert!(!log.contains("panicked"), "{log}");
}

/// A buffer whose producer's GPU has not finished writing it (an
/// unsignalled write fence on the DMA-BUF, the way a slow renderer leaves
/// it) goes on the plane: the kernel holds the flip until the fence
/// signals. The sink gives the flip up at 500 ms and answers that frame;
/// the writeback that follows waits in the kernel behind the held flip,
/// so the frames QEMU sends meanwhile are answered by the listener's
/// 800 ms deadline: before QEMU's 1 s, each counted. Once the fence
/// signals, the next frame shows.
#[test]
#[ignore = "needs the lab"]
fn fault_slow_producer_gpu_answered_by_the_deadline() {
    require_lab();
    let mut s = setup("fault-deadline", &[]);
    let buffers = two_buffers_the_first_shown(&mut s.listener, &s.out, "the first picture");
    let mut fence = HeldFence::new(&vgem()).unwrap();
    fence.attach_to(buffers[1].fd()).unwrap();

    let fenced_at = Instant::now();
    let mut late: Vec<Answer> = Vec::new();
    s.listener
        .scanout_dmabuf(buffers[1].fd(), BufferDesc::xrgb(640, 480), false)
        .unwrap();
    for _ in 0..4 {
        late.push(s.listener.update_dmabuf(0, 0, 640, 480).clone());
    }
    let held_for = fenced_at.elapsed();
    assert!(!fence.is_signalled(), "vgem signalled the fence by itself");
    fence.signal().unwrap();
    let millis: Vec<u128> = late.iter().map(|a| a.latency().as_millis()).collect();

    // The fence signalled: the next frame of that buffer shows.
    assert!(s.listener.update_dmabuf(0, 0, 640, 480).ok);
    wait_for_picture(
        "once the fence signalled",
        &s.out,
        &opaque(&buffers[1].expected(1)),
        Duration::from_secs(30),
    );
    let log = s.sink.stop();
    let report = read_report(&s.report);
    eprintln!("answers while the fence was held: {millis:?} ms; {log}");
    for (n, answer) in late.iter().enumerate() {
        assert!(answer.ok, "frame {n} was not answered in time: {log}");
        assert!(
            answer.latency() < QEMU_TIMEOUT,
            "frame {n} answered after {:?}",
            answer.latency()
        );
    }
    let by_deadline = late
        .iter()
        .filter(|a| a.latency() >= DEADLINE - Duration::from_millis(20))
        .count();
    assert!(
        by_deadline >= 1,
        "no answer came by the 800 ms deadline ({millis:?} ms): {log}"
    );
    let counted = report["frames"]["deadline_answers"].as_u64().unwrap();
    assert_eq!(
        counted, by_deadline as u64,
        "the report counts the deadline answers QEMU saw: {log}"
    );
    assert!(log.contains("answered by the deadline"), "{log}");
    assert!(
        log.contains("answering UpdateDMABUF at the deadline"),
        "{log}"
    );
    assert_each_frame_released_once(&report, 1 + late.len() + 1, &log);
    assert_no_panic(&log);
    eprintln!(
        "fault slow-gpu: {} frames while a write fence was held {} ms: answered {}/{}, \
         {by_deadline} by the 800 ms deadline (counted {counted}), slowest {} ms",
        late.len(),
        held_for.as_millis(),
        late.iter().filter(|a| a.ok).count(),
        late.len(),
        millis.iter().max().unwrap()
    );
    drop(s.dir);
}

/// DRM master taken by another process while a flip is queued (held in
/// the kernel by an unsignalled fence, so it is surely still queued): the
/// frame is answered (the sink gives that flip up), frames meanwhile are
/// answered at once; the flip's late event finds nothing to release
/// twice; master back, the output is lit again and shows the next frame.
#[test]
#[ignore = "needs the lab"]
fn fault_drm_master_lost_mid_flip() {
    require_lab();
    let card = vkms();
    let mut s = setup("fault-master-mid-flip", &[]);
    let buffers = two_buffers_the_first_shown(&mut s.listener, &s.out, "the first picture");
    let mut fence = HeldFence::new(&vgem()).unwrap();
    fence.attach_to(buffers[1].fd()).unwrap();
    s.listener
        .scanout_dmabuf(buffers[1].fd(), BufferDesc::xrgb(640, 480), false)
        .unwrap();

    // QEMU's UpdateDMABUF waits for its answer on a thread of its own; the
    // flip is queued (and held) meanwhile.
    let connection = s.listener.connection.clone();
    let pending = std::thread::spawn(move || {
        let listener = dbus_interfaces::qemu_side::ListenerProxyBlocking::builder(&connection)
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .unwrap();
        let sent = Instant::now();
        let ok = listener.update_dmabuf(0, 0, 640, 480).is_ok();
        (ok, sent.elapsed())
    });
    std::thread::sleep(Duration::from_millis(150));
    let mut thief = MasterThief::steal(s.sink.pid(), &card);
    let (mid_flip_ok, mid_flip_latency) = pending.join().unwrap();
    // The held flip completes now, its event read by a sink without master.
    fence.signal().unwrap();

    let mut meanwhile = Vec::new();
    for _ in 0..3 {
        meanwhile.push(s.listener.update_dmabuf(0, 0, 640, 480).clone());
    }
    assert!(
        s.sink
            .wait_for_log("lost DRM master", Duration::from_secs(10)),
        "the sink never noticed"
    );
    let given_back = Instant::now();
    thief.give_back();
    assert!(
        s.sink
            .wait_for_log("DRM master is back", Duration::from_secs(10)),
        "the sink never took the card back: {}",
        s.sink.abort()
    );
    assert!(s.listener.update_dmabuf(0, 0, 640, 480).ok);
    wait_for_picture(
        "after regaining master",
        &s.out,
        &opaque(&buffers[1].expected(1)),
        Duration::from_secs(30),
    );
    let relit = given_back.elapsed();
    let log = s.sink.stop();
    let report = read_report(&s.report);
    assert!(mid_flip_ok, "the frame whose flip was queued: {log}");
    assert!(mid_flip_latency < QEMU_TIMEOUT, "{mid_flip_latency:?}");
    for (n, answer) in meanwhile.iter().enumerate() {
        assert!(
            answer.ok && answer.latency() < DEADLINE,
            "frame {n} while master was lost: {answer:?}"
        );
    }
    let sent = 1 + 1 + meanwhile.len() + 1;
    assert_each_frame_released_once(&report, sent, &log);
    assert_no_panic(&log);
    eprintln!(
        "fault master-mid-flip: answered {sent}/{sent} (the mid-flip frame in {} ms, \
         the others while master was lost in at most {} ms), relit in {} ms",
        mid_flip_latency.as_millis(),
        meanwhile
            .iter()
            .map(|a| a.latency().as_millis())
            .max()
            .unwrap(),
        relit.as_millis()
    );
    drop(s.dir);
}

/// The process's open fds and the fd limit set to just that many (or to
/// `limit`); returns the open count and the limit it had.
fn limit_fds(pid: u32, limit: Option<u64>) -> (usize, u64) {
    let open = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    let old = set_soft_limit(pid, libc::RLIMIT_NOFILE, limit.unwrap_or(open as u64));
    (open, old)
}

/// RLIMIT_NOFILE of a running process set to 3: its standard streams stay
/// open, every fd it has stays valid, and no new fd can be had at all (a
/// limit at the count of open fds leaves holes below it that fds closed
/// meanwhile reopen); returns the old limit.
fn no_fd_left(pid: u32) -> u64 {
    set_soft_limit(pid, libc::RLIMIT_NOFILE, 3)
}

/// The framebuffer the vkms CRTC scans out (0: none).
fn crtc_fb(observer: &Observer) -> u32 {
    use drm::control::Device as _;
    let resources = observer.resource_handles().unwrap();
    resources
        .crtcs()
        .iter()
        .find_map(|&c| observer.get_crtc(c).ok()?.framebuffer())
        .map(u32::from)
        .unwrap_or(0)
}

/// Stops the sink, which must not have panicked and must leave the CRTC
/// showing what it showed before the sink (`console_fb`); its log.
fn stopped_with_the_crtc_restored(sink: Sink, card: &Path, console_fb: u32) -> String {
    let log = sink.stop();
    assert_no_panic(&log);
    assert_eq!(
        crtc_fb(&Observer::open(card)),
        console_fb,
        "the CRTC shows what it showed before the sink: {log}"
    );
    log
}

/// The monitor unplugged and plugged back while the sink has no file
/// descriptor left (RLIMIT_NOFILE lowered to its open fds): it is lit
/// again or says in one line why not, keeps running and answering; with
/// the limit raised and another replug it is lit again with the right
/// picture, and on exit the CRTC shows what it showed before the sink (the
/// console). (A replug to the same mode size keeps its scanout buffers, so
/// it needs no new fd; the reallocation for a monitor of another size is
/// `fault_replug_into_another_size_with_no_fd_left`.)
#[test]
#[ignore = "needs the lab"]
fn fault_replug_with_no_fd_left() {
    require_lab();
    let card = vkms();
    // (Opened before the sink, a node holds DRM master: looked at, closed.)
    let console_fb = crtc_fb(&Observer::open(&card));
    let connector = ForcedConnector::of(&card);
    let mut s = setup("fault-replug-emfile", &[]);
    let buffers = two_buffers_the_first_shown(&mut s.listener, &s.out, "the first picture");
    let pid = s.sink.pid();

    let (open, old_limit) = limit_fds(pid, None);
    connector.force("off");
    assert!(
        s.sink
            .wait_for_log("was unplugged", Duration::from_secs(10)),
        "the sink never noticed the unplug"
    );
    connector.force("on");
    let back = s.sink.wait_for_log("is back", Duration::from_secs(10));
    // QEMU's next frame (no new fd: the current buffer again).
    assert!(
        back || s.sink.log().contains("lighting it failed"),
        "the replug at the fd limit neither lit nor said why: {}",
        s.sink.abort()
    );
    let starved = s.listener.update_dmabuf(0, 0, 640, 480).clone();
    assert!(
        starved.ok && starved.latency() < QEMU_TIMEOUT,
        "{starved:?}"
    );
    std::thread::sleep(Duration::from_secs(2));

    limit_fds(pid, Some(old_limit));
    connector.force("off");
    assert!(
        s.sink
            .wait_for_log("was unplugged", Duration::from_secs(10)),
        "the second unplug"
    );
    let replugged = Instant::now();
    connector.force("on");
    std::thread::sleep(Duration::from_millis(1500));
    s.listener
        .scanout_dmabuf(buffers[1].fd(), BufferDesc::xrgb(640, 480), false)
        .unwrap();
    assert!(s.listener.update_dmabuf(0, 0, 640, 480).ok);
    wait_for_picture(
        "after the limit was raised and a replug",
        &s.out,
        &opaque(&buffers[1].expected(1)),
        Duration::from_secs(30),
    );
    let relit = replugged.elapsed();
    let log = stopped_with_the_crtc_restored(s.sink, &card, console_fb);
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("Too many open files") || l.contains("lighting it failed"))
        .collect();
    eprintln!(
        "fault replug-emfile: {open} fds open, limit {open}: first replug {}, \
         {} log lines on it ({lines:?}); starved frame answered in {} ms; \
         relit in {} ms after the limit was raised; CRTC restored on exit",
        if back { "lit" } else { "not lit" },
        lines.len(),
        starved.latency().as_millis(),
        relit.as_millis()
    );
    drop(s.dir);
}

/// Another monitor plugged in while the sink has no file descriptor left:
/// the connector comes back preferring 800x600 where it was 640x480, so
/// the replug needs scanout buffers of the new size, and making them fails
/// (EMFILE). The sink says why in a line, keeps the old buffers, answers
/// QEMU, never panics; once the limit is raised it lights the new monitor
/// at 800x600 and shows the guest there, and on exit the CRTC shows what
/// it showed before the sink.
#[test]
#[ignore = "needs the lab"]
fn fault_replug_into_another_size_with_no_fd_left() {
    require_lab();
    let card = vkms();
    let preferred = PreferredMode::set(640, 480);
    let console_fb = crtc_fb(&Observer::open(&card));
    let connector = ForcedConnector::of(&card);
    // No --mode: the monitor's preferred one.
    let mut s = Attached::start(
        "fault-resize-emfile",
        (640, 480),
        "display",
        &["--device", card.to_str().unwrap()],
        "--capture",
        &[],
    );
    let buffers = two_buffers_the_first_shown(&mut s.listener, &s.out, "on the 640x480 monitor");
    assert!(s.sink.log().contains("lit at 640x480"), "{}", s.sink.log());
    let pid = s.sink.pid();

    connector.force("off");
    assert!(
        s.sink
            .wait_for_log("was unplugged", Duration::from_secs(10)),
        "the sink never noticed the unplug"
    );
    preferred.change(800, 600);
    let old_limit = no_fd_left(pid);
    connector.force("on");
    assert!(
        s.sink
            .wait_for_log("lighting it failed", Duration::from_secs(10)),
        "the replug into 800x600 at the fd limit did not say it failed: {}",
        s.sink.abort()
    );
    let starved = s.listener.update_dmabuf(0, 0, 640, 480).clone();
    assert!(
        starved.ok && starved.latency() < QEMU_TIMEOUT,
        "{starved:?}"
    );
    assert!(
        std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "the sink ended: {}",
        s.sink.log()
    );

    limit_fds(pid, Some(old_limit));
    assert!(
        s.sink
            .wait_for_log("lit at /dev/dri", Duration::from_secs(15))
            && s.sink.log().contains("800x600@"),
        "not lit at 800x600 once the limit was raised: {}",
        s.sink.log()
    );
    s.listener
        .scanout_dmabuf(buffers[1].fd(), BufferDesc::xrgb(640, 480), false)
        .unwrap();
    assert!(s.listener.update_dmabuf(0, 0, 640, 480).ok);
    let want = letterboxed(&opaque(&buffers[1].expected(1)), (800, 600));
    wait_for_picture_within(
        "the 800x600 monitor after the replug",
        &s.out,
        &want,
        3,
        Duration::from_secs(30),
    );
    let log = stopped_with_the_crtc_restored(s.sink, &card, console_fb);
    let why: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("lighting it failed"))
        .collect();
    eprintln!(
        "fault resize-emfile: fd limit 3: the replug into 800x600 failed \
         ({why:?}); starved frame answered in {} ms; lit at 800x600 once the limit was \
         raised; CRTC restored on exit",
        starved.latency().as_millis()
    );
    drop(s.dir);
}

/// `RLIMIT_AS` of a running process set to its address space now plus
/// `headroom` bytes (none: no limit); returns its address space now.
fn limit_address_space(pid: u32, headroom: Option<u64>) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmSize:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmSize");
    let limit = headroom.map_or(libc::RLIM_INFINITY, |h| kib * 1024 + h);
    set_soft_limit(pid, libc::RLIMIT_AS, limit);
    kib * 1024
}

/// Headless `capture` with one frame whose GL work fails for real: a
/// 4096x4096 guest scanout while the process's address space cannot hold
/// its 64 MiB render target (RLIMIT_AS), then, the limit lifted, a good
/// 640x480 frame. The failed frame is logged, answered and dropped; the
/// PNG is the good frame and the capture exits 0.
#[test]
#[ignore = "needs the lab"]
fn fault_capture_survives_one_frames_gl_failure() {
    require_lab();
    let dir = TempDir::new("fault-capture-gl");
    let bus = private_bus(&dir);
    let fake = FakeQemu::on_bus(
        &bus.address,
        "fault-capture-gl",
        "00000000-0000-4000-8000-0000000fa018",
        (4096, 4096),
    )
    .unwrap();
    let out = dir.path("screen.png");
    let sink = Sink::capture_vm(
        &out,
        &bus.address,
        "fault-capture-gl",
        &["--render-device", "software"],
    );
    let mut listener = match fake.accept_listener(Duration::from_secs(60)) {
        Ok(listener) => listener,
        Err(err) => panic!("{err:#}; sink:\n{}", sink.abort()),
    };
    let big = Udmabuf::new(4096, 4096, DrmFourcc::Xrgb8888).unwrap();
    let good = Udmabuf::new(640, 480, DrmFourcc::Xrgb8888).unwrap();
    let vm_size = limit_address_space(sink.pid(), Some(96 << 20));

    listener
        .scanout_dmabuf(big.fd(), BufferDesc::xrgb(4096, 4096), false)
        .unwrap();
    let failed = listener.update_dmabuf(0, 0, 4096, 4096).clone();
    assert!(
        sink.wait_for_log("dropping a DMA-BUF", Duration::from_secs(10)),
        "the big frame was not dropped: {}",
        sink.abort()
    );
    // The memory pressure passes: the next buffer has all it needs.
    limit_address_space(sink.pid(), None);
    listener
        .scanout_dmabuf(good.fd(), BufferDesc::xrgb(640, 480), false)
        .unwrap();
    let shown = listener.update_dmabuf(0, 0, 640, 480).clone();
    let want = opaque(&good.expected(0));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !read_png(&out).is_ok_and(|f| f == want) {
        assert!(
            Instant::now() < deadline,
            "the good frame after the failed one never shown; sink:\n{}",
            sink.abort()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = sink.stop();
    assert!(failed.ok && failed.latency() < QEMU_TIMEOUT, "{failed:?}");
    assert!(shown.ok, "{shown:?}");
    assert_no_panic(&log);
    // The failure is the frame's, not the next buffer's: a GL error left
    // pending by the failed target made the good buffer's import fail.
    assert!(
        !log.contains("the renderer cannot import it"),
        "the good buffer was blamed for the failed frame: {log}"
    );
    let line = log
        .lines()
        .find(|l| l.contains("dropping a DMA-BUF"))
        .unwrap_or_default()
        .to_owned();
    eprintln!(
        "fault capture-gl-error: VmSize {} MiB + 96 MiB allowed; the 4096x4096 frame \
         answered in {} ms and dropped ({line}); the good frame shown, exit 0",
        vm_size >> 20,
        failed.latency().as_millis()
    );
    drop(fake);
    drop(dir);
}

/// Whether a capture has anything but black in it.
fn lit_pixels(frame: &RgbaFrame) -> usize {
    frame
        .pixels
        .chunks_exact(4)
        .filter(|px| px[..3] != [0, 0, 0])
        .count()
}

/// A real QEMU (`gl=on`, SeaBIOS's text screen composed under TCG, so an
/// `UpdateDMABUF` is outstanding most of the time) SIGKILLed: the sink
/// keeps running, says QEMU went away, keeps the monitor lit and black
/// (its documented behaviour: QEMU's buffers are let go), and attaches to
/// a new QEMU of the same name and shows it. The report proves that a
/// frame was outstanding at the kill (received before it, released after).
#[test]
#[ignore = "needs the lab"]
fn fault_qemu_sigkilled_with_a_frame_outstanding() {
    require_lab();
    let dir = TempDir::new("fault-sigkill");
    let bus = private_bus(&dir);
    let render_node = find_node(NodeKind::Render, "vgem").expect("the vgem render node");
    let vm = tests::lab::GlQemu::on_bus(&dir, "gl-kill", &bus.plain_address, &render_node);
    let out = dir.path("screen.png");
    let report = dir.path("report.json");
    let card = vkms();
    let sink = Sink::spawn(sink_command(&[
        "display",
        "--bus",
        &bus.address,
        "--vm",
        "gl-kill",
        "--device",
        card.to_str().unwrap(),
        "--capture",
        out.to_str().unwrap(),
        "--report",
        report.to_str().unwrap(),
    ]));
    if !sink.wait_for_log("720x400 DrmFourcc(XB24)", Duration::from_secs(90)) {
        panic!(
            "no 720x400 frame; sink:\n{}\nQEMU:\n{}",
            sink.abort(),
            vm.stderr()
        );
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while !read_png(&out).is_ok_and(|f| lit_pixels(&f) > 1000) {
        assert!(
            Instant::now() < deadline,
            "SeaBIOS's text never shown; sink:\n{}",
            sink.abort()
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    let killed_at = sink::frame::monotonic_now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(vm.pid() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let killed = Instant::now();
    assert!(
        sink.wait_for_log("QEMU went away", Duration::from_secs(10)),
        "the sink never noticed QEMU's death: {}",
        sink.abort()
    );
    let noticed = killed.elapsed();
    let mut black = RgbaFrame::default();
    black.reset(1024, 768);
    for px in black.pixels.chunks_exact_mut(4) {
        px[3] = 255;
    }
    wait_for_picture("after QEMU died", &out, &black, Duration::from_secs(30));
    drop(vm);

    let started = Instant::now();
    let vm = tests::lab::GlQemu::on_bus(&dir, "gl-kill", &bus.plain_address, &render_node);
    assert!(
        sink.wait_for_log("QEMU is back", Duration::from_secs(60)),
        "no re-attach: {}",
        sink.abort()
    );
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if read_png(&out).is_ok_and(|f| lit_pixels(&f) > 1000) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new QEMU was never shown; sink:\n{}\nQEMU:\n{}",
            sink.abort(),
            vm.stderr()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let relit = started.elapsed();
    let log = sink.stop();
    assert_no_panic(&log);
    let report = read_report(&report);
    let killed_us = killed_at.as_micros() as u64;
    let samples = report["samples"].as_array().expect("samples");
    let outstanding: Vec<&Value> = samples
        .iter()
        .filter(|s| {
            s["received_us"].as_u64().is_some_and(|r| r < killed_us)
                && s["released_us"].as_u64().is_some_and(|r| r >= killed_us)
        })
        .collect();
    eprintln!(
        "killed at {killed_us} us; outstanding then: {outstanding:?}; frames: {}",
        report["frames"]
    );
    let outstanding = outstanding.len();
    let unreleased = samples
        .iter()
        .filter(|s| !s["released_us"].is_u64())
        .count();
    assert_eq!(unreleased, 0, "every frame released: {report}");
    assert!(
        outstanding >= 1,
        "no UpdateDMABUF was outstanding at the kill (try again): {log}"
    );
    eprintln!(
        "fault qemu-sigkill: {} frames, {outstanding} outstanding at the kill, all released; \
         QEMU's death noticed in {} ms, monitor lit black; new QEMU shown {} ms after its start",
        samples.len(),
        noticed.as_millis(),
        relit.as_millis()
    );
    drop(vm);
    drop(dir);
}
