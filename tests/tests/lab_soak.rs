//! Soak: `qemu-sink display` on vkms kept busy for a long time must not
//! grow. Each test samples the sink's open fds (`/proc/PID/fd`), threads
//! (`/proc/PID/task`) and resident memory (`VmRSS` in `/proc/PID/status`)
//! before, during and after its run, prints one `soak-figure:` line, and
//! fails unless fds and threads end where they were at the warmed-up
//! baseline and RSS grew by at most 5 % from it.
//!
//! - Floods, from the fake QEMU as fast as the sink takes them, full
//!   640x480 frames on a 640x480 mode: 2D `Update`s, `Unix.Map`
//!   `UpdateMap`s, and udmabuf `ScanoutDMABUF` + `UpdateDMABUF` pairs (each
//!   `UpdateDMABUF` waits for its answer, as QEMU does: the sink answers at
//!   the flip, so this one runs at the monitor's 60 Hz at most). Each kind
//!   is a test with a sink of its own. The baseline of each is taken
//!   after its first fifth of the frames (at most 5000: 5000 of 100000):
//!   the first frames allocate what lives for the whole run (GL textures,
//!   scanout buffers, imports, glibc's arenas at their working size, which
//!   takes about 1600 frames in the lab); RSS is checked from a baseline of
//!   2000 frames on (runs of 10000 frames or more). The last frame is
//!   checked on the monitor, read from the buffer the CRTC scans out (no
//!   writeback: a writeback commit after each change would slow the flood
//!   down): the exact picture for 2D, the guest's own last buffer (DMA-BUF
//!   inode) for DMA-BUF.
//! - Restarts: a real QEMU (SeaBIOS) SIGKILLed and started again under the
//!   same name, cycle after cycle, alternating `-display dbus` (2D, shared
//!   memory) and `-display dbus,gl=on` (DMA-BUFs, composed by GL). Each
//!   time the monitor goes black when QEMU dies and is lit again with the
//!   new QEMU's picture (read from the buffer the CRTC scans out). The
//!   baseline is taken on the black monitor after a fifth of the cycles
//!   (at least two, one of each kind), after a QEMU of the last one's kind;
//!   RSS is checked from 20 cycles on.
//!
//! Counts: `SOAK_FRAMES` (frames per flood, default 100) and
//! `SOAK_CYCLES` (restarts, default 3): the lab run of the test command
//! does a short run of each; `scripts/soak.sh` runs 100000 and 50 and
//! prints the table.
//!
//! Starts: dbus-daemon, the fake QEMU or nested qemu-system-x86_64s, the
//! qemu-sink binary. Every test needs the lab (`scripts/lab/test.sh soak_`).

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use dbus_interfaces::format::PIXMAN_X8R8G8B8;
use drm_fourcc::DrmFourcc;
use sink::output::kms::{find_node, NodeKind};
use tests::fake_qemu::{BufferDesc, FakeListener, FakeQemu};
use tests::lab::{inode, require_lab, GlQemu, Observer};
use tests::sink_run::Sink;
use tests::udmabuf::Udmabuf;
use tests::*;

const SIZE: (u32, u32) = (640, 480);
/// RSS may grow by this much (percent) from the warmed-up baseline.
const RSS_GROWTH_LIMIT: f64 = 5.0;

fn count_from_env(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(value) => value
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value}: a count")),
        Err(_) => default,
    }
}

fn vkms() -> PathBuf {
    find_node(NodeKind::Primary, "vkms").expect("the vkms card")
}

/// What /proc says about one process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Usage {
    fds: usize,
    threads: usize,
    rss_kib: u64,
}

fn usage(pid: u32) -> Usage {
    let entries = |what: &str| {
        std::fs::read_dir(format!("/proc/{pid}/{what}"))
            .unwrap_or_else(|e| panic!("/proc/{pid}/{what}: {e} (did the sink exit?)"))
            .count()
    };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status");
    Usage {
        fds: entries("fd"),
        threads: entries("task"),
        rss_kib,
    }
}

