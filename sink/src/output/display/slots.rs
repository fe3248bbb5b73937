//! The frame slots of one output, and who releases each frame when.
//!
//! ```text
//!   arrives ─▶ queued ─▶ in flight ─▶ on screen ─▶ retired
//!                │  (the committer    │  (AtOwnFlip:   (released if not yet)
//!                │   carries it)      │   released here)
//!                ▼                    ▼
//!   replaced by a newer one,    commit failed, link lost, flip abandoned:
//!   or not shown: released now  released now (abandoned = "as if flipped")
//! ```
//!
//! One picture waits for the flip in flight ([`FrameSlots::enqueue`]); a
//! newer one replaces it and the replaced frame is released at once
//! (newest wins). The flip in flight is not kept here: the committer
//! carries its [`Shown`] and gives it back on the flip event or on
//! abandon. A frame released at its own flip (QEMU's `UpdateDMABUF`: the
//! answer paces the guest to the display) has [`ReleasePolicy::AtOwnFlip`];
//! one whose buffer the plane reads until the next picture replaces it (a
//! vdmabuf buffer shown directly) has [`ReleasePolicy::UntilReplaced`].
//! Every frame ends in [`FrameLog::finish`] exactly once, with its release.
//!
//! No card, no renderer: the display drives this, the tests below drive it
//! with random orders of arrivals, flips, abandons, failures and loss.

use std::time::Duration;

use crate::frame::{FrameRecord, FrameRelease, ReleasePolicy};
use crate::latency::FrameLog;

/// A guest frame on its way: its timestamps and its release.
#[derive(Debug)]
pub struct Frame {
    pub record: FrameRecord,
    pub release: FrameRelease,
}

/// A frame whose buffer a commit reads (in flight or on screen).
#[derive(Debug)]
pub struct Held {
    pub record: FrameRecord,
    /// `None` once released (at its own flip) while still on screen.
    release: Option<FrameRelease>,
    policy: ReleasePolicy,
}

impl Held {
    /// Holds `frame` until the policy its source chose lets it go.
    pub fn new(frame: Frame) -> Held {
        let policy = frame.release.policy();
        Held {
            record: frame.record,
            release: Some(frame.release),
            policy,
        }
    }
}

/// What one commit puts on the screen: the output's own description of the
/// picture (`P`: framebuffer, rectangles) and the frame it holds, if any.
#[derive(Debug)]
pub struct Shown<P> {
    pub picture: P,
    pub frame: Option<Held>,
}

/// The picture waiting for the flip in flight (`K`: what to draw) and the
/// frame it shows, and the picture on screen; the frame log they end in.
pub struct FrameSlots<K, P> {
    queued: Option<(K, Option<Frame>)>,
    on_screen: Option<Shown<P>>,
    log: FrameLog,
}

impl<K, P> Default for FrameSlots<K, P> {
    fn default() -> Self {
        FrameSlots {
            queued: None,
            on_screen: None,
            log: FrameLog::default(),
        }
    }
}

impl<K, P> FrameSlots<K, P> {
    /// Queues `what` (with its frame); a frame it replaces is skipped.
    pub fn enqueue(&mut self, what: K, frame: Option<Frame>) {
        if let Some((_, Some(replaced))) = self.queued.replace((what, frame)) {
            self.skip(replaced);
        }
    }

    /// Queues `what` unless something is queued already (it would show
    /// the same thing).
    pub fn enqueue_if_idle(&mut self, what: K) {
        if self.queued.is_none() {
            self.queued = Some((what, None));
        }
    }

    pub fn has_queued(&self) -> bool {
        self.queued.is_some()
    }

    /// The queued picture, to present now.
    pub fn take_queued(&mut self) -> Option<(K, Option<Frame>)> {
        self.queued.take()
    }

    /// Drops the queued picture; its frame is skipped.
    pub fn skip_queued(&mut self) {
        if let Some((_, Some(frame))) = self.queued.take() {
            self.skip(frame);
        }
    }

    /// A frame that will not be shown (replaced, nothing to show it on):
    /// released now, counted skipped.
    pub fn skip(&mut self, mut frame: Frame) {
        frame.record.skipped = true;
        self.end(frame);
    }

    /// A frame that ends here without a picture (its buffer is gone, its
    /// layout is dropped): released now.
    pub fn end(&mut self, frame: Frame) {
        let Frame {
            mut record,
            release,
        } = frame;
        record.released = Some(release.let_go());
        self.log.finish(record);
    }

