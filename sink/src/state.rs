//! What the D-Bus source and an output share: the 2D surface, the queue of
//! DMA-BUF events, a change counter and why to stop, behind one lock with
//! one condition variable. The 2D picture is painted beside it, under a lock
//! of the source's own (the [`Painter`]), and only swapped in under this one.

use std::collections::VecDeque;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::Instant;

use capture::RgbaFrame;
use nix::sys::eventfd::{EfdFlags, EventFd};

use crate::frame::{push_bounded, DmabufEvent};
use crate::surface::{Painter, Surface};

/// Why the sink is stopping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    Signal(i32),
    /// QEMU closed the listener connection (it exited, or dropped us).
    Disconnected,
    /// The output finished (frame count, timeout, settle): sources stop too.
    Finished,
}

#[derive(Debug, Default)]
pub struct SinkState {
    pub surface: Surface,
    /// Bumped on every change of what the surface shows.
    pub generation: u64,
    /// Surface-changing messages received (`--frames` counts these).
    pub updates: u64,
    /// Changes of the 2D surface's pixels (not DMA-BUF frames).
    pub surface_changes: u64,
    /// Changes of the cursor's image or position.
    pub cursor_changes: u64,
    /// Messages dropped for bad input.
    pub rejected: u64,
    /// `UpdateDMABUF`s answered by the listener's deadline, not a release.
    pub deadline_answers: u64,
    /// DMA-BUF events the output has not taken yet, in order (appended
    /// through [`SinkState::push_dmabuf`], which bounds it).
    pub dmabuf: VecDeque<DmabufEvent>,
    /// `UpdateDMABUF`s answered unshown because the queue was full.
    pub superseded: u64,
    /// Frame ids for the timestamp records.
    pub next_frame_id: u64,
    pub stop: Option<StopReason>,
}

impl SinkState {
    /// Queues a DMA-BUF event for the output, bounded (see
    /// [`push_bounded`]).
    pub fn push_dmabuf(&mut self, event: DmabufEvent) {
        let dropped = push_bounded(&mut self.dmabuf, event);
        if dropped > 0 {
            tracing::debug!("{dropped} queued DMA-BUF frames superseded unshown");
            self.superseded += dropped;
        }
    }
}

/// The monitor a console is shown on, as the guest should be told it
/// (QEMU's `Console.SetUIInfo`): the mode's size and the panel's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Monitor {
    pub width: u32,
    pub height: u32,
    /// The panel's physical size in mm, 0 when the EDID does not say.
    pub width_mm: u16,
    pub height_mm: u16,
}

/// Several heads' monitors side by side in the guest's desktop, left to
/// right in head order, tops aligned: a head's x is the sum of the widths
/// of the monitors before it (a head not lit yet counts 0 until it is).
/// Each head tells its console its place with its size (`SetUIInfo`'s
/// `xoff`/`yoff`), so that the guest arranges its outputs as the monitors
/// stand; a head whose monitor changes width moves the ones after it.
#[derive(Debug, Default)]
pub struct HeadLayout {
    widths: Mutex<Vec<u32>>,
    changed: event_listener::Event,
}

impl HeadLayout {
    pub fn new(heads: usize) -> Arc<HeadLayout> {
        Arc::new(HeadLayout {
            widths: Mutex::new(vec![0; heads]),
            changed: event_listener::Event::new(),
        })
    }

    fn set_width(&self, index: usize, width: u32) {
        let mut widths = self.widths.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(w) = widths.get_mut(index) {
            if *w != width {
                *w = width;
                drop(widths);
                self.changed.notify(usize::MAX);
            }
        }
    }

    pub fn x_of(&self, index: usize) -> i32 {
        let widths = self.widths.lock().unwrap_or_else(|p| p.into_inner());
        let x: u64 = widths.iter().take(index).map(|&w| u64::from(w)).sum();
        i32::try_from(x).unwrap_or(i32::MAX)
    }
}

/// Where the output shows the guest's picture: the guest's rectangle
/// (the console's pixels) scaled into `shown` on a `mode`-sized monitor,
/// letterboxed (`Composition::fit`). The input thread maps the pointer
/// back through it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    pub mode: (u32, u32),
    pub guest: dmabuf::Rect,
    pub shown: dmabuf::Rect,
}

#[derive(Debug, Default)]
pub struct Shared {
    state: Mutex<SinkState>,
    /// The monitor the output lit last, numbered (each lighting counts:
    /// a replug of the same monitor is told again); `None`: headless, not
    /// lit yet, or the guest is not to be resized. Outlives attachments.
    monitor: Mutex<Option<(u64, Monitor)>>,
    monitor_changed: event_listener::Event,
    /// With several heads: the layout they share, and this head's place.
    layout: OnceLock<(Arc<HeadLayout>, usize)>,
    /// Where the output shows the picture now; `None`: nothing shown.
    placement: Mutex<Option<Placement>>,
    /// The D-Bus side's picture. Lock order: this one, then `state`; an
    /// output never takes it.
    painter: Mutex<Painter>,
    changed: Condvar,
    /// Also signalled on every change, for an output that polls other fds
    /// (the DRM card's events) beside the state: see [`Shared::wake_fd`].
    wake: OnceLock<EventFd>,
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, SinkState> {
        // A panic elsewhere leaves plain data behind: keep going with it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The D-Bus side's picture, painted outside the state's lock.
    pub fn painter(&self) -> MutexGuard<'_, Painter> {
        self.painter.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A copy of the current 2D picture, with the cursor if `cursor`,
    /// whatever the output took (for tests and tools). False before the
    /// first scanout.
    pub fn render_now(&self, frame: &mut RgbaFrame, cursor: bool) -> bool {
        if !self.painter().copy_to(frame) {
            return false;
        }
        if let Some(c) = self.lock().surface.cursor_overlay().filter(|_| cursor) {
            frame.blend_argb(c.x, c.y, c.width, c.height, c.argb);
        }
        true
    }

    /// Runs `f` on the state and wakes the output.
    pub fn modify<R>(&self, f: impl FnOnce(&mut SinkState) -> R) -> R {
        let result = f(&mut self.lock());
        self.changed.notify_all();
        if let Some(wake) = self.wake.get() {
            // A full counter (2^64 - 2 unread wakes) still wakes the poller.
            let _ = wake.write(1);
        }
        result
    }

    /// An eventfd that becomes readable on every change from now on (poll
    /// it, then [`Shared::clear_wake`]).
    pub fn wake_fd(&self) -> std::io::Result<BorrowedFd<'_>> {
        if self.wake.get().is_none() {
            let fd =
                EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?;
            let _ = self.wake.set(fd);
        }
        Ok(self.wake.get().expect("just set").as_fd())
    }

