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
use tests::fake_qemu::{FakeListener, FakeQemu};
use tests::hostile::{far_updates, memfd_with, proc_status_kb, solid, truncated_map};
use tests::sink_run::{wait_for_picture, Sink};
use tests::*;

const SIZE: (u32, u32) = (640, 480);

struct Setup {
    dir: TempDir,
    _bus: sink::vm::PrivateBus,
    _fake: FakeQemu,
    listener: FakeListener,
    sink: Sink,
}

fn capture(tag: &str) -> Setup {
    let dir = TempDir::new(tag);
    let bus = private_bus(&dir);
    let fake = FakeQemu::on_bus(
        &bus.address,
        tag,
        "00000000-0000-4000-8000-0000000badd2",
        SIZE,
    )
    .unwrap();
    let out = dir.path("screen.png");
    let sink = Sink::capture_vm(&out, &bus.address, tag, &[]);
    let listener = match fake.accept_listener(Duration::from_secs(30)) {
        Ok(listener) => listener,
        Err(err) => panic!("{err:#}; sink:\n{}", sink.abort()),
    };
    Setup {
        dir,
        _bus: bus,
        _fake: fake,
        listener,
        sink,
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
fn capture_survives_a_map_truncated_after_scanout_map() {
    let s = capture("map-truncated");
    let s = play(s, |s| {
        truncated_map(&s.listener, &s.dir.path("screen.png"), SIZE)
    });
    let log = s.sink.stop();
    assert_eq!(
        log.matches("dropping UpdateMap").count(),
        1,
        "one line for the unreadable map: {log}"
    );
}

#[test]
fn updates_far_outside_the_console_do_not_grow_the_surface() {
    let s = capture("far-updates");
    let mut peaks = (0, 0);
    let s = play(s, |s| {
        peaks = far_updates(&s.listener, &s.dir.path("screen.png"), SIZE, s.sink.pid());
    });
    let log = s.sink.stop();
    let (before, after) = peaks;
    eprintln!("capture's peak RSS: {before} MB with the picture, {after} MB after the far updates");
    // Most of it is the GL renderer (llvmpipe); a 640x480 picture is 1.2 MB.
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

/// A stride far beyond the row on a sparse memfd (it costs QEMU nothing
/// and would have the sink map 480 GiB) is refused at `ScanoutMap`; a
/// cursor at the cap is taken and one past it refused, by a message that
/// names the cap.
#[test]
fn absurd_strides_and_cursors_past_the_cap_are_refused() {
    let s = capture("absurd-stride");
    let out = s.dir.path("screen.png");
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
    wait_for_picture("the good map", &out, &want, Duration::from_secs(30));

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
    wait_for_picture("after the refusals", &out, &want, Duration::from_secs(10));
    let log = s.sink.stop();
    let cursor_lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("dropping CursorDefine"))
        .collect();
    assert_eq!(cursor_lines.len(), 1, "{log}");
    assert!(cursor_lines[0].contains("over 1024x1024"), "{log}");
    assert_eq!(log.matches("dropping ScanoutMap").count(), 1, "{log}");
}
