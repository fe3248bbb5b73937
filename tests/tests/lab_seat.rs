//! The seat: `qemu-sink display` run as an ordinary user (no root, in no
//! group that opens /dev/dri or /dev/input) under seatd, the card and the
//! input devices handed out by libseat. The monitor lights with the guest's
//! picture and its keys reach the guest; Ctrl+Alt+F2 typed on the keyboard
//! switches the VT away through the seat, QEMU's frames are answered
//! within its deadline meanwhile and no key reaches the guest; back on VT 1
//! (`chvt 1`, through seatd) the monitor shows the newest picture and keys
//! flow again.
//!
//! Starts: seatd (as root, its socket for one group), a dbus-daemon open
//! to every user, the fake QEMU, a uinput keyboard, and the qemu-sink
//! binary under `setpriv` as `nobody`. Needs the lab
//! (`scripts/lab/test.sh seat`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dbus_interfaces::qemu_side::InputCall::*;
use drm_fourcc::DrmFourcc;
use sink::output::kms::{find_node, NodeKind};
use tests::fake_qemu::{BufferDesc, FakeQemu};
use tests::lab::{require_lab, Observer};
use tests::sink_run::{opaque, Sink};
use tests::udmabuf::Udmabuf;
use tests::uinput::{Spec, VirtualDevice, EV_KEY};
use tests::{sink_binary, TempDir};

/// The unprivileged user the sink runs as (`nobody`: dbus-daemon refuses
/// a uid that has no passwd entry), and the group seatd serves.
const USER: u32 = 65534;
const SEAT_GROUP: (&str, u32) = ("qemusinkseat", 1600);
const SEATD_SOCKET: &str = "/run/seatd.sock";
const SIZE: (u32, u32) = (640, 480);
const KEY_LEFTCTRL: u16 = 29;
const KEY_LEFTALT: u16 = 56;
const KEY_A: u16 = 30;
const KEY_B: u16 = 48;
const KEY_F2: u16 = 60;

/// seatd serving seat0 to one group; stopped (and its socket gone, so
/// that later tests in the same lab find no seat) when dropped.
struct Seatd(Child);

impl Seatd {
    fn start(log: &Path) -> Seatd {
        let status = Command::new("groupadd")
            .args(["-f", "-g", &SEAT_GROUP.1.to_string(), SEAT_GROUP.0])
            .status()
            .expect("groupadd");
        assert!(status.success(), "groupadd {}", SEAT_GROUP.0);
        let _ = std::fs::remove_file(SEATD_SOCKET);
        let child = Command::new("seatd")
            .args(["-g", SEAT_GROUP.0, "-l", "debug"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).expect("seatd's log"))
            .spawn()
            .expect("starting seatd (apt install seatd: scripts/setup.sh)");
        let seatd = Seatd(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !Path::new(SEATD_SOCKET).exists() {
            assert!(Instant::now() < deadline, "seatd made no {SEATD_SOCKET}");
            std::thread::sleep(Duration::from_millis(50));
        }
        seatd
    }

    /// Still running (seatd 0.7 aborts on some client mistakes).
    fn alive(&mut self) -> bool {
        matches!(self.0.try_wait(), Ok(None))
    }
}

impl Drop for Seatd {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.0.wait();
        let _ = std::fs::remove_file(SEATD_SOCKET);
    }
}

/// A dbus-daemon every user may connect to (an abstract socket, a policy
/// for all): the fake QEMU runs as root, the sink as `USER`.
struct OpenBus {
    child: Child,
    address: String,
}

impl OpenBus {
    fn start(dir: &TempDir) -> OpenBus {
        let config = dir.path("bus.conf");
        std::fs::write(
            &config,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:abstract=/qemu-sink-seat-test-{}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"#,
                std::process::id()
            ),
        )
        .unwrap();
        let mut child = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", config.display()))
            .args(["--nofork", "--nosyslog", "--print-address=1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting dbus-daemon");
        let mut line = String::new();
        use std::io::BufRead;
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        OpenBus {
            child,
            address: line.trim().to_owned(),
        }
    }
}

