//! The DRM lab (`scripts/lab/`): the marker every lab test checks first, and
//! a nested QEMU that renders with GL on a render node, which exists only
//! there.
//!
//! Lab tests are `#[ignore = "needs the lab"]`, so a host `cargo test` lists
//! them as ignored; `scripts/lab/test.sh` runs them all in one lab boot.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use drm::control::Device as _;
use sink::vm::{qemu_binary, Guard};

use crate::TempDir;

/// The first call of every lab test: panics, saying how to run it, outside
/// the lab (where there is no DRM, no udmabuf and no render node).
pub fn require_lab() {
    assert!(
        crate::in_lab(),
        "this test needs the lab: run it through scripts/lab/test.sh \
         (or scripts/lab/run.sh CMD), which boots a VM with vkms, vgem and /dev/udmabuf"
    );
}

/// A QEMU with `-display dbus,gl=on,rendernode=…` on a bus: QEMU draws the
/// console into a GL texture and hands it to listeners as a DMA-BUF
/// (`ScanoutDMABUF` / `UpdateDMABUF`). `sink::vm::start_qemu` always passes
/// its own `-display dbus`, so the command line is built here.
pub struct GlQemu {
    pub name: String,
    pub qmp_path: PathBuf,
    stderr_path: PathBuf,
    _qemu: Guard,
}

impl GlQemu {
    /// Starts SeaBIOS with std VGA (no disk) and waits until it is on the
    /// bus at `bus_address` (a plain `unix:path=` address: no commas).
    pub fn on_bus(dir: &TempDir, name: &str, bus_address: &str, render_node: &Path) -> GlQemu {
        let qmp_path = dir.path(&format!("{name}.qmp"));
        let stderr_path = dir.path(&format!("{name}.stderr"));
        let stderr = std::fs::File::create(&stderr_path).expect("creating QEMU's stderr file");
        let display = format!(
            "dbus,gl=on,rendernode={},addr={bus_address}",
            render_node.display()
        );
        let mut command = Command::new(qemu_binary());
        command
            .args(["-accel", "tcg", "-m", "128", "-nodefaults", "-vga", "std"])
            .args(["-display", &display])
            .args(["-name", name])
            .arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", qmp_path.display()))
            .args(["-serial", "none", "-monitor", "none", "-parallel", "none"])
            // Mesa would otherwise try the render node's own driver (vgem has
            // none that renders): llvmpipe does the work, vgem only allocates.
            .env("LIBGL_ALWAYS_SOFTWARE", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        let mut qemu = Guard::spawn("qemu (gl)", &mut command).expect("starting QEMU");

        let deadline = Instant::now() + Duration::from_secs(60);
        while std::os::unix::net::UnixStream::connect(&qmp_path).is_err() {
            assert!(
                qemu.is_running(),
                "QEMU exited at start-up; its stderr:\n{}",
                read_tail(&stderr_path)
            );
            assert!(
                Instant::now() < deadline,
                "QEMU's QMP socket did not appear in 60 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let vm = GlQemu {
            name: name.to_owned(),
            qmp_path,
            stderr_path,
            _qemu: qemu,
        };
        let connection = zbus::blocking::connection::Builder::address(bus_address)
            .and_then(|b| b.build())
            .expect("connecting to the test bus");
        if let Err(err) = sink::attach::wait_for_vm(&connection, name, Duration::from_secs(60)) {
            panic!(
                "QEMU did not appear on the bus: {err}; its stderr:\n{}",
                vm.stderr()
            );
        }
        vm
    }

    /// QEMU's process id (to kill it as a crash would).
    pub fn pid(&self) -> u32 {
        self._qemu.pid()
    }

    /// What QEMU wrote to stderr so far (the last 4 KiB), for failure messages.
    pub fn stderr(&self) -> String {
        read_tail(&self.stderr_path)
    }
}

fn read_tail(path: &Path) -> String {
    let mut text = String::new();
    if let Ok(mut file) = std::fs::File::open(path) {
        let _ = file.read_to_string(&mut text);
    }
    let start = text.len().saturating_sub(4096);
    let start = (start..=text.len())
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(text.len());
    text[start..].to_owned()
}

/// A directory to keep a failed test's pictures in: `<target>/lab-failures/
/// <what>`, beside the test executable, so that it outlives the lab VM
/// (whose /tmp is thrown away) and the host can open it.
pub fn failure_dir(what: &str) -> PathBuf {
    let name: String = what
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    // target/<profile>/deps/<test executable> → target/lab-failures
    let base = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.parent()?.join("lab-failures")))
        .unwrap_or_else(std::env::temp_dir);
    let dir = base.join(name);
    let _ = std::fs::create_dir_all(&dir);
    dir
}

