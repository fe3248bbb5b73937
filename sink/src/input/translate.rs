//! evdev events to the guest's keys, buttons and pointer: one device's
//! events are taken a frame at a time (up to `SYN_REPORT`), motion first,
//! then keys and buttons in their order, then the wheel.

use dbus_interfaces::proxies::{button, touch};

use super::evdev::{self, AbsKind, Capabilities, Event};
use super::guest::Guest;
use super::keymap::qnum;
use super::pointer::{monitor_to_guest, scale_axis, Pointer};
use crate::state::Placement;

const KEY_LEFTCTRL: u16 = 29;
const KEY_RIGHTCTRL: u16 = 97;
const KEY_LEFTALT: u16 = 56;
const KEY_RIGHTALT: u16 = 100;
/// With Ctrl and Alt held: releases the grab, or takes it back.
pub const KEY_GRAB: u16 = 34; // KEY_G

/// The VT that Ctrl+Alt+`code` switches to: F1 to F12.
fn vt_of_key(code: u16) -> Option<u32> {
    match code {
        59..=68 => Some(u32::from(code) - 58), // KEY_F1..KEY_F10
        87 | 88 => Some(u32::from(code) - 76), // KEY_F11, KEY_F12
        _ => None,
    }
}

/// Touchpad travel to pointer pixels: this many pixels per millimetre
/// (about 200 dpi; no acceleration).
const TOUCHPAD_PX_PER_MM: i64 = 8;
/// Most wheel clicks sent for one frame (a runaway value stays bounded).
const MAX_WHEEL_CLICKS: i32 = 16;
/// Touch contacts followed per touchscreen (evdev's slots beyond are not
/// forwarded; QEMU takes 10).
const TOUCH_SLOTS: usize = 16;

/// One finger of a touchscreen (an evdev multi-touch slot).
#[derive(Debug, Clone, Copy, Default)]
struct Contact {
    /// On the screen, as the device last said (it has a tracking id).
    down: bool,
    /// Begun in the guest: a Begin was sent and no End yet.
    in_guest: bool,
    /// Where, in the device's units.
    at: (i32, i32),
    /// Moved in the frame being read.
    moved: bool,
}

/// A set of keycodes (the kernel's `KEY_CNT`).
#[derive(Clone)]
pub struct KeySet([u64; evdev::KEY_CNT / 64]);

impl Default for KeySet {
    fn default() -> KeySet {
        KeySet([0; evdev::KEY_CNT / 64])
    }
}

impl KeySet {
    pub fn contains(&self, code: u16) -> bool {
        let c = usize::from(code);
        c < evdev::KEY_CNT && self.0[c / 64] & (1 << (c % 64)) != 0
    }
    /// Returns whether it changed.
    pub fn set(&mut self, code: u16, on: bool) -> bool {
        let c = usize::from(code);
        if c >= evdev::KEY_CNT || self.contains(code) == on {
            return false;
        }
        self.0[c / 64] ^= 1 << (c % 64);
        true
    }
    pub fn iter(&self) -> impl Iterator<Item = u16> + '_ {
        (0..evdev::KEY_CNT as u16).filter(|&c| self.contains(c))
    }
    pub fn clear(&mut self) {
        self.0 = [0; evdev::KEY_CNT / 64];
    }
}

/// QEMU's button for an evdev button code.
fn qemu_button(code: u16) -> Option<u32> {
    Some(match code {
        evdev::BTN_LEFT => button::LEFT,
        evdev::BTN_RIGHT => button::RIGHT,
        evdev::BTN_MIDDLE => button::MIDDLE,
        evdev::BTN_SIDE | evdev::BTN_BACK => button::SIDE,
        evdev::BTN_EXTRA | evdev::BTN_FORWARD => button::EXTRA,
        _ => return None,
    })
}

/// One open device's state between its events.
pub struct Device {
    abs: Option<AbsKind>,
    caps_x: evdev::AbsInfo,
    caps_y: evdev::AbsInfo,
    /// The frame being read (cleared at each `SYN_REPORT`; its capacity
    /// stays, so reading allocates nothing once warmed).
    frame: Vec<Event>,
    /// After `SYN_DROPPED`: events are skipped up to the next report.
    dropping: bool,
    /// Keys and buttons (evdev codes) this device holds down in the guest.
    pub held: KeySet,
    /// Absolute axes as last reported.
    abs_at: (i32, i32),
    /// A finger on the touchpad (BTN_TOUCH) and where it was last.
    touching: bool,
    touch_last: Option<(i32, i32)>,
    /// A touchscreen's fingers, the slot its events are about, its ranges.
    contacts: [Contact; TOUCH_SLOTS],
    slot: usize,
    caps_mt_x: evdev::AbsInfo,
    caps_mt_y: evdev::AbsInfo,
}

