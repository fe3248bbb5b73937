//! The product's KMS layer (`sink::output::kms`) on real drivers, with real
//! pixels: vkms (found by driver name) scans out udmabufs and dumb buffers,
//! flips with page-flip events, and its writeback connector proves what the
//! CRTC showed, exactly; virtio_gpu shows a primary plane that lacks a
//! format its cursor plane has.
//!
//! Starts: the lab's kernel drivers only (vkms, virtio_gpu, udmabuf). Every
//! test is `#[ignore = "needs the lab"]` (`scripts/lab/test.sh kms`).

use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use drm::buffer::{DrmFourcc, DrmModifier};
use drm::control::{Device as _, PlaneType};
use nix::errno::Errno;
use sink::frame::monotonic_now;
use sink::output::kms::{
    self, Card, Committer, DumbBuffer, Framebuffer, GemHandle, KmsError, ModeSpec, Pipe,
    PlaneConfig, Rect, Request, TestOutcome, Writeback,
};
use tests::dmabuf::{self, Layout};
use tests::lab::require_lab;
use tests::udmabuf::{self, assert_picture_eq, Udmabuf};

/// vkms signals the writeback out-fence 80–110 ms after the commit.
const WRITEBACK_TIMEOUT: Duration = Duration::from_secs(2);
/// vkms flips at 60 Hz.
const FLIP_TIMEOUT: Duration = Duration::from_secs(1);

fn vkms() -> (Arc<Card>, Pipe) {
    let card = Arc::new(Card::open_by_driver("vkms").expect("the vkms card"));
    let pipe = Pipe::select(&card, None, None).expect("vkms' connected connector");
    (card, pipe)
}

fn import(card: &Arc<Card>, buffer: &Udmabuf) -> Framebuffer {
    Framebuffer::import(card, &buffer.describe(DrmModifier::Linear))
        .expect("importing a udmabuf as a framebuffer")
}

fn shoot(writeback: &mut Writeback, output: &mut Committer, what: &str) -> capture::RgbaFrame {
    let t = Instant::now();
    let picture = writeback
        .capture(output, WRITEBACK_TIMEOUT)
        .unwrap_or_else(|err| panic!("writeback of {what}: {err}"));
    eprintln!("writeback of {what}: {:?}", t.elapsed());
    picture
}

fn flip(output: &mut Committer, fb: &Framebuffer, what: &str) -> kms::FlipEvent {
    output
        .flip(&PlaneConfig::whole(fb))
        .unwrap_or_else(|err| panic!("flip to {what}: {err}"));
    output
        .wait_flip(FLIP_TIMEOUT)
        .unwrap_or_else(|err| panic!("flip to {what}: {err}"))
}

/// Is `handle` an open GEM handle on `card`? (Only an open one can be
/// exported.)
fn gem_open(card: &Card, handle: drm::buffer::Handle) -> bool {
    card.buffer_to_prime_fd(handle, drm::CLOEXEC).is_ok()
}

