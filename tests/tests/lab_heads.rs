//! Several heads: each console of a VM on a monitor of its own
//! (`display --head CONSOLE=CARD:CONNECTOR`), here console 0 on vkms and
//! console 1 on virtio-gpu. Each monitor shows its own console exactly,
//! each head answers its own frames after its own flips, and one head
//! unplugged never stalls the other.
//!
//! Starts: dbus-daemon, the fake QEMU with two consoles, the qemu-sink
//! binary. Every test needs the lab (`scripts/lab/test.sh display_heads`).

use std::time::Duration;

use drm_fourcc::DrmFourcc;
use serde_json::Value;
use sink::output::kms::{find_node, NodeKind};
use tests::fake_qemu::{BufferDesc, FakeListener, FakeQemu};
use tests::lab::{connectors, first_connector, require_lab, ForcedConnector};
use tests::picture::letterboxed;
use tests::sink_run::{opaque, wait_for_picture, wait_for_picture_within, Sink};
use tests::udmabuf::Udmabuf;
use tests::*;

const UUID: &str = "00000000-0000-4000-8000-00000000bead";
const SIZE: (u32, u32) = (640, 480);

/// Sends `buffer` (its pattern `frame`) as the whole console and checks
/// QEMU's answer came before the deadline.
fn send(listener: &mut FakeListener, buffer: &Udmabuf) -> Duration {
    listener
        .scanout_dmabuf(buffer.fd(), BufferDesc::xrgb(SIZE.0, SIZE.1), false)
        .unwrap();
    let answer = listener
        .update_dmabuf(0, 0, SIZE.0 as i32, SIZE.1 as i32)
        .clone();
    assert!(answer.ok, "QEMU's UpdateDMABUF was not answered in time");
    answer.latency()
}

/// The sink's listeners on consoles 0 and 1. QEMU serves every console's
/// listener at once (a head's handshake has 5 s): both are accepted side
/// by side.
fn accept_both(fake: &FakeQemu, sink: &Sink) -> (FakeListener, FakeListener) {
    let accept = |id| match fake.accept_listener_on(id, Duration::from_secs(90)) {
        Ok(listener) => listener,
        Err(err) => panic!("{err:#}; sink:\n{}", sink.log()),
    };
    std::thread::scope(|scope| {
        let second = scope.spawn(|| accept(1));
        (accept(0), second.join().expect("accepting console 1"))
    })
}

/// Waits (60 s at most) until `out` shows `buffer` filled with pattern
/// `frame`, opaque.
fn shows(what: &str, out: &std::path::Path, buffer: &Udmabuf, frame: u32) {
    let want = opaque(&buffer.expected(frame));
    wait_for_picture(what, out, &want, Duration::from_secs(60));
}