impl Device {
    pub fn new(caps: &Capabilities) -> Device {
        Device {
            abs: caps.abs_kind(),
            caps_x: caps.abs_x,
            caps_y: caps.abs_y,
            frame: Vec::with_capacity(64),
            dropping: false,
            held: KeySet::default(),
            abs_at: (caps.abs_x.value, caps.abs_y.value),
            touching: false,
            touch_last: None,
            contacts: [Contact::default(); TOUCH_SLOTS],
            slot: usize::try_from(caps.mt_slots.value).unwrap_or(0),
            caps_mt_x: caps.mt_x,
            caps_mt_y: caps.mt_y,
        }
    }
}

/// What a frame asks of the input thread beyond the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    None,
    /// Ctrl+Alt+G: release the grab, or take it back.
    ToggleGrab,
    /// Events were lost (the device's buffer overflowed): read which keys
    /// it holds now and call [`Forwarder::resync`].
    Resync,
    /// Ctrl+Alt+Fn: switch to VT n.
    SwitchVt(u32),
}

/// Input shared by every device: the pointer, the modifiers held on the
/// host, and whether the input is ours (grabbed) or given back.
pub struct Forwarder {
    pub pointer: Pointer,
    /// Ctrl and Alt held, on any device (counted whether forwarded or not).
    host_keys: KeySet,
    /// The G of a Ctrl+Alt+G: its release is not forwarded either.
    swallowed: KeySet,
    /// Input goes to the guest (false after Ctrl+Alt+G gave it back).
    pub forwarding: bool,
}

impl Default for Forwarder {
    fn default() -> Forwarder {
        Forwarder {
            pointer: Pointer::default(),
            host_keys: KeySet::default(),
            swallowed: KeySet::default(),
            forwarding: true,
        }
    }
}

impl Forwarder {
    /// Takes one event of `device`; at a `SYN_REPORT`, sends the frame.
    pub fn event(
        &mut self,
        device: &mut Device,
        event: Event,
        guest: &mut dyn Guest,
        placement: Option<Placement>,
    ) -> Action {
        match (event.kind, event.code) {
            (evdev::EV_SYN, evdev::SYN_DROPPED) => {
                device.dropping = true;
                device.frame.clear();
                Action::None
            }
            (evdev::EV_SYN, evdev::SYN_REPORT) => {
                if std::mem::take(&mut device.dropping) {
                    device.frame.clear();
                    return Action::Resync;
                }
                let action = self.frame(device, guest, placement);
                device.frame.clear();
                action
            }
            (evdev::EV_SYN, _) => Action::None,
            _ if device.dropping => Action::None,
            _ => {
                device.frame.push(event);
                Action::None
            }
        }
    }