/// vkms through the product's selection: caps, the pipe by name and mode,
/// the planes' IN_FORMATS (LINEAR only; AR24/XR24/RG16, never XB24). A
/// full-mode XR24 LINEAR udmabuf passes TEST_ONLY (with the modeset before
/// the first commit, plane-only after it); the same picture scaled does
/// not (vkms cannot scale), and an XB24 buffer, a format no vkms plane has,
/// is refused already at AddFB2 and by the plane's format set.
#[test]
#[ignore = "needs the lab"]
fn kms_vkms_pipe_formats_and_test_only() {
    require_lab();
    let (card, pipe) = vkms();
    assert_eq!(card.driver(), "vkms");
    let caps = card.caps();
    assert!(
        caps.addfb2_modifiers && caps.monotonic_timestamp,
        "{caps:?}"
    );
    assert!(pipe.name.starts_with("Virtual-"), "{}", pipe.name);
    assert_eq!(pipe.size(), (1024, 768), "vkms' preferred mode");
    assert_eq!(pipe.primary.kind, PlaneType::Primary);
    assert_eq!(
        pipe.cursor.as_ref().map(|c| c.kind),
        Some(PlaneType::Cursor),
        "vkms has a cursor plane"
    );

    // The same pipe by connector name and mode, as --connector/--mode give.
    let spec: ModeSpec = "1024x768@60".parse().expect("a mode spec");
    let named = Pipe::select(&card, Some(&pipe.name), Some(&spec)).expect("selecting by name");
    assert_eq!((named.connector, named.crtc), (pipe.connector, pipe.crtc));
    assert_eq!(named.primary.handle, pipe.primary.handle);
    let err = Pipe::select(&card, Some("HDMI-A-9"), None).unwrap_err();
    assert!(
        err.to_string().contains(&pipe.name),
        "the error lists the connectors: {err}"
    );
    let err = Pipe::select(&card, None, Some(&"1000x1000".parse().unwrap())).unwrap_err();
    assert!(err.to_string().contains("1024x768@60"), "{err}");
    eprintln!("{err}");

    let primary = &pipe.primary;
    let formats: Vec<DrmFourcc> = primary.formats.formats().collect();
    eprintln!("primary plane formats (drm-fourcc knows): {formats:?}");
    for fourcc in [DrmFourcc::Xrgb8888, DrmFourcc::Argb8888, DrmFourcc::Rgb565] {
        assert!(primary.supports(fourcc, DrmModifier::Linear), "{fourcc:?}");
        assert!(primary.supports(fourcc, DrmModifier::Invalid), "{fourcc:?}");
        assert_eq!(
            primary.formats.modifiers(fourcc),
            vec![DrmModifier::Linear],
            "IN_FORMATS lists LINEAR only for {fourcc:?}"
        );
    }
    assert!(!primary.supports(DrmFourcc::Xbgr8888, DrmModifier::Linear));
    assert!(!primary.supports(DrmFourcc::Xbgr8888, DrmModifier::Invalid));

    let (width, height) = pipe.size();
    let full = Udmabuf::new(width, height, DrmFourcc::Xrgb8888).expect("a full-mode udmabuf");
    let half = Udmabuf::new(width / 2, height / 2, DrmFourcc::Xrgb8888).expect("a half udmabuf");
    let fb_full = import(&card, &full);
    let fb_half = import(&card, &half);
    assert_eq!(fb_full.modifier(), DrmModifier::Linear);

    let mut output = Committer::new(card.clone(), pipe.clone()).expect("taking over the pipe");
    let whole = PlaneConfig::whole(&fb_full);
    let scaled = PlaneConfig {
        fb: &fb_half,
        src: Rect::of_size(fb_half.size()),
        dst: Rect::of_size((width, height)),
    };
    let cropped_up = PlaneConfig {
        fb: &fb_full,
        src: Rect::of_size((width / 2, height / 2)),
        dst: Rect::of_size((width, height)),
    };
    let t = Instant::now();
    assert_eq!(output.test(&whole).unwrap(), TestOutcome::Accepted);
    eprintln!("TEST_ONLY with the modeset: {:?}", t.elapsed());
    assert_eq!(
        output.test(&scaled).unwrap(),
        TestOutcome::Rejected(Errno::ERANGE),
        "vkms cannot scale (drm_atomic_helper_check_plane_state: ERANGE)"
    );

    output.modeset(&whole).expect("the modeset");
    let t = Instant::now();
    assert_eq!(output.test(&whole).unwrap(), TestOutcome::Accepted);
    eprintln!("TEST_ONLY of the plane alone: {:?}", t.elapsed());
    for (what, config) in [("scaled", &scaled), ("cropped and scaled", &cropped_up)] {
        assert_eq!(
            output.test(config).unwrap(),
            TestOutcome::Rejected(Errno::ERANGE),
            "{what}"
        );
    }
    // A TEST_ONLY commit changes nothing and leaves no flip in flight.
    assert!(!output.flip_pending());

    // XB24 (what QEMU's gl=on exports): no vkms plane takes it, so the
    // kernel refuses the framebuffer itself.
    let xb24 = Udmabuf::new(width, height, DrmFourcc::Xbgr8888).expect("an XB24 udmabuf");
    let err = Framebuffer::import(&card, &xb24.describe(DrmModifier::Linear)).unwrap_err();
    assert!(
        matches!(
            err,
            KmsError::Access {
                call: "DRM_IOCTL_MODE_ADDFB2",
                ..
            }
        ) && err.errno() == Some(Errno::EINVAL as i32),
        "{err}"
    );
    eprintln!("XB24: {err}");
}