    /// The committer's flip completed at `time` (the kernel's timestamp),
    /// read at `read_at`: `shown` is on screen, the picture it replaced is
    /// retired.
    pub fn flipped(&mut self, mut shown: Shown<P>, time: Duration, read_at: Duration) {
        if let Some(held) = shown.frame.as_mut() {
            // A re-commit of a frame already shown (a cursor move): its
            // flip is the first one.
            if held.record.flipped.is_none() {
                held.record.flipped = Some(time);
                held.record.event_read = Some(read_at);
            }
        }
        self.now_on_screen(shown);
    }

    /// The flip was given up on (no event, the card taken away): taken as
    /// shown, without a flip time, so that what it replaced is let go.
    pub fn abandoned(&mut self, shown: Shown<P>) {
        self.now_on_screen(shown);
    }

    /// The commit of `shown` failed: the screen did not change; its frame
    /// is let go.
    pub fn failed(&mut self, shown: Shown<P>) {
        if let Some(held) = shown.frame {
            self.retire(held);
        }
    }

    /// A picture on screen without a flip of ours (the modeset that lit
    /// the output); what was there is retired.
    pub fn lit(&mut self, shown: Shown<P>) {
        self.now_on_screen(shown);
    }

    /// The screen no longer shows what we put there (restored, another
    /// mode, unplugged): the flip in flight (if the committer gave one
    /// back) and the picture on screen are retired.
    pub fn let_go(&mut self, in_flight: Option<Shown<P>>) {
        for shown in [in_flight, self.on_screen.take()].into_iter().flatten() {
            if let Some(held) = shown.frame {
                self.retire(held);
            }
        }
    }

    pub fn on_screen(&self) -> Option<&Shown<P>> {
        self.on_screen.as_ref()
    }

    /// The frame on screen, to re-commit with its picture (a cursor move):
    /// it stays held by the new commit.
    pub fn take_on_screen_frame(&mut self) -> Option<Held> {
        self.on_screen.as_mut().and_then(|s| s.frame.take())
    }

    pub fn log(&mut self) -> &mut FrameLog {
        &mut self.log
    }

    fn now_on_screen(&mut self, mut shown: Shown<P>) {
        if let Some(held) = shown.frame.as_mut() {
            if held.policy == ReleasePolicy::AtOwnFlip {
                if let Some(release) = held.release.take() {
                    held.record.released = Some(release.let_go());
                }
            }
        }
        if let Some(old) = self.on_screen.replace(shown) {
            if let Some(held) = old.frame {
                self.retire(held);
            }
        }
    }

