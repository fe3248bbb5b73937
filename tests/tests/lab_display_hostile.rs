//! Hostile 2D input against `qemu-sink display` in the lab, the scenarios of
//! hostile_2d.rs (there against `capture`): QEMU's memfd shrunk after
//! `ScanoutMap`, and updates far outside the console. What the monitor shows
//! is read back by vkms writeback (`--capture`).
//!
//! Starts: dbus-daemon, the fake QEMU, the qemu-sink binary. Every test needs
//! the lab (`scripts/lab/test.sh display_hostile`).

use std::path::PathBuf;
use std::time::Duration;

use sink::output::kms::{find_node, NodeKind};
use tests::fake_qemu::{FakeListener, FakeQemu};
use tests::hostile::{far_updates, truncated_map};
use tests::lab::require_lab;
use tests::sink_run::Sink;
use tests::*;

const SIZE: (u32, u32) = (640, 480);

struct Setup {
    _dir: TempDir,
    _bus: sink::vm::PrivateBus,
    _fake: FakeQemu,
    listener: FakeListener,
    sink: Sink,
    out: PathBuf,
}

/// `qemu-sink display --capture` on vkms at the console's size, attached
/// to a fake QEMU.
fn setup(tag: &str) -> Setup {
    let dir = TempDir::new(tag);
    let bus = private_bus(&dir);
    let fake = FakeQemu::on_bus(
        &bus.address,
        tag,
        "00000000-0000-4000-8000-0000000badd3",
        SIZE,
    )
    .unwrap();
    let out = dir.path("screen.png");
    let card = find_node(NodeKind::Primary, "vkms").expect("the vkms card");
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
        "--capture",
        out.to_str().unwrap(),
    ]));
    let listener = match fake.accept_listener(Duration::from_secs(60)) {
        Ok(listener) => listener,
        Err(err) => panic!("{err:#}; sink:\n{}", sink.abort()),
    };
    Setup {
        _dir: dir,
        _bus: bus,
        _fake: fake,
        listener,
        sink,
        out,
    }
}

/// Runs a scenario; if it fails, says how the sink ended and what it logged.
fn play(s: Setup, scenario: impl FnOnce(&Setup)) -> Setup {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| scenario(&s))) {
        Ok(()) => s,
        Err(_) => panic!("the scenario failed; {}", s.sink.abort()),
    }
}

#[test]
#[ignore = "needs the lab"]
fn display_hostile_2d_survives_a_map_truncated_after_scanout_map() {
    require_lab();
    let s = setup("display-map-truncated");
    let s = play(s, |s| truncated_map(&s.listener, &s.out, SIZE));
    let log = s.sink.stop();
    assert_eq!(
        log.matches("dropping UpdateMap").count(),
        1,
        "one line for the unreadable map: {log}"
    );
}

#[test]
#[ignore = "needs the lab"]
fn display_hostile_2d_far_updates_do_not_grow_the_surface() {
    require_lab();
    let s = setup("display-far-updates");
    let mut peaks = (0, 0);
    let s = play(s, |s| {
        peaks = far_updates(&s.listener, &s.out, SIZE, s.sink.pid());
    });
    let log = s.sink.stop();
    let (before, after) = peaks;
    eprintln!("display's peak RSS: {before} MB with the picture, {after} MB after the far updates");
    assert!(
        after < before + 16,
        "peak RSS {before} -> {after} MB: {log}"
    );
    assert_eq!(
        log.matches("outside the 640x480 surface").count(),
        4,
        "one line per far update: {log}"
    );
}