/// A DRM node opened without master, to look at what the sink shows.
pub struct Observer(File);

impl AsFd for Observer {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}
impl drm::Device for Observer {}
impl drm::control::Device for Observer {}

impl Observer {
    /// An observer on a fd already open (e.g. another process's, duplicated).
    pub fn from_fd(fd: std::os::fd::OwnedFd) -> Observer {
        Observer(File::from(fd))
    }

    pub fn into_file(self) -> File {
        self.0
    }

    /// Opens the card to look at it. The first opener of a card no one
    /// drives becomes DRM master: an observer gives that up at once, so that
    /// a sink starting meanwhile is not refused the card.
    pub fn open(path: &Path) -> Observer {
        let observer = Observer(
            File::options()
                .read(true)
                .write(true)
                .open(path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display())),
        );
        let _ = drm::Device::release_master_lock(&observer);
        observer
    }

    /// The DMA-BUF inode behind the framebuffer a lit CRTC scans out now
    /// (GETFB2 hands root the buffer's handle; exporting it gives back the
    /// DMA-BUF it was imported from).
    pub fn scanned_out_inode(&self) -> Option<u64> {
        let resources = self.resource_handles().ok()?;
        let fb = resources
            .crtcs()
            .iter()
            .find_map(|&c| self.get_crtc(c).ok()?.framebuffer())?;
        let info = self.get_planar_framebuffer(fb).ok()?;
        let handle = info.buffers()[0]?;
        let fd = self.buffer_to_prime_fd(handle, drm::CLOEXEC).ok()?;
        Some(nix::sys::stat::fstat(&fd).ok()?.st_ino)
    }

    /// The picture a lit CRTC scans out now, read from its framebuffer's
    /// memory (root gets the buffer through GETFB2 and PRIME): what the
    /// monitor shows, without a writeback commit. `None` when no CRTC
    /// scans out anything or the buffer cannot be mapped.
    pub fn scanned_out_picture(&self) -> Option<capture::RgbaFrame> {
        let resources = self.resource_handles().ok()?;
        let fb = resources
            .crtcs()
            .iter()
            .find_map(|&c| self.get_crtc(c).ok()?.framebuffer())?;
        let info = self.get_planar_framebuffer(fb).ok()?;
        let handle = info.buffers()[0]?;
        let fd = self.buffer_to_prime_fd(handle, drm::CLOEXEC).ok()?;
        let (width, height) = info.size();
        let layout = crate::dmabuf::Layout {
            width,
            height,
            stride: info.pitches()[0],
            offset: info.offsets()[0],
            fourcc: info.pixel_format(),
        };
        crate::dmabuf::read_picture(&fd, layout).ok()
    }
}

pub fn inode(fd: BorrowedFd<'_>) -> u64 {
    nix::sys::stat::fstat(fd).unwrap().st_ino
}

/// Asserts from `qemu-sink display`'s log that `frames` 640x480 XRGB8888
/// frames went on the plane directly, with no CPU copy.
pub fn assert_shown_directly(log: &str, frames: u64) {
    assert!(
        log.contains("640x480 DrmFourcc(XR24) (modifier 0x0, stride 2560): direct scanout"),
        "{log}"
    );
    assert!(
        log.contains(&format!("({frames} direct, 0 composed)")),
        "{log}"
    );
    assert!(
        log.contains("CPU bytes copied on the direct path: 0"),
        "{log}"
    );
}

