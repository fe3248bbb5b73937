//! Hostile input through the real listener: a fake QEMU (QEMU's side of the
//! p2p connection, with QEMU's exact signatures) sends every kind of bad
//! message to the sink's listener and D-Bus source. Each is dropped, counted,
//! the last good frame stays, and the listener keeps going.
//!
//! Starts: nothing external (an in-process p2p D-Bus connection over a socketpair).

use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use capture::RgbaFrame;
use dbus_interfaces::format::{PIXMAN_R5G6B5, PIXMAN_X8R8G8B8};
use dbus_interfaces::qemu_side::{
    ListenerProxyBlocking, MapListenerProxyBlocking, ScanoutDmabuf2ListenerProxyBlocking,
};
use dbus_interfaces::{listener_socketpair, serve_listener, ListenerOptions};
use serde_bytes::Bytes;
use sink::output::headless::{run_capture, CaptureOptions};
use sink::source::dbus::DbusSource;
use sink::state::{Shared, StopReason};
use tests::TempDir;

struct FakeQemu {
    connection: zbus::blocking::Connection,
    _sink: zbus::blocking::Connection,
    output: Option<std::thread::JoinHandle<()>>,
    shared: Arc<Shared>,
    dir: TempDir,
}

impl Drop for FakeQemu {
    fn drop(&mut self) {
        self.shared.stop(StopReason::Signal(15));
        if let Some(output) = self.output.take() {
            let _ = output.join();
        }
    }
}

impl FakeQemu {
    /// The sink's listener on one end, QEMU's side (auth server) on the other.
    fn connect(shared: &Arc<Shared>) -> FakeQemu {
        let (ours, theirs) = listener_socketpair().unwrap();
        let qemu = std::thread::spawn(move || {
            zbus::blocking::connection::Builder::async_io_unix_stream(theirs)
                .server(zbus::Guid::generate())
                .unwrap()
                .p2p()
                .build()
                .unwrap()
        });
        let sink = serve_listener(
            ours,
            Box::new(DbusSource::new(shared.clone())),
            ListenerOptions::default(),
        )
        .unwrap();
        // The headless output: it takes the DMA-BUF events (and releases
        // them) as `qemu-sink capture` does.
        let dir = TempDir::new("edge");
        let options = CaptureOptions::new(dir.path("edge.png"));
        let output_shared = shared.clone();
        let output = std::thread::spawn(move || {
            run_capture(&output_shared, &options).unwrap();
        });
        FakeQemu {
            connection: qemu.join().unwrap(),
            _sink: sink,
            output: Some(output),
            shared: shared.clone(),
            dir,
        }
    }

    fn listener(&self) -> ListenerProxyBlocking<'_> {
        ListenerProxyBlocking::builder(&self.connection)
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .unwrap()
    }

    /// `UpdateDMABUF` is answered only after every earlier message was
    /// handled (`spawn = false`): a barrier for the fire-and-forget ones.
    fn barrier(&self) {
        self.listener().update_dmabuf(0, 0, 1, 1).unwrap();
    }
}

fn xrgb_pattern(width: u32, height: u32) -> Vec<u8> {
    (0..width * height)
        .flat_map(|i| (0x0010_2030u32 + i * 0x0001_0203).to_le_bytes())
        .collect()
}

fn rendered(shared: &Shared) -> RgbaFrame {
    let mut frame = RgbaFrame::default();
    assert!(shared.render_now(&mut frame, false));
    frame
}

fn memfd(len: usize) -> OwnedFd {
    let fd =
        nix::sys::memfd::memfd_create("fake-qemu", nix::sys::memfd::MFdFlags::MFD_CLOEXEC).unwrap();
    nix::unistd::ftruncate(&fd, len as i64).unwrap();
    fd
}

