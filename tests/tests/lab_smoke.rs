//! Lab smoke tests: the DRM, EGL and QEMU paths the sink builds on, each
//! proven with real pixels inside the lab VM (`scripts/lab/test.sh`).
//!
//! Starts: vkms (scanout, page flips, writeback), gl-renderer on Mesa's
//! software EGL device (DMA-BUF import), and a nested QEMU with
//! `-display dbus,gl=on` on a private dbus-daemon. Every test is
//! `#[ignore = "needs the lab"]`: a host `cargo test` lists them as ignored.

use std::os::fd::AsFd;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use capture::{read_png, RgbaFrame};
use dbus_interfaces::proxies::ConsoleProxyBlocking;
use dbus_interfaces::{
    listener_socketpair, serve_listener, DmabufScanout, ListenerEvent, ListenerHandler,
    ListenerOptions,
};
use drm::buffer::DrmModifier;
use drm_fourcc::DrmFourcc;
use gl_renderer::{Composition, ImportedImage, Rect, RenderDevice, Renderer, Source, Target};
use serde_json::json;
use sink::output::kms::{find_node, NodeKind};
use sink::output::kms::{Card, Committer, Framebuffer, Pipe, PlaneConfig, Writeback};
use sink::qmp::Qmp;
use tests::dmabuf::{self, Layout};
use tests::lab::{self, require_lab, GlQemu};
use tests::udmabuf::{self, assert_picture_eq, Udmabuf};
use tests::{private_bus, TempDir};

/// vkms signals the writeback out-fence 80–110 ms after the commit.
const WRITEBACK_TIMEOUT: Duration = Duration::from_secs(2);
/// vkms flips at 60 Hz.
const FLIP_TIMEOUT: Duration = Duration::from_secs(1);

use sink::frame::monotonic_now;

