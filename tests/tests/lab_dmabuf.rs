//! DMA-BUF frames through `qemu-sink capture` in the lab: a real nested QEMU
//! with `-display dbus,gl=on` compared pixel for pixel with its screendump,
//! and the fake QEMU sending udmabufs the real one cannot (ScanoutDMABUF2
//! sub-rectangles, bottom-up buffers, other formats, hostile buffers),
//! with release-after-read checked by rewriting a buffer the moment its
//! `UpdateDMABUF` is answered.
//!
//! Starts: dbus-daemon, a nested qemu-system-x86_64 (gl=on on vgem), the
//! qemu-sink binary, the fake QEMU; udmabufs. Every test needs the lab.

use std::time::{Duration, Instant};

use capture::{read_png, RgbaFrame};
use dbus_interfaces::Rect;
use drm_fourcc::DrmFourcc;
use serde_json::json;
use sink::output::kms::{find_node, NodeKind};
use sink::qmp::Qmp;
use tests::fake_qemu::{BufferDesc, FakeQemu};
use tests::lab::{require_lab, GlQemu};
use tests::picture::{bilinear, crop, flipped};
use tests::sink_run::{opaque, wait_for_picture, Sink};
use tests::udmabuf::Udmabuf;
use tests::*;

#[test]
#[ignore = "needs the lab"]
fn capture_of_a_gl_on_qemu_equals_its_screendump() {
    require_lab();
    let dir = TempDir::new("lab-capture-gl");
    let bus = private_bus(&dir);
    let render_node = find_node(NodeKind::Render, "vgem").expect("the vgem render node");
    let vm = GlQemu::on_bus(&dir, "gl-capture", &bus.plain_address, &render_node);
    let out = dir.path("gl.png");
    let sink = Sink::capture_vm(
        &out,
        &bus.address,
        "gl-capture",
        &["--settle", "3", "--timeout", "150"],
    );
    wait_for_png(&out, TEXT_MODE_SIZE, Duration::from_secs(90))
        .unwrap_or_else(|e| panic!("{e}; QEMU:\n{}", vm.stderr()));
    // SeaBIOS prints its last line within a second or two of text mode;
    // then freeze the screen (pause, VGA text cursor off).
    std::thread::sleep(Duration::from_secs(3));
    let mut qmp = Qmp::connect(&vm.qmp_path).expect("QMP");
    qmp.execute("stop", json!({})).unwrap();
    for command in ["o /b 0x3d4 0x0a", "o /b 0x3d5 0x20"] {
        qmp.execute("human-monitor-command", json!({ "command-line": command }))
            .unwrap();
    }
    let log = sink.wait(Duration::from_secs(150));
    let truth_path = dir.path("screendump.png");
    qmp.execute(
        "screendump",
        json!({ "filename": truth_path.to_str().unwrap(), "format": "png" }),
    )
    .unwrap();
    let truth = read_png(&truth_path).unwrap();
    let picture = read_png(&out).unwrap();
    assert_same_picture("gl-on capture", &picture, &truth);
    assert!(
        log.contains("720x400 DrmFourcc(XB24) as a DMA-BUF"),
        "{log}"
    );
    // auto must not land on kms_swrast (vgem, virtio-gpu without 3D): the
    // software device is the one that imports exactly.
    assert!(
        log.contains("no GPU found: rendering on Mesa's software device"),
        "{log}"
    );
    // Under emulation a frame can take longer than QEMU's deadline; the
    // listener then answers by itself. Say how often, don't time-test it.
    eprintln!(
        "{} of the frames were answered at the deadline",
        log.matches("answering UpdateDMABUF at the deadline")
            .count()
    );
    if let Some(summary) = log.lines().find(|l| l.contains("DMA-BUF frames:")) {
        eprintln!("sink: {summary}");
    }
}