/// The sysfs directories of `card`'s non-writeback connectors in the
/// kernel's order (`/sys/class/drm/card1-Virtual-2`, ...).
fn connector_dirs(card: &Path) -> Vec<PathBuf> {
    let card = card.file_name().unwrap().to_str().unwrap().to_owned();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/sys/class/drm")
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with(&format!("{card}-")) && !name.contains("Writeback")
        })
        .collect();
    // By connector id: the order the kernel lists them in.
    dirs.sort_by_key(|dir| {
        std::fs::read_to_string(dir.join("connector_id"))
            .ok()
            .and_then(|id| id.trim().parse::<u32>().ok())
    });
    dirs
}

/// The sysfs directory of `card`'s first non-writeback connector.
fn first_connector_dir(card: &Path) -> PathBuf {
    connector_dirs(card)
        .into_iter()
        .next()
        .expect("the card's connector in sysfs")
}

/// The kernel's names of `card`'s non-writeback connectors, in order.
pub fn connectors(card: &Path) -> Vec<String> {
    let prefix = card.file_name().unwrap().to_string_lossy().len() + 1;
    connector_dirs(card)
        .iter()
        .map(|dir| dir.file_name().unwrap().to_string_lossy()[prefix..].to_owned())
        .collect()
}

/// The kernel's name of `card`'s first non-writeback connector, as
/// `--connector` takes it (`Virtual-2`: the number counts connectors of
/// that type across cards).
pub fn first_connector(card: &Path) -> String {
    let dir = first_connector_dir(card);
    let name = dir.file_name().unwrap().to_string_lossy();
    let card = card.file_name().unwrap().to_string_lossy();
    name[card.len() + 1..].to_owned()
}

/// Puts a connector's forced state back (`detect`) even if the test fails.
pub struct ForcedConnector(PathBuf);

impl ForcedConnector {
    /// The sysfs `status` file of `card`'s first non-writeback connector.
    pub fn of(card: &Path) -> ForcedConnector {
        ForcedConnector(first_connector_dir(card).join("status"))
    }

    /// The sysfs `status` file of `card`'s connector `name` (`Virtual-2`).
    pub fn named(card: &Path, name: &str) -> ForcedConnector {
        let card = card.file_name().unwrap().to_string_lossy();
        ForcedConnector(PathBuf::from(format!(
            "/sys/class/drm/{card}-{name}/status"
        )))
    }

    pub fn force(&self, how: &str) {
        std::fs::write(&self.0, how).unwrap_or_else(|e| panic!("{}: {e}", self.0.display()));
    }
}

impl Drop for ForcedConnector {
    fn drop(&mut self) {
        let _ = std::fs::write(&self.0, "detect");
    }
}

/// vkms's preferred mode, as the lab's vkms takes it at run time (module
/// parameters `preferred_width`/`preferred_height`): the next probe of its
/// connector prefers that size, as if another monitor were plugged in.
/// Put back (vkms's own 1024x768) on drop, even if the test fails.
pub struct PreferredMode;

impl PreferredMode {
    fn write(width: u32, height: u32) {
        for (name, value) in [("preferred_width", width), ("preferred_height", height)] {
            let path = format!("/sys/module/vkms/parameters/{name}");
            std::fs::write(&path, value.to_string()).unwrap_or_else(|e| {
                panic!("{path}: {e} (the lab's vkms lacks the parameter: scripts/lab/setup.sh)")
            });
        }
    }

    pub fn set(width: u32, height: u32) -> PreferredMode {
        PreferredMode::write(width, height);
        PreferredMode
    }

    pub fn change(&self, width: u32, height: u32) {
        PreferredMode::write(width, height);
    }
}

impl Drop for PreferredMode {
    fn drop(&mut self) {
        for name in ["preferred_width", "preferred_height"] {
            let _ = std::fs::write(format!("/sys/module/vkms/parameters/{name}"), "0");
        }
    }
}

