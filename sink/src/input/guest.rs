//! Where input goes: QEMU's console (`org.qemu.Display1.Keyboard` and
//! `Mouse` on the attachment's control connection), behind a trait so the
//! translation from evdev is tested without a QEMU.

use dbus_interfaces::proxies::{
    console_path, KeyboardProxyBlocking, MouseProxyBlocking, MultiTouchProxyBlocking,
};
use zbus::proxy::CacheProperties;

/// The guest's input devices as QEMU's console offers them.
pub trait Guest {
    /// `qnum`: QEMU's key number.
    fn key(&mut self, qnum: u32, down: bool);
    /// `button`: QEMU's `InputButton`.
    fn button(&mut self, button: u32, down: bool);
    /// A position in the console's pixels (only while absolute).
    fn abs(&mut self, x: u32, y: u32);
    fn rel(&mut self, dx: i32, dy: i32);
    /// Whether the guest's pointer takes positions (a tablet) rather than
    /// motion (a mouse): QEMU's `Mouse.IsAbsolute`, followed as it changes.
    fn is_absolute(&mut self) -> bool;
    /// A finger: `kind` one of `proxies::touch`, `slot` below
    /// [`Guest::touch_slots`], at a position in the console's pixels.
    fn touch(&mut self, kind: u32, slot: u64, x: f64, y: f64);
    /// How many fingers the console takes (`MultiTouch.MaxSlots`; 0 when
    /// it has no `MultiTouch`, before QEMU 8.1).
    fn touch_slots(&mut self) -> usize;
    /// How many calls were sent so far (for the input stage's latency).
    fn calls(&self) -> u64 {
        0
    }
}

/// No QEMU attached: input goes nowhere.
pub struct Nobody;

impl Guest for Nobody {
    fn key(&mut self, _: u32, _: bool) {}
    fn button(&mut self, _: u32, _: bool) {}
    fn abs(&mut self, _: u32, _: u32) {}
    fn rel(&mut self, _: i32, _: i32) {}
    fn is_absolute(&mut self) -> bool {
        false
    }
    fn touch(&mut self, _: u32, _: u64, _: f64, _: f64) {}
    fn touch_slots(&mut self) -> usize {
        0
    }
}

/// Which console of which QEMU, on which connection (the attachment's
/// control connection: a bus and QEMU's unique name, or the p2p one).
#[derive(Clone)]
pub struct Target {
    pub connection: zbus::blocking::Connection,
    pub destination: Option<String>,
    pub console: u32,
}

/// QEMU's console over D-Bus. Every call is sent without waiting for an
/// answer (`NO_REPLY_EXPECTED`): calls on one connection reach QEMU in the
/// order they were sent, and a QEMU that is slow to answer never holds up
/// the person typing. A call that cannot be sent is logged once.
pub struct Dbus {
    keyboard: KeyboardProxyBlocking<'static>,
    mouse: MouseProxyBlocking<'static>,
    multi_touch: MultiTouchProxyBlocking<'static>,
    /// `MaxSlots`, read once (0: no `MultiTouch` on this console).
    touch_slots: usize,
    failed: bool,
    calls: u64,
}

impl Dbus {
    /// Proxies for `target`'s console; reads `IsAbsolute` once and then
    /// follows its changes (a property cache fed by QEMU's signals), and
    /// `MaxSlots` once (it never changes).
    pub fn new(target: &Target) -> zbus::Result<Dbus> {
        let path = console_path(target.console);
        let keyboard = KeyboardProxyBlocking::builder(&target.connection)
            .cache_properties(CacheProperties::No)
            .path(path.clone())?;
        let mouse = MouseProxyBlocking::builder(&target.connection)
            .cache_properties(CacheProperties::Yes)
            .path(path.clone())?;
        let multi_touch = MultiTouchProxyBlocking::builder(&target.connection)
            .cache_properties(CacheProperties::No)
            .path(path)?;
        let (keyboard, mouse, multi_touch) = match &target.destination {
            Some(peer) => (
                keyboard.destination(peer.clone())?,
                mouse.destination(peer.clone())?,
                multi_touch.destination(peer.clone())?,
            ),
            None => (keyboard, mouse, multi_touch),
        };
        let multi_touch = multi_touch.build()?;
        let touch_slots = match multi_touch.max_slots() {
            Ok(n) => usize::try_from(n).unwrap_or(0),
            Err(err) => {
                tracing::info!("input: console {} takes no touch ({err}): a touchscreen only moves the pointer", target.console);
                0
            }
        };
        Ok(Dbus {
            keyboard: keyboard.build()?,
            mouse: mouse.build()?,
            multi_touch,
            touch_slots,
            failed: false,
            calls: 0,
        })
    }

    fn sent(&mut self, what: &str, result: zbus::Result<()>) {
        self.calls += 1;
        match result {
            Ok(()) => self.failed = false,
            Err(err) if !self.failed => {
                self.failed = true;
                tracing::warn!("input: sending {what} to QEMU: {err}");
            }
            Err(err) => tracing::debug!("input: sending {what} to QEMU: {err}"),
        }
    }
}

impl Guest for Dbus {
    fn key(&mut self, qnum: u32, down: bool) {
        let result = if down {
            self.keyboard.press(qnum)
        } else {
            self.keyboard.release(qnum)
        };
        self.sent("a key", result);
    }

    fn button(&mut self, button: u32, down: bool) {
        let result = if down {
            self.mouse.press(button)
        } else {
            self.mouse.release(button)
        };
        self.sent("a button", result);
    }

    fn abs(&mut self, x: u32, y: u32) {
        let result = self.mouse.set_abs_position(x, y);
        self.sent("the pointer's position", result);
    }

    fn rel(&mut self, dx: i32, dy: i32) {
        let result = self.mouse.rel_motion(dx, dy);
        self.sent("the pointer's motion", result);
    }

    fn is_absolute(&mut self) -> bool {
        match self.mouse.cached_is_absolute() {
            Ok(Some(absolute)) => absolute,
            _ => false,
        }
    }

    fn touch(&mut self, kind: u32, slot: u64, x: f64, y: f64) {
        let result = self.multi_touch.send_event(kind, slot, x, y);
        self.sent("a touch", result);
    }

    fn touch_slots(&mut self) -> usize {
        self.touch_slots
    }

    fn calls(&self) -> u64 {
        self.calls
    }
}
