//! Frame sources: QEMU's D-Bus display listener and vdmabuf export events,
//! both making the same typed events for the outputs.

pub mod dbus;
pub mod vdmabuf;
