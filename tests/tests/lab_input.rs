//! Input forwarding: virtual keyboards and mice made through `/dev/uinput`
//! reach the guest as QEMU's `Keyboard` and `Mouse` calls, recorded by the
//! fake QEMU: every key of a 105-key layout as its qnum, in order; the
//! pointer through the letterbox onto the right guest pixel while the
//! guest's mouse is absolute, as motion while it is relative; buttons and
//! wheels; a touchscreen's fingers as `MultiTouch` events; a device plugged
//! in after the start; the grab and Ctrl+Alt+G; nothing at all with
//! `--no-input`.
//!
//! Starts: dbus-daemon, the fake QEMU, the qemu-sink binary (`display` on
//! vkms), uinput devices. Every test needs the lab
//! (`scripts/lab/test.sh input`).

use std::os::fd::AsFd;
use std::time::Duration;

use dbus_interfaces::format::PIXMAN_X8R8G8B8;
use dbus_interfaces::qemu_side::InputCall::{self, *};
use gl_renderer::{Composition, Rect};
use sink::output::kms::{find_node, NodeKind};
use tests::attached::Attached;
use tests::lab::require_lab;
use tests::uinput::*;

/// A 4:3 console on a 16:9 mode: pillarboxed, 640x480 shown at (160, 0)
/// as 960x720 (scaled by 1.5).
const CONSOLE: (u32, u32) = (640, 480);
const MODE: (u32, u32) = (1280, 720);
const WAIT: Duration = Duration::from_secs(10);

/// `display --capture` on vkms at `MODE` with `args`, the console shown
/// (a 2D scanout, so that the display has placed the picture).
fn display(tag: &str, args: &[&str]) -> Attached {
    let card = find_node(NodeKind::Primary, "vkms").expect("the vkms card");
    let mode = format!("{}x{}", MODE.0, MODE.1);
    let mut all = vec!["--device", card.to_str().unwrap(), "--mode", &mode];
    all.extend_from_slice(args);
    let s = Attached::start(tag, CONSOLE, "display", &all, "--capture", &[]);
    let pixels = vec![0x40u8; (CONSOLE.0 * CONSOLE.1 * 4) as usize];
    s.listener
        .listener()
        .scanout(
            CONSOLE.0,
            CONSOLE.1,
            CONSOLE.0 * 4,
            PIXMAN_X8R8G8B8,
            serde_bytes::Bytes::new(&pixels),
        )
        .unwrap();
    s
}

fn wait_log(s: &Attached, needle: &str) {
    assert!(
        s.sink.wait_for_log(needle, Duration::from_secs(30)),
        "the sink never logged {needle:?}:\n{}",
        s.sink.log()
    );
}

/// The next recorded call, or a failure that shows the sink's log.
fn next(s: &Attached, what: &str) -> InputCall {
    match s.fake.next_input(WAIT) {
        Some(call) => call,
        None => panic!("no input call for {what}; sink:\n{}", s.sink.log()),
    }
}

fn assert_quiet(s: &Attached, what: &str) {
    let calls = s.fake.inputs_until_quiet(Duration::from_secs(2));
    assert!(calls.is_empty(), "{what}: {calls:?}");
}