/// Resident KiB of each mapping of the process (`/proc/PID/smaps`), keyed
/// by its file, or its start address when anonymous, with how much of it
/// is transparent huge pages.
fn resident_by_mapping(pid: u32) -> std::collections::HashMap<String, Resident> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mut map = std::collections::HashMap::<String, Resident>::new();
    let mut key = String::new();
    let kib = |value: &str| -> u64 {
        value
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .unwrap_or(0)
    };
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // A mapping's header: "start-end perms offset dev inode [path]".
        if fields.first().is_some_and(|range| {
            range.contains('-') && range.chars().all(|c| c == '-' || c.is_ascii_hexdigit())
        }) {
            key = match fields.get(5) {
                Some(path) => path.to_string(),
                None => format!("anon@{}", fields[0].split('-').next().unwrap_or("")),
            };
        } else if let Some(value) = line.strip_prefix("Rss:") {
            map.entry(key.clone()).or_default().rss_kib += kib(value);
        } else if let Some(value) = line.strip_prefix("AnonHugePages:") {
            map.entry(key.clone()).or_default().huge_kib += kib(value);
        }
    }
    map
}

#[derive(Debug, Default, Clone, Copy)]
struct Resident {
    rss_kib: u64,
    /// Of which transparent huge pages (`AnonHugePages`).
    huge_kib: u64,
}

/// The mappings that grew most from `before` to `after`, one per line.
fn growth_by_mapping(
    before: &std::collections::HashMap<String, Resident>,
    after: &std::collections::HashMap<String, Resident>,
) -> String {
    let mut grown: Vec<(i64, &String)> = after
        .iter()
        .map(|(k, v)| {
            let was = before.get(k).map_or(0, |r| r.rss_kib);
            (v.rss_kib as i64 - was as i64, k)
        })
        .filter(|(d, _)| *d != 0)
        .collect();
    grown.sort_unstable_by(|a, b| b.cmp(a));
    grown
        .iter()
        .take(8)
        .map(|(d, k)| {
            let now = after[*k];
            let huge_was = before.get(*k).map_or(0, |r| r.huge_kib);
            format!(
                "  {d:+} KiB {k} (now {} KiB, of which huge pages {} KiB, were {huge_was} KiB)\n",
                now.rss_kib, now.huge_kib
            )
        })
        .collect()
}

/// What each open fd of the process is (`/proc/PID/fd/N` links), sorted.
fn fd_targets(pid: u32) -> Vec<String> {
    let mut targets: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .map(|t| t.display().to_string())
                .collect()
        })
        .unwrap_or_default();
    targets.sort();
    targets
}

/// The fds opened (+) and closed (-) from `before` to `after`.
fn fds_changed(before: &[String], after: &[String]) -> String {
    let mut out = String::new();
    let mut rest = after.to_vec();
    for b in before {
        match rest.iter().position(|a| a == b) {
            Some(i) => {
                rest.remove(i);
            }
            None => out += &format!("  fd - {b}\n"),
        }
    }
    for a in rest {
        out += &format!("  fd + {a}\n");
    }
    out
}

/// The usage once fds and threads hold still (a connection's executor
/// thread ends a little after the connection), at most 5 s.
fn settled(pid: u32) -> Usage {
    let mut last = usage(pid);
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(300));
        let now = usage(pid);
        if (now.fds, now.threads) == (last.fds, last.threads) {
            return now;
        }
        last = now;
    }
    last
}

/// One scenario's figures: printed as one line (`soak-figure:`, read by
/// scripts/soak.sh), then checked.
struct Figures {
    scenario: &'static str,
    /// `frames` or `cycles`.
    unit: &'static str,
    count: usize,
    /// After which frame or cycle the baseline was taken.
    baseline_after: usize,
    seconds: f64,
    start: Usage,
    base: Usage,
    end: Usage,
    peak_rss_kib: u64,
    /// Where the RSS grew from the baseline to the end, by mapping.
    grown: String,
    /// Whether the run was long enough for its RSS to be checked.
    rss_checked: bool,
}