    /// This console is head `index` of `layout` (set once, before its
    /// output lights).
    pub fn join_layout(&self, layout: Arc<HeadLayout>, index: usize) {
        let _ = self.layout.set((layout, index));
    }

    /// Where this head's monitor sits in the guest's desktop: (0, 0) but
    /// with several heads (see [`HeadLayout`]).
    pub fn monitor_position(&self) -> (i32, i32) {
        self.layout
            .get()
            .map_or((0, 0), |(layout, index)| (layout.x_of(*index), 0))
    }

    /// Resolves when any head of the layout changes width (`None` with one
    /// head).
    pub fn layout_changed(&self) -> Option<event_listener::EventListener> {
        self.layout.get().map(|(layout, _)| layout.changed.listen())
    }

    /// The output lit `monitor`: every attachment tells its console.
    pub fn set_monitor(&self, monitor: Monitor) {
        if let Some((layout, index)) = self.layout.get() {
            layout.set_width(*index, monitor.width);
        }
        let mut slot = self.monitor.lock().unwrap_or_else(|p| p.into_inner());
        let serial = slot.map_or(0, |(serial, _)| serial + 1);
        *slot = Some((serial, monitor));
        drop(slot);
        self.monitor_changed.notify(usize::MAX);
    }

    /// The monitor lit last and its number (see [`Shared::set_monitor`]).
    pub fn monitor(&self) -> Option<(u64, Monitor)> {
        *self.monitor.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Resolves at the next [`Shared::set_monitor`] (listen, then read the
    /// monitor, then await: no change is missed).
    pub fn monitor_changed(&self) -> event_listener::EventListener {
        self.monitor_changed.listen()
    }

    /// The output shows the guest at `placement` now (or nothing).
    pub fn set_placement(&self, placement: Option<Placement>) {
        *self.placement.lock().unwrap_or_else(|p| p.into_inner()) = placement;
    }

    /// Where the output shows the guest (see [`Shared::set_placement`]).
    pub fn placement(&self) -> Option<Placement> {
        *self.placement.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Consumes the pending wakes of [`Shared::wake_fd`].
    pub fn clear_wake(&self) {
        if let Some(wake) = self.wake.get() {
            let _ = wake.read();
        }
    }

    pub fn stop(&self, reason: StopReason) {
        self.modify(|s| {
            s.stop.get_or_insert(reason);
        });
    }

    /// After the source went away (QEMU quit): forgets its surface, cursor
    /// and queued frames (releasing them), keeps the counters, and clears
    /// the stop unless it was a signal. Returns whether to go on.
    pub fn forget_source(&self) -> bool {
        let mut painter = self.painter();
        self.modify(|s| {
            if matches!(s.stop, Some(StopReason::Signal(_))) {
                return false;
            }
            s.stop = None;
            painter.forget();
            s.surface = Surface::default();
            s.dmabuf.clear();
            true
        })
    }

    /// Waits for a change, at most until `deadline`.
    pub fn wait<'a>(
        &self,
        guard: MutexGuard<'a, SinkState>,
        deadline: Option<Instant>,
    ) -> MutexGuard<'a, SinkState> {
        match deadline {
            None => self.changed.wait(guard).unwrap_or_else(|p| p.into_inner()),
            Some(deadline) => {
                let timeout = deadline.saturating_duration_since(Instant::now());
                self.changed
                    .wait_timeout(guard, timeout)
                    .unwrap_or_else(|p| p.into_inner())
                    .0
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use event_listener::Listener;

    #[test]
    fn heads_stand_side_by_side_in_head_order() {
        let layout = HeadLayout::new(3);
        let heads: Vec<Shared> = (0..3).map(|_| Shared::default()).collect();
        for (i, head) in heads.iter().enumerate() {
            head.join_layout(layout.clone(), i);
        }
        let monitor = |width| Monitor {
            width,
            height: 480,
            width_mm: 0,
            height_mm: 0,
        };
        // Head 1 lit first: nothing before it has a width yet.
        heads[1].set_monitor(monitor(800));
        assert_eq!(heads[1].monitor_position(), (0, 0));
        let moved = heads[2].layout_changed().expect("a layout");
        heads[0].set_monitor(monitor(640));
        assert!(
            moved
                .wait_timeout(std::time::Duration::from_secs(1))
                .is_some(),
            "the heads after head 0 were not told they moved"
        );
        assert_eq!(heads[0].monitor_position(), (0, 0));
        assert_eq!(heads[1].monitor_position(), (640, 0));
        assert_eq!(heads[2].monitor_position(), (1440, 0));
        // One head alone is at the origin, and never moves.
        assert_eq!(Shared::default().monitor_position(), (0, 0));
        assert!(Shared::default().layout_changed().is_none());
    }
}