/// A 105-key ISO layout (Linux keycode, QEMU qnum): the XT set 1 scan code,
/// 0xe0-prefixed codes with the high bit set. Written out here, not taken
/// from the sink's table, so that the table is what is tested.
const LAYOUT_105: [(u16, u32); 105] = [
    (1, 0x01), // Esc
    (59, 0x3b),
    (60, 0x3c),
    (61, 0x3d),
    (62, 0x3e),
    (63, 0x3f),
    (64, 0x40),
    (65, 0x41),
    (66, 0x42),
    (67, 0x43),
    (68, 0x44),
    (87, 0x57),
    (88, 0x58), // F1-F12
    (99, 0x54),
    (70, 0x46),
    (119, 0xc6), // PrintScreen/SysRq, Scroll Lock, Pause
    (41, 0x29),  // `
    (2, 0x02),
    (3, 0x03),
    (4, 0x04),
    (5, 0x05),
    (6, 0x06),
    (7, 0x07),
    (8, 0x08),
    (9, 0x09),
    (10, 0x0a),
    (11, 0x0b), // 1-0
    (12, 0x0c),
    (13, 0x0d),
    (14, 0x0e), // - = Backspace
    (15, 0x0f), // Tab
    (16, 0x10),
    (17, 0x11),
    (18, 0x12),
    (19, 0x13),
    (20, 0x14),
    (21, 0x15),
    (22, 0x16),
    (23, 0x17),
    (24, 0x18),
    (25, 0x19),
    (26, 0x1a),
    (27, 0x1b),
    (28, 0x1c), // Q-P [ ] Enter
    (58, 0x3a), // Caps Lock
    (30, 0x1e),
    (31, 0x1f),
    (32, 0x20),
    (33, 0x21),
    (34, 0x22),
    (35, 0x23),
    (36, 0x24),
    (37, 0x25),
    (38, 0x26),
    (39, 0x27),
    (40, 0x28),
    (43, 0x2b), // A-L ; ' #
    (42, 0x2a),
    (86, 0x56), // Left Shift, the ISO key beside it
    (44, 0x2c),
    (45, 0x2d),
    (46, 0x2e),
    (47, 0x2f),
    (48, 0x30),
    (49, 0x31),
    (50, 0x32),
    (51, 0x33),
    (52, 0x34),
    (53, 0x35),
    (54, 0x36), // Z-M , . / Right Shift
    (29, 0x1d),
    (125, 0xdb),
    (56, 0x38),
    (57, 0x39), // Left Ctrl, Left Meta, Left Alt, Space
    (100, 0xb8),
    (126, 0xdc),
    (127, 0xdd),
    (97, 0x9d), // AltGr, Right Meta, Menu, Right Ctrl
    (110, 0xd2),
    (102, 0xc7),
    (104, 0xc9),
    (111, 0xd3),
    (107, 0xcf),
    (109, 0xd1), // Ins Home PgUp Del End PgDn
    (103, 0xc8),
    (105, 0xcb),
    (108, 0xd0),
    (106, 0xcd), // arrows
    (69, 0x45),
    (98, 0xb5),
    (55, 0x37),
    (74, 0x4a), // Num Lock, KP / * -
    (71, 0x47),
    (72, 0x48),
    (73, 0x49),
    (78, 0x4e), // KP 7 8 9 +
    (75, 0x4b),
    (76, 0x4c),
    (77, 0x4d), // KP 4 5 6
    (79, 0x4f),
    (80, 0x50),
    (81, 0x51),
    (96, 0x9c), // KP 1 2 3 Enter
    (82, 0x52),
    (83, 0x53), // KP 0 .
];

/// Every key of a 105-key layout, pressed and released in turn, arrives
/// as its qnum, press then release, in order, and nothing else does.
#[test]
#[ignore = "needs the lab"]
fn input_every_key_of_a_105_key_layout_arrives_as_its_qnum_in_order() {
    require_lab();
    let mut keyboard = VirtualDevice::create(&Spec::keyboard("qemu-sink test keyboard")).unwrap();
    let node = keyboard.node.to_str().unwrap().to_owned();
    let s = display("input-keys", &["--input-device", &node]);
    wait_log(&s, &format!("input: {node}"));
    wait_log(&s, "input: sending to console 0");
    // Key by key, each at a typist's pace (a burst is tested below).
    let mut got = Vec::new();
    for &(code, _) in &LAYOUT_105 {
        keyboard.tap(code).unwrap();
        got.push(next(&s, "a press"));
        got.push(next(&s, "a release"));
    }
    let want: Vec<InputCall> = LAYOUT_105
        .iter()
        .flat_map(|&(_, q)| [KeyPress(q), KeyRelease(q)])
        .collect();
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g, w, "call {i} (key {})", LAYOUT_105[i / 2].0);
    }
    assert_quiet(&s, "after the layout");
    // The whole layout in one burst, faster than any typist: more events
    // than the device's buffer holds, so some are lost (SYN_DROPPED); what
    // arrives is in order, and no key is left held in the guest.
    for &(code, _) in &LAYOUT_105 {
        keyboard.tap(code).unwrap();
    }
    let burst = s.fake.inputs_until_quiet(Duration::from_secs(3));
    let mut held = std::collections::BTreeSet::new();
    let mut order = LAYOUT_105.iter().map(|&(_, q)| q);
    for call in &burst {
        match *call {
            KeyPress(q) => {
                assert!(order.any(|o| o == q), "{q:#x} out of order in {burst:?}");
                held.insert(q);
            }
            KeyRelease(q) => assert!(held.remove(&q), "{q:#x} released unpressed in {burst:?}"),
            other => panic!("{other:?} in the burst"),
        }
    }
    assert!(
        held.is_empty(),
        "held after the burst: {held:x?} ({burst:?})"
    );
    // A held key repeats as presses, as a keyboard's typematic does.
    keyboard.frame(&[(EV_KEY, 30, 1)]).unwrap();
    keyboard.frame(&[(EV_KEY, 30, 2)]).unwrap();
    keyboard.frame(&[(EV_KEY, 30, 0)]).unwrap();
    let calls: Vec<InputCall> = (0..3).map(|_| next(&s, "a repeat")).collect();
    assert_eq!(calls, [KeyPress(0x1e), KeyPress(0x1e), KeyRelease(0x1e)]);
    s.sink.stop();
}

