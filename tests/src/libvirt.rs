//! libvirt for the tests: its daemons (`scripts/libvirtd.sh`, root,
//! qemu:///system), `virsh`, and domains of the tests' own (TCG, SeaBIOS
//! with no disk, std VGA, a D-Bus display as asked), destroyed and
//! undefined when dropped.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use capture::{read_png, RgbaFrame};

use crate::TempDir;

pub const URI: &str = "qemu:///system";

fn project_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// libvirt's daemons, running (started if they are not).
pub fn libvirtd() {
    let started = Instant::now();
    let status = Command::new("bash")
        .arg(project_dir().join("scripts/libvirtd.sh"))
        .arg("start")
        .status()
        .expect("running scripts/libvirtd.sh (is libvirt installed? scripts/setup.sh)");
    assert!(status.success(), "scripts/libvirtd.sh start failed");
    eprintln!("libvirtd answers after {:?}", started.elapsed());
}

/// `virsh -c qemu:///system ARGS`, which must succeed.
pub fn virsh(args: &[&str]) -> Output {
    let output = Command::new("virsh")
        .args(["-q", "-c", URI])
        .args(args)
        .output()
        .expect("running virsh");
    assert!(
        output.status.success(),
        "virsh {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// A libvirt domain of a test's: destroyed (and undefined) on drop.
pub struct Domain {
    pub name: String,
}

impl Domain {
    /// The domain XML: SeaBIOS with no disk (its text screen says so), std
    /// VGA, `graphics` as its display (empty: none).
    fn xml(name: &str, graphics: &str) -> String {
        format!(
            "<domain type='qemu'>\n  <name>{name}</name>\n  <memory unit='MiB'>128</memory>\n  \
             <vcpu>1</vcpu>\n  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>\n  \
             <devices>\n    <emulator>/usr/bin/qemu-system-x86_64</emulator>\n    {graphics}\n    \
             <video><model type='vga'/></video>\n    <memballoon model='none'/>\n  </devices>\n</domain>\n"
        )
    }

    /// Started at once (transient).
    pub fn create(dir: &TempDir, tag: &str, graphics: &str) -> Domain {
        let (domain, xml) = Domain::write(dir, tag, graphics);
        virsh(&["create", xml.to_str().unwrap()]);
        domain
    }

    /// Defined, not started.
    pub fn define(dir: &TempDir, tag: &str, graphics: &str) -> Domain {
        let (domain, xml) = Domain::write(dir, tag, graphics);
        virsh(&["define", xml.to_str().unwrap()]);
        domain
    }

    fn write(dir: &TempDir, tag: &str, graphics: &str) -> (Domain, PathBuf) {
        libvirtd();
        let name = format!("qemu-sink-test-{tag}-{}", std::process::id());
        let path = dir.path(&format!("{tag}.xml"));
        std::fs::write(&path, Domain::xml(&name, graphics)).unwrap();
        (Domain { name }, path)
    }

    /// Starts a defined domain.
    pub fn start(&self) {
        let started = Instant::now();
        virsh(&["start", &self.name]);
        eprintln!("virsh start took {:?}", started.elapsed());
    }

    /// The bus address in the live XML.
    pub fn address(&self) -> String {
        let xml = String::from_utf8(virsh(&["dumpxml", &self.name]).stdout).unwrap();
        let at = xml
            .find("address='unix:path=")
            .unwrap_or_else(|| panic!("no bus address in the live XML:\n{xml}"));
        let rest = &xml[at + "address='".len()..];
        rest[..rest.find('\'').unwrap()].to_string()
    }

    /// Stops the guest and its text cursor's blinking, so that the
    /// picture holds still for the comparison (as `TestVm::freeze_screen`).
    pub fn freeze_screen(&self) {
        virsh(&["suspend", &self.name]);
        for io in ["o /b 0x3d4 0x0a", "o /b 0x3d5 0x20"] {
            virsh(&["qemu-monitor-command", &self.name, "--hmp", io]);
        }
    }

    /// libvirt's own picture of the console: the ground truth.
    pub fn screenshot(&self, path: &Path) -> RgbaFrame {
        virsh(&["screenshot", &self.name, "--file", path.to_str().unwrap()]);
        read_png(path).expect("virsh screenshot's PNG")
    }
}

impl Drop for Domain {
    fn drop(&mut self) {
        for args in [["destroy", &self.name], ["undefine", &self.name]] {
            let _ = Command::new("virsh")
                .args(["-q", "-c", URI])
                .args(args)
                .output();
        }
    }
}
