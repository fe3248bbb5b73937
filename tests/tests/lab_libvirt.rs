//! `qemu-sink display --domain` in the lab: a libvirt domain on a KMS
//! monitor (vkms), followed when it is destroyed and started again. A
//! libvirtd runs inside the lab VM itself (`scripts/libvirtd.sh`: Debian's
//! libvirt 11.3, qemu:///system, root), and its domain is a nested TCG
//! QEMU: SeaBIOS with std VGA, no disk, `<graphics type='dbus'/>` (the
//! bus libvirt starts for the domain, whose address names the domain's
//! id, so it changes with every start).
//!
//! What a user sees is checked: the monitor (vkms's writeback) shows the
//! guest's text screen as `virsh screenshot` has it, letterboxed onto the
//! monitor's mode; after `virsh destroy` it is black and the log says QEMU
//! went away; after `virsh start` the log says QEMU is back, and the
//! monitor shows the new run's screen; the sink ran all along.
//!
//! Starts: virtlogd and libvirtd (inside the lab), one defined domain
//! (destroyed and undefined at the end), the qemu-sink binary. Needs the
//! lab (`scripts/lab/test.sh libvirt`) and libvirt (scripts/setup.sh).

use std::path::Path;
use std::time::{Duration, Instant};

use capture::RgbaFrame;
use sink::output::kms::{find_node, NodeKind};
use tests::lab::require_lab;
use tests::libvirt::{libvirtd, virsh, Domain, URI};
use tests::picture::letterboxed;
use tests::sink_run::{opaque, wait_for_picture, Sink};
use tests::*;

/// How many 720x400 (VGA text mode) scanouts the sink has logged.
fn text_mode_scanouts(sink: &Sink) -> usize {
    sink.log().matches("scanout 720x400").count()
}

/// Waits for the guest's text screen to reach the monitor, freezes it and
/// checks that the monitor shows what `virsh screenshot` shows, letterboxed
/// onto vkms's 1024x768 (vkms cannot scale: GL composes it, so within the
/// filter's rounding).
fn monitor_shows_the_guest(
    what: &str,
    dir: &TempDir,
    domain: &Domain,
    sink: &Sink,
    out: &Path,
    before: usize,
) {
    let started = Instant::now();
    // Text mode: the sink logs the 720x400 scanout; `before` of them were
    // logged before this run started (the first run's), counted by the
    // caller before it started the domain: the new one may come before
    // this is called.
    let scanouts = || text_mode_scanouts(sink);
    let deadline = started + Duration::from_secs(120);
    while scanouts() == before {
        assert!(
            Instant::now() < deadline,
            "{what}: no 720x400 scanout in 120 s; sink's log:\n{}",
            sink.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "{what}: text mode on the sink after {:?}",
        started.elapsed()
    );
    // SeaBIOS prints its boot attempts within a few seconds of text mode
    // (under nested TCG, slower than on the host).
    std::thread::sleep(Duration::from_secs(5));
    domain.freeze_screen();
    let truth = domain.screenshot(&dir.path(&format!("{what}-screenshot.png")));
    assert_eq!((truth.width, truth.height), TEXT_MODE_SIZE, "{what}");
    let want = letterboxed(&opaque(&truth), (1024, 768));
    tests::sink_run::wait_for_picture_within(what, out, &want, 3, Duration::from_secs(30));
    eprintln!(
        "{what}: monitor equals virsh screenshot after {:?}",
        started.elapsed()
    );
}

fn sink_is_running(sink: &Sink) -> bool {
    // A process that exited stays a zombie until waited for: state Z.
    std::fs::read_to_string(format!("/proc/{}/stat", sink.pid()))
        .map(|stat| {
            let state = stat.rsplit(')').next().unwrap_or("").trim_start();
            !state.starts_with('Z')
        })
        .unwrap_or(false)
}

/// `display --domain` shows the domain, goes black when it is destroyed,
/// and shows it again once `virsh start` has started it anew (on a new bus:
/// the domain is looked up again).
#[test]
#[ignore = "needs the lab"]
fn display_domain_of_libvirt_follows_it_through_destroy_and_start() {
    require_lab();
    let dir = TempDir::new("lab-libvirt");
    libvirtd();
    let domain = Domain::define(&dir, "lab", "<graphics type='dbus'/>");
    domain.start();
    let first_bus = domain.address();
    let card = find_node(NodeKind::Primary, "vkms").expect("the vkms card");
    let out = dir.path("monitor.png");
    let sink = Sink::spawn(sink_command(&[
        "display",
        "--domain",
        &domain.name,
        "--connect",
        URI,
        "--device",
        card.to_str().unwrap(),
        "--capture",
        out.to_str().unwrap(),
    ]));
    monitor_shows_the_guest("first run", &dir, &domain, &sink, &out, 0);
    let on_bus = format!(
        "domain {}: its display on libvirt's bus {first_bus}",
        domain.name
    );
    assert!(
        sink.log().contains(&on_bus),
        "{on_bus:?} not in:\n{}",
        sink.log()
    );

    // Destroyed: the monitor stays lit, black.
    let destroyed = Instant::now();
    virsh(&["destroy", &domain.name]);
    assert!(
        sink.wait_for_log("QEMU went away", Duration::from_secs(30)),
        "{}",
        sink.log()
    );
    let mut black = RgbaFrame::default();
    black.reset(1024, 768);
    for px in black.pixels.chunks_exact_mut(4) {
        px[3] = 255;
    }
    wait_for_picture("after virsh destroy", &out, &black, Duration::from_secs(30));
    eprintln!("black after {:?}", destroyed.elapsed());
    // Off for a while: the sink keeps looking, and keeps running.
    std::thread::sleep(Duration::from_secs(3));
    assert!(sink_is_running(&sink), "{}", sink.log());

    // Started again: a new domain id, so a new bus.
    let first_runs = text_mode_scanouts(&sink);
    let restarted = Instant::now();
    domain.start();
    let second_bus = domain.address();
    assert_ne!(first_bus, second_bus, "libvirt's bus address names the run");
    assert!(
        sink.wait_for_log("QEMU is back: attached again", Duration::from_secs(60)),
        "{}",
        sink.log()
    );
    eprintln!("attached again {:?} after virsh start", restarted.elapsed());
    monitor_shows_the_guest("second run", &dir, &domain, &sink, &out, first_runs);
    assert!(sink_is_running(&sink), "{}", sink.log());
    let log = sink.stop();
    let on_new_bus = format!(
        "domain {}: its display on libvirt's bus {second_bus}",
        domain.name
    );
    assert!(log.contains(&on_new_bus), "{on_new_bus:?} not in:\n{log}");
    let went = log.find("QEMU went away").expect("went away");
    let back = log.find("QEMU is back: attached again").expect("is back");
    assert!(went < back, "{log}");
    drop(domain);
    drop(dir);
}
