//! qemu-sink's pipeline: attaching to QEMU, the frame sources, the outputs,
//! and the processes the demo and the tests start.

pub mod attach;
pub mod demo;
pub mod frame;
pub mod handover;
pub mod input;
pub mod latency;
pub mod libvirt;
pub mod memory;
pub mod notify;
pub mod output;
pub mod qmp;
pub mod report;
pub mod seat;
pub mod signals;
pub mod source;
pub mod state;
pub mod surface;
pub mod vm;