    fn frame(
        &mut self,
        device: &mut Device,
        guest: &mut dyn Guest,
        placement: Option<Placement>,
    ) -> Action {
        let (mut dx, mut dy, mut wheel, mut hwheel) = (0i64, 0i64, 0i32, 0i32);
        let mut abs_moved = false;
        for e in &device.frame {
            match (e.kind, e.code) {
                (evdev::EV_REL, evdev::REL_X) => dx += i64::from(e.value),
                (evdev::EV_REL, evdev::REL_Y) => dy += i64::from(e.value),
                (evdev::EV_REL, evdev::REL_WHEEL) => wheel = wheel.saturating_add(e.value),
                (evdev::EV_REL, evdev::REL_HWHEEL) => hwheel = hwheel.saturating_add(e.value),
                (evdev::EV_ABS, evdev::ABS_X) => {
                    device.abs_at.0 = e.value;
                    abs_moved = true;
                }
                (evdev::EV_ABS, evdev::ABS_Y) => {
                    device.abs_at.1 = e.value;
                    abs_moved = true;
                }
                (evdev::EV_KEY, evdev::BTN_TOUCH) if device.abs == Some(AbsKind::Touchpad) => {
                    device.touching = e.value != 0;
                }
                (evdev::EV_ABS, evdev::ABS_MT_SLOT) => {
                    // A slot out of range makes the events up to the next
                    // slot change land nowhere.
                    device.slot = usize::try_from(e.value).unwrap_or(usize::MAX);
                }
                (evdev::EV_ABS, evdev::ABS_MT_TRACKING_ID) => {
                    if let Some(c) = device.contacts.get_mut(device.slot) {
                        c.down = e.value >= 0;
                    }
                }
                (evdev::EV_ABS, code @ (evdev::ABS_MT_POSITION_X | evdev::ABS_MT_POSITION_Y)) => {
                    if let Some(c) = device.contacts.get_mut(device.slot) {
                        if code == evdev::ABS_MT_POSITION_X {
                            c.at.0 = e.value;
                        } else {
                            c.at.1 = e.value;
                        }
                        c.moved = true;
                    }
                }
                _ => {}
            }
        }
        let forwarding = self.forwarding;
        // Motion.
        let absolute = forwarding && guest.is_absolute();
        let mode = placement.map(|p| p.mode);
        match (device.abs, mode) {
            (Some(AbsKind::Touchpad), _) => {
                if device.touching && abs_moved {
                    if let Some((x0, y0)) = device.touch_last {
                        let px = |d: i32, res: i32| {
                            i64::from(d) * TOUCHPAD_PX_PER_MM / i64::from(res.max(1))
                        };
                        dx += px(device.abs_at.0 - x0, device.caps_x.resolution);
                        dy += px(device.abs_at.1 - y0, device.caps_y.resolution);
                    }
                }
                device.touch_last = device.touching.then_some(device.abs_at);
            }
            (Some(_), Some(mode)) if abs_moved => {
                let x = scale_axis(
                    device.abs_at.0,
                    device.caps_x.minimum,
                    device.caps_x.maximum,
                    mode.0,
                );
                let y = scale_axis(
                    device.abs_at.1,
                    device.caps_y.minimum,
                    device.caps_y.maximum,
                    mode.1,
                );
                let before = self.pointer.move_by(mode, 0, 0);
                let after = self.pointer.set(mode, x, y);
                if forwarding && !absolute {
                    dx += after.0 - before.0;
                    dy += after.1 - before.1;
                }
                if forwarding && absolute {
                    self.send_position(guest, placement, after);
                }
            }
            _ => {}
        }
        if (dx, dy) != (0, 0) && forwarding {
            if absolute {
                if let Some(mode) = mode {
                    let at = self.pointer.move_by(mode, dx, dy);
                    self.send_position(guest, placement, at);
                }
            } else {
                let clamp = |v: i64| v.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32;
                guest.rel(clamp(dx), clamp(dy));
                if let Some(mode) = mode {
                    self.pointer.move_by(mode, dx, dy);
                }
            }
        }
        // Keys and buttons, in order.
        let mut action = Action::None;
        for i in 0..device.frame.len() {
            let e = device.frame[i];
            if e.kind != evdev::EV_KEY {
                continue;
            }
            match self.key(device, e.code, e.value, guest) {
                Action::None => {}
                other => action = other,
            }
        }
        if device.abs == Some(AbsKind::Touchscreen) {
            self.touches(device, guest, placement);
        }
        // The wheel: one press and release per click.
        if forwarding {
            let clicks = |n: i32, up: u32, down: u32| {
                let b = if n > 0 { up } else { down };
                (b, n.unsigned_abs().min(MAX_WHEEL_CLICKS as u32))
            };
            for (n, up, down) in [
                (wheel, button::WHEEL_UP, button::WHEEL_DOWN),
                (hwheel, button::WHEEL_RIGHT, button::WHEEL_LEFT),
            ] {
                if n != 0 {
                    let (b, count) = clicks(n, up, down);
                    for _ in 0..count {
                        guest.button(b, true);
                        guest.button(b, false);
                    }
                }
            }
        }
        action
    }

