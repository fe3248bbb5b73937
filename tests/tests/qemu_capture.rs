//! `qemu-sink capture` and `list` against real QEMUs (SeaBIOS, std VGA,
//! `-display dbus`) on a private dbus-daemon, compared pixel for pixel with
//! QEMU's own `screendump`.
//!
//! Starts: dbus-daemon, qemu-system-x86_64 (TCG), the qemu-sink binary.

use std::process::Command;
use std::time::Duration;

use capture::read_png;
use tests::sink_run::Sink;
use tests::*;

const SINK_TIMEOUT: Duration = Duration::from_secs(90);

/// Captures `vm` until its frozen screen settles and compares with the
/// screendump. Returns the sink's log.
fn capture_and_compare(
    what: &str,
    dir: &TempDir,
    vm: &mut TestVm,
    attach: &[&str],
    env: &[(&str, &str)],
) -> String {
    let out = dir.path(&format!("{what}.png"));
    let out_str = out.to_str().unwrap();
    let mut args = vec![
        "capture",
        "--out",
        out_str,
        "--settle",
        "2",
        "--timeout",
        "80",
    ];
    args.extend_from_slice(attach);
    let mut command = sink_command(&args);
    for (k, v) in env {
        command.env(k, v);
    }
    let sink = Sink::spawn(command);
    settle_and_freeze(vm, &out).expect("the guest reached its text screen");
    let log = sink.wait(SINK_TIMEOUT);
    let truth = vm.screendump(&dir.path(&format!("{what}-screendump.png")));
    let picture = read_png(&out).expect("the sink's PNG");
    assert_eq!((picture.width, picture.height), TEXT_MODE_SIZE);
    assert_same_picture(what, &picture, &truth);
    log
}

#[test]
fn session_bus_attach_with_shared_memory_is_pixel_exact() {
    let dir = TempDir::new("session");
    let bus = private_bus(&dir);
    let mut vm = TestVm::on_bus(&dir, "session-vm", &bus.plain_address, &[]);
    // No --bus: the session bus from the environment, as a user would have it.
    let log = capture_and_compare(
        "session",
        &dir,
        &mut vm,
        &["--vm", "session-vm"],
        &[("DBUS_SESSION_BUS_ADDRESS", &bus.address)],
    );
    assert!(
        log.contains("scanout 720x400 DrmFourcc(XR24) in shared memory"),
        "{log}"
    );
}

#[test]
fn copies_without_unix_map_follow_the_text_mode_size_change() {
    // Without Unix.Map, QEMU sends a 640x480 Scanout and then only 720x16
    // Updates for the 720x400 text screen: the sink must follow the size.
    let dir = TempDir::new("nomap");
    let bus = private_bus(&dir);
    let mut vm = TestVm::on_bus(&dir, "nomap-vm", &bus.plain_address, &[]);
    let log = capture_and_compare(
        "nomap",
        &dir,
        &mut vm,
        &["--bus", &bus.address, "--no-map"],
        &[],
    );
    assert!(
        log.contains("0 dropped"),
        "no message may be dropped: {log}"
    );
    assert!(
        log.contains("scanout 640x480 DrmFourcc(XR24) by copy"),
        "{log}"
    );
    assert!(!log.contains("shared memory"), "{log}");
    assert!(
        !log.contains("scanout 720x400"),
        "720x400 must arrive as Updates only: {log}"
    );
}

#[test]
fn qmp_p2p_attach_is_pixel_exact() {
    let dir = TempDir::new("p2p");
    let mut vm = TestVm::p2p(&dir, "p2p-vm");
    let qmp = vm.qmp_path.to_str().unwrap().to_owned();
    // The sink's QMP session ends once it has attached; ours starts after.
    capture_and_compare("p2p", &dir, &mut vm, &["--qmp", &qmp], &[]);
}

#[test]
fn vm_option_picks_one_of_two_qemus_on_a_bus() {
    let dir = TempDir::new("two");
    let bus = private_bus(&dir);
    let mut first = TestVm::on_bus(&dir, "first-vm", &bus.plain_address, &[]);
    // The boot menu prompt makes the second VM's screen differ from the first's.
    let mut second = TestVm::on_bus(
        &dir,
        "second-vm",
        &bus.plain_address,
        &[
            "-boot",
            "menu=on,splash-time=100",
            "-uuid",
            "5e1f0000-0000-4000-8000-000000000002",
        ],
    );

    // By UUID, case-insensitively, as a user may paste it.
    let out = dir.path("second.png");
    let sink = Sink::spawn(sink_command(&[
        "capture",
        "--out",
        out.to_str().unwrap(),
        "--settle",
        "2",
        "--timeout",
        "80",
        "--bus",
        &bus.address,
        "--vm",
        "5E1F0000-0000-4000-8000-000000000002",
    ]));
    settle_and_freeze(&mut second, &out).unwrap();
    first.freeze_screen();
    sink.wait(SINK_TIMEOUT);
    let picture = read_png(&out).unwrap();
    let truth = second.screendump(&dir.path("second-screendump.png"));
    assert_same_picture("second-vm", &picture, &truth);
    let other = first.screendump(&dir.path("first-screendump.png"));
    assert!(
        capture::compare_rgb(&picture, &other, 0).is_err(),
        "the two VMs' screens must differ for this test to mean anything"
    );
}