    /// Lets go of a held frame (its buffer is no longer read).
    fn retire(&mut self, held: Held) {
        let Held {
            mut record,
            release,
            ..
        } = held;
        if let Some(release) = release {
            record.released = Some(release.let_go());
        }
        self.log.finish(record);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use dbus_interfaces::release::{Release, ReleaseWait};

    use super::*;

    /// A frame of the model: its id, policy and the listener's side of
    /// its release.
    struct Made {
        policy: ReleasePolicy,
        wait: ReleaseWait,
    }

    fn frame(id: u64, policy: ReleasePolicy, made: &mut HashMap<u64, Made>) -> Frame {
        let (release, wait) = Release::new();
        made.insert(id, Made { policy, wait });
        Frame {
            record: FrameRecord {
                id,
                ..FrameRecord::default()
            },
            release: FrameRelease::answer(release, policy),
        }
    }

    fn released(made: &HashMap<u64, Made>, id: u64) -> bool {
        made[&id].wait.is_released()
    }

    #[test]
    fn an_answer_goes_at_its_own_flip_and_a_held_buffer_at_the_next() {
        let mut made = HashMap::new();
        let mut slots: FrameSlots<(), &str> = FrameSlots::default();
        slots.enqueue((), Some(frame(1, ReleasePolicy::AtOwnFlip, &mut made)));
        let (_, f) = slots.take_queued().unwrap();
        let in_flight = Shown {
            picture: "a",
            frame: f.map(Held::new),
        };
        assert!(!released(&made, 1), "read by the commit in flight");
        slots.flipped(
            in_flight,
            Duration::from_millis(16),
            Duration::from_millis(17),
        );
        assert!(released(&made, 1), "answered at its own flip");

        slots.enqueue((), Some(frame(2, ReleasePolicy::UntilReplaced, &mut made)));
        let (_, f) = slots.take_queued().unwrap();
        let shown = Shown {
            picture: "b",
            frame: f.map(Held::new),
        };
        slots.flipped(shown, Duration::from_millis(33), Duration::from_millis(34));
        assert!(!released(&made, 2), "the plane still reads it");
        slots.flipped(
            Shown {
                picture: "c",
                frame: None,
            },
            Duration::from_millis(50),
            Duration::from_millis(51),
        );
        assert!(released(&made, 2), "released by the flip that replaced it");
        let records: Vec<_> = slots.log().records.iter().map(|r| r.id).collect();
        assert_eq!(records, [1, 2]);
        assert_eq!(
            slots.log().records[0].flipped,
            Some(Duration::from_millis(16))
        );
    }

    #[test]
    fn a_newer_frame_replaces_the_queued_one_which_is_skipped() {
        let mut made = HashMap::new();
        let mut slots: FrameSlots<u64, ()> = FrameSlots::default();
        slots.enqueue(1, Some(frame(1, ReleasePolicy::AtOwnFlip, &mut made)));
        slots.enqueue(2, Some(frame(2, ReleasePolicy::AtOwnFlip, &mut made)));
        assert!(released(&made, 1));
        assert!(!released(&made, 2));
        assert!(slots.log().records[0].skipped);
        slots.skip_queued();
        assert!(released(&made, 2));
        assert_eq!(slots.log().stats.skipped, 2);
    }

    /// A small deterministic generator (xorshift64*): the property test
    /// needs no crate and replays any failing seed.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
        }
    }

    /// Whatever the order of arrivals, presents, flips, abandons, failed
    /// commits, re-commits (cursor moves), screen losses and skips: every
    /// frame is released exactly once and logged exactly once; none is
    /// released while a commit in flight reads it, nor (held until
    /// replaced) while it is on screen.
    #[test]
    fn every_frame_is_released_exactly_once_in_any_order() {
        for seed in 1..=2000u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
            let mut made = HashMap::new();
            let mut slots: FrameSlots<(), u64> = FrameSlots::default();
            // The committer's one flip in flight.
            let mut in_flight: Option<Shown<u64>> = None;
            let mut next_id = 0u64;
            let mut clock = Duration::ZERO;
            // Frames that reached the screen (flipped, or taken as shown).
            let mut been_on_screen = std::collections::HashSet::new();
            for step in 0..200 {
                clock += Duration::from_micros(100);
                match rng.below(9) {
                    0 | 1 => {
                        next_id += 1;
                        let policy = if rng.below(2) == 0 {
                            ReleasePolicy::AtOwnFlip
                        } else {
                            ReleasePolicy::UntilReplaced
                        };
                        slots.enqueue((), Some(frame(next_id, policy, &mut made)));
                    }
                    2 if in_flight.is_none() => {
                        if let Some((_, f)) = slots.take_queued() {
                            let shown = Shown {
                                picture: step,
                                frame: f.map(Held::new),
                            };
                            match rng.below(5) {
                                0 => slots.failed(shown),
                                1 => {
                                    // Not shown at all (e.g. --path direct drops it).
                                    if let Some(held) = shown.frame {
                                        slots.retire(held);
                                    }
                                }
                                _ => in_flight = Some(shown),
                            }
                        }
                    }
                    3 if in_flight.is_none() => {
                        // A cursor move re-commits what is on screen.
                        if let Some(&picture) = slots.on_screen().map(|s| &s.picture) {
                            let frame = slots.take_on_screen_frame();
                            in_flight = Some(Shown { picture, frame });
                        }
                    }
                    4 | 5 => {
                        if let Some(shown) = in_flight.take() {
                            slots.flipped(shown, clock, clock);
                        }
                    }
                    6 => {
                        if let Some(shown) = in_flight.take() {
                            slots.abandoned(shown);
                        }
                    }
                    7 => {
                        if rng.below(4) == 0 {
                            slots.let_go(in_flight.take());
                        } else {
                            slots.skip_queued();
                        }
                    }
                    _ => {}
                }
                // Nothing read by a commit is released early.
                if let Some(held) = in_flight.as_ref().and_then(|s| s.frame.as_ref()) {
                    let id = held.record.id;
                    let first_time = !been_on_screen.contains(&id);
                    if first_time || made[&id].policy == ReleasePolicy::UntilReplaced {
                        assert!(!released(&made, id), "seed {seed}: {id} released in flight");
                    }
                }
                if let Some(held) = slots.on_screen().and_then(|s| s.frame.as_ref()) {
                    let id = held.record.id;
                    been_on_screen.insert(id);
                    if made[&id].policy == ReleasePolicy::UntilReplaced {
                        assert!(!released(&made, id), "seed {seed}: {id} released on screen");
                    }
                }
            }
            // Shutting down: the flip in flight and the screen let go.
            slots.skip_queued();
            slots.let_go(in_flight.take());
            let mut logged: Vec<u64> = slots.log().records.iter().map(|r| r.id).collect();
            logged.sort_unstable();
            let all: Vec<u64> = (1..=next_id).collect();
            assert_eq!(logged, all, "seed {seed}: each frame logged once");
            for id in all {
                assert!(released(&made, id), "seed {seed}: {id} never released");
                let record = slots.log().records.iter().find(|r| r.id == id).unwrap();
                assert!(record.released.is_some(), "seed {seed}: {id} unstamped");
            }
        }
    }
}