/// Takes DRM master away from a running sink as a VT switch would: its
/// card fd is duplicated into this process (`pidfd_getfd`, root) and
/// `DROP_MASTER`ed, then this process holds master on a fd of its own
/// until it lets go.
pub struct MasterThief {
    _theirs: std::os::fd::OwnedFd,
    ours: Option<std::fs::File>,
}

impl MasterThief {
    pub fn steal(pid: u32, card: &Path) -> MasterThief {
        use std::os::fd::{FromRawFd, OwnedFd};
        let fd_number = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .filter_map(|e| e.ok())
            .find(|e| std::fs::read_link(e.path()).is_ok_and(|t| t == card))
            .expect("the sink's card fd")
            .file_name()
            .to_string_lossy()
            .parse::<i32>()
            .unwrap();
        // SAFETY: plain syscalls; each returned fd is new and owned here.
        let theirs = unsafe {
            let pidfd = libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0);
            assert!(
                pidfd >= 0,
                "pidfd_open: {}",
                std::io::Error::last_os_error()
            );
            let pidfd = OwnedFd::from_raw_fd(pidfd as i32);
            use std::os::fd::AsRawFd;
            let fd = libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd_number, 0);
            assert!(fd >= 0, "pidfd_getfd: {}", std::io::Error::last_os_error());
            OwnedFd::from_raw_fd(fd as i32)
        };
        let dup = Observer::from_fd(theirs.try_clone().unwrap());
        drm::Device::release_master_lock(&dup).expect("DROP_MASTER on the sink's fd");
        let ours = Observer::open(card);
        drm::Device::acquire_master_lock(&ours).expect("SET_MASTER for us");
        MasterThief {
            _theirs: theirs,
            ours: Some(ours.into_file()),
        }
    }

    /// Lets go of master (closing our fd drops it).
    pub fn give_back(&mut self) {
        self.ours = None;
    }
}

/// Sets the soft limit `resource` (`libc::RLIMIT_*`) of process `pid` to
/// `soft` (the hard limit stays); returns the soft limit it had.
pub fn set_soft_limit(pid: u32, resource: libc::__rlimit_resource_t, soft: u64) -> u64 {
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: prlimit writes the current limits to `old`, a live struct.
    let ret = unsafe { libc::prlimit(pid as libc::pid_t, resource, std::ptr::null(), &mut old) };
    assert_eq!(ret, 0, "prlimit: {}", std::io::Error::last_os_error());
    let new = libc::rlimit {
        rlim_cur: soft,
        rlim_max: old.rlim_max,
    };
    // SAFETY: prlimit reads `new`, a live struct.
    let ret = unsafe { libc::prlimit(pid as libc::pid_t, resource, &new, std::ptr::null_mut()) };
    assert_eq!(ret, 0, "prlimit: {}", std::io::Error::last_os_error());
    old.rlim_cur
}

/// Two 640x480 udmabufs (patterns 0 and 1), the first sent to the sink
/// on `listener` and shown: its picture at `out` (`what` names it).
pub fn two_buffers_the_first_shown(
    listener: &mut crate::fake_qemu::FakeListener,
    out: &Path,
    what: &str,
) -> [crate::udmabuf::Udmabuf; 2] {
    use crate::fake_qemu::BufferDesc;
    use crate::udmabuf::Udmabuf;
    use drm_fourcc::DrmFourcc;
    let mut buffers = [
        Udmabuf::new(640, 480, DrmFourcc::Xrgb8888).unwrap(),
        Udmabuf::new(640, 480, DrmFourcc::Xrgb8888).unwrap(),
    ];
    buffers[1].fill(1).unwrap();
    listener
        .scanout_dmabuf(buffers[0].fd(), BufferDesc::xrgb(640, 480), false)
        .unwrap();
    assert!(listener.update_dmabuf(0, 0, 640, 480).ok);
    crate::sink_run::wait_for_picture(
        what,
        out,
        &crate::sink_run::opaque(&buffers[0].expected(0)),
        Duration::from_secs(30),
    );
    buffers
}
