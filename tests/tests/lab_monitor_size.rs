//! The guest told the monitor it is shown on (QEMU's `Console.SetUIInfo`):
//! the mode's size and the panel's physical size, at attach, again after
//! the connector is unplugged and back, never with `--no-resize`; and a
//! guest that takes the size it was told is scanned out directly where a
//! guest of another size is composed.
//!
//! Starts: dbus-daemon, the fake QEMU (which records every `SetUIInfo`),
//! the qemu-sink binary. Every test needs the lab
//! (`scripts/lab/test.sh monitor_size`).

use std::time::Duration;

use drm::control::Device as _;
use drm_fourcc::DrmFourcc;
use sink::output::kms::{find_node, NodeKind};
use tests::attached::Attached;
use tests::fake_qemu::BufferDesc;
use tests::lab::{require_lab, ForcedConnector, Observer};
use tests::picture::letterboxed;
use tests::sink_run::{opaque, wait_for_picture, wait_for_picture_within};
use tests::udmabuf::Udmabuf;

const CONSOLE: (u32, u32) = (640, 480);

/// `display --capture` on `driver`'s card in `mode`, with `args`.
fn display(tag: &str, driver: &str, mode: &str, args: &[&str]) -> Attached {
    let card = find_node(NodeKind::Primary, driver).expect("the card");
    let card = card.to_str().unwrap();
    let mut all = vec!["--device", card, "--mode", mode];
    all.extend_from_slice(args);
    Attached::start(tag, CONSOLE, "display", &all, "--capture", &[])
}

/// The size and origin told, with the panel size left out.
fn told_size(s: &Attached, what: &str) -> (u32, u32, i32, i32) {
    match s.fake.next_ui_info(Duration::from_secs(30)) {
        Some(info) => (info.width, info.height, info.xoff, info.yoff),
        None => panic!("no SetUIInfo {what}; sink:\n{}", s.sink.log()),
    }
}

/// `--mode 800x600` on vkms: the console is told 800x600 (the mode forced,
/// not the connector's preferred 1024x768) at attach, and told again when
/// the monitor is unplugged and plugged back.
#[test]
#[ignore = "needs the lab"]
fn display_monitor_size_the_forced_mode_is_told_at_attach_and_after_a_replug() {
    require_lab();
    let card = find_node(NodeKind::Primary, "vkms").expect("the vkms card");
    let connector = ForcedConnector::of(&card);
    let s = display("monitor-replug", "vkms", "800x600", &[]);
    assert_eq!(told_size(&s, "at attach"), (800, 600, 0, 0));
    connector.force("off");
    assert!(
        s.sink
            .wait_for_log("was unplugged", Duration::from_secs(10)),
        "the sink never noticed the unplug"
    );
    assert_eq!(
        s.fake.next_ui_info(Duration::from_secs(2)),
        None,
        "told while unplugged"
    );
    connector.force("on");
    assert_eq!(told_size(&s, "after the replug"), (800, 600, 0, 0));
    let log = s.sink.stop();
    assert_eq!(
        log.matches("told the guest its monitor: 800x600").count(),
        2,
        "{log}"
    );
}

/// `--no-resize`: the console is never told, however long the monitor is
/// lit and frames are shown.
#[test]
#[ignore = "needs the lab"]
fn display_monitor_size_never_told_with_no_resize() {
    require_lab();
    let mut s = display("monitor-no-resize", "vkms", "640x480", &["--no-resize"]);
    let buffer = Udmabuf::new(640, 480, DrmFourcc::Xrgb8888).unwrap();
    s.listener
        .scanout_dmabuf(buffer.fd(), BufferDesc::xrgb(640, 480), false)
        .unwrap();
    assert!(s.listener.update_dmabuf(0, 0, 640, 480).ok);
    wait_for_picture(
        "the frame",
        &s.out,
        &opaque(&buffer.expected(0)),
        Duration::from_secs(30),
    );
    assert_eq!(s.fake.next_ui_info(Duration::from_secs(3)), None);
    let log = s.sink.stop();
    assert!(!log.contains("told the guest"), "{log}");
}

/// virtio-gpu's connector has an EDID with a physical size (QEMU makes one):
/// the console is told the panel's millimetres as the kernel reports them.
#[test]
#[ignore = "needs the lab"]
fn display_monitor_size_the_panels_mm_come_from_its_edid() {
    require_lab();
    let card = find_node(NodeKind::Primary, "virtio_gpu").expect("the virtio-gpu card");
    let observer = Observer::open(&card);
    let resources = observer.resource_handles().unwrap();
    let panel = resources
        .connectors()
        .iter()
        .map(|&c| observer.get_connector(c, false).unwrap())
        .find(|c| c.state() == drm::control::connector::State::Connected)
        .and_then(|c| c.size())
        .expect("a connected virtio-gpu connector with a size");
    drop(observer);
    assert!(panel.0 > 0 && panel.1 > 0, "{panel:?}");
    let s = display("monitor-edid", "virtio_gpu", "640x480", &[]);
    let info = match s.fake.next_ui_info(Duration::from_secs(30)) {
        Some(info) => info,
        None => panic!("no SetUIInfo; sink:\n{}", s.sink.abort()),
    };
    assert_eq!((info.width, info.height), (640, 480));
    assert_eq!((u32::from(info.width_mm), u32::from(info.height_mm)), panel);
    s.sink.stop();
}

/// A guest of another size than the monitor (640x480 on 800x600) is
/// composed, letterboxed; once it takes the size it was told (800x600),
/// its buffers go on the plane as they are: direct, no copy.
#[test]
#[ignore = "needs the lab"]
fn display_monitor_size_a_guest_that_took_it_is_scanned_out_directly() {
    require_lab();
    let mut s = display("monitor-direct", "vkms", "800x600", &[]);
    let (width, height, _, _) = told_size(&s, "at attach");
    let small = Udmabuf::new(640, 480, DrmFourcc::Xrgb8888).unwrap();
    s.listener
        .scanout_dmabuf(small.fd(), BufferDesc::xrgb(640, 480), false)
        .unwrap();
    assert!(s.listener.update_dmabuf(0, 0, 640, 480).ok);
    let want = letterboxed(&opaque(&small.expected(0)), (800, 600));
    wait_for_picture_within(
        "the guest before it resized",
        &s.out,
        &want,
        3,
        Duration::from_secs(60),
    );

    // The guest follows SetUIInfo (as virtio-gpu's Linux driver does).
    let mut sized = Udmabuf::new(width, height, DrmFourcc::Xrgb8888).unwrap();
    sized.fill(1).unwrap();
    s.listener
        .scanout_dmabuf(sized.fd(), BufferDesc::xrgb(width, height), false)
        .unwrap();
    assert!(
        s.listener
            .update_dmabuf(0, 0, width as i32, height as i32)
            .ok
    );
    wait_for_picture(
        "the guest at the monitor's size",
        &s.out,
        &opaque(&sized.expected(1)),
        Duration::from_secs(30),
    );
    let log = s.sink.stop();
    assert!(
        log.contains("800x600 DrmFourcc(XR24) (modifier 0x0, stride 3200): direct scanout"),
        "{log}"
    );
    assert!(log.contains("(1 direct, 1 composed)"), "{log}");
}