/// Moves the mouse into the monitor's top-left corner until a position
/// arrives (the display has placed the picture by then); that position.
fn into_the_corner(s: &Attached, mouse: &mut VirtualDevice) -> InputCall {
    for _ in 0..30 {
        mouse
            .frame(&[(EV_REL, REL_X, -100_000), (EV_REL, REL_Y, -100_000)])
            .unwrap();
        if let Some(call) = s.fake.next_input(Duration::from_secs(1)) {
            return call;
        }
    }
    panic!("no position within 30 s; sink:\n{}", s.sink.log());
}

/// Where guest pixel (x, y) is on the monitor, as the display draws it.
fn on_monitor(x: i64, y: i64) -> (i64, i64) {
    Composition::fit(Rect::of_size(CONSOLE), MODE, false).map_point(x, y)
}

/// An absolute guest (a tablet): a mouse moves the pointer on the monitor
/// and each position lands on the guest pixel shown there, through the
/// pillarbox: the corners and the centre of the guest exactly, the bars on
/// the nearest edge.
#[test]
#[ignore = "needs the lab"]
fn input_absolute_positions_land_on_the_guest_pixel_through_the_letterbox() {
    require_lab();
    let mut mouse = VirtualDevice::create(&Spec::mouse("qemu-sink test mouse")).unwrap();
    let node = mouse.node.to_str().unwrap().to_owned();
    let s = display("input-abs", &["--input-device", &node]);
    s.fake.set_absolute(true).unwrap();
    wait_log(&s, "input: sending to console 0");
    assert_eq!(
        into_the_corner(&s, &mut mouse),
        AbsPosition(0, 0),
        "the left bar's top"
    );
    let mut at = (0i64, 0i64);
    let (w, h) = (i64::from(CONSOLE.0), i64::from(CONSOLE.1));
    let targets = [
        (on_monitor(0, 0), (0, 0), "top-left corner"),
        (on_monitor(w - 1, 0), (639, 0), "top-right corner"),
        (on_monitor(w - 1, h - 1), (639, 479), "bottom-right corner"),
        (on_monitor(0, h - 1), (0, 479), "bottom-left corner"),
        (on_monitor(w / 2, h / 2), (320, 240), "centre"),
        (
            on_monitor(w / 2 + 1, h / 2),
            (321, 240),
            "right of the centre",
        ),
        ((1279, 300), (639, 200), "the right bar"),
        ((5, 719), (0, 479), "the left bar's bottom"),
    ];
    assert_eq!(on_monitor(0, 0), (160, 0), "the pillarbox");
    for ((mx, my), (gx, gy), what) in targets {
        let (dx, dy) = (mx - at.0, my - at.1);
        mouse
            .frame(&[(EV_REL, REL_X, dx as i32), (EV_REL, REL_Y, dy as i32)])
            .unwrap();
        at = (mx, my);
        assert_eq!(
            next(&s, what),
            AbsPosition(gx, gy),
            "{what}: monitor ({mx}, {my})"
        );
    }
    // A click there: the position first, then the button.
    mouse
        .frame(&[(EV_REL, REL_X, -1), (EV_KEY, BTN_LEFT, 1)])
        .unwrap();
    mouse.frame(&[(EV_KEY, BTN_LEFT, 0)]).unwrap();
    let calls: Vec<InputCall> = (0..3).map(|_| next(&s, "a click")).collect();
    assert_eq!(
        calls,
        [AbsPosition(0, 479), ButtonPress(0), ButtonRelease(0)]
    );
    assert_quiet(&s, "after the click");
    s.sink.stop();
}

