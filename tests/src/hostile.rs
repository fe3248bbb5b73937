//! Hostile 2D input from the fake QEMU, played against whichever sink is
//! attached (`capture` on the host, `display --capture` in the lab): each
//! scenario sends what a misbehaving QEMU could, then checks the picture the
//! sink writes. The caller checks the exit status and the log.

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

use capture::RgbaFrame;
use dbus_interfaces::format::PIXMAN_X8R8G8B8;
use serde_bytes::Bytes;

use crate::attached::Attached;
use crate::fake_qemu::FakeListener;
use crate::sink_run::wait_for_picture;

/// An opaque `width` x `height` picture of one colour, and the same as
/// QEMU's XRGB8888 bytes (B, G, R, X in memory).
pub fn solid(width: u32, height: u32, [r, g, b]: [u8; 3]) -> (RgbaFrame, Vec<u8>) {
    let n = (width * height) as usize;
    let rgba = RgbaFrame {
        width,
        height,
        pixels: [r, g, b, 255].repeat(n),
    };
    (rgba, [b, g, r, 0].repeat(n))
}

/// A memfd holding `bytes`, as QEMU's surface memfds (not sealed).
pub fn memfd_with(bytes: &[u8]) -> OwnedFd {
    let fd =
        nix::sys::memfd::memfd_create("fake-qemu-surface", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
            .expect("memfd_create");
    nix::unistd::ftruncate(&fd, bytes.len() as i64).expect("ftruncate");
    nix::sys::uio::pwrite(&fd, bytes, 0).expect("pwrite");
    fd
}

/// A field of `/proc/PID/status` in kB (`VmHWM`, `VmPeak`, ...).
pub fn proc_status_kb(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/PID/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().strip_suffix("kB")?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// A full-surface `Scanout` by copy.
pub fn scanout(listener: &FakeListener, width: u32, height: u32, xrgb: &[u8]) {
    listener
        .listener()
        .scanout(width, height, width * 4, PIXMAN_X8R8G8B8, Bytes::new(xrgb))
        .expect("Scanout");
}

/// QEMU's memfd shrinks under the sink after `ScanoutMap` (QEMU seals only
/// against sealing, not shrinking): the `UpdateMap` that follows cannot be
/// read, the last good picture stays, and a later `Scanout` still shows.
pub fn truncated_map(listener: &FakeListener, out: &Path, (width, height): (u32, u32)) {
    let (first, bytes) = solid(width, height, [0x30, 0x90, 0x10]);
    let fd = memfd_with(&bytes);
    listener
        .map_listener()
        .scanout_map(
            fd.as_fd().into(),
            0,
            width,
            height,
            width * 4,
            PIXMAN_X8R8G8B8,
        )
        .expect("a good ScanoutMap is taken");
    wait_for_picture("the mapped picture", out, &first, Duration::from_secs(30));
    nix::unistd::ftruncate(&fd, 0).expect("ftruncate");
    listener
        .map_listener()
        .update_map(0, 0, width as i32, height as i32)
        .expect("UpdateMap");
    // Answered once the UpdateMap before it was handled (messages are
    // handled in order), and gives the output time to read the map.
    let _ = listener.listener().mouse_set(0, 0, 0);
    std::thread::sleep(Duration::from_millis(500));
    wait_for_picture(
        "the last good picture after the truncation",
        out,
        &first,
        Duration::from_secs(10),
    );
    let (next, bytes) = solid(width, height, [0xe0, 0x20, 0x60]);
    scanout(listener, width, height, &bytes);
    wait_for_picture("a Scanout after it", out, &next, Duration::from_secs(30));
}

/// 1x1 `Update`s at coordinates far outside the console: the surface keeps
/// the console's size and the picture stays right. Returns the sink's peak
/// RSS (`VmHWM`, MB) before and after them.
pub fn far_updates(
    listener: &FakeListener,
    out: &Path,
    (width, height): (u32, u32),
    pid: u32,
) -> (u64, u64) {
    let (mut want, bytes) = solid(width, height, [0x10, 0x40, 0x80]);
    scanout(listener, width, height, &bytes);
    wait_for_picture("the scanout", out, &want, Duration::from_secs(30));
    let before = proc_status_kb(pid, "VmHWM") / 1024;
    let white = [0xff, 0xff, 0xff, 0];
    for (x, y) in [(16383, 16383), (16383, 0), (0, 16383), (9000, 12000)] {
        listener
            .listener()
            .update(x, y, 1, 1, 4, PIXMAN_X8R8G8B8, Bytes::new(&white))
            .expect("Update");
    }
    // One inside, so that the picture changes.
    listener
        .listener()
        .update(5, 7, 1, 1, 4, PIXMAN_X8R8G8B8, Bytes::new(&[0, 0, 0xff, 0]))
        .expect("Update");
    let i = ((7 * width + 5) * 4) as usize;
    want.pixels[i..i + 4].copy_from_slice(&[0xff, 0, 0, 0xff]);
    wait_for_picture("after the far updates", out, &want, Duration::from_secs(30));
    (before, proc_status_kb(pid, "VmHWM") / 1024)
}

/// [`truncated_map`] against an attached sink, then its log: one line for
/// the unreadable map.
pub fn check_truncated_map(s: Attached, size: (u32, u32)) {
    let s = s.play(|s| truncated_map(&s.listener, &s.out, size));
    let log = s.sink.stop();
    assert_eq!(
        log.matches("dropping UpdateMap").count(),
        1,
        "one line for the unreadable map: {log}"
    );
}

/// [`far_updates`] against an attached sink (`who`, for the figure it
/// prints), then its peak memory and its log: one line per far update.
pub fn check_far_updates(s: Attached, size: (u32, u32), who: &str) {
    let mut peaks = (0, 0);
    let s = s.play(|s| {
        peaks = far_updates(&s.listener, &s.out, size, s.sink.pid());
    });
    let log = s.sink.stop();
    let (before, after) = peaks;
    eprintln!("{who}'s peak RSS: {before} MB with the picture, {after} MB after the far updates");
    // Most of it is the GL renderer (llvmpipe); a 640x480 picture is 1.2 MB.
    assert!(
        after < before + 16,
        "peak RSS {before} -> {after} MB: {log}"
    );
    let outside = format!("outside the {}x{} surface", size.0, size.1);
    assert_eq!(
        log.matches(&outside).count(),
        4,
        "one line per far update: {log}"
    );
}
