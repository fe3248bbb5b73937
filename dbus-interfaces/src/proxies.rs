//! Proxies for QEMU's objects: VM, Console, Keyboard, Mouse, MultiTouch.
//! The input methods expect no reply (QEMU handles them in the order they
//! come, and a person's input must not wait on QEMU's answers).

use zbus::proxy;

#[proxy(
    interface = "org.qemu.Display1.VM",
    default_service = "org.qemu",
    default_path = "/org/qemu/Display1/VM"
)]
pub trait Vm {
    #[zbus(property)]
    fn name(&self) -> zbus::Result<String>;

    #[zbus(property, name = "UUID")]
    fn uuid(&self) -> zbus::Result<String>;

    #[zbus(property, name = "ConsoleIDs")]
    fn console_ids(&self) -> zbus::Result<Vec<u32>>;

    #[zbus(property)]
    fn interfaces(&self) -> zbus::Result<Vec<String>>;
}

#[proxy(
    interface = "org.qemu.Display1.Console",
    default_service = "org.qemu",
    default_path = "/org/qemu/Display1/Console_0"
)]
pub trait Console {
    /// `h`: one end of a socketpair; QEMU then speaks p2p D-Bus on it as the
    /// auth server.
    fn register_listener(&self, listener: zbus::zvariant::Fd<'_>) -> zbus::Result<()>;

    #[zbus(name = "SetUIInfo")]
    fn set_ui_info(
        &self,
        width_mm: u16,
        height_mm: u16,
        xoff: i32,
        yoff: i32,
        width: u32,
        height: u32,
    ) -> zbus::Result<()>;

    #[zbus(property)]
    fn label(&self) -> zbus::Result<String>;

    #[zbus(property)]
    fn head(&self) -> zbus::Result<u32>;

    #[zbus(property, name = "Type")]
    fn type_(&self) -> zbus::Result<String>;

    #[zbus(property)]
    fn width(&self) -> zbus::Result<u32>;

    #[zbus(property)]
    fn height(&self) -> zbus::Result<u32>;

    #[zbus(property)]
    fn device_address(&self) -> zbus::Result<String>;

    #[zbus(property)]
    fn interfaces(&self) -> zbus::Result<Vec<String>>;
}

#[proxy(
    interface = "org.qemu.Display1.Keyboard",
    default_service = "org.qemu",
    default_path = "/org/qemu/Display1/Console_0"
)]
pub trait Keyboard {
    /// `keycode`: QEMU's key number (qnum).
    #[zbus(no_reply)]
    fn press(&self, keycode: u32) -> zbus::Result<()>;
    #[zbus(no_reply)]
    fn release(&self, keycode: u32) -> zbus::Result<()>;
    #[zbus(property)]
    fn modifiers(&self) -> zbus::Result<u32>;
}

#[proxy(
    interface = "org.qemu.Display1.Mouse",
    default_service = "org.qemu",
    default_path = "/org/qemu/Display1/Console_0"
)]
pub trait Mouse {
    /// `button`: QEMU's `InputButton` (see [`button`]).
    #[zbus(no_reply)]
    fn press(&self, button: u32) -> zbus::Result<()>;
    #[zbus(no_reply)]
    fn release(&self, button: u32) -> zbus::Result<()>;
    /// In the console's pixels; QEMU refuses it unless `IsAbsolute`.
    #[zbus(no_reply)]
    fn set_abs_position(&self, x: u32, y: u32) -> zbus::Result<()>;
    /// QEMU refuses it while `IsAbsolute`.
    #[zbus(no_reply)]
    fn rel_motion(&self, dx: i32, dy: i32) -> zbus::Result<()>;
    #[zbus(property)]
    fn is_absolute(&self) -> zbus::Result<bool>;
}

/// QEMU's mouse buttons: its QAPI enum `InputButton` in declaration order
/// (`qapi/ui.json`: left, middle, right, wheel-up, wheel-down, side, extra,
/// wheel-left, wheel-right; checked against QEMU's source, and the same
/// first seven as `ui/dbus-display1.xml` lists for `Mouse.Press`).
pub mod button {
    pub const LEFT: u32 = 0;
    pub const MIDDLE: u32 = 1;
    pub const RIGHT: u32 = 2;
    pub const WHEEL_UP: u32 = 3;
    pub const WHEEL_DOWN: u32 = 4;
    pub const SIDE: u32 = 5;
    pub const EXTRA: u32 = 6;
    pub const WHEEL_LEFT: u32 = 7;
    pub const WHEEL_RIGHT: u32 = 8;
}

/// `MultiTouch.SendEvent`'s kinds (QEMU's `InputMultiTouchType`).
pub mod touch {
    pub const BEGIN: u32 = 0;
    pub const UPDATE: u32 = 1;
    pub const END: u32 = 2;
    pub const CANCEL: u32 = 3;
}

#[proxy(
    interface = "org.qemu.Display1.MultiTouch",
    default_service = "org.qemu",
    default_path = "/org/qemu/Display1/Console_0"
)]
pub trait MultiTouch {
    /// `kind`: one of [`touch`]; `num_slot` below `MaxSlots` (QEMU
    /// refuses others); `x`, `y` in the console's pixels.
    #[zbus(no_reply)]
    fn send_event(&self, kind: u32, num_slot: u64, x: f64, y: f64) -> zbus::Result<()>;
    #[zbus(property)]
    fn max_slots(&self) -> zbus::Result<i32>;
}

/// The object path of console `id`.
pub fn console_path(id: u32) -> String {
    format!("/org/qemu/Display1/Console_{id}")
}
