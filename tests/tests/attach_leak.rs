//! Attaching, losing QEMU and attaching again (what `display` does on every
//! QEMU restart) leaves nothing behind: the threads and fds of the process
//! that attaches come back to where they were after each cycle.
//!
//! The attach runs in this test's own process (one test in this file, so
//! the harness starts no other thread), through the same calls as
//! `display`'s re-attach loop: `attach`, wait for QEMU to go, drop the
//! attachment, forget the source.
//!
//! Starts: dbus-daemon, qemu-system-x86_64 (TCG).

use std::sync::Arc;
use std::time::{Duration, Instant};

use dbus_interfaces::ListenerOptions;
use sink::attach::{attach, AttachOptions};
use sink::source::dbus::DbusSource;
use sink::state::{Shared, StopReason};
use tests::*;

fn count(dir: &str) -> usize {
    std::fs::read_dir(format!("/proc/self/{dir}"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// (threads, fds) once they stop changing for a moment (zbus's executor
/// threads end a little after their connection).
fn settled_counts() -> (usize, usize) {
    let mut last = (count("task"), count("fd"));
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(300));
        let now = (count("task"), count("fd"));
        if now == last {
            break;
        }
        last = now;
    }
    last
}

/// One QEMU lifetime: start it, attach, see a frame, kill QEMU, see the
/// disconnect, drop the attachment.
fn cycle(dir: &TempDir, bus: &sink::vm::PrivateBus, shared: &Arc<Shared>, n: usize) {
    let vm = TestVm::on_bus(dir, &format!("leak-vm-{n}"), &bus.plain_address, &[]);
    let options = AttachOptions {
        bus: Some(bus.address.clone()),
        listener: ListenerOptions::default(),
        ..AttachOptions::default()
    };
    let attached = attach(&options, Box::new(DbusSource::new(shared.clone())), shared)
        .expect("attaching to QEMU");
    let deadline = Instant::now() + Duration::from_secs(30);
    while shared.lock().updates == 0 {
        assert!(Instant::now() < deadline, "no frame from QEMU {n}");
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(vm);
    let deadline = Instant::now() + Duration::from_secs(10);
    while shared.lock().stop != Some(StopReason::Disconnected) {
        assert!(Instant::now() < deadline, "QEMU {n}'s end was not seen");
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(attached);
    assert!(shared.forget_source());
    shared.lock().updates = 0;
}

#[test]
fn qemu_restarts_leak_no_thread_and_no_fd() {
    let dir = TempDir::new("leak");
    let bus = private_bus(&dir);
    let shared = Arc::new(Shared::default());
    // The first cycle starts what lives for the whole process (async-io's
    // reactor thread and the like).
    cycle(&dir, &bus, &shared, 0);
    let before = settled_counts();
    for n in 1..=4 {
        cycle(&dir, &bus, &shared, n);
    }
    let after = settled_counts();
    assert_eq!(
        after, before,
        "(threads, fds) after 4 QEMU restarts vs before"
    );
}
