//! `qemu-sink display` in the lab: the guest on a KMS monitor of its own.
//! vkms (with its writeback connector: what the CRTC really showed) and
//! virtio-gpu (where foreign DMA-BUFs don't import) take frames from the
//! fake QEMU's udmabufs and from a real nested QEMU with `gl=on`.
//!
//! Starts: dbus-daemon, the fake QEMU (udmabufs) or a nested
//! qemu-system-x86_64, the qemu-sink binary as a user runs it. Every test
//! needs the lab (`scripts/lab/test.sh display`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use capture::read_png;
use drm_fourcc::DrmFourcc;
use serde_json::Value;
use sink::output::kms::{find_node, NodeKind};
use tests::fake_qemu::{BufferDesc, FakeListener, FakeQemu};
use tests::hostile::solid;
use tests::lab::{
    inode, require_lab, two_buffers_the_first_shown, ForcedConnector, MasterThief, Observer,
};
use tests::picture::letterboxed;
use tests::sink_run::{opaque, wait_for_picture, Sink};
use tests::udmabuf::Udmabuf;
use tests::*;

fn vkms() -> PathBuf {
    find_node(NodeKind::Primary, "vkms").expect("the vkms card")
}

/// `qemu-sink display` attached to the fake QEMU `vm` on `bus`.
fn display(bus: &str, vm: &str, device: &Path, extra: &[&str]) -> Sink {
    let mut args = vec![
        "display",
        "--bus",
        bus,
        "--vm",
        vm,
        "--device",
        device.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    Sink::spawn(sink_command(&args))
}

struct Setup {
    dir: TempDir,
    _bus: sink::vm::PrivateBus,
    _fake: FakeQemu,
    listener: FakeListener,
    sink: Sink,
    out: PathBuf,
    report: PathBuf,
}

/// A private bus, the fake QEMU on it with a `size` console, and
/// `qemu-sink display --report [--capture]` on `device` attached to it.
/// (A capture is a writeback commit after each change: 80–110 ms in which
/// no flip can happen, so timing tests go without.)
fn setup(tag: &str, size: (u32, u32), device: &Path, capture: bool, extra: &[&str]) -> Setup {
    let dir = TempDir::new(tag);
    let bus = private_bus(&dir);
    let fake = FakeQemu::on_bus(
        &bus.address,
        tag,
        "00000000-0000-4000-8000-0000000d1501",
        size,
    )
    .unwrap();
    let out = dir.path("screen.png");
    let report = dir.path("report.json");
    let mut args = vec!["--report", report.to_str().unwrap()];
    if capture {
        args.extend_from_slice(&["--capture", out.to_str().unwrap()]);
    }
    args.extend_from_slice(extra);
    let sink = display(&bus.address, tag, device, &args);
    // The sink lights the monitor and warms up GL before attaching.
    let listener = match fake.accept_listener(Duration::from_secs(60)) {
        Ok(listener) => listener,
        Err(err) => panic!("{err:#}; sink:\n{}", sink.abort()),
    };
    Setup {
        dir,
        _bus: bus,
        _fake: fake,
        listener,
        sink,
        out,
        report,
    }
}

fn read_report(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// vkms takes XRGB8888 at the mode's size as it is: the CRTC scans out the
/// guest's own buffer (its DMA-BUF, checked by inode), and writeback shows
/// exactly the guest's pattern, for two buffers in turn.
#[test]
#[ignore = "needs the lab"]
fn display_direct_path_scans_out_the_guests_own_buffers() {
    require_lab();
    let card = vkms();
    let mut s = setup(
        "display-direct",
        (640, 480),
        &card,
        true,
        &["--mode", "640x480"],
    );
    let observer = Observer::open(&card);
    let mut buffers = [
        Udmabuf::new(640, 480, DrmFourcc::Xrgb8888).unwrap(),
        Udmabuf::new(640, 480, DrmFourcc::Xrgb8888).unwrap(),
    ];
    buffers[1].fill(1).unwrap();
    for round in 0..2 {
        for (i, buffer) in buffers.iter().enumerate() {
            let what = format!("round {round}, buffer {i}");
            s.listener
                .scanout_dmabuf(buffer.fd(), BufferDesc::xrgb(640, 480), false)
                .unwrap();
            assert!(s.listener.update_dmabuf(0, 0, 640, 480).ok, "{what}");
            wait_for_picture(
                &what,
                &s.out,
                &opaque(&buffer.expected(i as u32)),
                Duration::from_secs(30),
            );
            assert_eq!(
                observer.scanned_out_inode(),
                Some(inode(buffer.fd())),
                "{what}: the CRTC must scan out the guest's buffer itself"
            );
        }
    }
    let log = s.sink.stop();
    tests::lab::assert_shown_directly(&log, 4);
    let report = read_report(&s.report);
    assert_eq!(report["frames"]["received"], 4, "{report}");
    drop(s.dir);
}

/// Over 300 frames from two alternating buffers: every `UpdateDMABUF`
/// answer comes after its frame's flip (the kernel's timestamp, the same
/// clock in the same machine), none by the deadline, none skipped.
#[test]
#[ignore = "needs the lab"]
fn display_answers_follow_their_flips_over_300_frames() {
    require_lab();
    let card = vkms();
    let mut s = setup(
        "display-order",
        (640, 480),
        &card,
        false,
        &["--mode", "640x480"],
    );
    let buffers = [
        Udmabuf::new(640, 480, DrmFourcc::Xrgb8888).unwrap(),
        Udmabuf::new(640, 480, DrmFourcc::Xrgb8888).unwrap(),
    ];
    const FRAMES: usize = 300;
    for n in 0..FRAMES {
        s.listener
            .scanout_dmabuf(buffers[n % 2].fd(), BufferDesc::xrgb(640, 480), false)
            .unwrap();
        s.listener.update_dmabuf(0, 0, 640, 480);
    }
    let log = s.sink.stop();
    let report = read_report(&s.report);
    let samples = report["samples"].as_array().expect("samples");
    assert_eq!(samples.len(), FRAMES, "{log}");
    assert_eq!(report["frames"]["deadline_answers"], 0, "{log}");
    assert_eq!(report["frames"]["skipped"], 0, "{log}");
    let mut delays = Vec::new();
    for (n, (sample, answer)) in samples.iter().zip(&s.listener.answers).enumerate() {
        assert!(answer.ok, "frame {n} was not answered: {log}");
        assert!(
            answer.latency() < Duration::from_secs(1),
            "frame {n} answered after {:?}",
            answer.latency()
        );
        assert_eq!(sample["id"], n as u64, "frames in order, none twice");
        assert_eq!(sample["path"], "direct", "frame {n}: {sample}");
        let flipped = sample["flipped_us"]
            .as_u64()
            .unwrap_or_else(|| panic!("frame {n} never flipped: {sample}"));
        let answered = answer.answered_at.as_micros() as u64;
        assert!(
            answered >= flipped,
            "frame {n} answered at {answered} us, before its flip at {flipped} us"
        );
        delays.push(sample["released_us"].as_u64().unwrap() - flipped);
    }
    delays.sort_unstable();
    eprintln!(
        "release after the flip's timestamp: median {} us, p99 {} us; stages: {}",
        delays[delays.len() / 2],
        delays[delays.len() * 99 / 100],
        report["stages"]
    );
    drop(s.dir);
}

/// A guest smaller than the mode, of another shape: vkms cannot scale, so
/// the frame is composed by GL, letterboxed; writeback shows it within the
/// filter's rounding.
#[test]
#[ignore = "needs the lab"]
fn display_composes_a_guest_the_plane_cannot_scale_letterboxed() {
    require_lab();
    let card = vkms();
    let mut s = setup(
        "display-letterbox",
        (400, 200),
        &card,
        true,
        &["--mode", "640x480"],
    );
    let buffer = Udmabuf::new(400, 200, DrmFourcc::Xrgb8888).unwrap();
    s.listener
        .scanout_dmabuf(buffer.fd(), BufferDesc::xrgb(400, 200), false)
        .unwrap();
    assert!(s.listener.update_dmabuf(0, 0, 400, 200).ok);
    let want = letterboxed(&opaque(&buffer.expected(0)), (640, 480));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let matched = read_png(&s.out)
            .ok()
            .map(|got| capture::compare_rgb(&got, &want, 3));
        match matched {
            Some(Ok(())) => break,
            Some(Err(diff)) if std::time::Instant::now() > deadline => {
                panic!("letterboxed picture: {diff}")
            }
            _ => assert!(std::time::Instant::now() < deadline, "no picture"),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = s.sink.stop();
    assert!(log.contains("400x200 DrmFourcc(XR24)"), "{log}");
    assert!(
        log.contains("composed by GL (the kernel refused it"),
        "{log}"
    );
    assert!(log.contains("(0 direct, 1 composed)"), "{log}");
    // Mesa's GBM serves vkms (kms_swrast): the scanout buffers come from it.
    assert!(log.contains("scanout buffers: GBM"), "{log}");
}

/// virtio-gpu cannot import a foreign DMA-BUF (ENODEV): the frames are
/// composed into its own dumb buffers, flips complete, and the GL readback
/// of what went on the plane is the guest's picture.
#[test]
#[ignore = "needs the lab"]
fn display_on_virtio_gpu_composes_and_flips() {
    require_lab();
    let card = find_node(NodeKind::Primary, "virtio_gpu").expect("the virtio-gpu card");
    let mut s = setup(
        "display-virtio",
        (640, 480),
        &card,
        true,
        &["--mode", "640x480"],
    );
    let buffer = Udmabuf::new(640, 480, DrmFourcc::Xrgb8888).unwrap();
    for _ in 0..3 {
        s.listener
            .scanout_dmabuf(buffer.fd(), BufferDesc::xrgb(640, 480), false)
            .unwrap();
        assert!(s.listener.update_dmabuf(0, 0, 640, 480).ok);
    }
    wait_for_picture(
        "virtio-gpu readback",
        &s.out,
        &opaque(&buffer.expected(0)),
        Duration::from_secs(60),
    );
    let log = s.sink.stop();
    assert!(log.contains("composed by GL"), "{log}");
    // Every frame shown was composed; on a loaded machine a frame may be
    // replaced while it waits (answered, counted skipped), never shown
    // another way.
    let report = read_report(&s.report);
    let frames = &report["frames"];
    let (shown, skipped) = (frames["shown"].as_u64(), frames["skipped"].as_u64());
    assert!(
        log.contains(&format!("({} direct, {} composed)", 0, shown.unwrap_or(0)))
            && shown.unwrap_or(0) >= 1
            && shown.zip(skipped).map(|(a, b)| a + b) == Some(3),
        "{report}\n{log}"
    );
    let samples = report["samples"].as_array().unwrap();
    assert!(
        samples
            .iter()
            .filter(|s| s["skipped"] == false)
            .all(|s| s["flipped_us"].is_u64()),
        "every frame shown flipped: {report}"
    );
}

/// A real nested QEMU with `gl=on` (on the vgem render node) shown on
/// vkms at its preferred 1024x768: vkms can neither scan out QEMU's
/// XBGR8888 buffers nor scale, so they are composed, letterboxed, and
/// writeback equals QMP's screendump scaled the same way (within the
/// filter's rounding). vkms has no 720x400 mode for a 1:1 picture.
#[test]
#[ignore = "needs the lab"]
fn display_of_a_gl_on_qemu_on_vkms_equals_its_screendump() {
    require_lab();
    let dir = TempDir::new("lab-display-gl");
    let bus = private_bus(&dir);
    let render_node = find_node(NodeKind::Render, "vgem").expect("the vgem render node");
    let vm = tests::lab::GlQemu::on_bus(&dir, "gl-display", &bus.plain_address, &render_node);
    let out = dir.path("screen.png");
    let card = vkms();
    let sink = display(
        &bus.address,
        "gl-display",
        &card,
        &["--capture", out.to_str().unwrap()],
    );
    // The text screen arrives (720x400 is the console's size) and is shown.
    if !sink.wait_for_log("720x400 DrmFourcc(XB24)", Duration::from_secs(90)) {
        panic!(
            "no 720x400 frame; sink:\n{}\nQEMU:\n{}",
            sink.abort(),
            vm.stderr()
        );
    }
    // SeaBIOS prints its last line within a second or two of text mode;
    // then freeze the screen (pause, VGA text cursor off).
    std::thread::sleep(Duration::from_secs(3));
    let mut qmp = sink::qmp::Qmp::connect(&vm.qmp_path).expect("QMP");
    qmp.execute("stop", serde_json::json!({})).unwrap();
    for command in ["o /b 0x3d4 0x0a", "o /b 0x3d5 0x20"] {
        qmp.execute(
            "human-monitor-command",
            serde_json::json!({ "command-line": command }),
        )
        .unwrap();
    }
    let truth_path = dir.path("screendump.png");
    qmp.execute(
        "screendump",
        serde_json::json!({ "filename": truth_path.to_str().unwrap(), "format": "png" }),
    )
    .unwrap();
    let truth = read_png(&truth_path).unwrap();
    assert_eq!((truth.width, truth.height), TEXT_MODE_SIZE);
    let want = letterboxed(&opaque(&truth), (1024, 768));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let compared = read_png(&out).map(|got| capture::compare_rgb(&got, &want, 3));
        match compared {
            Ok(Ok(())) => break,
            Ok(Err(diff)) if std::time::Instant::now() > deadline => {
                panic!("gl=on QEMU on vkms vs its screendump, letterboxed: {diff}")
            }
            _ => assert!(std::time::Instant::now() < deadline, "no picture"),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = sink.stop();
    assert!(
        log.contains("720x400 DrmFourcc(XB24) (modifier 0x0, stride 2880): composed by GL"),
        "{log}"
    );
}

/// The cursor at `MouseSet` (minus its hot spot) over a 640x480 frame, a
/// move alone moving it and `visible = 0` hiding it, as writeback shows;
/// with `extra` on the sink's command line. Returns the sink's log.
fn cursor_follows_the_pointer(tag: &str, extra: &[&str]) -> String {
    let card = vkms();
    let mut args = vec!["--mode", "640x480"];
    args.extend_from_slice(extra);
    let mut s = setup(tag, (640, 480), &card, true, &args);
    let buffer = Udmabuf::new(640, 480, DrmFourcc::Xrgb8888).unwrap();
    s.listener
        .scanout_dmabuf(buffer.fd(), BufferDesc::xrgb(640, 480), false)
        .unwrap();
    // A 4x4 opaque red cursor (ARGB) with its hot spot at (1, 1).
    let red: Vec<u8> = [0u8, 0, 0xff, 0xff].repeat(16);
    s.listener
        .listener()
        .cursor_define(4, 4, 1, 1, serde_bytes::Bytes::new(&red))
        .unwrap();
    s.listener.listener().mouse_set(10, 10, 1).unwrap();
    assert!(s.listener.update_dmabuf(0, 0, 640, 480).ok);
    let plain = opaque(&buffer.expected(0));
    let mut want = plain.clone();
    want.blend_argb(9, 9, 4, 4, &red);
    wait_for_picture("cursor at (10, 10)", &s.out, &want, Duration::from_secs(30));

    s.listener.listener().mouse_set(300, 200, 1).unwrap();
    let mut moved = plain.clone();
    moved.blend_argb(299, 199, 4, 4, &red);
    wait_for_picture("cursor moved", &s.out, &moved, Duration::from_secs(30));

    s.listener.listener().mouse_set(300, 200, 0).unwrap();
    wait_for_picture("cursor hidden", &s.out, &plain, Duration::from_secs(30));
    s.sink.stop()
}

/// The guest's cursor goes on the cursor plane, over a directly scanned
/// out frame.
#[test]
#[ignore = "needs the lab"]
fn display_cursor_on_the_cursor_plane_follows_the_pointer() {
    require_lab();
    let log = cursor_follows_the_pointer("display-cursor", &[]);
    assert!(log.contains("(1 direct, 0 composed)"), "{log}");
}

/// Without a cursor plane (`--no-cursor-plane`) the cursor is drawn by GL:
/// the frame it covers is composed, and moving it composes the guest's
/// buffer again.
#[test]
#[ignore = "needs the lab"]
fn display_cursor_drawn_by_gl_without_a_cursor_plane_follows_the_pointer() {
    require_lab();
    let log = cursor_follows_the_pointer("display-gl-cursor", &["--no-cursor-plane"]);
    assert!(log.contains("(0 direct, 1 composed)"), "{log}");
}

/// QEMU going away leaves the monitor lit and black (its buffers let go),
/// and the sink attaches again when a QEMU of that name is back.
#[test]
#[ignore = "needs the lab"]
fn display_goes_black_when_qemu_leaves_and_comes_back_with_it() {
    require_lab();
    let card = vkms();
    let s = setup(
        "display-reattach",
        (640, 480),
        &card,
        true,
        &["--mode", "640x480"],
    );
    let Setup {
        dir,
        _bus: bus,
        _fake: fake,
        mut listener,
        sink,
        out,
        ..
    } = s;
    let first = Udmabuf::new(640, 480, DrmFourcc::Xrgb8888).unwrap();
    listener
        .scanout_dmabuf(first.fd(), BufferDesc::xrgb(640, 480), false)
        .unwrap();
    assert!(listener.update_dmabuf(0, 0, 640, 480).ok);
    wait_for_picture(
        "first QEMU",
        &out,
        &opaque(&first.expected(0)),
        Duration::from_secs(30),
    );

    // QEMU quits: its connections close.
    drop(listener);
    drop(fake);
    let mut black = capture::RgbaFrame::default();
    black.reset(640, 480);
    for px in black.pixels.chunks_exact_mut(4) {
        px[3] = 255;
    }
    wait_for_picture("after QEMU left", &out, &black, Duration::from_secs(30));

    // It is back (same name): the sink attaches again and shows it.
    let fake = FakeQemu::on_bus(
        &bus.address,
        "display-reattach",
        "00000000-0000-4000-8000-0000000d1501",
        (640, 480),
    )
    .unwrap();
    let mut listener = match fake.accept_listener(Duration::from_secs(30)) {
        Ok(listener) => listener,
        Err(err) => panic!("{err:#}; sink:\n{}", sink.abort()),
    };
    let mut second = Udmabuf::new(640, 480, DrmFourcc::Xrgb8888).unwrap();
    second.fill(2).unwrap();
    listener
        .scanout_dmabuf(second.fd(), BufferDesc::xrgb(640, 480), false)
        .unwrap();
    assert!(listener.update_dmabuf(0, 0, 640, 480).ok);
    wait_for_picture(
        "second QEMU",
        &out,
        &opaque(&second.expected(2)),
        Duration::from_secs(30),
    );
    let log = sink.stop();
    assert!(log.contains("QEMU went away"), "{log}");
    assert!(log.contains("QEMU is back"), "{log}");
    drop(dir);
}

/// Unplugging the monitor (the connector forced off through sysfs) stops
/// the commits, frames are still answered at once; plugging it back lights
/// it again with its mode picked afresh, and frames show.
#[test]
#[ignore = "needs the lab"]
fn display_follows_its_connector_unplugged_and_back() {
    require_lab();
    let card = vkms();
    let connector = ForcedConnector::of(&card);
    let mut s = setup(
        "display-hotplug",
        (640, 480),
        &card,
        true,
        &["--mode", "640x480"],
    );
    let buffers = two_buffers_the_first_shown(&mut s.listener, &s.out, "before the unplug");

    connector.force("off");
    assert!(
        s.sink
            .wait_for_log("was unplugged", Duration::from_secs(10)),
        "the sink never noticed the unplug"
    );
    s.listener
        .scanout_dmabuf(buffers[1].fd(), BufferDesc::xrgb(640, 480), false)
        .unwrap();
    let answer = s.listener.update_dmabuf(0, 0, 640, 480).clone();
    assert!(answer.ok && answer.latency() < Duration::from_millis(800));

    connector.force("on");
    assert!(
        s.sink
            .wait_for_log("is back: lit at", Duration::from_secs(10)),
        "the sink never noticed the replug"
    );
    assert!(s.listener.update_dmabuf(0, 0, 640, 480).ok);
    wait_for_picture(
        "after the replug",
        &s.out,
        &opaque(&buffers[1].expected(1)),
        Duration::from_secs(30),
    );
    let log = s.sink.stop();
    let report = read_report(&s.report);
    assert_eq!(
        report["frames"]["skipped"], 1,
        "the frame while unplugged: {log}"
    );
}

/// Losing DRM master (another process takes the card) stops the commits
/// and frames are still answered at once; when the card is free again the
/// sink takes it back, lights the output and shows the next frame.
#[test]
#[ignore = "needs the lab"]
fn display_survives_losing_and_regaining_drm_master() {
    require_lab();
    let card = vkms();
    let mut s = setup(
        "display-master",
        (640, 480),
        &card,
        true,
        &["--mode", "640x480"],
    );
    let buffers = two_buffers_the_first_shown(&mut s.listener, &s.out, "before losing master");

    let mut thief = MasterThief::steal(s.sink.pid(), &card);
    s.listener
        .scanout_dmabuf(buffers[1].fd(), BufferDesc::xrgb(640, 480), false)
        .unwrap();
    let answer = s.listener.update_dmabuf(0, 0, 640, 480).clone();
    assert!(answer.ok && answer.latency() < Duration::from_millis(800));
    assert!(
        s.sink
            .wait_for_log("lost DRM master", Duration::from_secs(10)),
        "the sink never noticed"
    );

    thief.give_back();
    assert!(
        s.sink
            .wait_for_log("DRM master is back", Duration::from_secs(10)),
        "the sink never took the card back"
    );
    assert!(s.listener.update_dmabuf(0, 0, 640, 480).ok);
    wait_for_picture(
        "after regaining master",
        &s.out,
        &opaque(&buffers[1].expected(1)),
        Duration::from_secs(30),
    );
    s.sink.stop();
}

/// `qemu-sink demo --display`: the demo VM (SeaBIOS on a private bus) shown
/// on vkms; the PNG is what writeback saw: the text screen letterboxed into
/// 1024x768, bars black, text in the picture.
#[test]
#[ignore = "needs the lab"]
fn display_demo_shows_the_demo_vm_on_vkms() {
    require_lab();
    let dir = TempDir::new("lab-display-demo");
    let out = dir.path("demo.png");
    let card = vkms();
    let output = run_sink(
        sink_command(&[
            "demo",
            "--display",
            "--device",
            card.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--seconds",
            "40",
        ]),
        Duration::from_secs(150),
    );
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{log}");
    let png = read_png(&out).unwrap();
    assert_eq!((png.width, png.height), (1024, 768), "{log}");
    // 720x400 fitted into 1024x768: 1024x569 at y = 99.
    let fitted = tests::picture::fit(TEXT_MODE_SIZE, (1024, 768));
    let (y, h) = (fitted.y as u32, fitted.height);
    let lit = |rows: std::ops::Range<u32>| {
        rows.flat_map(|r| {
            png.pixels[(r * 1024 * 4) as usize..((r + 1) * 1024 * 4) as usize].chunks_exact(4)
        })
        .filter(|px| px[..3] != [0, 0, 0])
        .count()
    };
    assert_eq!(lit(0..y), 0, "the bar above the picture is black");
    assert_eq!(lit(y + h..768), 0, "the bar below the picture is black");
    assert!(
        lit(y..y + h) > 1000,
        "SeaBIOS's text is in the picture: {log}"
    );
    assert!(
        log.contains("composed by GL") || log.contains("frames shown"),
        "{log}"
    );
}

/// A buffer neither the plane nor the renderer can take (a modifier nobody
/// knows): one log line, its frames answered at once, the last good
/// picture stays; the next good buffer shows.
#[test]
#[ignore = "needs the lab"]
fn display_drops_a_buffer_it_cannot_show_and_keeps_the_last_good_picture() {
    require_lab();
    let card = vkms();
    let mut s = setup(
        "display-hostile",
        (640, 480),
        &card,
        true,
        &["--mode", "640x480"],
    );
    let buffers = two_buffers_the_first_shown(&mut s.listener, &s.out, "the good picture");
    let bad = Udmabuf::new(640, 480, DrmFourcc::Xrgb8888).unwrap();
    let bad_desc = BufferDesc {
        modifier: 0x00ff_0000_0000_1234,
        ..BufferDesc::xrgb(640, 480)
    };
    for _ in 0..3 {
        s.listener
            .scanout_dmabuf(bad.fd(), bad_desc, false)
            .unwrap();
        let answer = s.listener.update_dmabuf(0, 0, 640, 480).clone();
        assert!(answer.ok && answer.latency() < Duration::from_millis(800));
    }
    // Nothing was flipped: writeback still shows the good picture.
    std::thread::sleep(Duration::from_millis(500));
    wait_for_picture(
        "after the bad buffer",
        &s.out,
        &opaque(&buffers[0].expected(0)),
        Duration::from_secs(10),
    );
    s.listener
        .scanout_dmabuf(buffers[1].fd(), BufferDesc::xrgb(640, 480), false)
        .unwrap();
    assert!(s.listener.update_dmabuf(0, 0, 640, 480).ok);
    wait_for_picture(
        "the next good buffer",
        &s.out,
        &opaque(&buffers[1].expected(1)),
        Duration::from_secs(30),
    );
    let log = s.sink.stop();
    assert_eq!(
        log.matches("the renderer cannot import it").count(),
        1,
        "one line for the bad layout: {log}"
    );
}

/// A buffer the renderer cannot import (XRGB8888 sent with two planes)
/// costs that buffer alone: the guest's next buffer of the same size,
/// format and stride is shown, not dropped as "that layout" until a replug.
#[test]
#[ignore = "needs the lab"]
fn display_one_unimportable_buffer_does_not_condemn_its_layout() {
    use std::os::fd::AsFd;
    require_lab();
    let card = vkms();
    let mut s = setup(
        "display-bad-buffer-not-layout",
        (640, 480),
        &card,
        true,
        &["--mode", "640x480", "--path", "composite"],
    );
    let buffers = two_buffers_the_first_shown(&mut s.listener, &s.out, "the good picture");
    let bad = Udmabuf::new(640, 480, DrmFourcc::Xrgb8888).unwrap();
    let whole = (0, 0, 640, 480);
    s.listener
        .scanout_dmabuf2_planes(
            &[(bad.fd().as_fd(), 0), (bad.fd().as_fd(), 0)],
            BufferDesc::xrgb(640, 480),
            whole,
            false,
        )
        .unwrap();
    let answer = s.listener.update_dmabuf(0, 0, 640, 480).clone();
    assert!(answer.ok && answer.latency() < Duration::from_millis(800));
    // The same layout, another buffer: shown.
    s.listener
        .scanout_dmabuf2(
            &buffers[1].fd(),
            BufferDesc::xrgb(640, 480),
            0,
            whole,
            false,
        )
        .unwrap();
    assert!(s.listener.update_dmabuf(0, 0, 640, 480).ok);
    wait_for_picture(
        "the next buffer of the same layout",
        &s.out,
        &opaque(&buffers[1].expected(1)),
        Duration::from_secs(30),
    );
    let log = s.sink.stop();
    assert_eq!(
        log.matches("the renderer cannot import it").count(),
        1,
        "one line for the bad buffer: {log}"
    );
}

/// A guest that leaves GL for 2D (`Disable`, then a 2D `Scanout` right
/// after, while the sink is busy capturing the last GL frame) shows the 2D
/// picture, not black: one console's events take effect in the order QEMU
/// sent them.
#[test]
#[ignore = "needs the lab"]
fn display_shows_a_2d_scanout_that_follows_a_disable() {
    use dbus_interfaces::format::PIXMAN_X8R8G8B8;
    require_lab();
    let card = vkms();
    let mut s = setup(
        "display-disable-2d",
        (640, 480),
        &card,
        true,
        &["--mode", "640x480"],
    );
    let gl = Udmabuf::new(640, 480, DrmFourcc::Xrgb8888).unwrap();
    let (want, bytes) = solid(640, 480, [0x20, 0x80, 0xe0]);
    for round in 0..3 {
        s.listener
            .scanout_dmabuf(gl.fd(), BufferDesc::xrgb(640, 480), false)
            .unwrap();
        assert!(s.listener.update_dmabuf(0, 0, 640, 480).ok);
        // Answered at its flip: the sink now captures it (a writeback of
        // ~100 ms), and both of these arrive meanwhile.
        let listener = s.listener.listener();
        listener.disable().unwrap();
        listener
            .scanout(
                640,
                480,
                640 * 4,
                PIXMAN_X8R8G8B8,
                serde_bytes::Bytes::new(&bytes),
            )
            .unwrap();
        wait_for_picture(
            &format!("round {round}: the 2D scanout after Disable"),
            &s.out,
            &want,
            Duration::from_secs(20),
        );
    }
    s.sink.stop();
    drop(s.dir);
}

/// Stopped (SIGTERM) right after QEMU's last picture, with a flip still in
/// flight: `--capture` holds that last picture, not the one before.
#[test]
#[ignore = "needs the lab"]
fn display_capture_on_sigterm_holds_the_last_picture_sent() {
    use dbus_interfaces::format::PIXMAN_X8R8G8B8;
    require_lab();
    let card = vkms();
    let s = setup(
        "display-last-picture",
        (640, 480),
        &card,
        true,
        &["--mode", "640x480"],
    );
    let (_, first) = solid(640, 480, [0xff, 0, 0]);
    let (want, last) = solid(640, 480, [0, 0xff, 0x40]);
    let listener = s.listener.listener();
    for bytes in [&first, &last] {
        listener
            .scanout(
                640,
                480,
                640 * 4,
                PIXMAN_X8R8G8B8,
                serde_bytes::Bytes::new(bytes),
            )
            .unwrap();
    }
    let log = s.sink.stop();
    let got = read_png(&s.out).unwrap_or_else(|e| panic!("{e}: {log}"));
    tests::udmabuf::assert_picture_eq("the capture after SIGTERM", &got, &want);
    drop(s.dir);
}

/// `--capture` keeps up with a picture that never stops changing: the
/// guest updates faster than the monitor refreshes, so a frame is always
/// waiting, and the PNG is still rewritten (at least once a second), not
/// only at exit.
#[test]
#[ignore = "needs the lab"]
fn display_capture_keeps_up_with_a_picture_that_never_stops_changing() {
    use dbus_interfaces::format::PIXMAN_X8R8G8B8;
    use std::os::unix::fs::MetadataExt;
    require_lab();
    let card = vkms();
    let s = setup(
        "display-capture-busy",
        (640, 480),
        &card,
        true,
        &["--mode", "640x480"],
    );
    let (want, bytes) = solid(640, 480, [0x10, 0x20, 0x30]);
    let listener = s.listener.listener();
    listener
        .scanout(
            640,
            480,
            640 * 4,
            PIXMAN_X8R8G8B8,
            serde_bytes::Bytes::new(&bytes),
        )
        .unwrap();
    wait_for_picture("the first picture", &s.out, &want, Duration::from_secs(30));
    // Each PNG write is a new file renamed over the old one: count inodes.
    let inode = || std::fs::metadata(&s.out).map(|m| m.ino()).ok();
    let mut written = std::collections::HashSet::new();
    written.extend(inode());
    let start = std::time::Instant::now();
    let mut n = 0u32;
    while start.elapsed() < Duration::from_secs(6) {
        // A small square moving and changing colour, every millisecond.
        let (_, square) = solid(16, 16, [(n % 251) as u8, 0x80, 0x40]);
        let (x, y) = ((n * 16 % 624) as i32, (n / 39 * 16 % 464) as i32);
        listener
            .update(
                x,
                y,
                16,
                16,
                16 * 4,
                PIXMAN_X8R8G8B8,
                serde_bytes::Bytes::new(&square),
            )
            .unwrap();
        written.extend(inode());
        n += 1;
        std::thread::sleep(Duration::from_millis(1));
    }
    let log = s.sink.stop();
    eprintln!(
        "{n} updates in 6 s; the PNG was written {} times",
        written.len()
    );
    assert!(
        written.len() >= 4,
        "{n} updates in 6 s, the capture written {} times: {log}",
        written.len()
    );
}

/// The sink's DMA-BUF fds (its own scanout buffers' exports and the
/// guest's buffers it holds).
fn dmabuf_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            std::fs::read_link(e.path()).is_ok_and(|t| t.to_string_lossy().contains("dmabuf"))
        })
        .count()
}

/// QEMU leaves after a composed DMA-BUF frame: the black monitor holds none
/// of its buffers (GL's last sampled texture included), only the sink's own.
#[test]
#[ignore = "needs the lab"]
fn display_holds_no_guest_buffer_once_qemu_is_gone() {
    require_lab();
    let card = vkms();
    let mut s = setup(
        "display-gone-no-buffer",
        (640, 480),
        &card,
        true,
        &["--mode", "640x480", "--path", "composite"],
    );
    let pid = s.sink.pid();
    let own = dmabuf_fds(pid);
    let buffers = two_buffers_the_first_shown(&mut s.listener, &s.out, "the composed frame");
    assert!(
        dmabuf_fds(pid) > own,
        "the guest's buffer is not held while shown"
    );
    let Setup {
        listener,
        _fake,
        sink,
        ..
    } = s;
    drop(listener);
    drop(_fake);
    assert!(
        sink.wait_for_log("QEMU went away", Duration::from_secs(10)),
        "{}",
        sink.log()
    );
    std::thread::sleep(Duration::from_secs(2));
    let held = dmabuf_fds(pid);
    drop(buffers);
    let log = sink.stop();
    assert_eq!(
        held, own,
        "DMA-BUF fds once QEMU is gone (the sink's own: {own}): {log}"
    );
}
