//! What the D-Bus source and an output share: the 2D surface, the queue of
//! DMA-BUF events, a change counter and why to stop, behind one lock with
//! one condition variable.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Instant;

use crate::frame::DmabufEvent;
use crate::surface::Surface;

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
    /// Messages dropped for bad input.
    pub rejected: u64,
    /// `UpdateDMABUF`s answered by the listener's deadline, not a release.
    pub deadline_answers: u64,
    /// DMA-BUF events the output has not taken yet, in order.
    pub dmabuf: VecDeque<DmabufEvent>,
    /// Frame ids for the timestamp records.
    pub next_frame_id: u64,
    pub stop: Option<StopReason>,
}

#[derive(Debug, Default)]
pub struct Shared {
    state: Mutex<SinkState>,
    changed: Condvar,
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, SinkState> {
        // A panic elsewhere leaves plain data behind: keep going with it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the state and wakes the output.
    pub fn modify<R>(&self, f: impl FnOnce(&mut SinkState) -> R) -> R {
        let result = f(&mut self.lock());
        self.changed.notify_all();
        result
    }

    pub fn stop(&self, reason: StopReason) {
        self.modify(|s| {
            s.stop.get_or_insert(reason);
        });
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