/// A udmabuf on the vkms primary plane (atomic modeset), a NONBLOCK flip to
/// a second one with its page-flip event, a rewrite of the first in place
/// and a flip back; after each, the writeback connector's capture equals
/// the pattern exactly. Runs on the product's KMS layer
/// (`sink::output::kms`); `lab_kms.rs` tests it in detail.
#[test]
#[ignore = "needs the lab"]
fn vkms_scans_out_flips_and_writes_back_udmabufs() {
    require_lab();
    let card = Arc::new(Card::open_by_driver("vkms").expect("the vkms card"));
    assert!(
        card.caps().monotonic_timestamp,
        "flip timestamps must be CLOCK_MONOTONIC"
    );
    let pipe = Pipe::select(&card, None, None).expect("a connected Virtual-* connector");
    assert!(pipe.name.starts_with("Virtual-"), "{}", pipe.name);
    let mut writeback = Writeback::find(&card).expect("Writeback-1");
    let (width, height) = pipe.size();
    eprintln!(
        "{}: {} {width}x{height}, CRTC {:?}, primary {:?}",
        card.path().display(),
        pipe.name,
        pipe.crtc,
        pipe.primary.handle
    );

    let fourcc = DrmFourcc::Xrgb8888;
    let mut front = Udmabuf::new(width, height, fourcc).expect("udmabuf A");
    let mut back = Udmabuf::new(width, height, fourcc).expect("udmabuf B");
    front.fill(0).expect("frame 0");
    back.fill(1).expect("frame 1");
    let import =
        |buffer: &Udmabuf, modifier| Framebuffer::import(&card, &buffer.describe(modifier));
    // Both AddFB2 forms: with an explicit LINEAR modifier and without one.
    let fb_front =
        import(&front, DrmModifier::Linear).expect("importing udmabuf A as a framebuffer (LINEAR)");
    let fb_back = import(&back, DrmModifier::Invalid)
        .expect("importing udmabuf B as a framebuffer (plain AddFB2)");
    let mut output = Committer::new(card.clone(), pipe).expect("taking over the pipe");

    let mut shoot = |output: &mut Committer, what: &str| {
        let t = Instant::now();
        let picture = writeback
            .capture(output, WRITEBACK_TIMEOUT)
            .unwrap_or_else(|err| panic!("writeback of {what}: {err}"));
        eprintln!("writeback of {what}: {:?}", t.elapsed());
        picture
    };

    let t = Instant::now();
    output
        .modeset(&PlaneConfig::whole(&fb_front))
        .expect("atomic modeset with udmabuf A");
    eprintln!("modeset: {:?}", t.elapsed());
    assert_picture_eq(
        "vkms frame 0",
        &shoot(&mut output, "frame 0"),
        &front.expected(0),
    );

    let flip_and_wait = |output: &mut Committer, fb: &Framebuffer, what: &str| {
        let t = Instant::now();
        output
            .flip(&PlaneConfig::whole(fb))
            .unwrap_or_else(|err| panic!("flip to {what}: {err}"));
        let event = output
            .wait_flip(FLIP_TIMEOUT)
            .unwrap_or_else(|err| panic!("flip to {what}: {err}"));
        let now = monotonic_now();
        eprintln!(
            "flip to {what}: event after {:?}, read {:?} after its timestamp (frame {})",
            t.elapsed(),
            now.saturating_sub(event.time),
            event.sequence
        );
        assert_eq!(event.crtc, output.pipe().crtc, "the event names our CRTC");
        assert!(
            event.time <= now && now - event.time < FLIP_TIMEOUT,
            "flip timestamp {:?} is not a recent CLOCK_MONOTONIC time (now {now:?})",
            event.time
        );
    };

    flip_and_wait(&mut output, &fb_back, "udmabuf B");
    assert_picture_eq(
        "vkms frame 1",
        &shoot(&mut output, "frame 1"),
        &back.expected(1),
    );

    // A producer rewrites a buffer between frames: the next flip shows it.
    front.fill(2).expect("frame 2");
    flip_and_wait(&mut output, &fb_front, "udmabuf A, rewritten");
    assert_picture_eq(
        "vkms frame 2",
        &shoot(&mut output, "frame 2"),
        &front.expected(2),
    );

    // The console back, then the framebuffers go.
    drop(output);
    drop((fb_front, fb_back));
}