/// A relative guest (a PS/2 mouse): motion goes as it is, each button as
/// QEMU's number, each wheel click as a press and release of its button;
/// when the guest turns absolute (`IsAbsolute` changes), positions follow.
#[test]
#[ignore = "needs the lab"]
fn input_relative_motion_buttons_and_wheels() {
    require_lab();
    let mut mouse = VirtualDevice::create(&Spec::mouse("qemu-sink test mouse")).unwrap();
    let node = mouse.node.to_str().unwrap().to_owned();
    let s = display("input-rel", &["--input-device", &node]);
    wait_log(&s, "input: sending to console 0");
    mouse
        .frame(&[(EV_REL, REL_X, 5), (EV_REL, REL_Y, -3)])
        .unwrap();
    assert_eq!(next(&s, "motion"), RelMotion(5, -3));
    mouse.frame(&[(EV_REL, REL_X, -40)]).unwrap();
    assert_eq!(next(&s, "motion"), RelMotion(-40, 0));
    for (code, qemu) in [
        (BTN_LEFT, 0),
        (BTN_MIDDLE, 1),
        (BTN_RIGHT, 2),
        (BTN_SIDE, 5),
        (BTN_EXTRA, 6),
    ] {
        mouse.tap(code).unwrap();
        assert_eq!(next(&s, "a press"), ButtonPress(qemu), "button {code:#x}");
        assert_eq!(
            next(&s, "a release"),
            ButtonRelease(qemu),
            "button {code:#x}"
        );
    }
    // Wheel: up one click, down two, right one, left one.
    mouse.frame(&[(EV_REL, REL_WHEEL, 1)]).unwrap();
    mouse.frame(&[(EV_REL, REL_WHEEL, -2)]).unwrap();
    mouse.frame(&[(EV_REL, REL_HWHEEL, 1)]).unwrap();
    mouse.frame(&[(EV_REL, REL_HWHEEL, -1)]).unwrap();
    let wheel: Vec<InputCall> = (0..10).map(|_| next(&s, "the wheel")).collect();
    assert_eq!(
        wheel,
        [
            ButtonPress(3),
            ButtonRelease(3),
            ButtonPress(4),
            ButtonRelease(4),
            ButtonPress(4),
            ButtonRelease(4),
            ButtonPress(8),
            ButtonRelease(8),
            ButtonPress(7),
            ButtonRelease(7),
        ]
    );
    assert_quiet(&s, "after the wheel");
    // The guest switches to a tablet: the pointer is placed, not moved.
    s.fake.set_absolute(true).unwrap();
    assert_eq!(into_the_corner(&s, &mut mouse), AbsPosition(0, 0));
    s.sink.stop();
}

/// The touch calls and the others among `calls`.
fn split_touches(calls: Vec<InputCall>) -> (Vec<InputCall>, Vec<InputCall>) {
    calls.into_iter().partition(|c| matches!(c, Touch { .. }))
}

fn touch(kind: u32, slot: u64, x: f64, y: f64) -> InputCall {
    Touch { kind, slot, x, y }
}