    /// A touchscreen's fingers that went down, moved or lifted in this
    /// frame, to the guest's touch device (`MultiTouch`), each on the guest
    /// pixel under it (through the letterbox, like the pointer). Its first
    /// finger also works the pointer (`ABS_X`/`BTN_TOUCH`, above), so that
    /// a guest with no touch device can be used by touch too.
    fn touches(
        &mut self,
        device: &mut Device,
        guest: &mut dyn Guest,
        placement: Option<Placement>,
    ) {
        let slots = guest.touch_slots().min(TOUCH_SLOTS);
        let (caps_x, caps_y) = (device.caps_mt_x, device.caps_mt_y);
        for (slot, c) in device.contacts.iter_mut().enumerate() {
            let moved = std::mem::take(&mut c.moved);
            if slot >= slots || !self.forwarding {
                continue;
            }
            let kind = match (c.in_guest, c.down) {
                (false, true) => touch::BEGIN,
                (true, false) => touch::END,
                (true, true) if moved => touch::UPDATE,
                _ => continue,
            };
            let Some(p) = placement else {
                // Nothing shown yet: there is no guest pixel under it.
                continue;
            };
            let mx = scale_axis(c.at.0, caps_x.minimum, caps_x.maximum, p.mode.0);
            let my = scale_axis(c.at.1, caps_y.minimum, caps_y.maximum, p.mode.1);
            let (x, y) = monitor_to_guest(&p, mx, my);
            guest.touch(kind, slot as u64, f64::from(x), f64::from(y));
            c.in_guest = kind != touch::END;
        }
    }

    /// Lifts in the guest every finger of `device` it holds down there.
    fn lift_all(device: &mut Device, guest: &mut dyn Guest) {
        for (slot, c) in device.contacts.iter_mut().enumerate() {
            if std::mem::take(&mut c.in_guest) {
                guest.touch(touch::END, slot as u64, 0.0, 0.0);
            }
        }
    }

    /// Puts the pointer at monitor pixel `at` of the monitor `placement`
    /// is on (the pointer came over from a monitor beside it), and an
    /// absolute guest's pointer there too.
    pub fn place_pointer(&mut self, guest: &mut dyn Guest, placement: Placement, at: (i64, i64)) {
        let at = self.pointer.set(placement.mode, at.0, at.1);
        if self.forwarding && guest.is_absolute() {
            self.send_position(guest, Some(placement), at);
        }
    }

    fn send_position(&self, guest: &mut dyn Guest, placement: Option<Placement>, at: (i64, i64)) {
        if let Some(p) = placement {
            let (x, y) = monitor_to_guest(&p, at.0, at.1);
            guest.abs(x, y);
        }
    }

    /// One key or button (value 1 pressed, 2 repeated, 0 released).
    fn key(&mut self, device: &mut Device, code: u16, value: i32, guest: &mut dyn Guest) -> Action {
        let down = value != 0;
        if matches!(
            code,
            KEY_LEFTCTRL | KEY_RIGHTCTRL | KEY_LEFTALT | KEY_RIGHTALT
        ) {
            self.host_keys.set(code, down);
        }
        if code == KEY_GRAB && value == 1 && self.ctrl_alt() {
            self.swallowed.set(code, true);
            return Action::ToggleGrab;
        }
        if let (Some(vt), 1, true) = (vt_of_key(code), value, self.ctrl_alt()) {
            // The host's key, as on any Linux console: never the guest's.
            self.swallowed.set(code, true);
            return Action::SwitchVt(vt);
        }
        if !down && self.swallowed.set(code, false) {
            return Action::None;
        }
        if value == 2 && self.swallowed.contains(code) {
            return Action::None;
        }
        if !self.forwarding {
            return Action::None;
        }
        // A touchscreen's or a tablet's touch is the left button.
        let code_for_guest = match (code, device.abs) {
            (evdev::BTN_TOUCH, Some(AbsKind::Touchscreen | AbsKind::Tablet)) => evdev::BTN_LEFT,
            _ => code,
        };
        let button = qemu_button(code_for_guest);
        let qnum = if button.is_none() { qnum(code) } else { None };
        if button.is_none() && qnum.is_none() {
            return Action::None;
        }
        if down {
            // A repeat (2) is sent again as a press, as a keyboard's
            // typematic repeat is; a button is pressed once.
            let new = device.held.set(code_for_guest, true);
            match (button, qnum) {
                (Some(b), _) if new => guest.button(b, true),
                (_, Some(q)) => guest.key(q, true),
                _ => {}
            }
        } else if device.held.set(code_for_guest, false) {
            // Only what the guest saw pressed is released.
            match (button, qnum) {
                (Some(b), _) => guest.button(b, false),
                (_, Some(q)) => guest.key(q, false),
                _ => {}
            }
        }
        Action::None
    }