/// gl-renderer's DMA-BUF import on Mesa's software EGL device, in the lab:
/// `Renderer::new(Software)` lands on llvmpipe without a DRM node and its
/// format table lists LINEAR for XR24 and every producer format; udmabufs
/// imported with an explicit LINEAR modifier and
/// drawn 1:1 into a target read back exactly (RGB; composition is opaque,
/// so alpha reads 255): a vkms-sized XRGB8888 frame, rewritten in place
/// under the same import (rebound, as the capture path does on
/// `UpdateDMABUF`), and every producer format at an odd size with a padded
/// stride.
#[test]
#[ignore = "needs the lab"]
fn software_egl_device_imports_udmabufs_exactly() {
    require_lab();
    let t = Instant::now();
    let mut renderer =
        Renderer::new(&RenderDevice::Software).expect("a renderer on the software device");
    eprintln!(
        "renderer up in {:?}: {:?}, {} DMA-BUF formats",
        t.elapsed(),
        renderer.device,
        renderer.formats.len()
    );
    assert!(
        renderer.device.software,
        "the software device renders in software"
    );
    assert_eq!(
        renderer.device.node, None,
        "the software device has no DRM node"
    );
    assert!(
        renderer.formats.modifiers_supported,
        "explicit modifiers (EGL_EXT_image_dma_buf_import_modifiers)"
    );
    // XR24 is what the capture path sees most; every format below is
    // imported with an explicit LINEAR modifier, so each must list it.
    let linear = u64::from(DrmModifier::Linear);
    for fourcc in udmabuf::FORMATS {
        let modifiers = renderer.formats.modifiers(fourcc);
        assert!(
            modifiers.iter().any(|&(modifier, _)| modifier == linear),
            "the format table lists LINEAR for {fourcc:?}: {modifiers:x?}"
        );
    }

    let mut got = RgbaFrame::default();
    let mut frame = Udmabuf::new(1024, 768, DrmFourcc::Xrgb8888).expect("udmabuf");
    let (width, height) = (frame.width(), frame.height());
    let target = renderer.create_target(width, height).expect("target");
    let image = renderer
        .import(&frame.describe(DrmModifier::Linear))
        .expect("importing the 1024x768 XR24 udmabuf");
    for n in 0..2 {
        frame.fill(n).expect("filling");
        let t = Instant::now();
        renderer
            .rebind(&image)
            .expect("rebinding the rewritten buffer");
        draw_and_read(&mut renderer, &target, &image, &mut got);
        eprintln!(
            "1024x768 XR24 frame {n}: drawn and read in {:?}",
            t.elapsed()
        );
        assert_picture_eq(
            &format!("gl-renderer 1024x768 XR24 frame {n}"),
            &got,
            &opaque(frame.expected(n)),
        );
    }
    drop((image, target));

    for fourcc in udmabuf::FORMATS {
        let (width, height) = (333, 77);
        let stride = (width * udmabuf::bytes_per_pixel(fourcc) as u32).next_multiple_of(256) + 64;
        let mut buffer = Udmabuf::with_stride(width, height, stride, fourcc).expect("udmabuf");
        buffer.fill(5).expect("filling");
        let target = renderer.create_target(width, height).expect("target");
        let image = renderer
            .import(&buffer.describe(DrmModifier::Linear))
            .unwrap_or_else(|err| panic!("importing {fourcc:?}: {err:#}"));
        draw_and_read(&mut renderer, &target, &image, &mut got);
        drop((image, target));
        assert_picture_eq(
            &format!("gl-renderer {width}x{height} {fourcc:?} stride {stride}"),
            &got,
            &opaque(buffer.expected(5)),
        );
    }
}

/// Clears `target`, draws `image` into all of it (the same size: 1:1, no
/// flip) and reads it back into `frame`, top row first.
fn draw_and_read(
    renderer: &mut Renderer,
    target: &Target,
    image: &ImportedImage,
    frame: &mut RgbaFrame,
) {
    let size = (target.width, target.height);
    assert_eq!(size, (image.width, image.height), "a 1:1 draw");
    renderer.clear(target);
    renderer
        .draw(
            target,
            Source::Image(image),
            &Composition::fit(Rect::new(0, 0, size.0, size.1), size, false),
        )
        .unwrap_or_else(|err| panic!("drawing {:?}: {err:#}", image.fourcc));
    renderer
        .read(target, frame)
        .unwrap_or_else(|err| panic!("reading {:?} back: {err:#}", image.fourcc));
}

/// `picture` as an opaque composition shows it: alpha 255.
fn opaque(mut picture: RgbaFrame) -> RgbaFrame {
    for pixel in picture.pixels.chunks_exact_mut(4) {
        pixel[3] = 0xff;
    }
    picture
}

/// What the listener saw, in order.
enum Seen {
    Scanout(DmabufScanout),
    Update,
    Other(String),
}

/// Hands listener events to the test thread and answers every
/// `UpdateDMABUF` at once (dropping its release).
struct Recorder(mpsc::Sender<Seen>);

impl ListenerHandler for Recorder {
    fn handle(&mut self, event: ListenerEvent<'_>) {
        let seen = match event {
            ListenerEvent::ScanoutDmabuf(scanout) => Seen::Scanout(scanout),
            ListenerEvent::UpdateDmabuf { release, .. } => {
                drop(release);
                Seen::Update
            }
            other => Seen::Other(format!("{other:?}").chars().take(120).collect()),
        };
        let _ = self.0.send(seen);
    }
}