impl Figures {
    fn growth_percent(&self) -> f64 {
        (self.end.rss_kib as f64 - self.base.rss_kib as f64) * 100.0 / self.base.rss_kib as f64
    }

    fn print(&self) {
        println!(
            "soak-figure: scenario={} {}={} seconds={:.1} rate={:.1}/s baseline_after={} \
             fds={}/{}/{} threads={}/{}/{} rss_kib={}/{}/{} growth={:+.2}% peak_kib={} \
             rss_checked={}",
            self.scenario,
            self.unit,
            self.count,
            self.seconds,
            self.count as f64 / self.seconds,
            self.baseline_after,
            self.start.fds,
            self.base.fds,
            self.end.fds,
            self.start.threads,
            self.base.threads,
            self.end.threads,
            self.start.rss_kib,
            self.base.rss_kib,
            self.end.rss_kib,
            self.growth_percent(),
            self.peak_rss_kib,
            if self.rss_checked { "yes" } else { "no" },
        );
    }

    /// fds and threads back to the baseline, RSS within the limit.
    fn check(&self, log: &str) {
        assert_eq!(
            (self.end.fds, self.end.threads),
            (self.base.fds, self.base.threads),
            "{}: (fds, threads) after {} {} vs the baseline; changes:\n{}sink:\n{log}",
            self.scenario,
            self.count,
            self.unit,
            self.grown
        );
        assert!(
            !self.rss_checked || self.growth_percent() <= RSS_GROWTH_LIMIT,
            "{}: RSS grew {:.2} % (from {} KiB to {} KiB) over {} {}; by mapping:\n{}sink:\n{log}",
            self.scenario,
            self.growth_percent(),
            self.base.rss_kib,
            self.end.rss_kib,
            self.count,
            self.unit,
            self.grown
        );
    }
}

/// An opaque picture of one colour, and the same as XRGB8888 bytes.
fn solid([r, g, b]: [u8; 3]) -> (capture::RgbaFrame, Vec<u8>) {
    let n = (SIZE.0 * SIZE.1) as usize;
    let rgba = capture::RgbaFrame {
        width: SIZE.0,
        height: SIZE.1,
        pixels: [r, g, b, 255].repeat(n),
    };
    (rgba, [b, g, r, 0].repeat(n))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flood {
    Update,
    Map,
    Dmabuf,
}

/// The fake QEMU and `qemu-sink display` on vkms at 640x480, attached.
struct Rig {
    dir: TempDir,
    _bus: sink::vm::PrivateBus,
    _fake: FakeQemu,
    listener: FakeListener,
    sink: Sink,
    card: PathBuf,
    report: PathBuf,
    pid: u32,
}

impl Rig {
    fn new(tag: &str) -> Rig {
        let dir = TempDir::new(tag);
        let bus = private_bus(&dir);
        let fake = FakeQemu::on_bus(
            &bus.address,
            tag,
            "00000000-0000-4000-8000-00000000504b",
            SIZE,
        )
        .unwrap();
        let card = vkms();
        let report = dir.path("report.json");
        let sink = Sink::spawn(sink_command(&[
            "display",
            "--bus",
            &bus.address,
            "--vm",
            tag,
            "--device",
            card.to_str().unwrap(),
            "--mode",
            "640x480",
            "--report",
            report.to_str().unwrap(),
        ]));
        let listener = match fake.accept_listener(Duration::from_secs(60)) {
            Ok(listener) => listener,
            Err(err) => panic!("{err:#}; sink:\n{}", sink.abort()),
        };
        let pid = sink.pid();
        Rig {
            dir,
            _bus: bus,
            _fake: fake,
            listener,
            sink,
            card,
            report,
            pid,
        }
    }

    /// Update and UpdateMap are fire-and-forget (QEMU sends them without
    /// waiting): a call with a reply, served in order after them, says the
    /// sink has taken every one before it. (The connection gives up on a
    /// reply after QEMU's 1 s: asked again, the next one waits behind the
    /// first alone.)
    fn barrier(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match self.listener.interfaces() {
                Ok(_) => return,
                Err(err) if Instant::now() > deadline => {
                    panic!("the sink did not answer within 60 s: {err:#}")
                }
                Err(_) => {}
            }
        }
    }

    /// Panics with the sink's log.
    fn fail(&self, what: &str) -> ! {
        let log = std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .map(|_| self.sink.log())
            .unwrap_or_default();
        panic!("{what}; sink:\n{log}")
    }
}

