//! `--capture`: what the monitor shows, as PNG, after each change when
//! nothing else is to be done (and at least once a second while the
//! picture keeps changing): by writeback where the card has it, else by
//! reading back what we put on the plane (our scanout buffer, or the
//! guest's buffer composed 1:1 for a direct frame).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use capture::{write_png_atomic, RgbaFrame};
use gl_renderer::{Composition, Source, Target};

use super::{Display, DisplayError};
use crate::output::kms::{Card, Writeback};

const WRITEBACK_TIMEOUT: Duration = Duration::from_secs(2);
/// A picture that keeps changing is still captured this often: the
/// capture waits for an idle moment, which a busy guest never leaves.
const MAX_CAPTURE_AGE: Duration = Duration::from_secs(1);

/// Where and how the monitor's picture is captured.
pub struct Capture {
    path: Option<PathBuf>,
    writeback: Option<Writeback>,
    frame: RgbaFrame,
    /// GL readback of a directly shown guest buffer, at the mode's size.
    readback_target: Option<Target>,
    /// The picture changed since the last capture.
    pub dirty: bool,
    /// When the last capture was written.
    last: Option<Instant>,
}

impl Capture {
    /// Captures to `path` (none: never), through `card`'s writeback
    /// connector if it has one.
    pub fn new(card: &std::sync::Arc<Card>, path: Option<PathBuf>) -> Capture {
        let writeback = match path {
            Some(_) => match Writeback::find(card) {
                Ok(w) => Some(w),
                Err(err) => {
                    tracing::info!("--capture reads back through GL: {err}");
                    None
                }
            },
            None => None,
        };
        Capture {
            path,
            writeback,
            frame: RgbaFrame::default(),
            readback_target: None,
            dirty: false,
            last: None,
        }
    }

    /// A change waits to be captured and the last capture is older than
    /// [`MAX_CAPTURE_AGE`]: capture before showing the next frame.
    pub fn overdue(&self) -> bool {
        self.dirty
            && self.path.is_some()
            && self.last.is_none_or(|at| at.elapsed() >= MAX_CAPTURE_AGE)
    }

    /// The mode changed size: the readback target is made again.
    pub fn resized(&mut self) {
        self.readback_target = None;
    }
}

impl Display {
    /// A capture that fails is logged; the display goes on.
    pub(super) fn capture_or_warn(&mut self) {
        if let Err(err) = self.capture() {
            tracing::warn!("--capture: {err}");
        }
    }

    /// Writes what the monitor shows to `--capture`.
    pub(super) fn capture(&mut self) -> Result<(), DisplayError> {
        self.capture.dirty = false;
        let Some(path) = self.capture.path.clone() else {
            return Ok(());
        };
        match self.capture.writeback.as_mut() {
            Some(writeback) => {
                self.capture.frame = writeback.capture(&mut self.committer, WRITEBACK_TIMEOUT)?;
            }
            None => self.read_back()?,
        }
        self.counters.cpu_bytes += self.capture.frame.pixels.len() as u64;
        self.capture.last = Some(Instant::now());
        write_png_atomic(&path, &self.capture.frame)?;
        tracing::debug!("wrote {}", path.display());
        Ok(())
    }

    fn read_back(&mut self) -> Result<(), DisplayError> {
        let Some(shown) = self.slots.on_screen() else {
            return Ok(());
        };
        if let Some(index) = shown.picture.buffer {
            let target = &self.canvases[index].target;
            return Ok(self.renderer.read(target, &mut self.capture.frame)?);
        }
        let Some(current) = shown.picture.direct else {
            return Ok(());
        };
        let Some(import) = self.imports.get(current.key) else {
            return Ok(());
        };
        let mode = self.committer.pipe().size();
        let target = match &mut self.capture.readback_target {
            Some(target) => target,
            empty => empty.insert(self.renderer.create_target(mode.0, mode.1)?),
        };
        let image = import.image(&mut self.renderer)?;
        self.renderer.rebind(image)?;
        self.renderer.clear(target);
        let how = Composition::fit(current.layout.rect, mode, false);
        self.renderer.draw(target, Source::Image(image), &how)?;
        Ok(self.renderer.read(target, &mut self.capture.frame)?)
    }
}
