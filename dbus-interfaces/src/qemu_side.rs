//! QEMU's side of the listener connection, for test producers (a fake QEMU):
//! proxies that call a sink's listener with QEMU's exact signatures. zbus
//! proxies need a destination; on the p2p socket it names nobody and is
//! ignored, as QEMU's own (NULL-named) proxies leave it out.

use zbus::proxy;

#[proxy(
    interface = "org.qemu.Display1.Listener",
    default_service = "org.qemu.Display1.Listener",
    default_path = "/org/qemu/Display1/Listener"
)]
pub trait Listener {
    #[zbus(no_reply)]
    fn scanout(
        &self,
        width: u32,
        height: u32,
        stride: u32,
        pixman_format: u32,
        data: &serde_bytes::Bytes,
    ) -> zbus::Result<()>;

    #[zbus(no_reply)]
    #[allow(clippy::too_many_arguments)]
    fn update(
        &self,
        x: i32,
        y: i32,
        w: i32,
        h: i32,
        stride: u32,
        pixman_format: u32,
        data: &serde_bytes::Bytes,
    ) -> zbus::Result<()>;

    #[zbus(name = "ScanoutDMABUF", no_reply)]
    #[allow(clippy::too_many_arguments)]
    fn scanout_dmabuf(
        &self,
        dmabuf: zbus::zvariant::Fd<'_>,
        width: u32,
        height: u32,
        stride: u32,
        fourcc: u32,
        modifier: u64,
        y0_top: bool,
    ) -> zbus::Result<()>;

    #[zbus(name = "UpdateDMABUF")]
    fn update_dmabuf(&self, x: i32, y: i32, w: i32, h: i32) -> zbus::Result<()>;

    #[zbus(no_reply)]
    fn disable(&self) -> zbus::Result<()>;

    #[zbus(no_reply)]
    fn mouse_set(&self, x: i32, y: i32, on: i32) -> zbus::Result<()>;

    #[zbus(no_reply)]
    fn cursor_define(
        &self,
        width: i32,
        height: i32,
        hot_x: i32,
        hot_y: i32,
        data: &serde_bytes::Bytes,
    ) -> zbus::Result<()>;

    #[zbus(property)]
    fn interfaces(&self) -> zbus::Result<Vec<String>>;
}

#[proxy(
    interface = "org.qemu.Display1.Listener.Unix.Map",
    default_service = "org.qemu.Display1.Listener",
    default_path = "/org/qemu/Display1/Listener"
)]
pub trait MapListener {
    fn scanout_map(
        &self,
        handle: zbus::zvariant::Fd<'_>,
        offset: u32,
        width: u32,
        height: u32,
        stride: u32,
        pixman_format: u32,
    ) -> zbus::Result<()>;

    #[zbus(no_reply)]
    fn update_map(&self, x: i32, y: i32, w: i32, h: i32) -> zbus::Result<()>;
}

#[proxy(
    interface = "org.qemu.Display1.Listener.Unix.ScanoutDMABUF2",
    default_service = "org.qemu.Display1.Listener",
    default_path = "/org/qemu/Display1/Listener"
)]
pub trait ScanoutDmabuf2Listener {
    #[zbus(name = "ScanoutDMABUF2", no_reply)]
    #[allow(clippy::too_many_arguments)]
    fn scanout_dmabuf2(
        &self,
        dmabuf: &[zbus::zvariant::Fd<'_>],
        x: u32,
        y: u32,
        width: u32,
        height: u32,
        offset: &[u32],
        stride: &[u32],
        num_planes: u32,
        fourcc: u32,
        backing_width: u32,
        backing_height: u32,
        modifier: u64,
        y0_top: bool,
    ) -> zbus::Result<()>;
}

/// QEMU's `org.qemu.Display1.VM` object, for a fake QEMU.
#[derive(Debug, Clone)]
pub struct VmServer {
    pub name: String,
    pub uuid: String,
    pub console_ids: Vec<u32>,
}

#[zbus::interface(name = "org.qemu.Display1.VM")]
impl VmServer {
    #[zbus(property)]
    fn name(&self) -> String {
        self.name.clone()
    }

    #[zbus(property, name = "UUID")]
    fn uuid(&self) -> String {
        self.uuid.clone()
    }

    #[zbus(property, name = "ConsoleIDs")]
    fn console_ids(&self) -> Vec<u32> {
        self.console_ids.clone()
    }

    #[zbus(property)]
    fn interfaces(&self) -> Vec<String> {
        Vec::new()
    }
}

/// QEMU's `org.qemu.Display1.Console` object, for a fake QEMU: each
/// `RegisterListener` hands the listener's socket to `listeners`.
#[derive(Debug)]
pub struct ConsoleServer {
    pub label: String,
    pub width: u32,
    pub height: u32,
    pub listeners: std::sync::mpsc::Sender<std::os::fd::OwnedFd>,
    /// Where `SetUIInfo` calls go; `None`: the console answers as std VGA
    /// does (it has no `ui_info`), that it cannot.
    pub ui_infos: Option<std::sync::mpsc::Sender<UiInfo>>,
}

/// One `SetUIInfo` call: the monitor a UI shows the console on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UiInfo {
    pub width_mm: u16,
    pub height_mm: u16,
    pub xoff: i32,
    pub yoff: i32,
    pub width: u32,
    pub height: u32,
}

#[zbus::interface(name = "org.qemu.Display1.Console")]
impl ConsoleServer {
    async fn register_listener(&self, listener: zbus::zvariant::OwnedFd) -> zbus::fdo::Result<()> {
        self.listeners
            .send(listener.into())
            .map_err(|_| zbus::fdo::Error::Failed("the fake QEMU is gone".into()))
    }