/// A touchscreen over the monitor: two fingers reach the guest's touch
/// device (`MultiTouch.SendEvent`), each on the guest pixel under it
/// through the pillarbox, put down, moved and lifted in order; the first
/// finger also works the pointer (a guest without a touch device).
#[test]
#[ignore = "needs the lab"]
fn input_two_fingers_reach_the_guests_touch_device_on_the_pixels_under_them() {
    use dbus_interfaces::proxies::touch::{BEGIN, END, UPDATE};
    require_lab();
    let spec = Spec::touchscreen("qemu-sink test touchscreen", MODE, 10);
    let mut screen = VirtualDevice::create(&spec).unwrap();
    let node = screen.node.to_str().unwrap().to_owned();
    let s = display("input-touch", &["--input-device", &node]);
    s.fake.set_absolute(true).unwrap();
    wait_log(&s, "input: sending to console 0");
    let (top_left, bottom_right) = (on_monitor(0, 0), on_monitor(639, 479));
    let centre = on_monitor(320, 240);
    let finger = |slot: i32, id: i32, at: Option<(i64, i64)>| {
        let mut events = vec![
            (EV_ABS, ABS_MT_SLOT, slot),
            (EV_ABS, ABS_MT_TRACKING_ID, id),
        ];
        if let Some((x, y)) = at {
            events.extend([
                (EV_ABS, ABS_MT_POSITION_X, x as i32),
                (EV_ABS, ABS_MT_POSITION_Y, y as i32),
            ]);
        }
        events
    };
    // Finger 0 on the picture's top-left pixel, until the display has
    // placed the picture (no touch is sent before: no guest pixel is under
    // it yet).
    let mut first = Vec::new();
    for attempt in 0..30 {
        let mut down = finger(0, attempt, Some(top_left));
        down.extend([
            (EV_KEY, BTN_TOUCH, 1),
            (EV_ABS, ABS_X, top_left.0 as i32),
            (EV_ABS, ABS_Y, top_left.1 as i32),
        ]);
        screen.frame(&down).unwrap();
        first = s.fake.inputs_until_quiet(Duration::from_secs(1));
        if first.iter().any(|c| matches!(c, Touch { .. })) {
            break;
        }
        // Lifted, and the single-touch axes elsewhere: the kernel passes
        // on only the axes that change.
        screen
            .frame(&[
                (EV_ABS, ABS_MT_TRACKING_ID, -1),
                (EV_KEY, BTN_TOUCH, 0),
                (EV_ABS, ABS_X, 0),
                (EV_ABS, ABS_Y, 0),
            ])
            .unwrap();
        s.fake.inputs_until_quiet(Duration::from_secs(1));
    }
    assert_eq!(
        first,
        [AbsPosition(0, 0), ButtonPress(0), touch(BEGIN, 0, 0.0, 0.0)],
        "finger 0 down; sink:\n{}",
        s.sink.log()
    );
    // Finger 1 on the bottom-right pixel: a touch only.
    screen.frame(&finger(1, 100, Some(bottom_right))).unwrap();
    assert_eq!(next(&s, "finger 1 down"), touch(BEGIN, 1, 639.0, 479.0));
    // Finger 0 to the centre: the pointer follows it.
    screen
        .frame(&[
            (EV_ABS, ABS_MT_SLOT, 0),
            (EV_ABS, ABS_MT_POSITION_X, centre.0 as i32),
            (EV_ABS, ABS_MT_POSITION_Y, centre.1 as i32),
            (EV_ABS, ABS_X, centre.0 as i32),
            (EV_ABS, ABS_Y, centre.1 as i32),
        ])
        .unwrap();
    let moved: Vec<InputCall> = (0..2).map(|_| next(&s, "finger 0 moved")).collect();
    assert_eq!(
        moved,
        [AbsPosition(320, 240), touch(UPDATE, 0, 320.0, 240.0)]
    );
    // Both lifted in one frame.
    let mut up = finger(0, -1, None);
    up.extend(finger(1, -1, None));
    up.push((EV_KEY, BTN_TOUCH, 0));
    screen.frame(&up).unwrap();
    let lifted: Vec<InputCall> = (0..3).map(|_| next(&s, "fingers lifted")).collect();
    let (touches, pointer) = split_touches(lifted);
    assert_eq!(pointer, [ButtonRelease(0)]);
    assert_eq!(
        touches,
        [touch(END, 0, 320.0, 240.0), touch(END, 1, 639.0, 479.0)]
    );
    assert_quiet(&s, "after the lift");
    s.sink.stop();
}

