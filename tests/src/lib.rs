//! Test support shared by the end-to-end tests: real QEMUs on a private
//! dbus-daemon, the `qemu-sink` binary run as a user would, QMP ground
//! truth, and the lab marker.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use capture::{compare_rgb, read_png, RgbaFrame};
use serde_json::json;
use sink::qmp::Qmp;
use sink::vm::{start_qemu, Guard, PrivateBus, QemuConfig};

pub use sink;

pub mod attached;
pub mod bench;
pub mod dmabuf;
pub mod fake_qemu;
pub mod fence;
pub mod hostile;
pub mod lab;
pub mod libvirt;
pub mod picture;
pub mod silent_peer;
pub mod sink_run;
pub mod udmabuf;
pub mod uinput;
pub mod vdmabuf;

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("qemu-sink-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("creating a temp dir");
        TempDir(dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A real QEMU (SeaBIOS, no disk, std VGA) with `-display dbus`.
pub struct TestVm {
    pub name: String,
    pub qmp_path: PathBuf,
    qmp: Option<Qmp>,
    _qemu: Guard,
}

impl TestVm {
    /// On the bus at `bus_address` (a plain `unix:path=` address).
    pub fn on_bus(dir: &TempDir, name: &str, bus_address: &str, extra: &[&str]) -> TestVm {
        let mut config = QemuConfig::seabios(name, dir.path(&format!("{name}.qmp")));
        config.bus = Some(bus_address.to_owned());
        config.extra_args = extra.iter().map(|s| s.to_string()).collect();
        let vm = TestVm::start(config);
        // QMP answers a moment before QEMU owns (or queues for) org.qemu.
        let connection = zbus::blocking::connection::Builder::address(bus_address)
            .and_then(|b| b.method_timeout(sink::attach::CALL_TIMEOUT).build())
            .expect("connecting to the test bus");
        sink::attach::wait_for_vm(&connection, name, Duration::from_secs(30))
            .expect("QEMU appears on the bus");
        vm
    }

    /// QEMU's process id (to kill it as a crash would).
    pub fn pid(&self) -> u32 {
        self._qemu.pid()
    }

    /// Bus-less: reached through QMP `add_client` (p2p).
    pub fn p2p(dir: &TempDir, name: &str) -> TestVm {
        TestVm::p2p_with(dir, name, &[])
    }

    /// [`TestVm::p2p`] with `extra` arguments for QEMU.
    pub fn p2p_with(dir: &TempDir, name: &str, extra: &[&str]) -> TestVm {
        let mut config = QemuConfig::seabios(name, dir.path(&format!("{name}.qmp")));
        config.p2p = true;
        config.extra_args = extra.iter().map(|s| s.to_string()).collect();
        TestVm::start(config)
    }

    fn start(config: QemuConfig) -> TestVm {
        let qemu = start_qemu(&config).expect("starting QEMU");
        TestVm {
            name: config.name.clone(),
            qmp_path: config.qmp.clone(),
            qmp: None,
            _qemu: qemu,
        }
    }

    /// QMP allows one client at a time in practice (the sink's `--qmp`
    /// connects too): connect lazily, after the sink has attached.
    fn qmp(&mut self) -> &mut Qmp {
        if self.qmp.is_none() {
            self.qmp = Some(Qmp::connect(&self.qmp_path).expect("connecting to QMP"));
        }
        self.qmp.as_mut().expect("just connected")
    }

    pub fn hmp(&mut self, command: &str) -> String {
        let out = self
            .qmp()
            .execute("human-monitor-command", json!({ "command-line": command }))
            .expect("HMP command");
        out.as_str().unwrap_or_default().to_owned()
    }

    /// Pauses the guest and turns off VGA's blinking text cursor (CRTC
    /// register 0x0a, bit 5), so the screen stops changing: the blink is
    /// drawn by QEMU even while the guest is paused.
    pub fn freeze_screen(&mut self) {
        self.qmp().execute("stop", json!({})).expect("QMP stop");
        self.hmp("o /b 0x3d4 0x0a");
        self.hmp("o /b 0x3d5 0x20");
    }

    /// QEMU's own picture of the console of display device `device` (its
    /// qdev id): the ground truth for a console other than the first.
    pub fn screendump_of(&mut self, path: &Path, device: &str) -> RgbaFrame {
        self.qmp()
            .execute(
                "screendump",
                json!({
                    "filename": path.to_str().expect("utf-8 path"),
                    "format": "png",
                    "device": device,
                }),
            )
            .expect("QMP screendump");
        read_png(path).expect("reading the screendump")
    }

    /// QEMU's own picture of the console: the ground truth.
    pub fn screendump(&mut self, path: &Path) -> RgbaFrame {
        self.qmp()
            .execute(
                "screendump",
                json!({ "filename": path.to_str().expect("utf-8 path"), "format": "png" }),
            )
            .expect("QMP screendump");
        read_png(path).expect("reading the screendump")
    }
}

/// A private session bus.
pub fn private_bus(dir: &TempDir) -> PrivateBus {
    PrivateBus::start(&dir.0).expect("starting dbus-daemon")
}

/// The `qemu-sink` binary built beside this test (cargo builds the
/// workspace's binaries for its tests), or `$QEMU_SINK_BIN`.
pub fn sink_binary() -> PathBuf {
    if let Ok(path) = std::env::var("QEMU_SINK_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test> → target/<profile>/qemu-sink; a bench
    // binary sits in target/<profile> itself.
    let dir = exe.parent().expect("an executable's directory");
    let path = if dir.ends_with("deps") {
        dir.parent().expect("target/<profile>").join("qemu-sink")
    } else {
        dir.join("qemu-sink")
    };
    assert!(
        path.exists(),
        "{} is missing: build the workspace first (cargo build)",
        path.display()
    );
    path
}

/// `qemu-sink` with arguments, as a user would run it.
pub fn sink_command(args: &[&str]) -> Command {
    let mut command = Command::new(sink_binary());
    command.args(args).stdin(Stdio::null());
    command.env("QEMU_SINK_LOG", "info,zbus=warn");
    command
}

/// Runs `qemu-sink` to completion, at most `timeout`.
pub fn run_sink(mut command: Command, timeout: Duration) -> Output {
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = command.spawn().expect("starting qemu-sink");
    let deadline = Instant::now() + timeout;
    while child.try_wait().expect("waiting for qemu-sink").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let output = child.wait_with_output().expect("collecting output");
            panic!(
                "qemu-sink ran past {timeout:?}; stderr:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("collecting output")
}

/// Waits until `path` holds a PNG of `width` x `height`.
pub fn wait_for_png(path: &Path, size: (u32, u32), timeout: Duration) -> anyhow::Result<RgbaFrame> {
    let deadline = Instant::now() + timeout;
    let mut last = None;
    loop {
        if let Ok(frame) = read_png(path) {
            if (frame.width, frame.height) == size {
                return Ok(frame);
            }
            last = Some((frame.width, frame.height));
        }
        if Instant::now() > deadline {
            bail!("{} never showed {size:?} (last: {last:?})", path.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Asserts pixel-for-pixel RGB equality, saving both pictures on failure.
pub fn assert_same_picture(what: &str, sink: &RgbaFrame, truth: &RgbaFrame) {
    if let Err(diff) = compare_rgb(sink, truth, 0) {
        let keep = std::env::temp_dir().join(format!("qemu-sink-failed-{what}"));
        let _ = std::fs::create_dir_all(&keep);
        let _ = capture::write_png_atomic(&keep.join("sink.png"), sink);
        let _ = capture::write_png_atomic(&keep.join("screendump.png"), truth);
        panic!(
            "{what}: the sink's picture differs from QEMU's screendump: {diff} (both kept in {})",
            keep.display()
        );
    }
}

/// The VGA text screen SeaBIOS settles on.
pub const TEXT_MODE_SIZE: (u32, u32) = (720, 400);

/// Waits until the guest has reached its text screen and printed its last
/// line ("No bootable device"), then freezes the screen.
pub fn settle_and_freeze(vm: &mut TestVm, sink_png: &Path) -> anyhow::Result<()> {
    wait_for_png(sink_png, TEXT_MODE_SIZE, Duration::from_secs(60)).context("text mode")?;
    // SeaBIOS prints its boot attempts within about a second of text mode.
    std::thread::sleep(Duration::from_secs(3));
    vm.freeze_screen();
    Ok(())
}

/// True inside the lab VM (`scripts/lab/run.sh` sets it).
pub fn in_lab() -> bool {
    std::env::var_os("QEMU_SINK_LAB").is_some()
}