/// virtio_gpu's primary plane takes XR24 only, its cursor plane AR24: an
/// AR24 framebuffer exists on the card, and TEST_ONLY puts it on the
/// primary plane in vain: the product says so from IN_FORMATS/formats
/// without asking, and the kernel, asked directly, agrees (while the same
/// request with an XR24 buffer passes).
#[test]
#[ignore = "needs the lab"]
fn kms_virtio_gpu_primary_lacks_a_format() {
    require_lab();
    let card = Arc::new(Card::open_by_driver("virtio_gpu").expect("the virtio_gpu card"));
    let caps = card.caps();
    assert!(!caps.addfb2_modifiers, "{caps:?}");
    // Without the hotspot cap the core hides virtio_gpu's cursor plane from
    // atomic clients.
    assert!(caps.cursor_hotspot, "{caps:?}");
    let pipe = Pipe::select(&card, None, None).expect("virtio_gpu's connector");
    let cursor = pipe.cursor.as_ref().expect("a cursor plane");
    assert!(cursor.props.contains("HOTSPOT_X"), "{:?}", cursor.props);
    assert!(!pipe
        .primary
        .supports(DrmFourcc::Argb8888, DrmModifier::Invalid));
    assert!(cursor.supports(DrmFourcc::Argb8888, DrmModifier::Invalid));
    assert!(pipe
        .primary
        .supports(DrmFourcc::Xrgb8888, DrmModifier::Linear));

    let size = pipe.size();
    let argb = DumbBuffer::create(&card, size.0, size.1, DrmFourcc::Argb8888).expect("AR24 dumb");
    let xrgb = DumbBuffer::create(&card, size.0, size.1, DrmFourcc::Xrgb8888).expect("XR24 dumb");
    let fb_argb = argb.framebuffer().expect("an AR24 framebuffer");
    let fb_xrgb = xrgb.framebuffer().expect("an XR24 framebuffer");
    let output = Committer::new(card.clone(), pipe.clone()).expect("taking over the pipe");
    assert_eq!(
        output.test(&PlaneConfig::whole(&fb_argb)).unwrap(),
        TestOutcome::UnsupportedFormat {
            fourcc: DrmFourcc::Argb8888,
            modifier: DrmModifier::Invalid
        }
    );
    assert_eq!(
        output.test(&PlaneConfig::whole(&fb_xrgb)).unwrap(),
        TestOutcome::Accepted
    );
    // The kernel's own check, bypassing the product's (the console has the
    // CRTC lit, so a plane-only request is complete).
    let raw = |fb: &Framebuffer| {
        let mut req = Request::new();
        req.plane(&pipe.primary, pipe.crtc, Some(&PlaneConfig::whole(fb)))
            .expect("plane properties");
        output.test_request(req).expect("TEST_ONLY")
    };
    assert_eq!(raw(&fb_xrgb), TestOutcome::Accepted);
    assert_eq!(raw(&fb_argb), TestOutcome::Rejected(Errno::EINVAL));
}