#[test]
fn bad_messages_are_dropped_and_the_last_good_frame_stays() {
    let shared = Arc::new(Shared::default());
    let qemu = FakeQemu::connect(&shared);
    let listener = qemu.listener();
    let map = MapListenerProxyBlocking::builder(&qemu.connection)
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .unwrap();
    let v2 = ScanoutDmabuf2ListenerProxyBlocking::builder(&qemu.connection)
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .unwrap();

    // QEMU reads this once, right after the handshake.
    let interfaces = listener.interfaces().unwrap();
    assert!(interfaces.contains(&dbus_interfaces::MAP_INTERFACE.to_owned()));
    assert!(interfaces.contains(&dbus_interfaces::SCANOUT_DMABUF2_INTERFACE.to_owned()));

    let row = Bytes::new(&[0xff; 16]);
    // An update before any scanout.
    listener
        .update(0, 0, 4, 1, 16, PIXMAN_X8R8G8B8, row)
        .unwrap();
    qemu.barrier();
    assert_eq!(shared.lock().rejected, 1);
    assert_eq!(shared.lock().surface.size(), None);

    let good = xrgb_pattern(4, 4);
    listener
        .scanout(4, 4, 16, PIXMAN_X8R8G8B8, Bytes::new(&good))
        .unwrap();
    qemu.barrier();
    let before = rendered(&shared);
    let rejected_before = shared.lock().rejected;

    let mut bad = 0;
    // Data shorter than stride x height.
    listener
        .scanout(4, 4, 16, PIXMAN_X8R8G8B8, Bytes::new(&good[..63]))
        .unwrap();
    // Stride below width x bpp.
    listener
        .scanout(4, 4, 12, PIXMAN_X8R8G8B8, Bytes::new(&good))
        .unwrap();
    // Zero and absurd sizes.
    listener
        .scanout(0, 4, 16, PIXMAN_X8R8G8B8, Bytes::new(&good))
        .unwrap();
    listener
        .scanout(16385, 1, 65540, PIXMAN_X8R8G8B8, Bytes::new(&good))
        .unwrap();
    // An unknown format.
    listener
        .scanout(4, 4, 16, 0x1234_5678, Bytes::new(&good))
        .unwrap();
    bad += 5;
    // Rectangles negative, empty, beyond the cap; data too short for the rectangle.
    listener
        .update(-1, 0, 1, 1, 4, PIXMAN_X8R8G8B8, row)
        .unwrap();
    listener
        .update(0, 0, 0, 1, 4, PIXMAN_X8R8G8B8, row)
        .unwrap();
    listener
        .update(16380, 0, 10, 1, 40, PIXMAN_X8R8G8B8, row)
        .unwrap();
    listener
        .update(0, 0, 4, 2, 16, PIXMAN_X8R8G8B8, row)
        .unwrap();
    // An update in another format than the surface's.
    listener
        .update(0, 0, 1, 1, 2, PIXMAN_R5G6B5, Bytes::new(&[0xff; 2]))
        .unwrap();
    bad += 5;
    // UpdateMap with no map, a cursor with too little data.
    map.update_map(0, 0, 1, 1).unwrap();
    listener
        .cursor_define(8, 8, 0, 0, Bytes::new(&[0; 10]))
        .unwrap();
    bad += 2;
    // DMA-BUF scanouts with an unknown fourcc, a rectangle outside the
    // buffer, too many planes.
    let fd = memfd(4096);
    listener
        .scanout_dmabuf(fd.as_fd().into(), 4, 4, 16, 0, 0, false)
        .unwrap();
    v2.scanout_dmabuf2(
        &[fd.as_fd().into()],
        2,
        0,
        4,
        4,
        &[0],
        &[16],
        1,
        0x3432_5258,
        4,
        4,
        0,
        false,
    )
    .unwrap();
    v2.scanout_dmabuf2(
        &[fd.as_fd().into()],
        0,
        0,
        4,
        4,
        &[0; 5],
        &[16; 5],
        5,
        0x3432_5258,
        4,
        4,
        0,
        false,
    )
    .unwrap();
    bad += 3;
    qemu.barrier();
    // A shared-memory surface that is too small, and a fd that cannot be
    // mapped: refused to QEMU (which then falls back to copies).
    assert!(map
        .scanout_map(
            memfd(1000).as_fd().into(),
            0,
            100,
            100,
            400,
            PIXMAN_X8R8G8B8
        )
        .is_err());
    let (sock, _peer) = std::os::unix::net::UnixStream::pair().unwrap();
    assert!(map
        .scanout_map(sock.as_fd().into(), 0, 4, 4, 16, PIXMAN_X8R8G8B8)
        .is_err());
    bad += 2;
    // An UpdateDMABUF with a bad rectangle is still answered, at once.
    let start = Instant::now();
    listener.update_dmabuf(-5, 0, 1, 1).unwrap();
    assert!(start.elapsed() < Duration::from_millis(500));

    qemu.barrier();
    assert_eq!(shared.lock().rejected - rejected_before, bad);
    assert_eq!(rendered(&shared), before, "the last good frame stays");

    // And the listener keeps going: a good update lands.
    listener
        .update(1, 1, 1, 1, 4, PIXMAN_X8R8G8B8, Bytes::new(&[0, 0, 0xff, 0]))
        .unwrap();
    qemu.barrier();
    let after = rendered(&shared);
    assert_eq!(
        &after.pixels[(4 + 1) * 4..(4 + 1) * 4 + 4],
        &[0xff, 0, 0, 0xff]
    );
}