/// A keyboard plugged in after the sink started (no `--input-device`:
/// every device) is picked up and forwarded.
#[test]
#[ignore = "needs the lab"]
fn input_a_keyboard_plugged_in_later_is_picked_up() {
    require_lab();
    let s = display("input-hotplug", &[]);
    wait_log(&s, "input: sending to console 0");
    std::thread::sleep(Duration::from_secs(1));
    let mut keyboard = VirtualDevice::create(&Spec::keyboard("qemu-sink late keyboard")).unwrap();
    let node = keyboard.node.to_str().unwrap().to_owned();
    wait_log(
        &s,
        &format!("input: {node} (qemu-sink late keyboard): keyboard"),
    );
    keyboard.tap(30).unwrap();
    assert_eq!(next(&s, "the late keyboard"), KeyPress(0x1e));
    assert_eq!(next(&s, "the late keyboard"), KeyRelease(0x1e));
    // Unplugged with a key held: the guest sees it released.
    keyboard.frame(&[(EV_KEY, 42, 1)]).unwrap();
    assert_eq!(next(&s, "shift"), KeyPress(0x2a));
    drop(keyboard);
    assert_eq!(next(&s, "the unplug"), KeyRelease(0x2a));
    s.sink.stop();
}

/// Reads what another reader of `node` gets now (nothing while grabbed).
fn events_seen_by_others(reader: &std::fs::File) -> usize {
    let mut buf = [0u8; 24 * 64];
    match nix::unistd::read(reader.as_fd(), &mut buf) {
        Ok(n) => n / 24,
        Err(nix::errno::Errno::EAGAIN) => 0,
        Err(err) => panic!("reading the device: {err}"),
    }
}

/// While the sink runs its devices are grabbed: another reader (the VT)
/// gets none of their events. Ctrl+Alt+G gives them back (the guest sees
/// Ctrl and Alt released and nothing more), and takes them again.
#[test]
#[ignore = "needs the lab"]
fn input_the_grab_keeps_keys_from_others_until_ctrl_alt_g() {
    require_lab();
    let mut keyboard = VirtualDevice::create(&Spec::keyboard("qemu-sink test keyboard")).unwrap();
    let node = keyboard.node.to_str().unwrap().to_owned();
    let other = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&keyboard.node)
        .unwrap();
    let s = display("input-grab", &["--input-device", &node]);
    wait_log(&s, "input: sending to console 0");
    let _ = events_seen_by_others(&other);
    keyboard.tap(30).unwrap();
    assert_eq!(next(&s, "a"), KeyPress(0x1e));
    assert_eq!(next(&s, "a"), KeyRelease(0x1e));
    assert_eq!(
        events_seen_by_others(&other),
        0,
        "grabbed, yet another reader got events"
    );
    // Ctrl+Alt+G.
    keyboard.frame(&[(EV_KEY, 29, 1)]).unwrap();
    keyboard.frame(&[(EV_KEY, 56, 1)]).unwrap();
    keyboard.frame(&[(EV_KEY, 34, 1)]).unwrap();
    let calls: Vec<InputCall> = (0..4).map(|_| next(&s, "the release")).collect();
    assert_eq!(calls[..2], [KeyPress(0x1d), KeyPress(0x38)]);
    let mut released = calls[2..].to_vec();
    released.sort_by_key(|c| format!("{c:?}"));
    assert_eq!(released, [KeyRelease(0x1d), KeyRelease(0x38)]);
    wait_log(&s, "input: given back");
    keyboard.frame(&[(EV_KEY, 34, 0)]).unwrap();
    keyboard.frame(&[(EV_KEY, 56, 0)]).unwrap();
    keyboard.frame(&[(EV_KEY, 29, 0)]).unwrap();
    keyboard.tap(31).unwrap();
    assert_quiet(&s, "given back");
    assert!(
        events_seen_by_others(&other) > 0,
        "given back, yet nobody else got the keys"
    );
    // Ctrl+Alt+G again: taken.
    keyboard.frame(&[(EV_KEY, 97, 1)]).unwrap();
    keyboard.frame(&[(EV_KEY, 100, 1)]).unwrap();
    keyboard.frame(&[(EV_KEY, 34, 1)]).unwrap();
    wait_log(&s, "input: taken");
    keyboard.frame(&[(EV_KEY, 34, 0)]).unwrap();
    keyboard.frame(&[(EV_KEY, 100, 0)]).unwrap();
    keyboard.frame(&[(EV_KEY, 97, 0)]).unwrap();
    let _ = events_seen_by_others(&other);
    keyboard.tap(32).unwrap();
    assert_eq!(
        next(&s, "d"),
        KeyPress(0x20),
        "Ctrl/Alt/G releases leaked first"
    );
    assert_eq!(next(&s, "d"), KeyRelease(0x20));
    assert_eq!(
        events_seen_by_others(&other),
        0,
        "grabbed again, yet another reader got events"
    );
    s.sink.stop();
}