/// The pipe lit with one udmabuf, flipped to a second (NONBLOCK with a
/// page-flip event whose CLOCK_MONOTONIC timestamp is a moment ago), a
/// second flip refused while the first is in flight, the first rewritten
/// and flipped back; writeback equals each pattern exactly. Shutdown puts
/// the console's framebuffer back on the plane.
#[test]
#[ignore = "needs the lab"]
fn kms_vkms_flips_udmabufs_with_monotonic_events() {
    require_lab();
    let (card, pipe) = vkms();
    let console = card
        .get_plane(pipe.primary.handle)
        .expect("GETPLANE")
        .framebuffer();
    eprintln!("before us the primary plane shows {console:?}");
    let mut writeback = Writeback::find(&card).expect("the writeback connector");
    assert!(writeback.formats().any(|f| f == DrmFourcc::Xrgb8888));
    let (width, height) = pipe.size();
    let mut a = Udmabuf::new(width, height, DrmFourcc::Xrgb8888).expect("udmabuf A");
    let mut b = Udmabuf::new(width, height, DrmFourcc::Xrgb8888).expect("udmabuf B");
    a.fill(0).expect("frame 0");
    b.fill(1).expect("frame 1");
    let fb_a = import(&card, &a);
    let fb_b = Framebuffer::import(&card, &b.describe(DrmModifier::Invalid))
        .expect("an implicit-modifier import (plain AddFB2)");
    let mut output = Committer::new(card.clone(), pipe.clone()).expect("taking over the pipe");

    let err = output.flip(&PlaneConfig::whole(&fb_a)).unwrap_err();
    assert!(
        err.to_string().contains("modeset"),
        "a flip before the modeset: {err}"
    );
    let t = Instant::now();
    output
        .modeset(&PlaneConfig::whole(&fb_a))
        .expect("the modeset");
    eprintln!("modeset (blocking): {:?}", t.elapsed());
    assert_picture_eq(
        "A",
        &shoot(&mut writeback, &mut output, "A"),
        &a.expected(0),
    );

    let t = Instant::now();
    output.flip(&PlaneConfig::whole(&fb_b)).expect("flip to B");
    let queued = t.elapsed();
    assert!(output.flip_pending());
    // One commit in flight: a second is refused before the kernel's EBUSY.
    let err = output.flip(&PlaneConfig::whole(&fb_a)).unwrap_err();
    assert!(matches!(err, KmsError::FlipPending { .. }), "{err}");
    assert!(matches!(
        writeback.capture(&mut output, WRITEBACK_TIMEOUT),
        Err(KmsError::FlipPending { .. })
    ));
    let first = output.wait_flip(FLIP_TIMEOUT).expect("B's flip event");
    let now = monotonic_now();
    let age = now.saturating_sub(first.time);
    eprintln!(
        "flip to B: queued in {queued:?}, event after {:?}, read {age:?} after its timestamp \
         (sequence {})",
        t.elapsed(),
        first.sequence
    );
    assert!(!output.flip_pending());
    assert_eq!(first.crtc, pipe.crtc);
    assert!(
        first.time <= now && age < Duration::from_millis(100),
        "the flip timestamp {:?} is not a moment ago on CLOCK_MONOTONIC (now {now:?})",
        first.time
    );
    assert_picture_eq(
        "B",
        &shoot(&mut writeback, &mut output, "B"),
        &b.expected(1),
    );

    a.fill(2).expect("frame 2");
    let second = flip(&mut output, &fb_a, "A rewritten");
    assert!(
        second.sequence > first.sequence,
        "{second:?} after {first:?}"
    );
    let frames = (second.time - first.time).as_secs_f64() * 60.0;
    eprintln!(
        "{} vblanks, {:?} apart",
        second.sequence - first.sequence,
        second.time - first.time
    );
    assert!(
        (frames - frames.round()).abs() < 0.05,
        "flips land on 60 Hz vblanks: {frames:.3} frames apart"
    );
    assert_picture_eq(
        "A rewritten",
        &shoot(&mut writeback, &mut output, "A rewritten"),
        &a.expected(2),
    );

    // Back to the console (unrouting the writeback connector too).
    let t = Instant::now();
    output.restore().expect("restoring the console");
    eprintln!("restore: {:?}", t.elapsed());
    let now_shown = card
        .get_plane(pipe.primary.handle)
        .expect("GETPLANE")
        .framebuffer();
    assert_eq!(now_shown, console, "the console's framebuffer is back");
    drop((fb_a, fb_b));
}

/// One udmabuf imported twice (the same fd, then a dup of it): one GEM
/// handle, counted. Either framebuffer can go first while the other is on
/// screen; the handle closes only with the last user.
#[test]
#[ignore = "needs the lab"]
fn kms_one_dmabuf_twice_shares_its_gem_handle() {
    require_lab();
    let (card, pipe) = vkms();
    let mut writeback = Writeback::find(&card).expect("the writeback connector");
    let (width, height) = pipe.size();
    let x = Udmabuf::new(width, height, DrmFourcc::Xrgb8888).expect("udmabuf X");
    let mut y = Udmabuf::new(width, height, DrmFourcc::Xrgb8888).expect("udmabuf Y");
    y.fill(1).expect("frame 1");
    let dup = x.try_clone_fd().expect("dup");

    let first = import(&card, &x);
    let mut again = x.describe(DrmModifier::Linear);
    again.planes[0].fd = dup.as_fd();
    let second = Framebuffer::import(&card, &again).expect("the second import");
    let handle = first.gem_handles()[0];
    assert_eq!(
        second.gem_handles(),
        vec![handle],
        "the kernel deduplicates"
    );
    assert_ne!(first.handle(), second.handle(), "two framebuffers");
    assert_eq!(card.gem_users(handle), 2);
    let fb_y = import(&card, &y);

    let mut output = Committer::new(card.clone(), pipe.clone()).expect("taking over the pipe");
    output
        .modeset(&PlaneConfig::whole(&first))
        .expect("modeset");
    assert_picture_eq(
        "X",
        &shoot(&mut writeback, &mut output, "X"),
        &x.expected(0),
    );

    // The older goes first, the newer on screen.
    flip(&mut output, &second, "X, second import");
    drop(first);
    assert_eq!(card.gem_users(handle), 1);
    assert!(
        gem_open(&card, handle),
        "the handle outlives the first framebuffer"
    );
    assert_picture_eq(
        "X after the first FB went",
        &shoot(&mut writeback, &mut output, "X, second import"),
        &x.expected(0),
    );

    // The newer goes first: a third import, on screen, outlives the second.
    let third = import(&card, &x);
    assert_eq!(third.gem_handles(), vec![handle]);
    assert_eq!(card.gem_users(handle), 2);
    flip(&mut output, &third, "X, third import");
    drop(second);
    assert!(gem_open(&card, handle));
    assert_picture_eq(
        "X after the second FB went",
        &shoot(&mut writeback, &mut output, "X, third import"),
        &x.expected(0),
    );

    // The last user gone (off screen first): the handle is closed.
    flip(&mut output, &fb_y, "Y");
    drop(third);
    assert_eq!(card.gem_users(handle), 0);
    assert!(
        !gem_open(&card, handle),
        "the last user closed the GEM handle"
    );
    assert_picture_eq(
        "Y",
        &shoot(&mut writeback, &mut output, "Y"),
        &y.expected(1),
    );

    // A handle of our own, imported and dropped, closes too.
    let gem = GemHandle::import(&card, dup.as_fd()).expect("PRIME import");
    let raw = gem.handle();
    assert!(gem_open(&card, raw));
    drop(gem);
    assert!(!gem_open(&card, raw));
}

