//! `--domain`: VMs started by a real libvirt (Debian's libvirtd, qemu:///system,
//! started by `scripts/libvirtd.sh`), TCG domains with SeaBIOS and a D-Bus
//! display: on the bus libvirt starts for the domain (`<graphics
//! type='dbus'/>`), and peer to peer through `virDomainOpenGraphicsFD`
//! (`p2p='yes'`). `capture --domain` is compared pixel for pixel with
//! `virsh screenshot`; `list` shows the domains; a domain that is off, has
//! no D-Bus display or does not exist, and a user libvirt does not let in,
//! are each one clear error.
//!
//! Starts: libvirtd and virtlogd (left running for the next test), one
//! transient domain per test (destroyed at the end), the qemu-sink binary.
//! Needs root (qemu:///system) and libvirt (scripts/setup.sh installs it).

use std::process::Command;
use std::time::Duration;

use capture::read_png;
use tests::libvirt::{Domain, URI};
use tests::sink_run::Sink;
use tests::*;

/// `capture --domain` until the frozen text screen settles, compared with
/// `virsh screenshot`. Returns the sink's log.
fn capture_matches_screenshot(dir: &TempDir, domain: &Domain) -> String {
    let out = dir.path("sink.png");
    let sink = Sink::spawn(sink_command(&[
        "capture",
        "--domain",
        &domain.name,
        "--connect",
        URI,
        "--out",
        out.to_str().unwrap(),
        "--settle",
        "2",
        "--timeout",
        "80",
    ]));
    wait_for_png(&out, TEXT_MODE_SIZE, Duration::from_secs(60)).unwrap_or_else(|err| {
        panic!(
            "no text screen from the sink: {err:#}; its log:\n{}",
            sink.log()
        )
    });
    // SeaBIOS prints its boot attempts within about a second of text mode.
    std::thread::sleep(Duration::from_secs(3));
    domain.freeze_screen();
    let log = sink.wait(Duration::from_secs(90));
    let truth = domain.screenshot(&dir.path("screenshot.png"));
    let picture = read_png(&out).expect("the sink's PNG");
    assert_eq!((picture.width, picture.height), TEXT_MODE_SIZE, "{log}");
    assert_same_picture(&domain.name, &picture, &truth);
    log
}

#[test]
fn capture_domain_on_libvirts_bus_equals_virsh_screenshot() {
    let dir = TempDir::new("libvirt-bus");
    let domain = Domain::create(&dir, "bus", "<graphics type='dbus'/>");
    let log = capture_matches_screenshot(&dir, &domain);
    let on_bus = format!(
        "domain {}: its display on libvirt's bus unix:path=",
        domain.name
    );
    assert!(log.contains(&on_bus), "{log}");
    assert!(log.contains("in shared memory"), "{log}");

    // `list` shows it, running, on a bus.
    let listing = run_sink(
        sink_command(&["list", "--connect", URI]),
        Duration::from_secs(30),
    );
    let listed = String::from_utf8_lossy(&listing.stdout);
    let line = format!("domain\t{}\t", domain.name);
    let ours = listed
        .lines()
        .find(|l| l.starts_with(&line))
        .unwrap_or_else(|| panic!("{line:?} not in:\n{listed}"));
    assert!(ours.ends_with("\tstate=running\tdisplay=bus"), "{ours}");
}

#[test]
fn capture_domain_p2p_through_libvirt_equals_virsh_screenshot() {
    let dir = TempDir::new("libvirt-p2p");
    let domain = Domain::create(&dir, "p2p", "<graphics type='dbus' p2p='yes'/>");
    let log = capture_matches_screenshot(&dir, &domain);
    let through = format!("domain {}: its display p2p, through libvirt", domain.name);
    assert!(log.contains(&through), "{log}");
}

#[test]
fn a_domain_off_without_dbus_display_or_unknown_is_one_clear_error() {
    let dir = TempDir::new("libvirt-errors");
    let off = Domain::define(&dir, "off", "<graphics type='dbus'/>");
    let plain = Domain::define(&dir, "plain", "");
    let unknown = format!("qemu-sink-test-nosuch-{}", std::process::id());
    for (name, expected) in [
        (&off.name, format!("domain {} is not running", off.name)),
        (
            &plain.name,
            format!("domain {} has no D-Bus display", plain.name),
        ),
        (&unknown, format!("libvirt has no domain {unknown:?}")),
    ] {
        let output = run_sink(
            sink_command(&[
                "capture",
                "--domain",
                name,
                "--connect",
                URI,
                "--out",
                dir.path("never.png").to_str().unwrap(),
                "--timeout",
                "20",
            ]),
            Duration::from_secs(60),
        );
        let log = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{log}");
        assert!(log.contains(&expected), "{expected:?} not in:\n{log}");
        assert!(!dir.path("never.png").exists());
    }
    // A user libvirt does not let in is told who may.
    let open = TempDir::new("libvirt-nobody");
    std::fs::set_permissions(&open.0, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let binary = open.path("qemu-sink");
    std::fs::copy(tests::sink_binary(), &binary).unwrap();
    let mut as_nobody = Command::new("setpriv");
    as_nobody
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(&binary)
        .args(["capture", "--domain", &off.name, "--connect", URI])
        .args(["--out", "/nonexistent/never.png"])
        .env("HOME", &open.0)
        .env("QEMU_SINK_LOG", "info");
    let output = run_sink(as_nobody, Duration::from_secs(60));
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{log}");
    assert!(log.contains("a system URI needs root"), "{log}");

    // An off domain is listed as off, a domain without one as such.
    let listing = run_sink(
        sink_command(&["list", "--connect", URI]),
        Duration::from_secs(30),
    );
    let listed = String::from_utf8_lossy(&listing.stdout);
    assert!(
        listed.contains(&format!("domain\t{}\t", off.name))
            && listed.contains("state=off\tdisplay=bus"),
        "{listed}"
    );
    assert!(listed.contains("state=off\tdisplay=none"), "{listed}");
}