/// A QEMU that hangs just after the attach (it answers the console's
/// `MaxSlots` only after 8 s, standing still meanwhile) does not take the
/// keyboard with it: the devices are grabbed, so Ctrl+Alt+G must still
/// give them back at once, while the sink is waiting for that answer
/// (which it gives up on after its 5 s call timeout).
#[test]
#[ignore = "needs the lab"]
fn input_a_hung_qemu_does_not_hold_the_grabbed_keyboard() {
    use tests::fake_qemu::FakeQemu;
    use tests::sink_run::Sink;
    use tests::{private_bus, sink_command, TempDir};

    require_lab();
    let mut keyboard = VirtualDevice::create(&Spec::keyboard("qemu-sink test keyboard")).unwrap();
    let dir = TempDir::new("input-hung");
    let bus = private_bus(&dir);
    let uuid = "00000000-0000-4000-8000-0000000000b7";
    let fake = FakeQemu::on_bus(&bus.address, "inputhung", uuid, CONSOLE).unwrap();
    fake.answer_max_slots_after(Duration::from_secs(8)).unwrap();
    let card = find_node(NodeKind::Primary, "vkms").expect("the vkms card");
    // Pinned to console 0 and not resized: no other call of the sink's
    // waits on the standing QEMU.
    let sink = Sink::spawn(sink_command(&[
        "display",
        "--bus",
        &bus.address,
        "--vm",
        "inputhung",
        "--console",
        "0",
        "--no-resize",
        "--device",
        card.to_str().unwrap(),
        "--input-device",
        keyboard.node.to_str().unwrap(),
    ]));
    let _listener = match fake.accept_listener(Duration::from_secs(60)) {
        Ok(listener) => listener,
        Err(err) => panic!("{err:#}; sink:\n{}", sink.abort()),
    };
    assert!(
        sink.wait_for_log("attached to console 0", Duration::from_secs(30)),
        "{}",
        sink.log()
    );
    // The input side asks for `MaxSlots` at the attach: the QEMU stands
    // still from then on.
    std::thread::sleep(Duration::from_secs(1));
    keyboard.frame(&[(EV_KEY, 29, 1)]).unwrap();
    keyboard.frame(&[(EV_KEY, 56, 1)]).unwrap();
    keyboard.frame(&[(EV_KEY, 34, 1)]).unwrap();
    assert!(
        sink.wait_for_log("input: given back", Duration::from_secs(15)),
        "Ctrl+Alt+G never took: {}",
        sink.log()
    );
    // The sink did meet the hang, and gave the keys back before it gave up
    // waiting on QEMU.
    assert!(
        sink.wait_for_log("takes no touch", Duration::from_secs(15)),
        "the hang was never met: {}",
        sink.log()
    );
    let log = sink.log();
    let given_back = log.find("input: given back").unwrap();
    let gave_up = log.find("takes no touch").unwrap();
    assert!(
        given_back < gave_up,
        "the keys were given back only after QEMU's answer was given up on:\n{log}"
    );
    for code in [34, 56, 29] {
        keyboard.frame(&[(EV_KEY, code, 0)]).unwrap();
    }
    let log = sink.stop();
    assert!(!log.contains("panicked"), "{log}");
}

