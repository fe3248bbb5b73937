//! `display` as a systemd service sees it: the notifications it sends to
//! `$NOTIFY_SOCKET` (a datagram socket of the test's, as systemd's would
//! be). `READY=1` once the monitor is lit, before QEMU sends anything;
//! `WATCHDOG=1` every half period while the output loop turns, and none
//! while it is stuck (a writeback commit blocked in the kernel behind a
//! flip whose fence the producer's GPU never signals), while the D-Bus side
//! still answers QEMU; `STOPPING=1` at the end.
//!
//! Starts: dbus-daemon, the fake QEMU, the qemu-sink binary (`display` on
//! vkms), a vgem fence. Needs the lab (`scripts/lab/test.sh service_`).

use std::os::unix::net::UnixDatagram;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sink::output::kms::{find_node, NodeKind};
use tests::attached::Attached;
use tests::fake_qemu::BufferDesc;
use tests::fence::HeldFence;
use tests::lab::{require_lab, two_buffers_the_first_shown};
use tests::TempDir;

/// Every datagram the sink sends, with when it came (read on a thread of
/// its own, so that the times are true while the test waits on QEMU's
/// calls).
struct Notifications(Arc<Mutex<Vec<(Instant, String)>>>);

impl Notifications {
    fn listen(socket: UnixDatagram) -> Notifications {
        let got = Arc::new(Mutex::new(Vec::new()));
        let sink = got.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while let Ok(n) = socket.recv(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                sink.lock().unwrap().push((Instant::now(), text));
            }
        });
        Notifications(got)
    }

    /// Those that came between `from` and `to` (waits until `to`).
    fn between(&self, from: Instant, to: Instant) -> Vec<(Instant, String)> {
        std::thread::sleep(to.saturating_duration_since(Instant::now()));
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, _)| *t >= from && *t <= to)
            .cloned()
            .collect()
    }
}

/// The longest time between two `WATCHDOG=1` among `messages`, counting
/// from `from` to the first and from the last to `to`.
fn longest_gap(messages: &[(Instant, String)], from: Instant, to: Instant) -> Duration {
    let mut times: Vec<Instant> = vec![from];
    times.extend(
        messages
            .iter()
            .filter(|(_, m)| m == "WATCHDOG=1")
            .map(|(t, _)| *t),
    );
    times.push(to);
    times
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default()
}

#[test]
#[ignore = "needs the lab"]
fn service_ready_when_lit_and_the_watchdog_fed_only_while_the_output_turns() {
    require_lab();
    let sockets = TempDir::new("service-notify");
    let path = sockets.path("notify");
    let started = Instant::now();
    let notes = Notifications::listen(UnixDatagram::bind(&path).unwrap());
    let card = find_node(NodeKind::Primary, "vkms").expect("the vkms card");
    let mode = "640x480";
    // A 1 s watchdog: fed every 0.5 s.
    let mut s = Attached::start(
        "service",
        (640, 480),
        "display",
        &["--device", card.to_str().unwrap(), "--mode", mode],
        "--capture",
        &[
            ("NOTIFY_SOCKET", path.to_str().unwrap()),
            ("WATCHDOG_USEC", "1000000"),
        ],
    );
    // Lit (and attached): READY came first, with a status.
    let first = notes.between(started, Instant::now() + Duration::from_secs(1));
    let ready = first
        .iter()
        .position(|(_, m)| m.starts_with("READY=1\nSTATUS="))
        .unwrap_or_else(|| panic!("no READY=1: {first:?}; sink:\n{}", s.sink.log()));
    assert!(
        first[..ready].iter().all(|(_, m)| m == "WATCHDOG=1"),
        "{first:?}"
    );

    // Turning: fed at least every 0.6 s for 3 s (QEMU idle).
    let from = Instant::now();
    let to = from + Duration::from_secs(3);
    let turning = notes.between(from, to);
    let gap = longest_gap(&turning, from, to);
    assert!(
        gap < Duration::from_millis(900),
        "the watchdog went {gap:?} unfed while the output turned: {turning:?}"
    );

    // Stuck: a buffer whose write fence never signals is flipped; the next
    // writeback commit waits behind that flip in the kernel.
    let buffers = two_buffers_the_first_shown(&mut s.listener, &s.out, "the first picture");
    let vgem = find_node(NodeKind::Primary, "vgem").expect("the vgem card");
    let mut fence = HeldFence::new(&vgem).unwrap();
    fence.attach_to(buffers[1].fd()).unwrap();
    let held_at = Instant::now();
    s.listener
        .scanout_dmabuf(buffers[1].fd(), BufferDesc::xrgb(640, 480), false)
        .unwrap();
    let mut answers = Vec::new();
    for _ in 0..4 {
        answers.push(s.listener.update_dmabuf(0, 0, 640, 480).clone());
    }
    let held_until = Instant::now();
    fence.signal().unwrap();
    let stuck = notes.between(held_at, held_until);
    let gap = longest_gap(&stuck, held_at, held_until);
    eprintln!(
        "service: fence held {:?}, longest watchdog gap {gap:?}, answers {:?}",
        held_until - held_at,
        answers.iter().map(|a| a.latency()).collect::<Vec<_>>()
    );
    assert!(
        answers
            .iter()
            .all(|a| a.ok && a.latency() < Duration::from_secs(1)),
        "QEMU was answered meanwhile: {answers:?}"
    );
    assert!(
        gap >= Duration::from_millis(1500),
        "the watchdog was fed while the output was stuck (longest gap {gap:?}): {stuck:?}; sink:\n{}",
        s.sink.log()
    );

    // Unstuck: fed again.
    let from = Instant::now() + Duration::from_secs(2);
    let again = notes.between(from, from + Duration::from_secs(3));
    let fed_again = again.iter().filter(|(_, m)| m == "WATCHDOG=1").count();
    assert!(
        fed_again >= 4,
        "fed {fed_again} times after the fence: {again:?}"
    );

    let stopping = Instant::now();
    let log = s.sink.stop();
    let last = notes.between(stopping, Instant::now() + Duration::from_secs(1));
    assert!(
        last.iter().any(|(_, m)| m == "STOPPING=1"),
        "no STOPPING=1 at the end: {last:?}; sink:\n{log}"
    );
}