    fn ctrl_alt(&self) -> bool {
        let ctrl = self.host_keys.contains(KEY_LEFTCTRL) || self.host_keys.contains(KEY_RIGHTCTRL);
        let alt = self.host_keys.contains(KEY_LEFTALT) || self.host_keys.contains(KEY_RIGHTALT);
        ctrl && alt
    }

    /// Releases in the guest whatever `device` holds down there (it went
    /// away, the grab was given back, QEMU changed).
    pub fn release_all(&mut self, device: &mut Device, guest: &mut dyn Guest) {
        for code in device.held.iter() {
            if let Some(b) = qemu_button(code) {
                guest.button(b, false);
            } else if let Some(q) = qnum(code) {
                guest.key(q, false);
            }
        }
        device.held.clear();
        device.touching = false;
        device.touch_last = None;
        Self::lift_all(device, guest);
    }

    /// After lost events: whatever the guest holds from `device` that the
    /// device no longer holds (`down`: its `EVIOCGKEY` bits) is released
    /// there, so that no key stays stuck in the guest. Keys pressed during
    /// the loss are not replayed.
    pub fn resync(&mut self, device: &mut Device, down: &[u8], guest: &mut dyn Guest) {
        let abs = device.abs;
        // A touch held as the left button is down while BTN_TOUCH is.
        let still_down = |c: u16| match (c, abs) {
            (evdev::BTN_LEFT, Some(AbsKind::Touchscreen | AbsKind::Tablet)) => {
                evdev::is_down(down, c) || evdev::is_down(down, evdev::BTN_TOUCH)
            }
            _ => evdev::is_down(down, c),
        };
        // Which fingers are down was lost with the events: every finger the
        // guest holds is lifted there; one still down comes back when it is
        // next put down.
        Self::lift_all(device, guest);
        for c in &mut device.contacts {
            *c = Contact::default();
        }
        let held = device.held.clone();
        for code in held.iter().filter(|&c| !still_down(c)) {
            device.held.set(code, false);
            if let Some(b) = qemu_button(code) {
                guest.button(b, false);
            } else if let Some(q) = qnum(code) {
                guest.key(q, false);
            }
        }
        for code in [KEY_LEFTCTRL, KEY_RIGHTCTRL, KEY_LEFTALT, KEY_RIGHTALT] {
            if !evdev::is_down(down, code) {
                self.host_keys.set(code, false);
            }
        }
    }

