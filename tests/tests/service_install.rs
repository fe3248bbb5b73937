//! Installing qemu-sink as a service: `scripts/install.sh` puts the binary,
//! its man pages, its completions and the systemd units (a VM by name, a
//! libvirt domain) where it says (under a DESTDIR here), each unit's
//! ExecStart names the installed binary, that binary runs, and systemd's
//! own checker (`systemd-analyze verify`) finds nothing wrong with an
//! instance of each unit; the man page documents `display --domain` and
//! the bash completion parses. (What the running service tells systemd is
//! `lab_service.rs`.)
//!
//! Starts: bash, systemd-analyze, the installed qemu-sink.

use std::path::Path;
use std::process::Command;

use tests::{sink_binary, TempDir};

#[test]
fn install_script_puts_a_unit_that_systemd_verifies() {
    let dir = TempDir::new("install");
    let destdir = dir.path("root");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/install.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg("--binary")
        .arg(sink_binary())
        .args(["--prefix", "/opt/qemu-sink"])
        .arg("--destdir")
        .arg(&destdir)
        .output()
        .expect("running scripts/install.sh");
    assert!(
        out.status.success(),
        "install.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let binary = destdir.join("opt/qemu-sink/bin/qemu-sink");
    let version = Command::new(&binary).arg("--version").output().unwrap();
    assert!(version.status.success());
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("qemu-sink "));

    assert!(destdir.join("etc/qemu-sink").is_dir());
    // Each unit: ExecStart at the installed binary, and systemd finds
    // nothing wrong with an instance of it.
    for (unit, command) in [
        ("qemu-sink-display", "display --vm %i"),
        ("qemu-sink-domain", "display --domain %i"),
    ] {
        let path = destdir.join(format!("etc/systemd/system/{unit}@.service"));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains(&format!("ExecStart=/opt/qemu-sink/bin/qemu-sink {command}")),
            "{text}"
        );
        assert!(text.contains("Type=notify") && text.contains("WatchdogSec="));
        verify_instance(&dir, unit, &text, &binary);
    }

    // The man pages and completions, made from the command line.
    let man = destdir.join("opt/qemu-sink/share/man/man1");
    let display = std::fs::read_to_string(man.join("qemu-sink-display.1")).unwrap();
    assert!(display.contains(".TH qemu-sink-display 1"), "{display}");
    assert!(display.contains("\\-\\-domain"), "{display}");
    assert!(man.join("qemu-sink.1").is_file());
    let share = destdir.join("opt/qemu-sink/share");
    let bash = share.join("bash-completion/completions/qemu-sink");
    let check = Command::new("bash").arg("-n").arg(&bash).output().unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(std::fs::read_to_string(&bash).unwrap().contains("--domain"));
    for file in [
        "zsh/site-functions/_qemu-sink",
        "fish/vendor_completions.d/qemu-sink.fish",
    ] {
        let text = std::fs::read_to_string(share.join(file)).unwrap();
        assert!(text.contains("domain"), "{file}: {text}");
    }
}

/// `systemd-analyze verify` of an instance of `unit` (text as installed),
/// with ExecStart at the binary as installed under DESTDIR (what / would
/// hold).
fn verify_instance(dir: &TempDir, unit: &str, text: &str, binary: &Path) {
    let check = dir.path("check");
    std::fs::create_dir_all(&check).unwrap();
    let instance = check.join(format!("{unit}@testvm.service"));
    std::fs::write(
        &instance,
        text.replace("/opt/qemu-sink/bin/qemu-sink", binary.to_str().unwrap()),
    )
    .unwrap();
    let verify = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&instance)
        .output()
        .expect("systemd-analyze (Debian: systemd)");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    assert!(
        verify.status.success() && said.trim().is_empty(),
        "systemd-analyze verify {unit}: {said}"
    );
}
