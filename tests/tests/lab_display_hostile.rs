//! Hostile 2D input against `qemu-sink display` in the lab, the scenarios of
//! hostile_2d.rs (there against `capture`): QEMU's memfd shrunk after
//! `ScanoutMap`, and updates far outside the console. What the monitor shows
//! is read back by vkms writeback (`--capture`).
//!
//! Starts: dbus-daemon, the fake QEMU, the qemu-sink binary. Every test needs
//! the lab (`scripts/lab/test.sh display_hostile`).

use sink::output::kms::{find_node, NodeKind};
use tests::attached::Attached;
use tests::hostile::{check_far_updates, check_truncated_map};
use tests::lab::require_lab;

const SIZE: (u32, u32) = (640, 480);

/// `qemu-sink display --capture` on vkms at the console's size, attached
/// to a fake QEMU.
fn display(tag: &str) -> Attached {
    let card = find_node(NodeKind::Primary, "vkms").expect("the vkms card");
    Attached::display(tag, SIZE, card.to_str().unwrap(), &[])
}

#[test]
#[ignore = "needs the lab"]
fn display_hostile_2d_survives_a_map_truncated_after_scanout_map() {
    require_lab();
    check_truncated_map(display("display-map-truncated"), SIZE);
}

#[test]
#[ignore = "needs the lab"]
fn display_hostile_2d_far_updates_do_not_grow_the_surface() {
    require_lab();
    check_far_updates(display("display-far-updates"), SIZE, "display");
}