impl Drop for OpenBus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn active_vt() -> String {
    std::fs::read_to_string("/sys/class/tty/tty0/active")
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// Switches to VT `n` as root does with `chvt` (VT_ACTIVATE on the
/// console).
fn chvt(n: i32) {
    nix::ioctl_write_int_bad!(vt_activate, 0x5606);
    let console = std::fs::File::options()
        .read(true)
        .write(true)
        .open("/dev/tty0")
        .expect("/dev/tty0");
    // SAFETY: VT_ACTIVATE takes the VT number by value.
    unsafe { vt_activate(std::os::fd::AsRawFd::as_raw_fd(&console), n) }.expect("VT_ACTIVATE");
}

fn wait_for_vt(vt: &str, sink: &Sink) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while active_vt() != vt {
        assert!(
            Instant::now() < deadline,
            "the active VT is {:?}, not {vt}; sink:\n{}",
            active_vt(),
            sink.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Ctrl+Alt+`key` on `keyboard`, each key in a frame of its own.
fn ctrl_alt(keyboard: &mut VirtualDevice, key: u16) {
    for (code, value) in [
        (KEY_LEFTCTRL, 1),
        (KEY_LEFTALT, 1),
        (key, 1),
        (key, 0),
        (KEY_LEFTALT, 0),
        (KEY_LEFTCTRL, 0),
    ] {
        keyboard.frame(&[(EV_KEY, code, value)]).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits for the monitor (the buffer vkms's CRTC scans out) to show `want`.
fn wait_for_monitor(card: &Path, want: &capture::RgbaFrame, what: &str, sink: &Sink) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(shown) = Observer::open(card).scanned_out_picture() {
            if capture::compare_rgb(&opaque(&shown), want, 0).is_ok() {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{what}: the monitor never showed the picture; sink:\n{}",
            sink.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
#[ignore = "needs the lab"]
fn seat_an_unprivileged_display_under_seatd_survives_a_vt_switch_away_and_back() {
    require_lab();
    let dir = TempDir::new("seat");
    // The sink (another user) writes its report here.
    std::fs::set_permissions(&dir.0, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let mut seatd = Seatd::start(&dir.path("seatd.log"));
    let bus = OpenBus::start(&dir);
    let fake = FakeQemu::on_bus(
        &bus.address,
        "seat-vm",
        "00000000-0000-4000-8000-0000000005ea",
        SIZE,
    )
    .unwrap();
    let mut keyboard = VirtualDevice::create(&Spec::keyboard("qemu-sink seat keyboard")).unwrap();
    let card = find_node(NodeKind::Primary, "vkms").expect("the vkms card");
    assert_eq!(active_vt(), "tty1", "the lab starts on tty1");
    let report: PathBuf = dir.path("report.json");
    let mut command = Command::new("setpriv");
    command
        .arg(format!("--reuid={USER}"))
        .arg(format!("--regid={USER}"))
        .arg(format!("--groups={}", SEAT_GROUP.1))
        .arg("--")
        .arg(sink_binary())
        .args([
            "display",
            "--bus",
            &bus.address,
            "--vm",
            "seat-vm",
            "--seat",
            "seat0",
        ])
        .args(["--device", "vkms", "--mode", "640x480"])
        .args(["--input-device", keyboard.node.to_str().unwrap()])
        .args(["--report", report.to_str().unwrap()])
        .env("QEMU_SINK_LOG", "info,zbus=warn")
        .stdin(Stdio::null());
    let sink = Sink::spawn(command);
    let seatd_log = || std::fs::read_to_string(dir.path("seatd.log")).unwrap_or_default();
    let mut listener = match fake.accept_listener(Duration::from_secs(60)) {
        Ok(listener) => listener,
        Err(err) => panic!("{err:#}; sink:\n{}\nseatd:\n{}", sink.abort(), seatd_log()),
    };
    assert!(
        sink.log().contains("seat: seat0 (through libseat)"),
        "the sink took the seat: {}",
        sink.log()
    );

    // Lit, with the guest's picture, by a process that could not open
    // the card itself.
    let mut buffers = [
        Udmabuf::new(SIZE.0, SIZE.1, DrmFourcc::Xrgb8888).unwrap(),
        Udmabuf::new(SIZE.0, SIZE.1, DrmFourcc::Xrgb8888).unwrap(),
    ];
    buffers[1].fill(1).unwrap();
    listener
        .scanout_dmabuf(buffers[0].fd(), BufferDesc::xrgb(SIZE.0, SIZE.1), false)
        .unwrap();
    assert!(listener.update_dmabuf(0, 0, 640, 480).ok);
    wait_for_monitor(
        &card,
        &opaque(&buffers[0].expected(0)),
        "at the start",
        &sink,
    );

    // Keys reach the guest (the keyboard came through the seat too).
    keyboard.tap(KEY_A).unwrap();
    let typed = fake.inputs_until_quiet(Duration::from_secs(2));
    assert_eq!(
        typed,
        [KeyPress(0x1e), KeyRelease(0x1e)],
        "sink:\n{}",
        sink.log()
    );

    // Ctrl+Alt+F2: through the seat to VT 2. The guest sees Ctrl and Alt
    // come and go, never the F2.
    ctrl_alt(&mut keyboard, KEY_F2);
    wait_for_vt("tty2", &sink);
    assert!(
        sink.wait_for_log("was switched away", Duration::from_secs(10)),
        "{}",
        sink.log()
    );
    let calls = fake.inputs_until_quiet(Duration::from_secs(1));
    assert!(
        !calls.contains(&KeyPress(0x3c)),
        "F2 reached the guest: {calls:?}"
    );

    // Away: QEMU's frames are still answered within its deadline, and
    // keys typed now are the other VT's.
    for buffer in [&buffers[1], &buffers[0], &buffers[1]] {
        listener
            .scanout_dmabuf(buffer.fd(), BufferDesc::xrgb(SIZE.0, SIZE.1), false)
            .unwrap();
        let answer = listener.update_dmabuf(0, 0, 640, 480).clone();
        assert!(
            answer.ok && answer.latency() < Duration::from_millis(900),
            "a frame while away: answered {} in {:?}",
            answer.ok,
            answer.latency()
        );
    }
    keyboard.tap(KEY_B).unwrap();
    assert_eq!(
        fake.inputs_until_quiet(Duration::from_secs(1)),
        [],
        "a key typed on the other VT reached the guest"
    );

    // Back to VT 1, as `chvt 1` does (the kernel's console on VT 2 took
    // Ctrl+Alt+F1 only now and then in the lab): seatd gets the VT back and
    // gives the seat to the sink again.
    chvt(1);
    wait_for_vt("tty1", &sink);
    assert!(
        sink.wait_for_log("is ours again", Duration::from_secs(10)),
        "{}",
        sink.log()
    );
    // The newest picture (sent while away) is on the monitor again.
    wait_for_monitor(
        &card,
        &opaque(&buffers[1].expected(1)),
        "back from VT 2",
        &sink,
    );
    // And keys flow again, once the keyboard is open again.
    let deadline = Instant::now() + Duration::from_secs(10);
    let typed = loop {
        keyboard.tap(KEY_B).unwrap();
        let typed = fake.inputs_until_quiet(Duration::from_secs(1));
        if !typed.is_empty() || Instant::now() > deadline {
            break typed;
        }
    };
    assert_eq!(
        typed,
        [KeyPress(0x30), KeyRelease(0x30)],
        "sink:\n{}",
        sink.log()
    );
    assert!(seatd.alive(), "seatd died:\n{}", seatd_log());

    let (status, log) = sink.terminate(Duration::from_secs(10));
    assert!(status.success(), "the sink's exit: {status}; log:\n{log}");
    assert!(
        seatd.alive(),
        "seatd died when the sink left:\n{}",
        seatd_log()
    );
    eprintln!(
        "seat: {}",
        log.lines()
            .filter(|l| l.contains("seat"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
