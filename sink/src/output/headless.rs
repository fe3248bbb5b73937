//! Headless capture: what the console shows, as PNG, rewritten each time the
//! picture changes (coalesced: a burst of updates gives one file, of its end
//! state) and once more when the sink stops. 2D surfaces are decoded on the
//! CPU; DMA-BUF frames are composed by the GL renderer and read back.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use capture::{write_png_atomic, CaptureError, RgbaFrame};
use gl_renderer::RenderDevice;

use crate::output::gl_capture::{GlCapture, GlCaptureError, Latest};
use crate::state::{Shared, StopReason};
use crate::surface::SurfacePicture;

#[derive(Debug, Clone)]
pub struct CaptureOptions {
    /// The PNG; `None` in latency mode (pictures are made, not written).
    pub out: Option<PathBuf>,
    /// Stop after this many surface updates.
    pub frames: Option<u64>,
    /// Stop after this long.
    pub timeout: Option<Duration>,
    /// Stop once the picture has not changed for this long (after a first frame).
    pub settle: Option<Duration>,
    /// Draw the guest's cursor.
    pub cursor: bool,
    /// Where DMA-BUF frames are imported and composed.
    pub render_device: RenderDevice,
    /// The composed size of DMA-BUF frames; `None` for the guest's own, 1:1.
    pub size: Option<(u32, u32)>,
    /// Log the per-stage latency table this often.
    pub latency_interval: Option<Duration>,
}

