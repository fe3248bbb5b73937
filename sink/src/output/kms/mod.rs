//! The KMS device layer: a DRM card (master, atomic), the pipe an output
//! drives (connector, CRTC, mode, primary and cursor planes), what each
//! plane scans out (IN_FORMATS), DMA-BUFs and dumb buffers as framebuffers,
//! atomic commits with page-flip events, and writeback captures.
//!
//! Everything here is owned by one output thread (ARCHITECTURE.md), but
//! the card: an `Arc<Card>`, opened once per process, shared by the heads
//! on it (one open file is DRM master for all), which share out its
//! page-flip events by CRTC (`events`) and claim their pipes so that no
//! two drive the same CRTC or plane (`PipeClaims`); framebuffers hold it
//! to remove themselves on drop. Every failure names the call and the device
//! ([`KmsError`]).
//!
//! ```text
//! Card::open_default() ─▶ Pipe::select(card, connector, mode)
//!   Framebuffer::import(card, dmabuf) / DumbBuffer::create(..).framebuffer()
//!   Committer::new(card, pipe): modeset(plane) once, then flip(plane)
//!     + read_events()/wait_flip() ─▶ FlipEvent (CLOCK_MONOTONIC)
//!   Writeback::find(card).capture(&committer) ─▶ RgbaFrame (tests)
//! ```

pub mod commit;
pub mod device;
pub mod error;
pub mod events;
pub mod framebuffer;
pub mod pipe;
pub mod plane;
pub mod scanout;
pub mod writeback;

pub use commit::{Committer, FlipEvent, Flipped, PlaneConfig, Rect, Request, TestOutcome};
pub use device::{
    connected_outputs, find_node, Caps, Card, CardAccess, CardChoice, ConnectedOutput, NodeKind,
    PropMap,
};
pub use error::KmsError;
pub use events::FlipRoute;
pub use framebuffer::{DumbBuffer, Framebuffer, GemHandle};
pub use pipe::{ModeSpec, Pipe, PipeClaims};
pub use plane::{parse_in_formats, FormatSet, Plane};
pub use scanout::ScanoutBuffer;
pub use writeback::Writeback;

#[cfg(test)]
mod tests {
    /// The output thread is spawned with what it will own; errors travel
    /// across threads.
    #[test]
    fn moves_to_an_output_thread() {
        fn send<T: Send>() {}
        fn send_sync<T: Send + Sync>() {}
        send_sync::<super::Card>();
        send_sync::<super::KmsError>();
        send::<super::Committer>();
        send::<super::Framebuffer>();
        send::<super::DumbBuffer>();
        send::<super::Writeback>();
    }
}