fn read_report(path: &std::path::Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

#[test]
#[ignore = "needs the lab"]
fn display_heads_two_consoles_on_two_monitors_one_unplugged() {
    require_lab();
    let dir = TempDir::new("lab-heads");
    let bus = private_bus(&dir);
    let fake = FakeQemu::with_consoles(&bus.address, "heads", UUID, &[SIZE, SIZE]).unwrap();
    let vkms = find_node(NodeKind::Primary, "vkms").expect("the vkms card");
    let virtio = find_node(NodeKind::Primary, "virtio_gpu").expect("the virtio-gpu card");
    let head0 = format!("0={}:{}", vkms.display(), first_connector(&vkms));
    let head1 = format!("1={}:{}", virtio.display(), first_connector(&virtio));
    let (capture, report) = (dir.path("screen.png"), dir.path("report.json"));
    let sink = Sink::spawn(sink_command(&[
        "display",
        "--bus",
        &bus.address,
        "--vm",
        "heads",
        "--head",
        &head0,
        "--head",
        &head1,
        "--mode",
        "640x480",
        "--capture",
        capture.to_str().unwrap(),
        "--report",
        report.to_str().unwrap(),
    ]));
    let (mut first, mut second) = accept_both(&fake, &sink);
    let (out0, out1) = (dir.path("screen-0.png"), dir.path("screen-1.png"));

    // Each console a picture of its own, each on its own monitor.
    let mut buffers: Vec<Udmabuf> = (0..4)
        .map(|_| Udmabuf::new(SIZE.0, SIZE.1, DrmFourcc::Xrgb8888).unwrap())
        .collect();
    for (n, buffer) in buffers.iter_mut().enumerate() {
        buffer.fill(n as u32).unwrap();
    }
    send(&mut first, &buffers[0]);
    send(&mut second, &buffers[1]);
    shows("head 0 (vkms)", &out0, &buffers[0], 0);
    shows("head 1 (virtio-gpu)", &out1, &buffers[1], 1);

    // Each console told its monitor and where it stands: head 1's to the
    // right of head 0's (both 640x480). Head 1 may have been told (0, 0)
    // before head 0 lit; the last word is what counts.
    let placed = |id: usize| {
        let mut last = None;
        while let Some(info) = fake.next_ui_info_on(id, Duration::from_secs(3)) {
            last = Some(info);
        }
        last.map(|i| (i.width, i.height, i.xoff, i.yoff))
    };
    assert_eq!(placed(0), Some((640, 480, 0, 0)), "head 0 told");
    assert_eq!(placed(1), Some((640, 480, 640, 0)), "head 1 told its place");

    // Head 0's monitor unplugged: its frames are answered at once, head 1
    // goes on showing its new frames.
    let connector = ForcedConnector::of(&vkms);
    connector.force("off");
    assert!(
        sink.wait_for_log("was unplugged", Duration::from_secs(10)),
        "the sink never noticed the unplug: {}",
        sink.log()
    );
    let latency = send(&mut first, &buffers[2]);
    assert!(
        latency < Duration::from_millis(800),
        "head 0 answered in {latency:?}"
    );
    send(&mut second, &buffers[3]);
    shows("head 1 while head 0 is unplugged", &out1, &buffers[3], 3);

    // Plugged back: head 0 shows its next frame.
    connector.force("on");
    assert!(
        sink.wait_for_log("is back: lit at", Duration::from_secs(10)),
        "the sink never noticed the replug: {}",
        sink.log()
    );
    send(&mut first, &buffers[2]);
    shows("head 0 after the replug", &out0, &buffers[2], 2);
    let log = sink.stop();

    // A summary and a report per head, each counting its own frames.
    assert!(log.contains("head 0: display on"), "{log}");
    assert!(log.contains("head 1: display on"), "{log}");
    let frames = |id| read_report(&dir.path(&format!("report-{id}.json")))["frames"].clone();
    let (f0, f1) = (frames(0), frames(1));
    assert_eq!(f0["received"], 3, "head 0: {f0}");
    assert_eq!(f0["skipped"], 1, "head 0's frame while unplugged: {f0}");
    assert_eq!(f1["received"], 2, "head 1: {f1}");
    assert_eq!(f1["skipped"], 0, "head 1: {f1}");
}

/// The lab's virtio-gpu and its two outputs' names, the second forced
/// connected while the guard lives.
fn one_card_two_outputs() -> (std::path::PathBuf, Vec<String>, ForcedConnector) {
    let virtio = find_node(NodeKind::Primary, "virtio_gpu").expect("the virtio-gpu card");
    let names = connectors(&virtio);
    assert!(
        names.len() >= 2,
        "the lab's virtio-gpu has one output ({names:?}): max_outputs=2 missing"
    );
    let second = ForcedConnector::named(&virtio, &names[1]);
    second.force("on");
    (virtio, names, second)
}

/// `display` of the VM `attach` reaches with consoles 0 and 1 on `card`'s
/// outputs `names`, in `mode`, capturing to `capture`, with `extra`.
fn display_on_one_card(
    attach: &[&str],
    card: &std::path::Path,
    names: &[String],
    mode: &str,
    capture: &std::path::Path,
    extra: &[&str],
) -> Sink {
    let heads = [format!("0={}", names[0]), format!("1={}", names[1])];
    let mut args = vec!["display"];
    args.extend_from_slice(attach);
    args.extend_from_slice(&[
        "--device",
        card.to_str().unwrap(),
        "--head",
        &heads[0],
        "--head",
        &heads[1],
        "--mode",
        mode,
        "--capture",
        capture.to_str().unwrap(),
    ]);
    args.extend_from_slice(extra);
    Sink::spawn(sink_command(&args))
}

/// Two heads on one card (the lab's virtio-gpu has two outputs; the second
/// forced connected): one open file is master for both, each head's flip
/// events reach it whichever head's thread read them off the card. Frames
/// sent to both consoles at once from two threads: each monitor shows its
/// own console's last picture exactly, and every frame shown was answered
/// only after its own flip's event was read. The same connector given
/// twice is refused.
#[test]
#[ignore = "needs the lab"]
fn display_heads_two_consoles_on_one_card() {
    require_lab();
    let (virtio, names, _second) = one_card_two_outputs();
    let refused = run_sink(
        sink_command(&[
            "display",
            "--device",
            virtio.to_str().unwrap(),
            "--head",
            &format!("0={}", names[0]),
            "--head",
            &format!("1={}", names[0]),
        ]),
        Duration::from_secs(30),
    );
    let log = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{log}");
    assert!(log.contains("are both given"), "{log}");

    let dir = TempDir::new("lab-heads-one-card");
    let bus = private_bus(&dir);
    let fake = FakeQemu::with_consoles(&bus.address, "onecard", UUID, &[SIZE, SIZE]).unwrap();
    let (capture, report) = (dir.path("screen.png"), dir.path("report.json"));
    let sink = display_on_one_card(
        &["--bus", &bus.address, "--vm", "onecard"],
        &virtio,
        &names,
        "640x480",
        &capture,
        &["--report", report.to_str().unwrap()],
    );
    let (mut first, mut second_listener) = accept_both(&fake, &sink);

    // Each console its own buffers, sent at once from two threads, so that
    // the two CRTCs' flip events come interleaved on the one card.
    const FRAMES: usize = 8;
    let make = |base: u32| -> Vec<Udmabuf> {
        (0..2)
            .map(|n| {
                let mut buffer = Udmabuf::new(SIZE.0, SIZE.1, DrmFourcc::Xrgb8888).unwrap();
                buffer.fill(base + n).unwrap();
                buffer
            })
            .collect()
    };
    let (buffers0, buffers1) = (make(10), make(20));
    // The last frame sent to each: its buffer 1.
    let wants = [
        opaque(&buffers0[1].expected(11)),
        opaque(&buffers1[1].expected(21)),
    ];
    let run = |listener: &mut FakeListener, buffers: &[Udmabuf]| {
        for n in 0..FRAMES {
            send(listener, &buffers[n % 2]);
        }
    };
    // (Answered in time is checked by `send`; the first frames of a cold
    // renderer may be answered by the deadline, which is no routing fault.)
    std::thread::scope(|scope| {
        // The listener stays alive past the thread: dropped, it would end
        // console 1's attachment.
        let second = &mut second_listener;
        let other = scope.spawn(move || run(second, &buffers1));
        run(&mut first, &buffers0);
        other.join().expect("console 1's sender");
    });
    for (id, want) in wants.iter().enumerate() {
        wait_for_picture(
            &format!("head {id} on {}", names[id]),
            &dir.path(&format!("screen-{id}.png")),
            want,
            Duration::from_secs(60),
        );
    }
    let log = sink.stop();
    assert!(log.contains("head 0: display on"), "{log}");
    assert!(log.contains("head 1: display on"), "{log}");
    assert!(!log.contains("flip tracking missed"), "{log}");
    assert!(!log.contains("no page-flip event"), "{log}");

    // Every frame shown was answered after its own flip's event was read
    // by (or for) its head.
    for id in 0..2 {
        let report = read_report(&dir.path(&format!("report-{id}.json")));
        assert_eq!(report["frames"]["received"], FRAMES, "head {id}: {report}");
        let samples = report["samples"].as_array().expect("samples");
        let shown: Vec<&Value> = samples.iter().filter(|s| s["skipped"] == false).collect();
        assert!(!shown.is_empty(), "head {id} showed nothing: {report}");
        for sample in shown {
            let at = |key: &str| sample[key].as_u64();
            let (flipped, read, released) =
                (at("flipped_us"), at("event_read_us"), at("released_us"));
            assert!(
                flipped.is_some() && read.is_some() && released.is_some(),
                "head {id}: {sample}"
            );
            assert!(
                flipped <= read && read <= released,
                "head {id}: answered before its flip: {sample}"
            );
        }
    }
}

/// One mouse and one keyboard for two heads: the monitors stand side by
/// side in head order (640x480 each, showing their 640x480 consoles one to
/// one), the pointer crosses from console 0's monitor onto console 1's at
/// the right edge and back at the left, and the keys go to the console
/// whose monitor has the pointer. A button held while crossing is released
/// on the console it was pressed on, and its physical release goes nowhere.
#[test]
#[ignore = "needs the lab"]
fn input_the_pointer_crosses_from_head_to_head_and_the_keys_follow_it() {
    use dbus_interfaces::format::PIXMAN_X8R8G8B8;
    use dbus_interfaces::qemu_side::InputCall::{self, *};
    use tests::uinput::{Spec, VirtualDevice, BTN_LEFT, EV_KEY, EV_REL, REL_X, REL_Y};
    const KEY_A: u16 = 30;

    require_lab();
    let mut mouse = VirtualDevice::create(&Spec::mouse("qemu-sink heads mouse")).unwrap();
    let mut keyboard = VirtualDevice::create(&Spec::keyboard("qemu-sink heads keyboard")).unwrap();
    let (virtio, names, _second) = one_card_two_outputs();
    let dir = TempDir::new("lab-heads-input");
    let bus = private_bus(&dir);
    let fake = FakeQemu::with_consoles(&bus.address, "headsinput", UUID, &[SIZE, SIZE]).unwrap();
    let sink = display_on_one_card(
        &["--bus", &bus.address, "--vm", "headsinput"],
        &virtio,
        &names,
        "640x480",
        &dir.path("screen.png"),
        &[
            "--input-device",
            mouse.node.to_str().unwrap(),
            "--input-device",
            keyboard.node.to_str().unwrap(),
        ],
    );
    let (first, second) = accept_both(&fake, &sink);
    // Each console shows a picture, so that its monitor has placed it.
    let pixels = vec![0x40u8; (SIZE.0 * SIZE.1 * 4) as usize];
    for listener in [&first, &second] {
        listener
            .listener()
            .scanout(
                SIZE.0,
                SIZE.1,
                SIZE.0 * 4,
                PIXMAN_X8R8G8B8,
                serde_bytes::Bytes::new(&pixels),
            )
            .unwrap();
    }
    for id in 0..2 {
        fake.set_absolute_on(id, true).unwrap();
        assert!(
            sink.wait_for_log(
                &format!("input: sending to console {id}"),
                Duration::from_secs(30)
            ),
            "{}",
            sink.log()
        );
    }
    let next = |id: usize, what: &str| -> InputCall {
        fake.next_input_on(id, Duration::from_secs(10))
            .unwrap_or_else(|| {
                panic!(
                    "console {id}: no input call for {what}; sink:\n{}",
                    sink.log()
                )
            })
    };
    let quiet = |id: usize, what: &str| {
        let calls: Vec<InputCall> =
            std::iter::from_fn(|| fake.next_input_on(id, Duration::from_secs(1))).collect();
        assert!(calls.is_empty(), "console {id} {what}: {calls:?}");
    };

    // Into console 0's top-left corner (until its monitor has the picture
    // placed: the first position comes then).
    let mut placed = false;
    for _ in 0..30 {
        mouse
            .frame(&[(EV_REL, REL_X, -100_000), (EV_REL, REL_Y, -100_000)])
            .unwrap();
        if let Some(call) = fake.next_input_on(0, Duration::from_secs(1)) {
            assert_eq!(call, AbsPosition(0, 0), "the top-left corner");
            placed = true;
            break;
        }
    }
    assert!(
        placed,
        "no position on console 0 within 30 s; sink:\n{}",
        sink.log()
    );
    while fake.next_input_on(0, Duration::from_millis(500)).is_some() {}
    keyboard.tap(KEY_A).unwrap();
    assert_eq!(next(0, "A"), KeyPress(30));
    assert_eq!(next(0, "A"), KeyRelease(30));
    quiet(1, "while the pointer is on console 0's monitor");

    // 700 px right from x 0: the last pixel of monitor 0, then 60 px into
    // monitor 1, at the same height.
    mouse
        .frame(&[(EV_REL, REL_X, 700), (EV_REL, REL_Y, 100)])
        .unwrap();
    assert_eq!(next(0, "up to the edge"), AbsPosition(639, 100));
    assert_eq!(next(1, "across the edge"), AbsPosition(60, 100));
    keyboard.tap(KEY_A).unwrap();
    assert_eq!(next(1, "A on console 1"), KeyPress(30));
    assert_eq!(next(1, "A on console 1"), KeyRelease(30));
    quiet(0, "once the pointer left its monitor");

    // A drag back across the left edge: pressed on console 1, released
    // there when the pointer leaves; console 0 gets the pointer only.
    mouse.frame(&[(EV_KEY, BTN_LEFT, 1)]).unwrap();
    assert_eq!(next(1, "the press"), ButtonPress(0));
    mouse.frame(&[(EV_REL, REL_X, -100)]).unwrap();
    assert_eq!(next(1, "up to the left edge"), AbsPosition(0, 100));
    assert_eq!(next(1, "the release as it leaves"), ButtonRelease(0));
    assert_eq!(next(0, "back on monitor 0"), AbsPosition(600, 100));
    mouse.frame(&[(EV_KEY, BTN_LEFT, 0)]).unwrap();
    keyboard.tap(KEY_A).unwrap();
    assert_eq!(next(0, "A back on console 0"), KeyPress(30));
    assert_eq!(next(0, "A back on console 0"), KeyRelease(30));
    quiet(1, "after the drag");
    let log = sink.stop();
    assert!(!log.contains("panicked"), "{log}");
    drop((first, second));
}

/// A real QEMU with two consoles (std VGA running SeaBIOS, and a
/// secondary VGA no one programs, which QEMU fills with its "not
/// initialized" picture), reached bus-less (`--qmp`, p2p), on the two
/// outputs of one card: each monitor shows its own console, equal to
/// QEMU's screendump of that console (letterboxed into the mode). Both
/// heads share the one p2p connection QEMU keeps (a second would drop the
/// first): neither head ever loses QEMU.
#[test]
#[ignore = "needs the lab"]
fn display_heads_a_real_qemus_two_consoles_each_equal_its_screendump() {
    require_lab();
    let (virtio, names, _second) = one_card_two_outputs();
    let dir = TempDir::new("lab-heads-qemu");
    let mut vm = TestVm::p2p_with(&dir, "twoheads", &["-device", "secondary-vga,id=second"]);
    let qmp = vm.qmp_path.to_str().unwrap().to_owned();
    let capture = dir.path("screen.png");
    let sink = display_on_one_card(
        &["--qmp", &qmp],
        &virtio,
        &names,
        "1024x768",
        &capture,
        &["--no-input"],
    );
    if !sink.wait_for_log("scanout 720x400", Duration::from_secs(90)) {
        panic!("SeaBIOS's text screen never came:\n{}", sink.abort());
    }
    // SeaBIOS prints its last line within a second or two of text mode;
    // then the screen is frozen (paused, the text cursor off).
    std::thread::sleep(Duration::from_secs(3));
    vm.freeze_screen();
    let truths = [
        vm.screendump(&dir.path("screendump-0.png")),
        vm.screendump_of(&dir.path("screendump-1.png"), "second"),
    ];
    assert_eq!((truths[0].width, truths[0].height), TEXT_MODE_SIZE);
    assert_ne!(
        (truths[1].width, truths[1].height),
        TEXT_MODE_SIZE,
        "console 1 is not the VGA's"
    );
    for (id, truth) in truths.iter().enumerate() {
        let want = letterboxed(&opaque(truth), (1024, 768));
        let out = dir.path(&format!("screen-{id}.png"));
        let what = format!("head {id} on {} vs console {id}'s screendump", names[id]);
        wait_for_picture_within(&what, &out, &want, 3, Duration::from_secs(60));
    }
    let log = sink.stop();
    assert!(log.contains("head 0: display on"), "{log}");
    assert!(log.contains("head 1: display on"), "{log}");
    assert!(!log.contains("QEMU went away"), "a head lost QEMU: {log}");
}

/// One head, no `--console`: it shows console 0 and watches console 1;
/// when console 0 goes idle (a boot VGA after the guest's driver took over
/// another console) and console 1 draws, the head moves to console 1 and
/// shows its picture. With `--console 0` nothing else is watched.
#[test]
#[ignore = "needs the lab"]
fn display_follows_the_console_in_use_unless_pinned() {
    require_lab();
    let dir = TempDir::new("lab-follow");
    let bus = private_bus(&dir);
    let fake = FakeQemu::with_consoles(&bus.address, "follow", UUID, &[SIZE, SIZE]).unwrap();
    let vkms = find_node(NodeKind::Primary, "vkms").expect("the vkms card");
    let capture = dir.path("screen.png");
    let sink = Sink::spawn(sink_command(&[
        "display",
        "--bus",
        &bus.address,
        "--vm",
        "follow",
        "--device",
        vkms.to_str().unwrap(),
        "--mode",
        "640x480",
        "--no-input",
        "--capture",
        capture.to_str().unwrap(),
    ]));
    let accept = |id| match fake.accept_listener_on(id, Duration::from_secs(90)) {
        Ok(listener) => listener,
        Err(err) => panic!("{err:#}; sink:\n{}", sink.log()),
    };
    let mut shown = accept(0);
    let mut watcher = accept(1);
    let mut buffers: Vec<Udmabuf> = (0..2)
        .map(|_| Udmabuf::new(SIZE.0, SIZE.1, DrmFourcc::Xrgb8888).unwrap())
        .collect();
    buffers[1].fill(1).unwrap();
    send(&mut shown, &buffers[0]);
    shows("console 0", &capture, &buffers[0], 0);
    // Console 0 falls silent; console 1 draws: each frame answered at once
    // by the watcher, and the head moves within a few seconds.
    let mut moved = false;
    for _ in 0..40 {
        send(&mut watcher, &buffers[1]);
        if sink.wait_for_log("showing console 1", Duration::from_millis(250)) {
            moved = true;
            break;
        }
    }
    assert!(moved, "the head never moved to console 1:\n{}", sink.log());
    assert!(
        sink.log()
            .contains("console 0 is idle and console 1 is in use: showing console 1"),
        "{}",
        sink.log()
    );
    // Console 1 is shown now, console 0 watched.
    let mut now_shown = accept(1);
    let _now_watched = accept(0);
    send(&mut now_shown, &buffers[1]);
    shows("console 1 after the move", &capture, &buffers[1], 1);
    let log = sink.stop();
    assert!(
        !log.contains("QEMU went away"),
        "a move is no disconnect: {log}"
    );

    // Pinned: console 1 is never watched.
    let pinned = Sink::spawn(sink_command(&[
        "display",
        "--bus",
        &bus.address,
        "--vm",
        "follow",
        "--console",
        "0",
        "--device",
        vkms.to_str().unwrap(),
        "--mode",
        "640x480",
        "--no-input",
    ]));
    let _pinned_shown = match fake.accept_listener_on(0, Duration::from_secs(90)) {
        Ok(listener) => listener,
        Err(err) => panic!("{err:#}; sink:\n{}", pinned.log()),
    };
    assert!(
        fake.accept_listener_on(1, Duration::from_secs(5)).is_err(),
        "console 1 watched although the head is pinned"
    );
    pinned.stop();
}

/// `--heads auto`: the VM's two consoles in order, each on the next card's
/// connected monitor (vkms and virtio-gpu here), as `list` shows them.
#[test]
#[ignore = "needs the lab"]
fn display_heads_auto_puts_each_console_on_a_monitor_list_shows() {
    require_lab();
    let dir = TempDir::new("lab-heads-auto");
    let bus = private_bus(&dir);
    let fake = FakeQemu::with_consoles(&bus.address, "auto", UUID, &[SIZE, SIZE]).unwrap();
    let listing = run_sink(
        sink_command(&["list", "--bus", &bus.address]),
        Duration::from_secs(30),
    );
    let listed = String::from_utf8_lossy(&listing.stdout);
    for driver in ["vkms", "virtio_gpu"] {
        let card = find_node(NodeKind::Primary, driver).unwrap();
        let line = format!(
            "monitor\t{}:{}\tdriver={driver}",
            card.display(),
            first_connector(&card)
        );
        assert!(listed.contains(&line), "{line:?} not in:\n{listed}");
    }
    assert!(listed.contains("console 1\tlabel=\"head-1\""), "{listed}");

    let capture = dir.path("screen.png");
    let sink = Sink::spawn(sink_command(&[
        "display",
        "--bus",
        &bus.address,
        "--vm",
        "auto",
        "--heads",
        "auto",
        "--mode",
        "640x480",
        "--capture",
        capture.to_str().unwrap(),
    ]));
    let (mut first, mut second) = accept_both(&fake, &sink);
    let mut buffers: Vec<Udmabuf> = (0..2)
        .map(|_| Udmabuf::new(SIZE.0, SIZE.1, DrmFourcc::Xrgb8888).unwrap())
        .collect();
    buffers[1].fill(1).unwrap();
    send(&mut first, &buffers[0]);
    send(&mut second, &buffers[1]);
    for (id, buffer) in buffers.iter().enumerate() {
        wait_for_picture(
            &format!("console {id}"),
            &dir.path(&format!("screen-{id}.png")),
            &opaque(&buffer.expected(id as u32)),
            Duration::from_secs(60),
        );
    }
    let log = sink.stop();
    assert_eq!(log.matches("heads auto: console").count(), 2, "{log}");
}