#[test]
fn list_shows_every_qemu_and_fails_on_an_empty_bus() {
    let dir = TempDir::new("list");
    let bus = private_bus(&dir);

    let empty = run_sink(sink_command(&["list", "--bus", &bus.address]), SINK_TIMEOUT);
    assert_eq!(empty.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&empty.stderr);
    assert_eq!(stderr.lines().count(), 1, "one line of reason: {stderr}");
    assert!(stderr.contains("no QEMU"), "{stderr}");

    let _a = TestVm::on_bus(
        &dir,
        "list-a",
        &bus.plain_address,
        &["-uuid", "00000000-0000-4000-8000-00000000000a"],
    );
    let _b = TestVm::on_bus(
        &dir,
        "list-b",
        &bus.plain_address,
        &["-uuid", "00000000-0000-4000-8000-00000000000b"],
    );

    let listed = run_sink(sink_command(&["list", "--bus", &bus.address]), SINK_TIMEOUT);
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let stdout = String::from_utf8_lossy(&listed.stdout);
    for (name, uuid) in [
        ("list-a", "00000000-0000-4000-8000-00000000000a"),
        ("list-b", "00000000-0000-4000-8000-00000000000b"),
    ] {
        let line = stdout
            .lines()
            .find(|l| l.contains(&format!("name=\"{name}\"")))
            .unwrap_or_else(|| panic!("{name} not listed:\n{stdout}"));
        assert!(line.starts_with(":1."), "unique name first: {line}");
        assert!(line.contains(uuid), "{line}");
    }
    let consoles: Vec<_> = stdout
        .lines()
        .filter(|l| l.trim_start().starts_with("console 0"))
        .collect();
    assert_eq!(consoles.len(), 2, "{stdout}");
    assert!(
        consoles
            .iter()
            .all(|c| c.contains("label=\"VGA\"") && c.contains("type=Graphic")),
        "{stdout}"
    );
}

#[test]
fn sigterm_writes_the_last_frame_and_exits_zero() {
    let dir = TempDir::new("sigterm");
    let bus = private_bus(&dir);
    let mut vm = TestVm::on_bus(&dir, "sigterm-vm", &bus.plain_address, &[]);
    let out = dir.path("sigterm.png");
    let sink = Sink::spawn(sink_command(&[
        "capture",
        "--out",
        out.to_str().unwrap(),
        "--bus",
        &bus.address,
    ]));
    settle_and_freeze(&mut vm, &out).unwrap();
    // Let the frozen screen reach the sink, then stop it the way a service
    // manager would (SIGTERM).
    std::thread::sleep(Duration::from_secs(2));
    std::fs::remove_file(&out).unwrap();
    let log = sink.stop();
    assert!(log.contains("stopped: signal 15"), "{log}");
    let picture = read_png(&out).expect("the PNG written on SIGTERM");
    let truth = vm.screendump(&dir.path("sigterm-screendump.png"));
    assert_same_picture("sigterm", &picture, &truth);
}

#[test]
fn frames_option_stops_after_that_many_updates() {
    let dir = TempDir::new("frames");
    let bus = private_bus(&dir);
    let _vm = TestVm::on_bus(&dir, "frames-vm", &bus.plain_address, &[]);
    let out = dir.path("frames.png");
    let output = run_sink(
        sink_command(&[
            "capture",
            "--out",
            out.to_str().unwrap(),
            "--bus",
            &bus.address,
            "--frames",
            "3",
            "--timeout",
            "60",
        ]),
        SINK_TIMEOUT,
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("stopped: frame count reached"), "{stderr}");
    assert!(read_png(&out).is_ok());
}

#[test]
fn demo_captures_seabios_and_cleans_up() {
    let dir = TempDir::new("demo");
    let out = dir.path("demo.png");
    let output = run_sink(
        sink_command(&["demo", "--out", out.to_str().unwrap(), "--seconds", "8"]),
        SINK_TIMEOUT,
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let picture = read_png(&out).unwrap();
    assert_eq!((picture.width, picture.height), TEXT_MODE_SIZE);
    // SeaBIOS's banner is light grey on black: some pixels must be lit.
    assert!(
        picture.pixels.chunks_exact(4).any(|p| p[0] > 128),
        "a black picture"
    );
    // Nothing it started may outlive it.
    let leftovers = Command::new("pgrep")
        .args(["-f", "qemu-sink-demo"])
        .output()
        .unwrap();
    assert!(
        leftovers.stdout.is_empty(),
        "left running: {}",
        String::from_utf8_lossy(&leftovers.stdout)
    );
}

#[test]
fn a_console_that_does_not_exist_is_one_clear_error() {
    let dir = TempDir::new("console");
    let bus = private_bus(&dir);
    let _vm = TestVm::on_bus(&dir, "console-vm", &bus.plain_address, &[]);
    let out = dir.path("none.png");
    let output = run_sink(
        sink_command(&[
            "capture",
            "--out",
            out.to_str().unwrap(),
            "--bus",
            &bus.address,
            "--console",
            "7",
            "--timeout",
            "5",
        ]),
        SINK_TIMEOUT,
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr
            .lines()
            .any(|l| l == "qemu-sink: QEMU has no console 7"),
        "{stderr}"
    );
    assert!(!out.exists());
}