    /// The device went away: its modifiers are no longer held either.
    pub fn forget(&mut self, device: &mut Device, guest: &mut dyn Guest) {
        self.release_all(device, guest);
        self.host_keys.clear();
        self.swallowed.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dmabuf::Rect;

    #[derive(Debug, Clone, PartialEq)]
    enum Call {
        Key(u32, bool),
        Button(u32, bool),
        Abs(u32, u32),
        Rel(i32, i32),
        Touch(u32, u64, f64, f64),
    }

    #[derive(Default)]
    struct Recorder {
        calls: Vec<Call>,
        absolute: bool,
        touch_slots: usize,
    }

    impl Guest for Recorder {
        fn key(&mut self, q: u32, down: bool) {
            self.calls.push(Call::Key(q, down));
        }
        fn button(&mut self, b: u32, down: bool) {
            self.calls.push(Call::Button(b, down));
        }
        fn abs(&mut self, x: u32, y: u32) {
            self.calls.push(Call::Abs(x, y));
        }
        fn rel(&mut self, dx: i32, dy: i32) {
            self.calls.push(Call::Rel(dx, dy));
        }
        fn is_absolute(&mut self) -> bool {
            self.absolute
        }
        fn touch(&mut self, kind: u32, slot: u64, x: f64, y: f64) {
            self.calls.push(Call::Touch(kind, slot, x, y));
        }
        fn touch_slots(&mut self) -> usize {
            self.touch_slots
        }
    }

    fn ev(kind: u16, code: u16, value: i32) -> Event {
        Event {
            sec: 0,
            usec: 0,
            kind,
            code,
            value,
        }
    }
    const SYN: (u16, u16, i32) = (evdev::EV_SYN, evdev::SYN_REPORT, 0);

    fn keyboard() -> Device {
        Device::new(&Capabilities::default())
    }

    fn feed(
        f: &mut Forwarder,
        d: &mut Device,
        g: &mut Recorder,
        events: &[(u16, u16, i32)],
    ) -> Vec<Action> {
        let placement = Some(Placement {
            mode: (1280, 720),
            guest: Rect::of_size((640, 480)),
            shown: Rect::new(160, 0, 960, 720),
        });
        events
            .iter()
            .map(|&(k, c, v)| f.event(d, ev(k, c, v), g, placement))
            .filter(|a| *a != Action::None)
            .collect()
    }

    #[test]
    fn keys_go_as_qnums_in_order_repeats_as_presses() {
        let (mut f, mut d, mut g) = (Forwarder::default(), keyboard(), Recorder::default());
        let k = evdev::EV_KEY;
        feed(
            &mut f,
            &mut d,
            &mut g,
            &[
                (k, 30, 1),
                SYN,
                (k, 30, 2),
                SYN,
                (k, 97, 1),
                (k, 30, 0),
                SYN,
                (k, 97, 0),
                SYN,
            ],
        );
        assert_eq!(
            g.calls,
            [
                Call::Key(0x1e, true),
                Call::Key(0x1e, true),
                Call::Key(0x9d, true),
                Call::Key(0x1e, false),
                Call::Key(0x9d, false)
            ]
        );
    }

    #[test]
    fn ctrl_alt_g_toggles_and_is_not_forwarded() {
        let (mut f, mut d, mut g) = (Forwarder::default(), keyboard(), Recorder::default());
        let k = evdev::EV_KEY;
        let actions = feed(
            &mut f,
            &mut d,
            &mut g,
            &[
                (k, 29, 1),
                SYN,
                (k, 56, 1),
                SYN,
                (k, 34, 1),
                SYN,
                (k, 34, 0),
                SYN,
            ],
        );
        assert_eq!(actions, [Action::ToggleGrab]);
        assert_eq!(g.calls, [Call::Key(0x1d, true), Call::Key(0x38, true)]);
    }

    #[test]
    fn a_frame_after_syn_dropped_is_skipped_then_resynced() {
        let (mut f, mut d, mut g) = (Forwarder::default(), keyboard(), Recorder::default());
        let k = evdev::EV_KEY;
        let actions = feed(
            &mut f,
            &mut d,
            &mut g,
            &[
                (k, 30, 1),
                (evdev::EV_SYN, evdev::SYN_DROPPED, 0),
                (k, 31, 1),
                SYN,
                (k, 32, 1),
                SYN,
            ],
        );
        assert_eq!(actions, [Action::Resync]);
        assert_eq!(g.calls, [Call::Key(0x20, true)]);
        // The device says 32 is up by now: released in the guest.
        let mut down = [0u8; evdev::KEY_CNT / 8];
        f.resync(&mut d, &down, &mut g);
        assert_eq!(g.calls, [Call::Key(0x20, true), Call::Key(0x20, false)]);
        // A key still down stays held.
        feed(&mut f, &mut d, &mut g, &[(k, 33, 1), SYN]);
        down[33 / 8] |= 1 << (33 % 8);
        f.resync(&mut d, &down, &mut g);
        assert_eq!(g.calls.last(), Some(&Call::Key(0x21, true)));
    }

    #[test]
    fn relative_motion_buttons_and_wheel() {
        let (mut f, mut d, mut g) = (Forwarder::default(), keyboard(), Recorder::default());
        let (r, k) = (evdev::EV_REL, evdev::EV_KEY);
        feed(
            &mut f,
            &mut d,
            &mut g,
            &[
                (r, evdev::REL_X, 5),
                (r, evdev::REL_Y, -3),
                (k, evdev::BTN_LEFT, 1),
                SYN,
                (k, evdev::BTN_LEFT, 0),
                SYN,
                (r, evdev::REL_WHEEL, -2),
                SYN,
                (k, evdev::BTN_SIDE, 1),
                SYN,
            ],
        );
        assert_eq!(
            g.calls,
            [
                Call::Rel(5, -3),
                Call::Button(0, true),
                Call::Button(0, false),
                Call::Button(4, true),
                Call::Button(4, false),
                Call::Button(4, true),
                Call::Button(4, false),
                Call::Button(5, true),
            ]
        );
        f.release_all(&mut d, &mut g);
        assert_eq!(g.calls.last(), Some(&Call::Button(5, false)));
    }

    /// An absolute guest: the pointer moves on the monitor and lands on
    /// guest pixels through the pillarbox (640x480 shown at 160,0 960x720).
    #[test]
    fn absolute_positions_go_through_the_letterbox() {
        let (mut f, mut d, mut g) = (
            Forwarder::default(),
            keyboard(),
            Recorder {
                absolute: true,
                ..Recorder::default()
            },
        );
        let r = evdev::EV_REL;
        feed(
            &mut f,
            &mut d,
            &mut g,
            &[
                (r, evdev::REL_X, -10_000),
                (r, evdev::REL_Y, -10_000),
                SYN,
                (r, evdev::REL_X, 160),
                SYN,
                (r, evdev::REL_X, 959),
                (r, evdev::REL_Y, 719),
                SYN,
                (r, evdev::REL_X, -480),
                (r, evdev::REL_Y, -360),
                SYN,
            ],
        );
        assert_eq!(
            g.calls,
            [
                Call::Abs(0, 0),
                Call::Abs(0, 0),
                Call::Abs(639, 479),
                Call::Abs(319, 239)
            ]
        );
    }

    #[test]
    fn nothing_is_forwarded_while_given_back() {
        let (mut f, mut d, mut g) = (Forwarder::default(), keyboard(), Recorder::default());
        f.forwarding = false;
        let (r, k) = (evdev::EV_REL, evdev::EV_KEY);
        feed(
            &mut f,
            &mut d,
            &mut g,
            &[(k, 30, 1), SYN, (r, evdev::REL_X, 3), SYN, (k, 30, 0), SYN],
        );
        assert!(g.calls.is_empty(), "{:?}", g.calls);
    }

    /// A touchscreen over the whole 1280x720 monitor, in its own pixels.
    fn touchscreen() -> Device {
        Device::new(&Capabilities::touchscreen((1279, 719), 10))
    }

    fn touches(g: &Recorder) -> Vec<Call> {
        g.calls
            .iter()
            .filter(|c| matches!(c, Call::Touch(..)))
            .cloned()
            .collect()
    }

    #[test]
    fn two_fingers_begin_move_and_end_on_the_guest_pixels_under_them() {
        let mut f = Forwarder::default();
        let mut d = touchscreen();
        let mut g = Recorder {
            absolute: true,
            touch_slots: 10,
            ..Recorder::default()
        };
        let (a, k) = (evdev::EV_ABS, evdev::EV_KEY);
        use evdev::ABS_MT_TRACKING_ID as ID;
        use evdev::{ABS_MT_POSITION_X as MX, ABS_MT_POSITION_Y as MY, ABS_MT_SLOT as SLOT};
        feed(
            &mut f,
            &mut d,
            &mut g,
            &[
                // Finger 0 on the picture's top-left pixel (monitor 160, 0).
                (a, SLOT, 0),
                (a, ID, 7),
                (a, MX, 160),
                (a, MY, 0),
                (k, evdev::BTN_TOUCH, 1),
                (a, evdev::ABS_X, 160),
                (a, evdev::ABS_Y, 0),
                SYN,
                // Finger 1 on the bottom-right one (monitor 1119, 719).
                (a, SLOT, 1),
                (a, ID, 8),
                (a, MX, 1119),
                (a, MY, 719),
                SYN,
                // Finger 0 to the centre (monitor 640, 360: guest 320, 240).
                (a, SLOT, 0),
                (a, MX, 640),
                (a, MY, 360),
                (a, evdev::ABS_X, 640),
                (a, evdev::ABS_Y, 360),
                SYN,
                // Finger 1 lifted; then finger 0 in the left bar, lifted.
                (a, SLOT, 1),
                (a, ID, -1),
                SYN,
                (a, SLOT, 0),
                (a, MX, 3),
                SYN,
                (a, ID, -1),
                (k, evdev::BTN_TOUCH, 0),
                SYN,
            ],
        );
        assert_eq!(
            touches(&g),
            [
                Call::Touch(touch::BEGIN, 0, 0.0, 0.0),
                Call::Touch(touch::BEGIN, 1, 639.0, 479.0),
                Call::Touch(touch::UPDATE, 0, 320.0, 240.0),
                Call::Touch(touch::END, 1, 639.0, 479.0),
                Call::Touch(touch::UPDATE, 0, 0.0, 240.0),
                Call::Touch(touch::END, 0, 0.0, 240.0),
            ]
        );
        // The first finger also works the pointer: pressed, moved, released.
        let pointer: Vec<Call> = g
            .calls
            .iter()
            .filter(|c| !matches!(c, Call::Touch(..)))
            .cloned()
            .collect();
        assert_eq!(
            pointer,
            [
                Call::Abs(0, 0),
                Call::Button(button::LEFT, true),
                Call::Abs(320, 240),
                Call::Button(button::LEFT, false),
            ]
        );
    }

    #[test]
    fn fingers_beyond_the_consoles_slots_or_without_multitouch_are_not_sent() {
        let (a, mut f, mut d) = (evdev::EV_ABS, Forwarder::default(), touchscreen());
        let mut g = Recorder {
            touch_slots: 2,
            ..Recorder::default()
        };
        let finger = |slot| {
            [
                (a, evdev::ABS_MT_SLOT, slot),
                (a, evdev::ABS_MT_TRACKING_ID, slot),
                SYN,
            ]
        };
        for slot in 0..4 {
            feed(&mut f, &mut d, &mut g, &finger(slot));
        }
        let slots: Vec<u64> = touches(&g)
            .iter()
            .map(|c| match c {
                Call::Touch(_, slot, ..) => *slot,
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(slots, [0, 1]);

        let (mut f, mut d, mut g) = (Forwarder::default(), touchscreen(), Recorder::default());
        feed(&mut f, &mut d, &mut g, &finger(0));
        assert_eq!(touches(&g), []);
    }

    #[test]
    fn lost_events_lift_every_finger_the_guest_holds() {
        let (a, mut f, mut d) = (evdev::EV_ABS, Forwarder::default(), touchscreen());
        let mut g = Recorder {
            touch_slots: 10,
            ..Recorder::default()
        };
        feed(
            &mut f,
            &mut d,
            &mut g,
            &[
                (a, evdev::ABS_MT_SLOT, 0),
                (a, evdev::ABS_MT_TRACKING_ID, 1),
                SYN,
                (a, evdev::ABS_MT_SLOT, 3),
                (a, evdev::ABS_MT_TRACKING_ID, 2),
                SYN,
            ],
        );
        let actions = feed(
            &mut f,
            &mut d,
            &mut g,
            &[(evdev::EV_SYN, evdev::SYN_DROPPED, 0), SYN],
        );
        assert_eq!(actions, [Action::Resync]);
        f.resync(&mut d, &[0u8; evdev::KEY_CNT / 8], &mut g);
        let ends: Vec<Call> = touches(&g).into_iter().skip(2).collect();
        assert_eq!(
            ends,
            [
                Call::Touch(touch::END, 0, 0.0, 0.0),
                Call::Touch(touch::END, 3, 0.0, 0.0)
            ]
        );
    }

    #[test]
    fn ctrl_alt_fn_switches_vt_and_reaches_no_guest() {
        let (mut f, mut d, mut g) = (Forwarder::default(), keyboard(), Recorder::default());
        let k = evdev::EV_KEY;
        let actions = feed(
            &mut f,
            &mut d,
            &mut g,
            &[
                (k, 29, 1),
                SYN,
                (k, 56, 1),
                SYN,
                (k, 60, 1), // F2
                SYN,
                (k, 60, 2),
                SYN,
                (k, 60, 0),
                SYN,
                (k, 88, 1), // F12
                SYN,
                (k, 88, 0),
                SYN,
                (k, 56, 0),
                (k, 29, 0),
                SYN,
                (k, 60, 1), // F2 alone: the guest's
                SYN,
            ],
        );
        assert_eq!(actions, [Action::SwitchVt(2), Action::SwitchVt(12)]);
        assert_eq!(
            g.calls,
            [
                Call::Key(0x1d, true),
                Call::Key(0x38, true),
                Call::Key(0x38, false),
                Call::Key(0x1d, false),
                Call::Key(0x3c, true),
            ]
        );
    }
}
