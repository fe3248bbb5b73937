//! Frame sources: QEMU's D-Bus display listener (vdmabuf later).

pub mod dbus;