/// A dumb buffer: written through its CPU mapping, exported as a DMA-BUF
/// (the exporter is the DRM core, readable and writable through the
/// DMA-BUF), re-imported as the same GEM handle, scanned out; writeback
/// equals what was written.
#[test]
#[ignore = "needs the lab"]
fn kms_dumb_buffer_exports_and_scans_out() {
    require_lab();
    let (card, pipe) = vkms();
    let mut writeback = Writeback::find(&card).expect("the writeback connector");
    let (width, height) = pipe.size();
    let t = Instant::now();
    let mut dumb =
        DumbBuffer::create(&card, width, height, DrmFourcc::Xrgb8888).expect("a dumb buffer");
    eprintln!(
        "dumb buffer {width}x{height}, stride {}: {:?}",
        dumb.stride(),
        t.elapsed()
    );
    let layout = Layout {
        width,
        height,
        stride: dumb.stride(),
        offset: 0,
        fourcc: DrmFourcc::Xrgb8888,
    };
    udmabuf::fill(&mut dumb.map().expect("mapping it"), layout, 3);
    let want = udmabuf::expected(width, height, DrmFourcc::Xrgb8888, 3);

    let exported = dumb.export().expect("exporting it");
    let exporter = dmabuf::exporter(exported.as_fd()).expect("fdinfo");
    eprintln!("exported dumb buffer: exp_name {exporter:?}");
    assert_eq!(exporter.as_deref(), Some("drm"), "the DRM core exports it");
    let mode = nix::fcntl::fcntl(&exported, nix::fcntl::FcntlArg::F_GETFL).expect("F_GETFL");
    assert_eq!(
        nix::fcntl::OFlag::from_bits_truncate(mode) & nix::fcntl::OFlag::O_ACCMODE,
        nix::fcntl::OFlag::O_RDWR,
        "exported read-write, for a renderer to draw into"
    );
    let through_dmabuf =
        dmabuf::read_picture(exported.as_fd(), layout).expect("mapping the DMA-BUF");
    assert_picture_eq("the DMA-BUF's view", &through_dmabuf, &want);
    let back = GemHandle::import(&card, exported.as_fd()).expect("re-importing it");
    assert_eq!(back.handle(), dumb.gem().handle(), "its own GEM handle");
    assert_eq!(card.gem_users(back.handle()), 2);
    drop(back);
    assert!(
        gem_open(&card, dumb.gem().handle()),
        "the dumb buffer keeps it"
    );

    let fb = dumb.framebuffer().expect("a framebuffer of it");
    let mut output = Committer::new(card.clone(), pipe.clone()).expect("taking over the pipe");
    output.modeset(&PlaneConfig::whole(&fb)).expect("modeset");
    assert_picture_eq(
        "dumb buffer",
        &shoot(&mut writeback, &mut output, "the dumb buffer"),
        &want,
    );

    // The framebuffer keeps the buffer: dropping the DumbBuffer first is fine.
    let handle = dumb.gem().handle();
    drop(dumb);
    assert!(gem_open(&card, handle));
    assert_picture_eq(
        "dumb buffer, its owner gone",
        &shoot(&mut writeback, &mut output, "the dumb buffer again"),
        &want,
    );
    drop(output);
    drop(fb);
    assert!(
        !gem_open(&card, handle),
        "destroyed with its last framebuffer"
    );
}
