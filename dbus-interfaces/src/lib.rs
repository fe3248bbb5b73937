//! `org.qemu.Display1`, QEMU's D-Bus display interface, with QEMU's exact
//! signatures: proxies for QEMU's objects, the listener the sink serves on the
//! p2p socket, and the checks every message passes at this edge. Behind the
//! `qemu-side` feature, QEMU's side for test producers.

pub mod format;
pub mod listener;
pub mod map;
pub mod proxies;
pub mod release;
pub mod validate;

#[cfg(feature = "qemu-side")]
pub mod qemu_side;

pub use dmabuf::Rect;
pub use format::PixelFormat;
pub use listener::{
    check_cursor_define, check_plane_counts, check_scanout, check_update, dmabuf_scanout,
    listener_socketpair, serve_listener, Cursor, DmabufScanout, ListenerEvent, ListenerHandler,
    ListenerOptions,
};
pub use map::SharedMap;
pub use release::Release;
pub use validate::{InvalidInput, Layout, Pixels, MAX_CURSOR_DIM, MAX_SURFACE_DIM};

/// The well-known name QEMU owns on a bus (later QEMUs queue behind the first).
pub const QEMU_BUS_NAME: &str = "org.qemu";
/// The root of QEMU's object manager.
pub const DISPLAY_ROOT_PATH: &str = "/org/qemu/Display1";
/// Where the sink serves its listener on the p2p connection.
pub const LISTENER_PATH: &str = "/org/qemu/Display1/Listener";
pub const LISTENER_INTERFACE: &str = "org.qemu.Display1.Listener";
pub const MAP_INTERFACE: &str = "org.qemu.Display1.Listener.Unix.Map";
pub const SCANOUT_DMABUF2_INTERFACE: &str = "org.qemu.Display1.Listener.Unix.ScanoutDMABUF2";
