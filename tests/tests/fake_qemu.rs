//! The fake QEMU against the real `qemu-sink` binary, beside a real QEMU:
//! discovery of a queued second VM, and `UpdateDMABUF` always answered within
//! QEMU's deadline.
//!
//! Starts: dbus-daemon, qemu-system-x86_64 (TCG), the qemu-sink binary, and
//! the fake QEMU in-process.

use std::os::fd::AsFd;
use std::time::Duration;

use tests::fake_qemu::{BufferDesc, FakeQemu};
use tests::*;

#[test]
fn list_shows_a_fake_qemu_queued_behind_a_real_one() {
    let dir = TempDir::new("fake-list");
    let bus = private_bus(&dir);
    let _real = TestVm::on_bus(&dir, "real-vm", &bus.plain_address, &[]);
    let _fake = FakeQemu::on_bus(
        &bus.address,
        "fake-vm",
        "00000000-0000-4000-8000-0000000000fe",
        (1024, 768),
    )
    .unwrap();
    let out = run_sink(
        sink_command(&["list", "--bus", &bus.address]),
        Duration::from_secs(60),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let real = stdout.find("name=\"real-vm\"").expect("real VM listed");
    let fake = stdout.find("name=\"fake-vm\"").expect("fake VM listed");
    assert!(
        real < fake,
        "the owner of org.qemu first, then the queue:\n{stdout}"
    );
    assert!(stdout.contains("size=1024x768"), "{stdout}");
}

#[test]
fn update_dmabuf_is_always_answered_within_the_deadline() {
    let dir = TempDir::new("fake-dmabuf");
    let bus = private_bus(&dir);
    let fake = FakeQemu::on_bus(
        &bus.address,
        "fake-dmabuf",
        "00000000-0000-4000-8000-0000000000fd",
        (640, 480),
    )
    .unwrap();
    let out = dir.path("never.png");
    let mut sink = sink_command(&[
        "capture",
        "--out",
        out.to_str().unwrap(),
        "--bus",
        &bus.address,
        "--vm",
        "fake-dmabuf",
        "--timeout",
        "6",
    ]);
    sink.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = sink.spawn().unwrap();

    let mut listener = fake.accept_listener(Duration::from_secs(30)).unwrap();
    let interfaces = listener.interfaces().unwrap();
    assert!(
        interfaces.iter().any(|i| i.ends_with("Unix.Map")),
        "{interfaces:?}"
    );
    assert!(
        interfaces.iter().any(|i| i.ends_with("ScanoutDMABUF2")),
        "{interfaces:?}"
    );

    // On the host there is no udmabuf: a memfd stands in for the buffer. The
    // sink must refuse it (it is not a DMA-BUF) and still never leave QEMU
    // waiting.
    let memfd =
        nix::sys::memfd::memfd_create("fake-dmabuf", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
            .unwrap();
    nix::unistd::ftruncate(&memfd, 640 * 480 * 4).unwrap();
    let desc = BufferDesc {
        width: 640,
        height: 480,
        stride: 2560,
        fourcc: 0x3432_4258,
        modifier: 0,
    };
    listener.scanout_dmabuf(memfd.as_fd(), desc, false).unwrap();
    for _ in 0..10 {
        let answer = listener.update_dmabuf(0, 0, 640, 480);
        assert!(
            answer.ok && answer.latency() < Duration::from_secs(1),
            "{answer:?}"
        );
    }
    listener
        .scanout_dmabuf2(&memfd, desc, 0, (0, 0, 320, 240), false)
        .unwrap();
    for _ in 0..10 {
        let answer = listener.update_dmabuf(0, 0, 320, 240);
        assert!(
            answer.ok && answer.latency() < Duration::from_secs(1),
            "{answer:?}"
        );
    }
    // Bad damage is answered too.
    let answer = listener.update_dmabuf(-1, -1, 0, 0);
    assert!(answer.ok, "{answer:?}");

    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    // No frame was ever shown: the capture says so and fails.
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no frame received from QEMU"), "{stderr}");
    assert_eq!(
        stderr.matches("the fd is not a DMA-BUF").count(),
        2,
        "each bad scanout is named once: {stderr}"
    );
}

/// The load generator (`qemu-sink-load`, the fake QEMU as a binary) drives
/// `qemu-sink capture`: every frame it sends arrives, each answered, for 2D
/// copies and for shared memory.
#[test]
fn load_generator_frames_all_arrive() {
    let dir = TempDir::new("fake-load");
    let bus = private_bus(&dir);
    for (kind, name) in [("update", "load-update"), ("map", "load-map")] {
        let load = std::process::Command::new(env!("CARGO_BIN_EXE_qemu-sink-load"))
            .args([
                "--bus",
                &bus.address,
                "--name",
                name,
                "--kind",
                kind,
                "--size",
                "640x480",
                "--rate",
                "200",
                "--frames",
                "50",
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let out = dir.path(&format!("{kind}.png"));
        // 50 updates after the first picture (Scanout or ScanoutMap).
        let sink = run_sink(
            sink_command(&[
                "capture",
                "--bus",
                &bus.address,
                "--vm",
                name,
                "--out",
                out.to_str().unwrap(),
                "--frames",
                "51",
                "--timeout",
                "60",
            ]),
            Duration::from_secs(90),
        );
        let log = String::from_utf8_lossy(&sink.stderr);
        assert!(sink.status.success(), "{log}");
        assert!(log.contains("51 updates, 0 dropped"), "{kind}: {log}");
        let printed = load.wait_with_output().unwrap();
        let line = String::from_utf8_lossy(&printed.stdout);
        assert!(printed.status.success(), "{line}");
        assert!(
            line.contains("50 ") && line.contains(" 0 failed"),
            "{kind}: {line}"
        );
    }
}