/// Frames per flood, and after how many the baseline is taken.
fn flood_counts() -> (usize, usize) {
    let frames = count_from_env("SOAK_FRAMES", 100).max(2);
    let warm = (frames / 5).clamp(100, 5000).min(frames - 1);
    (frames, warm)
}

/// RSS settles (glibc's arenas reach their working size) within about
/// 1600 frames of any kind (seen in the lab): a baseline taken earlier
/// would count that as growth. Shorter runs (under 10000 frames) check fds
/// and threads, and print RSS.
const RSS_CHECKED_FROM_FRAME: usize = 2000;

/// `SOAK_FRAMES` frames of `kind` from the fake QEMU into the rig's sink,
/// sampled; the last frame checked on the monitor.
fn flood(rig: &Rig, kind: Flood, scenario: &'static str) -> Figures {
    let (frames, warm) = flood_counts();
    let stride = SIZE.0 * 4;
    let pid = rig.pid;
    let start = settled(pid);

    // What each frame sends, made once.
    let (_, even) = solid([0x30, 0x60, 0x90]);
    let (_, odd) = solid([0x90, 0x30, 0x60]);
    let (last_picture, last) = solid([0x10, 0xe0, 0x40]);
    let proxy = rig.listener.listener();
    let map_proxy = rig.listener.map_listener();
    let memfd = nix::sys::memfd::memfd_create("soak", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
        .expect("memfd");
    let buffers: Vec<Udmabuf> = match kind {
        Flood::Dmabuf => {
            let mut buffers = vec![
                Udmabuf::new(SIZE.0, SIZE.1, DrmFourcc::Xrgb8888).unwrap(),
                Udmabuf::new(SIZE.0, SIZE.1, DrmFourcc::Xrgb8888).unwrap(),
            ];
            buffers[1].fill(1).unwrap();
            buffers
        }
        _ => Vec::new(),
    };
    match kind {
        Flood::Update => proxy
            .scanout(
                SIZE.0,
                SIZE.1,
                stride,
                PIXMAN_X8R8G8B8,
                serde_bytes::Bytes::new(&even),
            )
            .unwrap(),
        Flood::Map => {
            nix::sys::uio::pwrite(&memfd, &even, 0).expect("writing the memfd");
            map_proxy
                .scanout_map(
                    memfd.as_fd().into(),
                    0,
                    SIZE.0,
                    SIZE.1,
                    stride,
                    PIXMAN_X8R8G8B8,
                )
                .unwrap();
        }
        Flood::Dmabuf => {}
    }
    let desc = BufferDesc::xrgb(SIZE.0, SIZE.1);
    let (w, h) = (SIZE.0 as i32, SIZE.1 as i32);
    let send = |n: usize| -> zbus::Result<()> {
        match kind {
            Flood::Update => {
                let bytes = if n.is_multiple_of(2) { &even } else { &odd };
                proxy.update(
                    0,
                    0,
                    w,
                    h,
                    stride,
                    PIXMAN_X8R8G8B8,
                    serde_bytes::Bytes::new(bytes),
                )
            }
            Flood::Map => map_proxy.update_map(0, 0, w, h),
            Flood::Dmabuf => {
                let buffer = &buffers[n % 2];
                proxy.scanout_dmabuf(
                    buffer.fd().into(),
                    desc.width,
                    desc.height,
                    desc.stride,
                    desc.fourcc,
                    desc.modifier,
                    false,
                )?;
                proxy.update_dmabuf(0, 0, w, h)
            }
        }
    };

    let began = Instant::now();
    let mut base = start;
    let mut base_mappings = resident_by_mapping(pid);
    let mut base_fds = fd_targets(pid);
    let mut peak_rss_kib = start.rss_kib;
    let progress_every = (frames / 10).max(1);
    for n in 0..frames {
        if let Err(err) = send(n) {
            rig.fail(&format!("{scenario}: frame {n}: {err}"));
        }
        if n + 1 == warm {
            rig.barrier();
            base = settled(pid);
            base_mappings = resident_by_mapping(pid);
            base_fds = fd_targets(pid);
            peak_rss_kib = peak_rss_kib.max(base.rss_kib);
        }
        if (n + 1) % progress_every == 0 {
            rig.barrier();
            let now = usage(pid);
            peak_rss_kib = peak_rss_kib.max(now.rss_kib);
            eprintln!(
                "soak: {scenario} {}/{frames} frames, {:.1} s: fds {}, threads {}, RSS {} KiB",
                n + 1,
                began.elapsed().as_secs_f64(),
                now.fds,
                now.threads,
                now.rss_kib
            );
        }
    }
    // The last picture is on the monitor.
    match kind {
        Flood::Update => proxy
            .update(
                0,
                0,
                w,
                h,
                stride,
                PIXMAN_X8R8G8B8,
                serde_bytes::Bytes::new(&last),
            )
            .unwrap(),
        Flood::Map => {
            nix::sys::uio::pwrite(&memfd, &last, 0).expect("writing the memfd");
            map_proxy.update_map(0, 0, w, h).unwrap();
        }
        Flood::Dmabuf => {}
    }
    rig.barrier();
    let seconds = began.elapsed().as_secs_f64();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let observer = Observer::open(&rig.card);
        let wrong = match kind {
            Flood::Dmabuf => {
                let want = inode(buffers[(frames - 1) % 2].fd());
                (observer.scanned_out_inode() != Some(want))
                    .then(|| "the CRTC does not scan out the last buffer".to_owned())
            }
            _ => match observer.scanned_out_picture() {
                Some(got) => capture::compare_rgb(&got, &last_picture, 0)
                    .err()
                    .map(|d| format!("the monitor does not show the last frame: {d}")),
                None => Some("no picture on the CRTC".to_owned()),
            },
        };
        let Some(wrong) = wrong else { break };
        if Instant::now() > deadline {
            rig.fail(&format!("{scenario}: {wrong}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let end = settled(pid);
    let grown = growth_by_mapping(&base_mappings, &resident_by_mapping(pid))
        + &fds_changed(&base_fds, &fd_targets(pid));
    peak_rss_kib = peak_rss_kib.max(end.rss_kib);
    Figures {
        scenario,
        unit: "frames",
        count: frames,
        baseline_after: warm,
        seconds,
        start,
        base,
        end,
        peak_rss_kib,
        grown,
        rss_checked: warm >= RSS_CHECKED_FROM_FRAME,
    }
}

/// The line of the sink's exit summary.
fn summary(log: &str) -> &str {
    log.lines()
        .find(|l| l.contains("flips (2D pictures included)"))
        .unwrap_or("(no summary line)")
}

/// `SOAK_FRAMES` full frames of one kind into a `qemu-sink display` of its
/// own, sampled and checked. The three kinds are three tests so that the
/// lab's two lanes run them side by side (the 2D flood alone takes as long
/// as the other two).
fn soak_flood(kind: Flood, scenario: &'static str) {
    require_lab();
    let rig = Rig::new(&format!("soak-{scenario}"));
    let figures = flood(&rig, kind, scenario);
    let Rig {
        dir, sink, report, ..
    } = rig;
    let log = sink.stop();
    eprintln!("soak: {}", summary(&log));
    figures.print();
    if kind == Flood::Dmabuf {
        let report: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
        let counts = &report["frames"];
        eprintln!("soak: the sink's DMA-BUF counts: {counts}");
        let frames = figures.count;
        assert_eq!(counts["received"], frames as u64, "{log}");
        assert!(
            log.contains(&format!("({frames} direct, 0 composed)")),
            "every DMA-BUF frame scanned out directly: {}",
            summary(&log)
        );
    }
    figures.check(&log);
    drop(dir);
}

/// 2D `Update`s: the whole surface each time, decoded and flipped.
#[test]
#[ignore = "needs the lab"]
fn soak_display_2d_update_flood() {
    soak_flood(Flood::Update, "update");
}

/// `Unix.Map` `UpdateMap`s over one shared-memory scanout.
#[test]
#[ignore = "needs the lab"]
fn soak_display_map_flood() {
    soak_flood(Flood::Map, "map");
}

/// udmabuf `ScanoutDMABUF` + `UpdateDMABUF` pairs, each answered at its flip.
#[test]
#[ignore = "needs the lab"]
fn soak_display_dmabuf_flood() {
    soak_flood(Flood::Dmabuf, "dmabuf");
}

/// Pixels the monitor shows that are not black (none when no CRTC scans
/// out a buffer).
fn lit_pixels(card: &Path) -> Option<usize> {
    let png = Observer::open(card).scanned_out_picture()?;
    Some(
        png.pixels
            .chunks_exact(4)
            .filter(|px| px[..3] != [0, 0, 0])
            .count(),
    )
}

/// Waits until the monitor (what the CRTC scans out) is lit (`true`:
/// SeaBIOS's text, over 1000 pixels) or black.
fn wait_for_monitor(card: &Path, lit: bool, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let now = lit_pixels(card);
        let ok = match (lit, now) {
            (true, Some(n)) => n > 1000,
            (false, Some(n)) => n == 0,
            (_, None) => false,
        };
        if ok {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A real QEMU of either kind, killable.
enum Qemu {
    Plain(TestVm),
    Gl(GlQemu),
}

impl Qemu {
    const NAME: &'static str = "soak-vm";

    /// Cycle `n`'s QEMU: even cycles 2D, odd ones `gl=on`.
    fn start(n: usize, dir: &TempDir, bus: &sink::vm::PrivateBus) -> Qemu {
        if n.is_multiple_of(2) {
            Qemu::Plain(TestVm::on_bus(dir, Self::NAME, &bus.plain_address, &[]))
        } else {
            let render = find_node(NodeKind::Render, "vgem").expect("the vgem render node");
            Qemu::Gl(GlQemu::on_bus(dir, Self::NAME, &bus.plain_address, &render))
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Qemu::Plain(_) => "2D",
            Qemu::Gl(_) => "gl=on",
        }
    }

    /// SIGKILL, as a crash or the OOM killer would; then reaped.
    fn kill(self) {
        let pid = match &self {
            Qemu::Plain(vm) => vm.pid(),
            Qemu::Gl(vm) => vm.pid(),
        };
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .expect("SIGKILL to QEMU");
        drop(self);
    }
}

/// A gl=on QEMU's start leaves Mesa's and the EGL import's working memory
/// at its size after a few cycles; RSS is checked from 20 cycles on.
const RSS_CHECKED_FROM_CYCLE: usize = 20;

/// QEMU SIGKILLed and started again under `display`, `SOAK_CYCLES` times:
/// black each time it dies, lit again each time it is back, and the sink's
/// fds, threads and RSS do not grow.
#[test]
#[ignore = "needs the lab"]
fn soak_display_qemu_sigkill_restarts() {
    require_lab();
    let cycles = count_from_env("SOAK_CYCLES", 3).max(3);
    // The baseline after a fifth of the cycles (at least two: one of each
    // kind), and after a QEMU of the same kind as the last one: a gl=on
    // QEMU leaves other things behind than a 2D one.
    let mut warm = (cycles / 5).max(2);
    if (cycles - warm) % 2 == 1 {
        warm += 1;
    }
    let dir = TempDir::new("soak-restarts");
    let bus = private_bus(&dir);
    let card = vkms();
    // `display` needs a QEMU to attach to the first time.
    let mut qemu = Some(Qemu::start(0, &dir, &bus));
    let sink = Sink::spawn(sink_command(&[
        "display",
        "--bus",
        &bus.address,
        "--vm",
        Qemu::NAME,
        "--device",
        card.to_str().unwrap(),
    ]));
    let pid = sink.pid();
    // The sink takes the card before anything here looks at it.
    assert!(
        sink.wait_for_log(" lit at ", Duration::from_secs(120)),
        "the sink never lit the monitor: {}",
        sink.log()
    );
    let began = Instant::now();
    let mut start = None;
    let mut base = None;
    let mut base_mappings = Default::default();
    let mut base_fds = Vec::new();
    let mut prev_fds = Vec::new();
    let mut peak_rss_kib = 0;
    for n in 0..cycles {
        let vm = qemu.take().unwrap_or_else(|| Qemu::start(n, &dir, &bus));
        let kind = vm.kind();
        if !wait_for_monitor(&card, true, Duration::from_secs(120)) {
            panic!(
                "cycle {n} ({kind}): the monitor was not lit with QEMU's picture; sink:\n{}",
                sink.abort()
            );
        }
        let log = sink.log();
        assert_eq!(log.matches("QEMU is back").count(), n, "{log}");
        vm.kill();
        if !wait_for_monitor(&card, false, Duration::from_secs(30)) {
            panic!(
                "cycle {n} ({kind}): the monitor did not go black after QEMU was killed; sink:\n{}",
                sink.abort()
            );
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while sink.log().matches("QEMU went away").count() != n + 1 {
            assert!(Instant::now() < deadline, "{}", sink.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        let now = settled(pid);
        peak_rss_kib = peak_rss_kib.max(now.rss_kib);
        eprintln!(
            "soak: restarts: cycle {}/{cycles} ({kind}) lit and black again, {:.1} s: \
             fds {}, threads {}, RSS {} KiB (huge pages {} KiB)",
            n + 1,
            began.elapsed().as_secs_f64(),
            now.fds,
            now.threads,
            now.rss_kib,
            resident_by_mapping(pid)
                .values()
                .map(|r| r.huge_kib)
                .sum::<u64>()
        );
        let fds_now = fd_targets(pid);
        if n > 0 && fds_now != prev_fds {
            eprint!("{}", fds_changed(&prev_fds, &fds_now));
        }
        prev_fds = fds_now;
        start.get_or_insert(now);
        if n + 1 == warm {
            base = Some(now);
            base_mappings = resident_by_mapping(pid);
            base_fds = fd_targets(pid);
        }
        if n + 1 == cycles {
            let grown = growth_by_mapping(&base_mappings, &resident_by_mapping(pid))
                + &fds_changed(&base_fds, &fd_targets(pid));
            let seconds = began.elapsed().as_secs_f64();
            let log = sink.stop();
            assert_eq!(log.matches("QEMU went away").count(), cycles, "{log}");
            assert_eq!(log.matches("QEMU is back").count(), cycles - 1, "{log}");
            let figures = Figures {
                scenario: "sigkill-restarts",
                unit: "cycles",
                count: cycles,
                baseline_after: warm,
                seconds,
                start: start.unwrap(),
                base: base.unwrap(),
                end: now,
                peak_rss_kib,
                grown,
                rss_checked: cycles >= RSS_CHECKED_FROM_CYCLE,
            };
            figures.print();
            figures.check(&log);
            drop(dir);
            return;
        }
    }
}