    #[zbus(name = "SetUIInfo")]
    #[allow(clippy::too_many_arguments)]
    async fn set_ui_info(
        &self,
        width_mm: u16,
        height_mm: u16,
        xoff: i32,
        yoff: i32,
        width: u32,
        height: u32,
    ) -> zbus::fdo::Result<()> {
        let Some(calls) = &self.ui_infos else {
            return Err(zbus::fdo::Error::NotSupported(
                "std VGA has no ui_info".into(),
            ));
        };
        let _ = calls.send(UiInfo {
            width_mm,
            height_mm,
            xoff,
            yoff,
            width,
            height,
        });
        Ok(())
    }

    #[zbus(property)]
    fn label(&self) -> String {
        self.label.clone()
    }

    #[zbus(property)]
    fn head(&self) -> u32 {
        0
    }

    #[zbus(property, name = "Type")]
    fn type_(&self) -> String {
        "Graphic".into()
    }

    #[zbus(property)]
    fn width(&self) -> u32 {
        self.width
    }

    #[zbus(property)]
    fn height(&self) -> u32 {
        self.height
    }

    #[zbus(property)]
    fn device_address(&self) -> String {
        "pci/0000/02.0".into()
    }

    #[zbus(property)]
    fn interfaces(&self) -> Vec<String> {
        vec![
            "org.qemu.Display1.Keyboard".into(),
            "org.qemu.Display1.Mouse".into(),
            "org.qemu.Display1.MultiTouch".into(),
        ]
    }
}

/// One input call QEMU's console received (`Keyboard`, `Mouse`,
/// `MultiTouch`), as a fake QEMU records it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum InputCall {
    KeyPress(u32),
    KeyRelease(u32),
    ButtonPress(u32),
    ButtonRelease(u32),
    AbsPosition(u32, u32),
    RelMotion(i32, i32),
    Touch {
        kind: u32,
        slot: u64,
        x: f64,
        y: f64,
    },
}

/// QEMU's `org.qemu.Display1.Keyboard`, for a fake QEMU: every call goes
/// to `calls`, in the order received (served in order: `spawn = false`).
#[derive(Debug)]
pub struct KeyboardServer {
    pub calls: std::sync::mpsc::Sender<InputCall>,
}

#[zbus::interface(name = "org.qemu.Display1.Keyboard", spawn = false)]
impl KeyboardServer {
    async fn press(&self, keycode: u32) {
        let _ = self.calls.send(InputCall::KeyPress(keycode));
    }

    async fn release(&self, keycode: u32) {
        let _ = self.calls.send(InputCall::KeyRelease(keycode));
    }

    #[zbus(property)]
    fn modifiers(&self) -> u32 {
        0
    }
}

/// QEMU's `org.qemu.Display1.Mouse`, for a fake QEMU. Like QEMU, it
/// refuses `SetAbsPosition` unless absolute, `RelMotion` while absolute,
/// and positions outside the console (`width` x `height`); refused calls
/// are not recorded.
#[derive(Debug)]
pub struct MouseServer {
    pub calls: std::sync::mpsc::Sender<InputCall>,
    pub absolute: bool,
    pub width: u32,
    pub height: u32,
}

fn invalid(what: &str) -> zbus::fdo::Error {
    zbus::fdo::Error::InvalidArgs(what.into())
}

#[zbus::interface(name = "org.qemu.Display1.Mouse", spawn = false)]
impl MouseServer {
    async fn press(&self, button: u32) {
        let _ = self.calls.send(InputCall::ButtonPress(button));
    }

    async fn release(&self, button: u32) {
        let _ = self.calls.send(InputCall::ButtonRelease(button));
    }

    async fn set_abs_position(&self, x: u32, y: u32) -> zbus::fdo::Result<()> {
        if !self.absolute {
            return Err(invalid("Mouse is not absolute"));
        }
        if x >= self.width || y >= self.height {
            return Err(invalid("Invalid mouse position"));
        }
        let _ = self.calls.send(InputCall::AbsPosition(x, y));
        Ok(())
    }

    async fn rel_motion(&self, dx: i32, dy: i32) -> zbus::fdo::Result<()> {
        if self.absolute {
            return Err(invalid("Mouse is not relative"));
        }
        let _ = self.calls.send(InputCall::RelMotion(dx, dy));
        Ok(())
    }

    #[zbus(property)]
    fn is_absolute(&self) -> bool {
        self.absolute
    }
}

/// QEMU's `org.qemu.Display1.MultiTouch`, for a fake QEMU.
#[derive(Debug)]
pub struct MultiTouchServer {
    pub calls: std::sync::mpsc::Sender<InputCall>,
    pub max_slots: i32,
    /// `MaxSlots` is answered this late, the whole server stalled
    /// meanwhile (as a hung QEMU's would be); zero for a QEMU that
    /// behaves.
    pub max_slots_after: std::time::Duration,
}

#[zbus::interface(name = "org.qemu.Display1.MultiTouch", spawn = false)]
impl MultiTouchServer {
    async fn send_event(&self, kind: u32, num_slot: u64, x: f64, y: f64) -> zbus::fdo::Result<()> {
        if kind > 3 {
            return Err(invalid("Invalid touch event kind"));
        }
        let _ = self.calls.send(InputCall::Touch {
            kind,
            slot: num_slot,
            x,
            y,
        });
        Ok(())
    }

    #[zbus(property)]
    fn max_slots(&self) -> i32 {
        std::thread::sleep(self.max_slots_after);
        self.max_slots
    }
}
