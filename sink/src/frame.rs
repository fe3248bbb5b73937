//! A frame's way through the sink, as data: the DMA-BUF events the source
//! hands to an output, and one timestamp record per frame (CLOCK_MONOTONIC,
//! the clock of the kernel's page-flip timestamps) that latency mode reads.

use std::time::Duration;

use dbus_interfaces::{DmabufScanout, Rect, Release};

use crate::source::vdmabuf::VdmabufRelease;

/// When a shown frame's buffer may go: data its source sets, so that an
/// output never asks where a frame came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReleasePolicy {
    /// At the flip that shows it (QEMU's `UpdateDMABUF` answer: it paces the
    /// guest to the display; QEMU keeps the buffer for later updates).
    AtOwnFlip,
    /// When the flip that replaced it on screen completed: the producer
    /// rewrites the buffer once released (vdmabuf), and the plane still
    /// reads it until then.
    UntilReplaced,
}

/// What lets a frame's buffer go: dropping it answers QEMU's `UpdateDMABUF`
/// or RELEASEs a vdmabuf id. Nothing else releases a frame.
#[derive(Debug)]
pub struct FrameRelease {
    token: ReleaseToken,
    policy: ReleasePolicy,
}

#[derive(Debug)]
enum ReleaseToken {
    Answer(#[allow(dead_code)] Release),
    Vdmabuf(#[allow(dead_code)] VdmabufRelease),
}

impl FrameRelease {
    /// An `UpdateDMABUF` answer, sent when this is dropped.
    pub fn answer(release: Release, policy: ReleasePolicy) -> FrameRelease {
        FrameRelease {
            token: ReleaseToken::Answer(release),
            policy,
        }
    }

    /// A vdmabuf id, RELEASEd when this is dropped; held until replaced.
    pub fn vdmabuf(release: VdmabufRelease) -> FrameRelease {
        FrameRelease {
            token: ReleaseToken::Vdmabuf(release),
            policy: ReleasePolicy::UntilReplaced,
        }
    }

    pub fn policy(&self) -> ReleasePolicy {
        self.policy
    }

    /// Lets the buffer go now; returns when (CLOCK_MONOTONIC), stamped as
    /// the release is issued: the answer leaves on the listener's thread
    /// (the RELEASE ioctl runs here) right after, and on a busy single CPU
    /// that thread switch would otherwise be counted as the sink's delay.
    pub fn let_go(self) -> Duration {
        let at = monotonic_now();
        drop(self.token);
        at
    }
}

/// Now on CLOCK_MONOTONIC, as a duration since boot.
pub fn monotonic_now() -> Duration {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .expect("CLOCK_MONOTONIC is always there");
    Duration::new(ts.tv_sec() as u64, ts.tv_nsec() as u32)
}

/// When each stage of one frame happened (CLOCK_MONOTONIC).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FrameRecord {
    pub id: u64,
    /// The message (or vdmabuf event) was received.
    pub received: Duration,
    /// The buffer was imported or found in the cache.
    pub imported: Option<Duration>,
    /// The commit was submitted, or the composition done (fence signalled).
    pub committed: Option<Duration>,
    /// The page flip completed (the kernel's timestamp).
    pub flipped: Option<Duration>,
    /// The sink read the page-flip event.
    pub event_read: Option<Duration>,
    /// The release (the `UpdateDMABUF` answer, the vdmabuf RELEASE) was
    /// issued ([`FrameRelease::let_go`]).
    pub released: Option<Duration>,
    /// Replaced by a newer frame before it was shown.
    pub skipped: bool,
    /// How it reached the screen (KMS output only).
    pub path: Option<ShowPath>,
}

/// How a frame reached a KMS plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShowPath {
    /// The guest's buffer itself on the plane: no copy.
    Direct,
    /// Drawn by the GL renderer into a scanout buffer of ours.
    Composite,
}

impl ShowPath {
    pub fn name(self) -> &'static str {
        match self {
            ShowPath::Direct => "direct",
            ShowPath::Composite => "composite",
        }
    }
}

/// DMA-BUF messages on their way to the output that owns the renderer.
#[derive(Debug)]
pub enum DmabufEvent {
    /// A new scanout buffer (fds owned).
    Scanout(DmabufScanout),
    /// The guest rewrote the buffer (or exported a new one); dropping
    /// `release` lets the buffer go.
    Update {
        damage: Option<Rect>,
        release: FrameRelease,
        record: FrameRecord,
    },
    /// No scanout until the next one.
    Disable,
    /// The 2D surface is the picture from here on (its pixels are in the
    /// shared surface; one marker stands for a run of 2D changes). It
    /// keeps 2D and DMA-BUF events of one console in QEMU's order.
    Surface,
}