impl CaptureOptions {
    pub fn new(out: PathBuf) -> CaptureOptions {
        CaptureOptions {
            out: Some(out),
            latency_interval: None,
            frames: None,
            timeout: None,
            settle: None,
            cursor: false,
            render_device: RenderDevice::Auto,
            size: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HeadlessError {
    #[error(transparent)]
    Capture(#[from] CaptureError),
    #[error("DMA-BUF frames: {0}")]
    Gl(#[from] GlCaptureError),
}

/// How a capture ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureSummary {
    pub pngs_written: u64,
    pub updates: u64,
    pub rejected: u64,
    /// The size of the last picture written.
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

/// Which picture shows after a batch of events that ended on `latest`
/// (the 2D surface only if it has pixels).
fn after(showing: Showing, latest: Option<Latest>, have_surface: bool) -> Showing {
    match latest {
        Some(Latest::Composed) => Showing::Dmabuf,
        Some(Latest::Surface) if have_surface => Showing::Surface,
        _ => showing,
    }
}

/// [`run_capture_with`] with a renderer that comes up on the first DMA-BUF.
pub fn run_capture(
    shared: &Shared,
    options: &CaptureOptions,
) -> Result<CaptureSummary, HeadlessError> {
    let mut gl = GlCapture::new(options.render_device.clone(), options.size);
    run_capture_with(shared, options, &mut gl)
}

/// Which picture is current: the 2D surface or the last composed DMA-BUF.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Showing {
    Surface,
    Dmabuf,
}

struct Writer<'a> {
    options: &'a CaptureOptions,
    fingerprint: Option<u64>,
    last_change: Option<Instant>,
    pngs_written: u64,
    size: Option<(u32, u32)>,
}

/// A cursor copied out of the shared state: position, size, ARGB pixels.
type CursorCopy<'a> = ((i64, i64, u32, u32), &'a [u8]);

impl Writer<'_> {
    /// Writes the current picture: the 2D surface (already in `frame`,
    /// cursor included) or the composed DMA-BUF with the cursor on a copy.
    fn show(
        &mut self,
        showing: Showing,
        frame: &mut RgbaFrame,
        gl: &GlCapture,
        cursor: Option<CursorCopy<'_>>,
        force: bool,
    ) -> Result<(), CaptureError> {
        match showing {
            Showing::Surface if frame.width > 0 => self.write(frame, force),
            Showing::Dmabuf if gl.has_frame() => match cursor {
                // The composed picture stays clean for the next cursor move.
                Some(((x, y, w, h), argb)) => {
                    frame.clone_from(gl.frame());
                    let (x, y) = gl.map_point(x, y);
                    frame.blend_argb(x, y, w, h, argb);
                    self.write(frame, force)
                }
                None => self.write(gl.frame(), force),
            },
            _ => Ok(()),
        }
    }

    /// Writes `frame` unless it is the picture already written.
    fn write(&mut self, frame: &RgbaFrame, force: bool) -> Result<(), CaptureError> {
        let fingerprint = frame.fingerprint();
        if !force && self.fingerprint == Some(fingerprint) {
            return Ok(());
        }
        if let Some(out) = &self.options.out {
            write_png_atomic(out, frame)?;
            tracing::debug!("wrote {} ({}x{})", out.display(), frame.width, frame.height);
        }
        self.fingerprint = Some(fingerprint);
        self.last_change = Some(Instant::now());
        self.pngs_written += 1;
        self.size = Some((frame.width, frame.height));
        Ok(())
    }
}

/// Runs until `--frames`, `--timeout`, `--settle`, a signal or QEMU's
/// disconnect, with DMA-BUF frames composed by `gl` (whose frame records
/// and statistics the caller reads afterwards).
pub fn run_capture_with(
    shared: &Shared,
    options: &CaptureOptions,
    gl: &mut GlCapture,
) -> Result<CaptureSummary, HeadlessError> {
    let deadline = options.timeout.map(|t| Instant::now() + t);
    let mut next_table = options.latency_interval.map(|i| Instant::now() + i);
    let mut frame = RgbaFrame::default();
    // The 2D picture as taken from the source, without the cursor.
    let mut picture = SurfacePicture::default();
    let mut batch = VecDeque::new();
    // The cursor, copied out of the shared state for DMA-BUF pictures.
    let mut cursor_argb = Vec::new();
    let mut cursor_at = None;
    let mut seen_generation = 0;
    let mut showing = Showing::Surface;
    let mut writer = Writer {
        options,
        fingerprint: None,
        last_change: None,
        pngs_written: 0,
        size: None,
    };
    let stopped_by = loop {
        let mut state = shared.lock();
        let stopped = loop {
            if let Some(reason) = state.stop {
                break Some(match reason {
                    StopReason::Signal(sig) => Stopped::Signal(sig),
                    StopReason::Disconnected | StopReason::Finished => Stopped::Disconnected,
                });
            }
            if options.frames.is_some_and(|n| state.updates >= n) {
                break Some(Stopped::Frames);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break Some(Stopped::Timeout);
            }
            if state.generation != seen_generation || !state.dmabuf.is_empty() {
                break None;
            }
            let settled_at = options
                .settle
                .zip(writer.last_change)
                .map(|(s, last)| last + s);
            if settled_at.is_some_and(|t| Instant::now() >= t) {
                break Some(Stopped::Settled);
            }
            if next_table.is_some_and(|t| Instant::now() >= t) {
                break None;
            }
            let wake = [deadline, settled_at, next_table]
                .into_iter()
                .flatten()
                .min();
            state = shared.wait(state, wake);
        };
        std::mem::swap(&mut batch, &mut state.dmabuf);
        // Take the 2D picture under the lock (a swap); compose it, DMA-BUFs
        // and PNG encoding outside it.
        // (A DMA-BUF batch moves the generation too; without a 2D surface
        // there is no picture to take.)
        let surface_changed = state.generation != seen_generation;
        seen_generation = state.generation;
        let have_surface = surface_changed && state.surface.take_picture(&mut picture);
        if have_surface {
            showing = Showing::Surface;
        }
        if options.cursor {
            cursor_at = state
                .surface
                .cursor_overlay()
                .map(|c| c.to_owned_overlay(&mut cursor_argb));
        }
        drop(state);
        if have_surface {
            picture.compose(&mut frame, cursor_at.map(|at| (at, &cursor_argb[..])));
        }
        if !batch.is_empty() {
            showing = after(showing, gl.handle(&mut batch)?, have_surface);
        }
        let cursor = cursor_at.map(|at| (at, &cursor_argb[..]));
        writer.show(showing, &mut frame, gl, cursor, false)?;
        if let Some(t) = next_table.filter(|&t| Instant::now() >= t) {
            tracing::info!("frame stages so far:\n{}", gl.log.stats.table());
            next_table = Some(t + options.latency_interval.unwrap_or_default());
        }
        if let Some(stopped) = stopped {
            break stopped;
        }
    };
    // Once more on the way out: the file holds the very last state.
    let mut state = shared.lock();
    std::mem::swap(&mut batch, &mut state.dmabuf);
    let have_surface = state.surface.take_picture(&mut picture);
    let (updates, rejected) = (state.updates, state.rejected);
    gl.log.stats.deadline_answers = state.deadline_answers;
    drop(state);
    if have_surface {
        picture.compose(&mut frame, cursor_at.map(|at| (at, &cursor_argb[..])));
    }
    if !batch.is_empty() {
        showing = after(showing, gl.handle(&mut batch)?, have_surface);
    }
    if have_surface || showing == Showing::Dmabuf {
        let cursor = cursor_at.map(|at| (at, &cursor_argb[..]));
        writer.show(showing, &mut frame, gl, cursor, true)?;
    }
    if let Some(line) = gl.summary() {
        tracing::info!("{line}");
        tracing::info!("DMA-BUF frame stages:\n{}", gl.log.stats.table());
    }
    Ok(CaptureSummary {
        pngs_written: writer.pngs_written,
        updates,
        rejected: rejected + gl.rejected,
        size: writer.size,
        stopped_by,
    })
}
