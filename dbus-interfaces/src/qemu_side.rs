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