/// `--no-input`: no device is opened and the console gets no call.
#[test]
#[ignore = "needs the lab"]
fn input_no_input_sends_nothing() {
    require_lab();
    let mut keyboard = VirtualDevice::create(&Spec::keyboard("qemu-sink test keyboard")).unwrap();
    let mut mouse = VirtualDevice::create(&Spec::mouse("qemu-sink test mouse")).unwrap();
    let s = display("input-none", &["--no-input"]);
    wait_log(&s, "attached to console 0");
    std::thread::sleep(Duration::from_secs(1));
    for &(code, _) in &LAYOUT_105[..20] {
        keyboard.tap(code).unwrap();
    }
    mouse.frame(&[(EV_REL, REL_X, 5)]).unwrap();
    mouse.tap(BTN_LEFT).unwrap();
    assert_quiet(&s, "--no-input");
    let log = s.sink.stop();
    assert!(!log.contains("input:"), "{log}");
}

use std::os::unix::fs::OpenOptionsExt;

/// A real QEMU (SeaBIOS, std VGA, its PS/2 keyboard) takes the calls the
/// sink sends: with `-boot menu=on` SeaBIOS waits a minute at "Press ESC
/// for boot menu"; once its screen has been still for 8 s, ESC typed on a
/// virtual keyboard changes it (the menu opens), seen in QMP `screendump`,
/// and the monitor shows that menu: vkms's writeback (`--capture`) equals
/// the screendump, letterboxed onto the mode.
#[test]
#[ignore = "needs the lab"]
fn input_a_real_qemu_opens_its_boot_menu_on_esc() {
    require_lab();
    let dir = tests::TempDir::new("input-qemu");
    let bus = tests::private_bus(&dir);
    let mut vm = tests::TestVm::on_bus(
        &dir,
        "input-qemu",
        &bus.plain_address,
        &["-boot", "menu=on,splash-time=60000"],
    );
    let mut keyboard = VirtualDevice::create(&Spec::keyboard("qemu-sink test keyboard")).unwrap();
    let node = keyboard.node.to_str().unwrap().to_owned();
    let card = find_node(NodeKind::Primary, "vkms").expect("the vkms card");
    let shown = dir.path("monitor.png");
    let sink = tests::sink_run::Sink::spawn(tests::sink_command(&[
        "display",
        "--bus",
        &bus.address,
        "--vm",
        "input-qemu",
        "--device",
        card.to_str().unwrap(),
        "--mode",
        "1024x768",
        "--input-device",
        &node,
        "--capture",
        shown.to_str().unwrap(),
    ]));
    assert!(
        sink.wait_for_log("input: sending to console 0", Duration::from_secs(60)),
        "{}",
        sink.abort()
    );
    // VGA's blinking text cursor would change every screendump: hide it.
    vm.hmp("o /b 0x3d4 0x0a");
    vm.hmp("o /b 0x3d5 0x20");
    let dump = dir.path("screen.png");
    let started = std::time::Instant::now();
    let (mut still, mut last) = (0, vm.screendump(&dump));
    while still < 8 {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "SeaBIOS's screen never settled"
        );
        std::thread::sleep(Duration::from_secs(1));
        let now = vm.screendump(&dump);
        still = if now == last { still + 1 } else { 0 };
        last = now;
    }
    keyboard.tap(1).unwrap(); // ESC
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        std::thread::sleep(Duration::from_millis(500));
        if vm.screendump(&dump) != last {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "ESC did not open the boot menu; sink:\n{}",
            sink.log()
        );
    }
    // The menu, once drawn (two screendumps alike), on the monitor.
    let mut menu = vm.screendump(&dump);
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let now = vm.screendump(&dump);
        if now == menu {
            break;
        }
        menu = now;
    }
    let want = tests::picture::letterboxed(&tests::sink_run::opaque(&menu), (1024, 768));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let compared = capture::read_png(&shown).map(|got| capture::compare_rgb(&got, &want, 3));
        match compared {
            Ok(Ok(())) => break,
            Ok(Err(diff)) if std::time::Instant::now() > deadline => panic!(
                "the monitor (writeback) vs the boot menu's screendump: {diff}; sink:\n{}",
                sink.log()
            ),
            _ => assert!(
                std::time::Instant::now() < deadline,
                "no picture from the monitor; sink:\n{}",
                sink.log()
            ),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    sink.stop();
}
