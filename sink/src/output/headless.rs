//! Headless capture: the surface as PNG, rewritten each time it changes
//! (coalesced: a burst of updates gives one file, of its end state) and once
//! more when the sink stops.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use capture::{write_png_atomic, CaptureError, RgbaFrame};

use crate::state::{Shared, StopReason};

#[derive(Debug, Clone)]
pub struct CaptureOptions {
    pub out: PathBuf,
    /// Stop after this many surface updates.
    pub frames: Option<u64>,
    /// Stop after this long.
    pub timeout: Option<Duration>,
    /// Stop once the screen has not changed for this long (after a first frame).
    pub settle: Option<Duration>,
    /// Draw the guest's cursor.
    pub cursor: bool,
}

/// How a capture ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureSummary {
    pub pngs_written: u64,
    pub updates: u64,
    pub rejected: u64,
    pub size: Option<(u32, u32)>,
    pub stopped_by: Stopped,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    Frames,
    Timeout,
    Settled,
    Signal(i32),
    Disconnected,
}

/// Runs until `--frames`, `--timeout`, a signal or QEMU's disconnect.
pub fn run_capture(
    shared: &Shared,
    options: &CaptureOptions,
) -> Result<CaptureSummary, CaptureError> {
    let deadline = options.timeout.map(|t| Instant::now() + t);
    let mut frame = RgbaFrame::default();
    let mut written_generation = 0;
    let mut written_fingerprint = None;
    let mut last_change: Option<Instant> = None;
    let mut pngs_written = 0;
    let stopped_by = loop {
        let mut state = shared.lock();
        let stopped = loop {
            if let Some(reason) = state.stop {
                break Some(match reason {
                    StopReason::Signal(sig) => Stopped::Signal(sig),
                    StopReason::Disconnected => Stopped::Disconnected,
                });
            }
            if options.frames.is_some_and(|n| state.updates >= n) {
                break Some(Stopped::Frames);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break Some(Stopped::Timeout);
            }
            if state.generation != written_generation {
                break None;
            }
            let settled_at = options
                .settle
                .zip(last_change)
                .map(|(settle, last)| last + settle);
            if settled_at.is_some_and(|t| Instant::now() >= t) {
                break Some(Stopped::Settled);
            }
            let wake = match (deadline, settled_at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            state = shared.wait(state, wake);
        };
        // Render under the lock (one pass over the pixels), encode outside it.
        let generation = state.generation;
        let have_frame =
            generation != written_generation && state.surface.render(&mut frame, options.cursor);
        drop(state);
        written_generation = generation;
        // Only a picture that differs from the last one written is a change.
        if have_frame && written_fingerprint != Some(frame.fingerprint()) {
            write_png_atomic(&options.out, &frame)?;
            written_fingerprint = Some(frame.fingerprint());
            last_change = Some(Instant::now());
            pngs_written += 1;
            tracing::debug!(
                "wrote {} ({}x{})",
                options.out.display(),
                frame.width,
                frame.height
            );
        }
        if let Some(stopped) = stopped {
            break stopped;
        }
    };
    // Once more on the way out: the file holds the very last state.
    let state = shared.lock();
    let have_frame = state.surface.render(&mut frame, options.cursor);
    drop(state);
    if have_frame {
        write_png_atomic(&options.out, &frame)?;
        pngs_written += 1;
    }
    let state = shared.lock();
    Ok(CaptureSummary {
        pngs_written,
        updates: state.updates,
        rejected: state.rejected,
        size: state.surface.size(),
        stopped_by,
    })
}