#[test]
#[ignore = "needs the lab"]
fn fake_qemu_udmabufs_sub_rectangles_orientation_formats_and_release() {
    require_lab();
    let dir = TempDir::new("lab-fake-dmabuf");
    let bus = private_bus(&dir);
    let fake = FakeQemu::on_bus(
        &bus.address,
        "fake-gl",
        "00000000-0000-4000-8000-00000000f00d",
        (64, 48),
    )
    .unwrap();
    let out = dir.path("fake.png");
    let sink = Sink::capture_vm(
        &out,
        &bus.address,
        "fake-gl",
        &["--render-device", "software"],
    );
    let mut listener = fake.accept_listener(Duration::from_secs(30)).unwrap();
    let timeout = Duration::from_secs(60);

    // v1, XRGB8888, 1:1.
    let mut buffer = Udmabuf::new(64, 48, DrmFourcc::Xrgb8888).unwrap();
    listener
        .scanout_dmabuf(buffer.fd(), BufferDesc::xrgb(64, 48), false)
        .unwrap();
    let answer = listener.update_dmabuf(0, 0, 64, 48).clone();
    assert!(answer.ok, "{answer:?}");
    // Release after read: rewrite the buffer the moment QEMU would be let
    // go. The picture must still be frame 0, whole.
    buffer.fill(1).unwrap();
    wait_for_picture("v1 frame 0", &out, &opaque(&buffer.expected(0)), timeout);
    // The next update shows frame 1.
    assert!(listener.update_dmabuf(0, 0, 64, 48).ok);
    wait_for_picture("v1 frame 1", &out, &opaque(&buffer.expected(1)), timeout);

    // ScanoutDMABUF2: a sub-rectangle of a bigger backing buffer.
    let big = Udmabuf::new(96, 64, DrmFourcc::Xrgb8888).unwrap();
    listener
        .scanout_dmabuf2(
            &big.fd(),
            BufferDesc::xrgb(96, 64),
            0,
            (16, 8, 40, 30),
            false,
        )
        .unwrap();
    assert!(listener.update_dmabuf(0, 0, 40, 30).ok);
    wait_for_picture(
        "v2 sub-rectangle",
        &out,
        &opaque(&crop(&big.expected(0), Rect::new(16, 8, 40, 30))),
        timeout,
    );

    // The first buffer again, with a new fd (as QEMU sends it): the same
    // import, found by inode.
    listener
        .scanout_dmabuf(buffer.fd(), BufferDesc::xrgb(64, 48), false)
        .unwrap();
    assert!(listener.update_dmabuf(0, 0, 64, 48).ok);
    wait_for_picture(
        "re-sent buffer",
        &out,
        &opaque(&buffer.expected(1)),
        timeout,
    );

    // y0_top: a bottom-up buffer shows upside down from memory.
    listener
        .scanout_dmabuf(big.fd(), BufferDesc::xrgb(96, 64), true)
        .unwrap();
    assert!(listener.update_dmabuf(0, 0, 96, 64).ok);
    wait_for_picture("y0_top", &out, &opaque(&flipped(&big.expected(0))), timeout);

    // Other formats, with a padded stride.
    for fourcc in [DrmFourcc::Xbgr8888, DrmFourcc::Argb8888, DrmFourcc::Rgb565] {
        let bpp = capture::bytes_per_pixel(fourcc).unwrap() as u32;
        let buf = Udmabuf::with_stride(50, 20, 50 * bpp + 64, fourcc).unwrap();
        let desc = BufferDesc {
            width: 50,
            height: 20,
            stride: buf.stride(),
            fourcc: fourcc as u32,
            modifier: 0,
        };
        listener.scanout_dmabuf(buf.fd(), desc, false).unwrap();
        assert!(listener.update_dmabuf(0, 0, 50, 20).ok);
        wait_for_picture(
            &format!("{fourcc:?}"),
            &out,
            &opaque(&buf.expected(0)),
            timeout,
        );
    }
    let last_good = read_png(&out).unwrap();

    // Hostile buffers: an absurd modifier, a plane past the buffer's end, a
    // stride below the width. Each is dropped, the update still answered
    // within the deadline, and the last good picture stays.
    let small = Udmabuf::new(16, 16, DrmFourcc::Xrgb8888).unwrap();
    let bad = [
        BufferDesc {
            modifier: 0x0123_4567_89ab_cdef,
            ..BufferDesc::xrgb(16, 16)
        },
        BufferDesc::xrgb(64, 64),
        BufferDesc {
            stride: 16,
            ..BufferDesc::xrgb(16, 16)
        },
    ];
    for desc in bad {
        listener.scanout_dmabuf(small.fd(), desc, false).unwrap();
        let answer = listener.update_dmabuf(0, 0, 16, 16).clone();
        assert!(
            answer.ok && answer.latency() < Duration::from_secs(1),
            "{desc:?}: {answer:?}"
        );
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        read_png(&out).unwrap(),
        last_good,
        "the last good frame stays"
    );

    // Disable: black until the next scanout, and the imports are let go
    // (the next scanout of the same buffer is imported anew).
    listener.listener().disable().unwrap();
    let mut black = RgbaFrame::default();
    black.reset(last_good.width, last_good.height);
    wait_for_picture("disabled", &out, &black, timeout);
    listener
        .scanout_dmabuf(buffer.fd(), BufferDesc::xrgb(64, 48), false)
        .unwrap();
    assert!(listener.update_dmabuf(0, 0, 64, 48).ok);
    wait_for_picture("after disable", &out, &opaque(&buffer.expected(1)), timeout);

    for answer in &listener.answers {
        assert!(
            answer.ok && answer.latency() < Duration::from_secs(1),
            "{answer:?}"
        );
    }
    let log = sink.stop();
    assert_eq!(
        log.matches("dropping a DMA-BUF scanout").count(),
        3,
        "{log}"
    );
    assert!(log.contains("not importable"), "{log}");
    // Five distinct good buffers: the first, the big one (sent as v2 and
    // again as v1), three formats; re-sent buffers are not imported again,
    // except the first once more after the Disable.
    assert_eq!(log.matches("imported DMA-BUF inode").count(), 6, "{log}");
    assert!(
        !log.contains("answering UpdateDMABUF at the deadline")
            && log.contains(" 0 answered at the deadline"),
        "no release by the watchdog: {log}"
    );
}