#[test]
fn cursor_define_and_mouse_set_are_composited_with_cursor_on() {
    let shared = Arc::new(Shared::default());
    let qemu = FakeQemu::connect(&shared);
    let listener = qemu.listener();
    listener
        .scanout(8, 8, 32, PIXMAN_X8R8G8B8, Bytes::new(&[0; 256]))
        .unwrap();
    // A 2x2 cursor, opaque green (ARGB), hot spot (1, 1), pointer at (4, 5).
    let green: Vec<u8> = [0u8, 0xff, 0, 0xff].repeat(4);
    listener
        .cursor_define(2, 2, 1, 1, Bytes::new(&green))
        .unwrap();
    listener.mouse_set(4, 5, 1).unwrap();
    qemu.barrier();
    let mut frame = RgbaFrame::default();
    assert!(shared.render_now(&mut frame, true));
    let px = |frame: &RgbaFrame, x: u32, y: u32| {
        let i = ((y * 8 + x) * 4) as usize;
        [frame.pixels[i], frame.pixels[i + 1], frame.pixels[i + 2]]
    };
    for (x, y) in [(3, 4), (4, 4), (3, 5), (4, 5)] {
        assert_eq!(px(&frame, x, y), [0, 0xff, 0], "cursor pixel ({x},{y})");
    }
    assert_eq!(px(&frame, 5, 5), [0, 0, 0]);
    assert_eq!(px(&frame, 2, 4), [0, 0, 0]);
    // Hidden pointer: no cursor.
    listener.mouse_set(4, 5, 0).unwrap();
    qemu.barrier();
    assert!(shared.render_now(&mut frame, true));
    assert_eq!(px(&frame, 4, 5), [0, 0, 0]);
}

#[test]
fn disable_writes_a_black_picture_until_the_next_scanout() {
    let shared = Arc::new(Shared::default());
    let qemu = FakeQemu::connect(&shared);
    let listener = qemu.listener();
    let png = qemu.dir.path("edge.png");
    let wait_for = |rgb: [u8; 3]| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(frame) = capture::read_png(&png) {
                if frame.pixels.chunks_exact(4).all(|p| p[..3] == rgb) {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "the PNG never became {rgb:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    listener
        .scanout(4, 4, 16, PIXMAN_X8R8G8B8, Bytes::new(&[0xff; 64]))
        .unwrap();
    wait_for([0xff; 3]);
    listener.disable().unwrap();
    wait_for([0; 3]);
    listener
        .scanout(4, 4, 16, PIXMAN_X8R8G8B8, Bytes::new(&[0x80; 64]))
        .unwrap();
    wait_for([0x80; 3]);
}
