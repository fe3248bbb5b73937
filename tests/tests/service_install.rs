//! Installing qemu-sink as a service: `scripts/install.sh` puts the binary
//! and the systemd unit where it says (under a DESTDIR here), the unit's
//! ExecStart names the installed binary, that binary runs, and systemd's
//! own checker (`systemd-analyze verify`) finds nothing wrong with an
//! instance of the unit. (What the running service tells systemd is
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

    let unit = destdir.join("etc/systemd/system/qemu-sink-display@.service");
    let text = std::fs::read_to_string(&unit).unwrap();
    assert!(
        text.contains("ExecStart=/opt/qemu-sink/bin/qemu-sink display --vm %i"),
        "{text}"
    );
    assert!(text.contains("Type=notify") && text.contains("WatchdogSec="));
    assert!(destdir.join("etc/qemu-sink").is_dir());

    // systemd checks an instance, with ExecStart at the binary as
    // installed under DESTDIR (what / would hold).
    let check = dir.path("check");
    std::fs::create_dir_all(&check).unwrap();
    let instance = check.join("qemu-sink-display@testvm.service");
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
        "systemd-analyze verify: {said}"
    );
}
