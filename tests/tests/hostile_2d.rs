//! Hostile 2D input against the real `qemu-sink capture`: a fake QEMU that
//! shrinks its shared memory after mapping it, claims coordinates far outside
//! its console, or maps a sparse file with an absurd stride. The sink keeps
//! running, keeps the last good picture, logs one line per dropped message,
//! keeps its memory to the console's size and exits 0 when stopped.
//! (The same scenarios run against `display` in the lab: lab_display_hostile.rs.)
//!
//! Starts: dbus-daemon, the qemu-sink binary, the fake QEMU in-process.

use std::os::fd::AsFd;
use std::time::Duration;

use dbus_interfaces::format::PIXMAN_X8R8G8B8;
use serde_bytes::Bytes;
use tests::attached::Attached;
use tests::hostile::{check_far_updates, check_truncated_map, memfd_with, proc_status_kb, solid};
use tests::sink_run::wait_for_picture;

const SIZE: (u32, u32) = (640, 480);

#[test]
fn capture_survives_a_map_truncated_after_scanout_map() {
    check_truncated_map(Attached::capture("map-truncated", SIZE), SIZE);
}

#[test]
fn updates_far_outside_the_console_do_not_grow_the_surface() {
    check_far_updates(Attached::capture("far-updates", SIZE), SIZE, "capture");
}

/// A stride far beyond the row on a sparse memfd (it costs QEMU nothing
/// and would have the sink map 480 GiB) is refused at `ScanoutMap`; a
/// cursor at the cap is taken and one past it refused, by a message that
/// names the cap.
#[test]
fn absurd_strides_and_cursors_past_the_cap_are_refused() {
    let s = Attached::capture("absurd-stride", SIZE);
    let out = &s.out;
    let (want, bytes) = solid(SIZE.0, SIZE.1, [0x50, 0x60, 0x70]);
    let fd = memfd_with(&bytes);
    let map = s.listener.map_listener();
    map.scanout_map(
        fd.as_fd().into(),
        0,
        SIZE.0,
        SIZE.1,
        SIZE.0 * 4,
        PIXMAN_X8R8G8B8,
    )
    .unwrap();
    wait_for_picture("the good map", out, &want, Duration::from_secs(30));

    let stride = 1u32 << 30;
    let sparse = memfd_with(&[]);
    let len = u64::from(stride) * u64::from(SIZE.1 - 1) + u64::from(SIZE.0 * 4);
    nix::unistd::ftruncate(&sparse, len as i64).unwrap();
    let refused = map.scanout_map(
        sparse.as_fd().into(),
        0,
        SIZE.0,
        SIZE.1,
        stride,
        PIXMAN_X8R8G8B8,
    );
    let vm_peak_gb = proc_status_kb(s.sink.pid(), "VmPeak") >> 20;
    assert!(refused.is_err(), "a 1 GiB stride was taken");
    assert!(vm_peak_gb < 64, "the sink reserved {vm_peak_gb} GiB");

    let cursor = vec![0xffu8; 1024 * 1024 * 4];
    let listener = s.listener.listener();
    listener
        .cursor_define(1024, 1024, 0, 0, Bytes::new(&cursor))
        .unwrap();
    listener
        .cursor_define(1025, 1, 0, 0, Bytes::new(&cursor[..1025 * 4]))
        .unwrap();
    let _ = listener.mouse_set(0, 0, 0);
    s.listener.sync();
    // The good map is still the picture.
    wait_for_picture("after the refusals", out, &want, Duration::from_secs(10));
    let log = s.sink.stop();
    let cursor_lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("dropping CursorDefine"))
        .collect();
    assert_eq!(cursor_lines.len(), 1, "{log}");
    assert!(cursor_lines[0].contains("over 1024x1024"), "{log}");
    assert_eq!(log.matches("dropping ScanoutMap").count(), 1, "{log}");
}