/// `--size` scales a DMA-BUF with its aspect ratio kept (black bars) and
/// `--cursor` draws the guest's cursor at the pointer, mapped into the
/// scaled picture.
#[test]
#[ignore = "needs the lab"]
fn fake_qemu_cursor_over_a_letterboxed_dmabuf() {
    require_lab();
    let dir = TempDir::new("lab-fake-cursor");
    let bus = private_bus(&dir);
    let fake = FakeQemu::on_bus(
        &bus.address,
        "fake-cursor",
        "00000000-0000-4000-8000-00000000c0c0",
        (64, 48),
    )
    .unwrap();
    let out = dir.path("cursor.png");
    let sink = Sink::capture_vm(
        &out,
        &bus.address,
        "fake-cursor",
        &[
            "--render-device",
            "software",
            "--size",
            "160x96",
            "--cursor",
        ],
    );
    let mut listener = fake.accept_listener(Duration::from_secs(30)).unwrap();

    // One colour everywhere, so that scaling leaves every pixel exact.
    let mut buffer = Udmabuf::new(64, 48, DrmFourcc::Xrgb8888).unwrap();
    buffer
        .write(|bytes| {
            for px in bytes.chunks_exact_mut(4) {
                px.copy_from_slice(&[0xc0, 0x80, 0x20, 0x00]);
            }
        })
        .unwrap();
    listener
        .scanout_dmabuf(buffer.fd(), BufferDesc::xrgb(64, 48), false)
        .unwrap();
    // A 4x4 opaque red cursor (ARGB) with its hot spot at (1, 1), the
    // pointer at (10, 10) of the guest's 64x48.
    let red: Vec<u8> = [0u8, 0, 0xff, 0xff].repeat(16);
    listener
        .listener()
        .cursor_define(4, 4, 1, 1, serde_bytes::Bytes::new(&red))
        .unwrap();
    listener.listener().mouse_set(10, 10, 1).unwrap();
    assert!(listener.update_dmabuf(0, 0, 64, 48).ok);

    // 64x48 into 160x96: scale 2, centred, 16-pixel bars left and right.
    let mut want = RgbaFrame::default();
    want.reset(160, 96);
    for y in 0..96 {
        for x in 16..144 {
            let i = ((y * 160 + x) * 4) as usize;
            want.pixels[i..i + 4].copy_from_slice(&[0x20, 0x80, 0xc0, 0xff]);
        }
    }
    // The cursor's corner, (10 - 1, 10 - 1) in the guest, is (16 + 18, 18).
    want.blend_argb(34, 18, 4, 4, &red);
    wait_for_picture(
        "cursor over a scaled DMA-BUF",
        &out,
        &want,
        Duration::from_secs(60),
    );

    // Moving the pointer moves the cursor without a new frame.
    listener.listener().mouse_set(20, 5, 1).unwrap();
    let mut moved = RgbaFrame::default();
    moved.reset(160, 96);
    moved.pixels.copy_from_slice(&want.pixels);
    for y in 18..22 {
        for x in 34..38 {
            let i = ((y * 160 + x) * 4) as usize;
            moved.pixels[i..i + 4].copy_from_slice(&[0x20, 0x80, 0xc0, 0xff]);
        }
    }
    moved.blend_argb(16 + 38, 8, 4, 4, &red);
    wait_for_picture("moved cursor", &out, &moved, Duration::from_secs(30));
    sink.stop();
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// Two and three buffers in turn, each sent with a fresh fd as QEMU does,
/// 1000 frames: every picture right while the buffers swap, every answer
/// within the deadline, and as many fds open at the end as at the start.
#[test]
#[ignore = "needs the lab"]
fn fake_qemu_thousand_frames_swapping_buffers_without_leaking_fds() {
    require_lab();
    let dir = TempDir::new("lab-fake-1000");
    let bus = private_bus(&dir);
    let fake = FakeQemu::on_bus(
        &bus.address,
        "fake-1000",
        "00000000-0000-4000-8000-000000001000",
        (128, 96),
    )
    .unwrap();
    let out = dir.path("swap.png");
    let sink = Sink::capture_vm(
        &out,
        &bus.address,
        "fake-1000",
        &["--render-device", "software"],
    );
    let pid = sink.pid();
    let mut listener = fake.accept_listener(Duration::from_secs(30)).unwrap();
    let buffers: Vec<Udmabuf> = (0..3)
        .map(|i| {
            let mut b = Udmabuf::new(128, 96, DrmFourcc::Xrgb8888).unwrap();
            b.fill(i).unwrap();
            b
        })
        .collect();
    let timeout = Duration::from_secs(60);
    let show = |listener: &mut tests::fake_qemu::FakeListener, i: usize| {
        listener
            .scanout_dmabuf(buffers[i].fd(), BufferDesc::xrgb(128, 96), false)
            .unwrap();
        let answer = listener.update_dmabuf(0, 0, 128, 96).clone();
        assert!(
            answer.ok && answer.latency() < Duration::from_secs(1),
            "frame {} (buffer {i}): {answer:?}",
            listener.answers.len()
        );
    };
    // Two buffers in turn, then three: each picture is the right buffer.
    for i in [0, 1, 0, 1, 0, 1, 2, 0, 1, 2] {
        show(&mut listener, i);
        wait_for_picture(
            &format!("buffer {i}"),
            &out,
            &opaque(&buffers[i].expected(i as u32)),
            timeout,
        );
    }
    let fds_before = open_fds(pid);
    let started = Instant::now();
    let first = listener.answers.len();
    for frame in 0..1000 {
        show(&mut listener, frame % 3);
    }
    let took = started.elapsed();
    std::thread::sleep(Duration::from_millis(300));
    let fds_after = open_fds(pid);
    wait_for_picture(
        "after 1000 frames",
        &out,
        &opaque(&buffers[0].expected(0)),
        timeout,
    );

    let mut latencies: Vec<Duration> = listener.answers[first..]
        .iter()
        .map(|a| a.latency())
        .collect();
    latencies.sort_unstable();
    eprintln!(
        "1000 frames of 128x96 in {took:.2?}: UpdateDMABUF answered after median {:?}, p99 {:?}, max {:?}",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().unwrap()
    );
    assert_eq!(
        fds_after, fds_before,
        "fds open in qemu-sink before and after 1000 frames"
    );
    let log = sink.stop();
    let summary = log
        .lines()
        .find(|l| l.contains("DMA-BUF frames:"))
        .unwrap_or_default();
    eprintln!("sink: {summary}");
    assert!(summary.contains("1010 composed"), "{log}");
    assert_eq!(
        log.matches("imported DMA-BUF inode").count(),
        3,
        "each buffer imported once: {log}"
    );
}

/// `--size` at another size: the picture is the guest's scaled by GL's
/// bilinear filter, checked against a CPU reference within a small
/// tolerance (GPUs round filter weights differently).
#[test]
#[ignore = "needs the lab"]
fn fake_qemu_scaled_to_another_size_matches_a_cpu_reference() {
    require_lab();
    let dir = TempDir::new("lab-fake-scale");
    let bus = private_bus(&dir);
    let fake = FakeQemu::on_bus(
        &bus.address,
        "fake-scale",
        "00000000-0000-4000-8000-00000000005c",
        (80, 60),
    )
    .unwrap();
    let out = dir.path("scaled.png");
    let sink = Sink::capture_vm(
        &out,
        &bus.address,
        "fake-scale",
        &["--render-device", "software", "--size", "200x150"],
    );
    let mut listener = fake.accept_listener(Duration::from_secs(30)).unwrap();
    let buffer = Udmabuf::new(80, 60, DrmFourcc::Xrgb8888).unwrap();
    listener
        .scanout_dmabuf(buffer.fd(), BufferDesc::xrgb(80, 60), false)
        .unwrap();
    assert!(listener.update_dmabuf(0, 0, 80, 60).ok);
    let want = bilinear(&buffer.expected(0), 200, 150);
    let deadline = Instant::now() + Duration::from_secs(60);
    let got = loop {
        if let Ok(got) = read_png(&out) {
            if (got.width, got.height) == (200, 150) {
                break got;
            }
        }
        assert!(Instant::now() < deadline, "no 200x150 picture");
        std::thread::sleep(Duration::from_millis(50));
    };
    if let Err(diff) = capture::compare_rgb(&got, &want, 3) {
        panic!("scaled picture vs CPU bilinear reference: {diff}");
    }
    sink.stop();
}

/// A scanout the sink rejects (here: a memfd, no DMA-BUF) ends the old
/// buffer's turn too: the updates that follow belong to the rejected
/// scanout, so they are answered unshown and the last good picture stays,
/// even when the old buffer's memory is rewritten meanwhile.
#[test]
#[ignore = "needs the lab"]
fn fake_qemu_rejected_scanout_keeps_the_last_good_picture() {
    use std::os::fd::AsFd;
    require_lab();
    let dir = TempDir::new("lab-rejected-scanout");
    let bus = private_bus(&dir);
    let fake = FakeQemu::on_bus(
        &bus.address,
        "fake-rejected",
        "00000000-0000-4000-8000-00000000f011",
        (64, 48),
    )
    .unwrap();
    let out = dir.path("rejected.png");
    let sink = Sink::capture_vm(
        &out,
        &bus.address,
        "fake-rejected",
        &["--render-device", "software"],
    );
    let mut listener = fake.accept_listener(Duration::from_secs(30)).unwrap();
    let mut good = Udmabuf::new(64, 48, DrmFourcc::Xrgb8888).unwrap();
    listener
        .scanout_dmabuf(good.fd(), BufferDesc::xrgb(64, 48), false)
        .unwrap();
    assert!(listener.update_dmabuf(0, 0, 64, 48).ok);
    let want = opaque(&good.expected(0));
    wait_for_picture("the good frame", &out, &want, Duration::from_secs(60));

    let memfd =
        nix::sys::memfd::memfd_create("not-a-dmabuf", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
            .unwrap();
    nix::unistd::ftruncate(&memfd, 64 * 48 * 4).unwrap();
    listener
        .scanout_dmabuf(memfd.as_fd(), BufferDesc::xrgb(64, 48), false)
        .unwrap();
    // The guest reuses the old buffer's memory for something else.
    good.fill(1).unwrap();
    for _ in 0..3 {
        assert!(listener.update_dmabuf(0, 0, 64, 48).ok);
    }
    let log = sink.stop();
    assert!(log.contains("not a DMA-BUF"), "{log}");
    let got = read_png(&out).unwrap();
    tests::udmabuf::assert_picture_eq("after a rejected scanout", &got, &want);
    drop(dir);
}