/// Receives until `done` says so (returns that scanout) or `timeout`
/// passes; counts the updates on the way.
fn wait_for_scanout(
    events: &mpsc::Receiver<Seen>,
    timeout: Duration,
    updates: &mut usize,
    mut done: impl FnMut(&DmabufScanout) -> bool,
) -> Option<DmabufScanout> {
    let deadline = Instant::now() + timeout;
    while let Ok(seen) = events.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        match seen {
            Seen::Scanout(scanout) => {
                eprintln!(
                    "ScanoutDMABUF {}x{} stride {} {:?} modifier {:#x} y0_top {}",
                    scanout.rect.width,
                    scanout.rect.height,
                    scanout.buffer.planes[0].stride,
                    scanout.buffer.fourcc,
                    u64::from(scanout.buffer.modifier),
                    scanout.y0_top
                );
                if done(&scanout) {
                    return Some(scanout);
                }
            }
            Seen::Update => *updates += 1,
            Seen::Other(what) => eprintln!("listener: {what}"),
        }
    }
    None
}

/// A nested QEMU with `-display dbus,gl=on` on the vgem render node sends
/// its console as udmabuf DMA-BUFs (XBGR8888, linear) and keeps sending
/// answered `UpdateDMABUF`s; the text screen in the DMA-BUF equals QEMU's
/// own screendump.
#[test]
#[ignore = "needs the lab"]
fn nested_qemu_gl_sends_udmabuf_scanouts() {
    require_lab();
    let dir = TempDir::new("lab-gl");
    let bus = private_bus(&dir);
    let render_node = find_node(NodeKind::Render, "vgem").expect("the vgem render node");
    let t = Instant::now();
    let vm = GlQemu::on_bus(&dir, "lab-gl", &bus.plain_address, &render_node);
    eprintln!(
        "QEMU (gl=on, {}) on the bus after {:?}",
        render_node.display(),
        t.elapsed()
    );

    let connection = zbus::blocking::connection::Builder::address(bus.address.as_str())
        .and_then(|b| b.build())
        .expect("connecting to the test bus");
    let console = ConsoleProxyBlocking::new(&connection).expect("console 0");
    let (ours, theirs) = listener_socketpair().expect("socketpair");
    console
        .register_listener(theirs.as_fd().into())
        .expect("RegisterListener");
    drop(theirs);
    let (sender, events) = mpsc::channel();
    let _listener = serve_listener(ours, Box::new(Recorder(sender)), ListenerOptions::default())
        .expect("serving the listener");
    let registered = Instant::now();

    let mut updates = 0;
    let first = wait_for_scanout(&events, Duration::from_secs(60), &mut updates, |_| true)
        .unwrap_or_else(|| panic!("no ScanoutDMABUF within 60 s; QEMU:\n{}", vm.stderr()));
    eprintln!(
        "first ScanoutDMABUF {:?} after RegisterListener",
        registered.elapsed()
    );
    let plane = &first.buffer.planes[0];
    assert_eq!(first.buffer.planes.len(), 1);
    assert_eq!(
        dmabuf::exporter(plane.fd.as_fd())
            .expect("fdinfo")
            .as_deref(),
        Some("udmabuf"),
        "QEMU's buffer comes from udmabuf (llvmpipe's export)"
    );
    assert!(
        [(640, 480), (720, 400)].contains(&(first.rect.width, first.rect.height)),
        "a VGA size, not {}x{}",
        first.rect.width,
        first.rect.height
    );
    assert_eq!(
        first.buffer.fourcc,
        DrmFourcc::Xbgr8888,
        "QEMU 10 on llvmpipe exports XB24"
    );
    assert_eq!(first.buffer.modifier, DrmModifier::Linear);
    assert!(plane.stride >= first.rect.width * 4);

    // UpdateDMABUFs keep coming while each is answered. Count over a whole
    // window without a new scanout (the 640x480 → 720x400 switch restarts it).
    let window = Duration::from_secs(3);
    let mut latest = first;
    let (count, took) = loop {
        let (before, start) = (updates, Instant::now());
        match wait_for_scanout(&events, window, &mut updates, |_| true) {
            Some(newer) => latest = newer,
            None => break (updates - before, start.elapsed()),
        }
    };
    eprintln!(
        "{count} UpdateDMABUF in {took:.1?} ({:.1}/s)",
        count as f64 / took.as_secs_f64()
    );
    assert!(count >= 5, "UpdateDMABUFs stopped: {count} in {took:?}");

    // The pixels: wait for SeaBIOS's text screen, let it print its last line
    // ("No bootable device"), freeze it (pause, VGA cursor off), and compare
    // the DMA-BUF with QEMU's screendump.
    if (latest.rect.width, latest.rect.height) != (720, 400) {
        latest = wait_for_scanout(&events, Duration::from_secs(60), &mut updates, |s| {
            s.rect.size() == (720, 400)
        })
        .expect("the 720x400 text screen");
    }
    wait_for_scanout(&events, Duration::from_secs(3), &mut updates, |_| false);
    let mut qmp = Qmp::connect(&vm.qmp_path).expect("QMP");
    qmp.execute("stop", json!({})).expect("QMP stop");
    for command in ["o /b 0x3d4 0x0a", "o /b 0x3d5 0x20"] {
        qmp.execute("human-monitor-command", json!({ "command-line": command }))
            .expect("HMP o");
    }
    // Let the redraw without the cursor reach the texture.
    let newer = wait_for_scanout(&events, Duration::from_secs(1), &mut updates, |_| true);
    assert!(newer.is_none(), "the screen resized while frozen");
    let png = dir.path("screendump.png");
    qmp.execute(
        "screendump",
        json!({ "filename": png.to_str().expect("utf-8 path"), "format": "png" }),
    )
    .expect("QMP screendump");
    let truth = read_png(&png).expect("reading the screendump");
    let layout = Layout {
        width: latest.rect.width,
        height: latest.rect.height,
        stride: latest.buffer.planes[0].stride,
        offset: latest.buffer.planes[0].offset,
        fourcc: latest.buffer.fourcc,
    };
    let picture = dmabuf::read_picture(latest.buffer.planes[0].fd.as_fd(), layout)
        .expect("mapping the DMA-BUF");
    let mut flipped = picture.clone();
    let row = picture.width as usize * 4;
    for (dst, src) in flipped
        .pixels
        .chunks_exact_mut(row)
        .zip(picture.pixels.chunks_exact(row).rev())
    {
        dst.copy_from_slice(src);
    }
    let straight = capture::compare_rgb(&picture, &truth, 0);
    let upside_down = capture::compare_rgb(&flipped, &truth, 0);
    eprintln!(
        "y0_top {}: as stored {}, flipped {}",
        latest.y0_top,
        straight
            .as_ref()
            .map_or_else(|d| d.to_string(), |_| "equal".into()),
        upside_down
            .as_ref()
            .map_or_else(|d| d.to_string(), |_| "equal".into()),
    );
    // y0_top = true would mean memory row 0 is the bottom (GL-rendered);
    // QEMU's console textures say false and hold the top row first.
    let (orientation, result) = if latest.y0_top {
        ("flipped (y0_top)", upside_down)
    } else {
        ("as stored (!y0_top)", straight)
    };
    if let Err(diff) = result {
        let keep = lab::failure_dir("nested QEMU gl");
        let _ = capture::write_png_atomic(&keep.join("dmabuf.png"), &picture);
        let _ = capture::write_png_atomic(&keep.join("screendump.png"), &truth);
        panic!(
            "QEMU's DMA-BUF read {orientation} differs from its screendump: {diff} \
             (both kept in {})",
            keep.display()
        );
    }
}
