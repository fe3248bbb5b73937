//! A frame's way through the sink, as data: the DMA-BUF events the source
//! hands to an output, and one timestamp record per frame (CLOCK_MONOTONIC,
//! the clock of the kernel's page-flip timestamps) that latency mode reads.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use dbus_interfaces::{DmabufScanout, Rect, Release};

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

/// A source whose producer lends buffers by id and takes each back when
/// the sink gives it (vdmabuf's RELEASE). Frames carry the id and this way
/// back, so that nothing downstream knows the source's type.
pub trait Releaser: Send + Sync + std::fmt::Debug {
    /// Gives buffer `id` back to its producer; called once per id lent.
    fn release(&self, id: u128);
}

/// A lent id, given back when dropped.
#[derive(Debug)]
struct LentId {
    releaser: Arc<dyn Releaser>,
    id: u128,
}

impl Drop for LentId {
    fn drop(&mut self) {
        self.releaser.release(self.id);
    }
}

/// What lets a frame's buffer go: dropping it answers QEMU's `UpdateDMABUF`
/// or gives a lent id back to its producer. Nothing else releases a frame.
#[derive(Debug)]
pub struct FrameRelease {
    token: ReleaseToken,
    policy: ReleasePolicy,
}

#[derive(Debug)]
enum ReleaseToken {
    Answer(#[allow(dead_code)] Release),
    Lent(#[allow(dead_code)] LentId),
}

impl FrameRelease {
    /// An `UpdateDMABUF` answer, sent when this is dropped.
    pub fn answer(release: Release, policy: ReleasePolicy) -> FrameRelease {
        FrameRelease {
            token: ReleaseToken::Answer(release),
            policy,
        }
    }

    /// Buffer `id`, lent by `releaser`'s producer and given back when this
    /// is dropped; held until the frame is replaced on screen (the producer
    /// rewrites the buffer once it has it back).
    pub fn until_replaced(releaser: Arc<dyn Releaser>, id: u128) -> FrameRelease {
        FrameRelease {
            token: ReleaseToken::Lent(LentId { releaser, id }),
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

/// Scanouts (each holding its buffer's fds) a queue keeps at most: an
/// output busy for long (fence waits, writeback, a PNG) must not let a
/// flood of them exhaust the process's fd limit.
pub const MAX_QUEUED_SCANOUTS: usize = 8;
/// Events a queue keeps at most (each update holds QEMU's answer).
pub const MAX_QUEUED_EVENTS: usize = 256;

/// Appends `event` to an output's queue, bounded: a scanout that no update
/// used is superseded by the next; past [`MAX_QUEUED_SCANOUTS`] the oldest
/// scanout goes with the events up to the next one; past
/// [`MAX_QUEUED_EVENTS`] the oldest update goes. What goes is dropped, so
/// its fds close and its updates are answered (unshown). Returns how many
/// updates were dropped so.
pub fn push_bounded(queue: &mut VecDeque<DmabufEvent>, event: DmabufEvent) -> u64 {
    let mut dropped = 0;
    let mut drop_event = |event: DmabufEvent| {
        if matches!(event, DmabufEvent::Update { .. }) {
            dropped += 1;
        }
    };
    if matches!(event, DmabufEvent::Scanout(_)) {
        if matches!(queue.back(), Some(DmabufEvent::Scanout(_))) {
            queue.pop_back();
        }
        let scanouts = queue
            .iter()
            .filter(|e| matches!(e, DmabufEvent::Scanout(_)))
            .count();
        if scanouts >= MAX_QUEUED_SCANOUTS {
            // The oldest scanout and all up to the next: a later scanout
            // replaces the picture anyway.
            let mut seen_scanout = false;
            while let Some(front) = queue.front() {
                let is_scanout = matches!(front, DmabufEvent::Scanout(_));
                if is_scanout && seen_scanout {
                    break;
                }
                seen_scanout |= is_scanout;
                drop_event(queue.pop_front().expect("front exists"));
            }
        }
    }
    if queue.len() >= MAX_QUEUED_EVENTS {
        if let Some(i) = queue
            .iter()
            .position(|e| matches!(e, DmabufEvent::Update { .. }))
        {
            drop_event(queue.remove(i).expect("found"));
        }
    }
    queue.push_back(event);
    dropped
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

#[cfg(test)]
mod tests {
    use std::os::fd::OwnedFd;

    use dbus_interfaces::release::ReleaseWait;
    use dmabuf::{Dmabuf, DrmFourcc, DrmModifier, Plane};

    use super::*;

    fn scanout() -> DmabufEvent {
        let fd: OwnedFd =
            nix::sys::memfd::memfd_create("q", nix::sys::memfd::MFdFlags::MFD_CLOEXEC).unwrap();
        DmabufEvent::Scanout(DmabufScanout {
            buffer: Dmabuf {
                width: 4,
                height: 4,
                fourcc: DrmFourcc::Xrgb8888,
                modifier: DrmModifier::Linear,
                planes: vec![Plane {
                    fd,
                    offset: 0,
                    stride: 16,
                }],
            },
            rect: dmabuf::Rect::of_size((4, 4)),
            y0_top: false,
        })
    }

    fn update() -> (DmabufEvent, ReleaseWait) {
        let (release, wait) = Release::new();
        let event = DmabufEvent::Update {
            damage: None,
            release: FrameRelease::answer(release, ReleasePolicy::AtOwnFlip),
            record: FrameRecord::default(),
        };
        (event, wait)
    }

    fn open_fds() -> usize {
        std::fs::read_dir("/proc/self/fd").unwrap().count()
    }

    fn scanouts(queue: &VecDeque<DmabufEvent>) -> usize {
        queue
            .iter()
            .filter(|e| matches!(e, DmabufEvent::Scanout(_)))
            .count()
    }

    #[test]
    fn a_flood_of_scanouts_keeps_one_and_closes_the_rest() {
        let mut queue = VecDeque::new();
        let before = open_fds();
        for _ in 0..10_000 {
            assert_eq!(push_bounded(&mut queue, scanout()), 0);
        }
        assert_eq!(queue.len(), 1, "each unused scanout superseded");
        // Other tests open fds meanwhile: allow for them, not for 10,000.
        assert!(open_fds() < before + 64, "{} fds open", open_fds());
    }

    #[test]
    fn scanouts_with_updates_stay_bounded_and_dropped_updates_are_answered() {
        let mut queue = VecDeque::new();
        let mut waits = Vec::new();
        let mut dropped = 0;
        for _ in 0..1_000 {
            dropped += push_bounded(&mut queue, scanout());
            let (event, wait) = update();
            dropped += push_bounded(&mut queue, event);
            waits.push(wait);
        }
        assert!(scanouts(&queue) <= MAX_QUEUED_SCANOUTS);
        assert!(queue.len() <= MAX_QUEUED_EVENTS);
        // The queue starts at a scanout: no update is left without its buffer.
        assert!(matches!(queue.front(), Some(DmabufEvent::Scanout(_))));
        let answered = waits.iter().filter(|w| w.is_released()).count() as u64;
        assert_eq!(answered, dropped);
        assert_eq!(dropped as usize + queue.len() / 2, 1_000);
        // The newest frame is still there, last.
        assert!(!waits.last().unwrap().is_released());
    }

    #[test]
    fn a_flood_of_updates_is_bounded_oldest_first() {
        let mut queue = VecDeque::new();
        push_bounded(&mut queue, scanout());
        let mut waits = Vec::new();
        for _ in 0..1_000 {
            let (event, wait) = update();
            push_bounded(&mut queue, event);
            waits.push(wait);
        }
        assert!(queue.len() <= MAX_QUEUED_EVENTS);
        assert!(matches!(queue.front(), Some(DmabufEvent::Scanout(_))));
        let kept = MAX_QUEUED_EVENTS - 1;
        assert!(waits[..1_000 - kept].iter().all(|w| w.is_released()));
        assert!(waits[1_000 - kept..].iter().all(|w| !w.is_released()));
    }

    #[test]
    fn order_is_kept_for_what_stays() {
        let mut queue = VecDeque::new();
        push_bounded(&mut queue, DmabufEvent::Disable);
        push_bounded(&mut queue, scanout());
        let (event, _wait) = update();
        push_bounded(&mut queue, event);
        push_bounded(&mut queue, DmabufEvent::Surface);
        let kinds: Vec<&str> = queue
            .iter()
            .map(|e| match e {
                DmabufEvent::Disable => "disable",
                DmabufEvent::Scanout(_) => "scanout",
                DmabufEvent::Update { .. } => "update",
                DmabufEvent::Surface => "surface",
            })
            .collect();
        assert_eq!(kinds, ["disable", "scanout", "update", "surface"]);
    }
}
