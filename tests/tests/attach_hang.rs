//! A peer that never answers must not hang the sink: a process that owns
//! (or queues on) `org.qemu` and drops every call, and a QMP socket whose
//! reply never ends. `list` and `capture` end with one clear line naming
//! the peer, within a bound.
//!
//! Starts: dbus-daemon, qemu-system-x86_64 (TCG), the qemu-sink binary.

use std::io::Write;
use std::os::unix::net::UnixListener;
use std::time::{Duration, Instant};

use tests::silent_peer::silent_peer;
use tests::*;

/// Long enough for the sink's per-call bound (5 s) plus start-up, far
/// shorter than "forever".
const BOUND: Duration = Duration::from_secs(20);

fn stderr_of(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn list_ends_with_an_error_naming_a_silent_peer() {
    let dir = TempDir::new("hang-list");
    let bus = private_bus(&dir);
    let (_peer, name) = silent_peer(&bus.address);
    let started = Instant::now();
    let output = run_sink(sink_command(&["list", "--bus", &bus.address]), BOUND);
    let stderr = stderr_of(&output);
    assert!(!output.status.success(), "list succeeded: {stderr}");
    assert!(
        stderr.contains(&name) && stderr.contains("did not answer"),
        "the error names neither the peer {name} nor the silence: {stderr}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn capture_ends_with_an_error_naming_a_silent_peer() {
    let dir = TempDir::new("hang-capture");
    let bus = private_bus(&dir);
    let (_peer, name) = silent_peer(&bus.address);
    let out = dir.path("never.png");
    let output = run_sink(
        sink_command(&[
            "capture",
            "--bus",
            &bus.address,
            "--out",
            out.to_str().unwrap(),
        ]),
        BOUND,
    );
    let stderr = stderr_of(&output);
    assert!(!output.status.success(), "capture succeeded: {stderr}");
    assert!(
        stderr.contains(&name) && stderr.contains("did not answer"),
        "the error names neither the peer {name} nor the silence: {stderr}"
    );
    assert!(!out.exists());
}

#[test]
fn a_silent_peer_ahead_in_the_queue_does_not_hide_the_qemu_behind_it() {
    let dir = TempDir::new("hang-queue");
    let bus = private_bus(&dir);
    let (_peer, name) = silent_peer(&bus.address);
    let _vm = TestVm::on_bus(&dir, "queued-vm", &bus.plain_address, &[]);
    let output = run_sink(sink_command(&["list", "--bus", &bus.address]), BOUND);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = stderr_of(&output);
    assert!(output.status.success(), "{stderr}");
    assert!(stdout.contains("name=\"queued-vm\""), "{stdout}\n{stderr}");
    assert!(
        stderr.contains(&name),
        "the silent peer is not named: {stderr}"
    );

    let out = dir.path("queued.png");
    let output = run_sink(
        sink_command(&[
            "capture",
            "--bus",
            &bus.address,
            "--vm",
            "queued-vm",
            "--out",
            out.to_str().unwrap(),
            "--frames",
            "1",
        ]),
        Duration::from_secs(60),
    );
    assert!(output.status.success(), "{}", stderr_of(&output));
    assert!(capture::read_png(&out).is_ok());
}

/// A QMP socket whose greeting is one line that never ends.
fn endless_qmp(path: &std::path::Path) -> std::thread::JoinHandle<()> {
    let listener = UnixListener::bind(path).expect("binding the fake QMP socket");
    std::thread::spawn(move || {
        let Ok((mut stream, _)) = listener.accept() else {
            return;
        };
        let chunk = [b'x'; 64 * 1024];
        let _ = stream.write_all(b"{\"QMP\": \"");
        // 256 MiB, or until the sink hangs up; then silence, held open.
        for _ in 0..4096 {
            if stream.write_all(&chunk).is_err() {
                return;
            }
        }
        let _ = std::io::Read::read(&mut stream, &mut [0; 1]);
    })
}

#[test]
fn an_endless_qmp_reply_ends_capture_with_an_error() {
    let dir = TempDir::new("hang-qmp");
    let qmp = dir.path("fake.qmp");
    let server = endless_qmp(&qmp);
    let out = dir.path("never.png");
    let started = Instant::now();
    let output = run_sink(
        sink_command(&[
            "capture",
            "--qmp",
            qmp.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]),
        BOUND,
    );
    let stderr = stderr_of(&output);
    assert!(!output.status.success(), "capture succeeded: {stderr}");
    assert!(
        stderr.contains("QMP") && stderr.contains("longer than"),
        "{stderr}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    server.join().unwrap();
}
