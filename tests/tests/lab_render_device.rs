//! The EGL device choice in the lab, where virtio-gpu without 3D, vgem and
//! vkms are present: with `LIBGL_ALWAYS_SOFTWARE=1` (common on headless CI
//! machines) `--render-device auto` must not hand Mesa a hardware device
//! (Mesa then crashes in `driCreateNewScreen3`); `capture` and `display`
//! run and show the guest's picture. Also `display` waiting for QEMU to
//! come back ends on SIGINT even when a silent peer holds `org.qemu`.
//!
//! Starts: dbus-daemon, the fake QEMU (udmabufs), the qemu-sink binary.
//! Every test needs the lab (`scripts/lab/test.sh render_device`).

use std::time::{Duration, Instant};

use drm_fourcc::DrmFourcc;
use sink::output::kms::{find_node, NodeKind};
use tests::attached::Attached;
use tests::fake_qemu::{BufferDesc, FakeQemu};
use tests::lab::require_lab;
use tests::silent_peer::silent_peer;
use tests::sink_run::{opaque, wait_for_picture, Sink};
use tests::udmabuf::Udmabuf;
use tests::*;

const UUID: &str = "00000000-0000-4000-8000-0000000de71c";

/// Runs `qemu-sink COMMAND` with `LIBGL_ALWAYS_SOFTWARE=1` and
/// `--render-device auto` against the fake QEMU, shows one udmabuf of
/// `size` and waits until the picture written to `--out`/`--capture` is
/// the buffer's. Returns the sink's log.
fn guests_picture_with_software_forced(
    command: &str,
    size: (u32, u32),
    args: &[&str],
    picture_option: &str,
) -> String {
    let tag = format!("render-{command}");
    let env = [("LIBGL_ALWAYS_SOFTWARE", "1")];
    let mut all = args.to_vec();
    all.extend_from_slice(&["--render-device", "auto"]);
    let mut s = Attached::start(&tag, size, command, &all, picture_option, &env);
    let listener = &mut s.listener;
    let buffer = Udmabuf::new(size.0, size.1, DrmFourcc::Xrgb8888).unwrap();
    listener
        .scanout_dmabuf(buffer.fd(), BufferDesc::xrgb(size.0, size.1), false)
        .unwrap();
    assert!(
        listener
            .update_dmabuf(0, 0, size.0 as i32, size.1 as i32)
            .ok
    );
    wait_for_picture(
        &format!("{command}, LIBGL_ALWAYS_SOFTWARE=1, auto"),
        &s.out,
        &opaque(&buffer.expected(0)),
        Duration::from_secs(60),
    );
    let log = s.sink.stop();
    assert!(
        log.contains("LIBGL_ALWAYS_SOFTWARE is set: rendering on Mesa's software device"),
        "{log}"
    );
    log
}

#[test]
#[ignore = "needs the lab"]
fn capture_with_libgl_always_software_and_auto_shows_the_guests_picture() {
    require_lab();
    guests_picture_with_software_forced("capture", (64, 48), &[], "--out");
}

/// Composed by GL (`--path composite`), so the picture on the monitor
/// (writeback) is the renderer's.
#[test]
#[ignore = "needs the lab"]
fn display_with_libgl_always_software_and_auto_shows_the_guests_picture() {
    require_lab();
    let card = find_node(NodeKind::Primary, "vkms").expect("the vkms card");
    let card = card.to_str().unwrap();
    let args = ["--device", card, "--mode", "640x480", "--path", "composite"];
    let log = guests_picture_with_software_forced("display", (640, 480), &args, "--capture");
    assert!(log.contains("composed by GL"), "{log}");
}

/// QEMU leaves, and what takes `org.qemu` never answers: `display` keeps
/// trying to attach, and SIGINT still ends it, promptly and with exit 0.
#[test]
#[ignore = "needs the lab"]
fn display_waiting_for_qemu_ends_on_sigint_even_with_a_silent_peer_on_the_bus() {
    require_lab();
    let dir = TempDir::new("lab-reattach-sigint");
    let bus = private_bus(&dir);
    let fake = FakeQemu::on_bus(&bus.address, "reattach-sigint", UUID, (640, 480)).unwrap();
    let card = find_node(NodeKind::Primary, "vkms").expect("the vkms card");
    let sink = Sink::spawn(sink_command(&[
        "display",
        "--bus",
        &bus.address,
        "--vm",
        "reattach-sigint",
        "--device",
        card.to_str().unwrap(),
        "--mode",
        "640x480",
        "--render-device",
        "software",
    ]));
    let listener = match fake.accept_listener(Duration::from_secs(60)) {
        Ok(listener) => listener,
        Err(err) => panic!("{err:#}; sink:\n{}", sink.abort()),
    };
    drop(listener);
    drop(fake);
    let (_peer, _name) = silent_peer(&bus.address);
    assert!(
        sink.wait_for_log("QEMU went away", Duration::from_secs(30)),
        "the sink did not see QEMU leave"
    );
    // Let it get stuck in an attach attempt on the silent peer.
    std::thread::sleep(Duration::from_secs(2));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(sink.pid() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let started = Instant::now();
    // One attach attempt is bounded at 5 s per call; give it twice that.
    let log = sink.wait(Duration::from_secs(12));
    eprintln!("ended {:?} after SIGINT", started.elapsed());
    assert!(log.contains("SIGINT: stopping"), "{log}");
}
