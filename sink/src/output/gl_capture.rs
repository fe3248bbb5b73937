//! Headless DMA-BUF frames: each guest buffer imported once (cached by
//! inode), composed into an output-sized target on the GPU (or Mesa's
//! software device), released when the GPU's fence says it is done reading,
//! and read back for the PNG.

use std::time::{Duration, Instant};

use capture::RgbaFrame;
use dbus_interfaces::{DmabufScanout, InvalidInput};
use dmabuf::{BufferKey, Rect};
use gl_renderer::{Composition, ImportedImage, RenderDevice, Renderer, Source, Target};

use crate::frame::{monotonic_now, DmabufEvent, FrameRecord, FrameRelease};
use crate::latency::FrameLog;

/// Imports kept per buffer: guests double- or triple-buffer; more is a leak.
const CACHE_SIZE: usize = 4;

/// A composed frame must be released before QEMU's 1 s deadline; the
/// listener answers at 800 ms regardless. Wait for the GPU at most this long.
const FENCE_WAIT: Duration = Duration::from_millis(700);

#[derive(Debug, thiserror::Error)]
pub enum GlCaptureError {
    #[error(transparent)]
    Render(#[from] gl_renderer::RenderError),
}

struct CachedImport {
    key: BufferKey,
    image: ImportedImage,
    /// The fds (EGL keeps its own references; these keep the buffer for a re-import).
    _scanout: DmabufScanout,
    last_used: u64,
}

/// The scanout being shown: which buffer, which rectangle, which way up.
#[derive(Debug, Clone, Copy)]
struct Current {
    key: BufferKey,
    rect: Rect,
    y0_top: bool,
}

/// Which picture a batch of events ended on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Latest {
    /// A DMA-BUF frame, composed.
    Composed,
    /// The 2D surface.
    Surface,
}

/// The DMA-BUF side of a headless output.
pub struct GlCapture {
    device: RenderDevice,
    /// `--size`: the composed output's size; `None` for the guest's own, 1:1.
    size: Option<(u32, u32)>,
    renderer: Option<Renderer>,
    target: Option<Target>,
    cache: Vec<CachedImport>,
    current: Option<Current>,
    uses: u64,
    frame: RgbaFrame,
    /// Finished frames: their records and statistics.
    pub log: FrameLog,
    pub rejected: u64,
}

impl GlCapture {
    pub fn new(device: RenderDevice, size: Option<(u32, u32)>) -> GlCapture {
        GlCapture {
            device,
            size,
            renderer: None,
            target: None,
            cache: Vec::new(),
            current: None,
            uses: 0,
            frame: RgbaFrame::default(),
            log: FrameLog::default(),
            rejected: 0,
        }
    }

    /// One line on the DMA-BUF frames so far: how many, and how long from
    /// the message to its release and from re-bind to the GPU's fence
    /// (median and p99), or `None` before the first.
    pub fn summary(&self) -> Option<String> {
        if self.log.stats.received == 0 {
            return None;
        }
        let release = self
            .log
            .stats
            .stage("receive→release")
            .expect("a known stage");
        let compose = self
            .log
            .stats
            .stage("import→commit")
            .expect("a known stage");
        Some(format!(
            "DMA-BUF frames: {} composed, {} skipped; message to release \
             median {} us, p99 {} us; re-bind to fence median {} us, p99 {} us",
            self.log.stats.shown,
            self.log.stats.skipped,
            release.median,
            release.p99,
            compose.median,
            compose.p99
        ))
    }

    /// The last composed picture.
    pub fn frame(&self) -> &RgbaFrame {
        &self.frame
    }

    /// Maps a point of the guest's scanout to the composed picture.
    pub fn map_point(&self, x: i64, y: i64) -> (i64, i64) {
        let Some(current) = self.current else {
            return (x, y);
        };
        let Rect {
            x: sx,
            y: sy,
            width: sw,
            height: sh,
        } = current.rect;
        let target = self.size.unwrap_or((sw, sh));
        let how = Composition::fit(current.rect, target, current.y0_top);
        let Rect {
            x: dx,
            y: dy,
            width: dw,
            height: dh,
        } = how.dst;
        (
            i64::from(dx) + (x - i64::from(sx)) * i64::from(dw) / i64::from(sw),
            i64::from(dy) + (y - i64::from(sy)) * i64::from(dh) / i64::from(sh),
        )
    }

    /// Whether there is a picture: a composed frame, or black after a
    /// `Disable` (until the next scanout).
    pub fn has_frame(&self) -> bool {
        self.frame.width > 0
    }

    /// Brings EGL up now, before QEMU is attached: a cold start takes
    /// seconds (Mesa's LLVM under TCG), and a frame waiting for it would be
    /// answered by QEMU's deadline instead of its own release. Failure is
    /// not fatal: 2D capture needs no EGL; a DMA-BUF then says why.
    pub fn warm_up(&mut self) {
        let started = Instant::now();
        match self
            .renderer()
            .and_then(|r| first_draw(r).map_err(Into::into))
        {
            Ok(()) => tracing::debug!("GL renderer up in {:?}", started.elapsed()),
            Err(err) => tracing::info!("no GL renderer for DMA-BUF frames: {err}"),
        }
    }

    /// EGL comes up on first use (or [`GlCapture::warm_up`]).
    fn renderer(&mut self) -> Result<&mut Renderer, GlCaptureError> {
        if self.renderer.is_none() {
            self.renderer = Some(Renderer::new(&self.device)?);
        }
        Ok(self.renderer.as_mut().expect("just created"))
    }

    /// Handles a batch of events in order. Updates that a later update in
    /// the same batch replaces are released at once (newest wins); the last
    /// one is composed. Returns which picture came last: a composed frame,
    /// or the 2D surface (its marker), or `None` for neither.
    pub fn handle(
        &mut self,
        events: &mut std::collections::VecDeque<DmabufEvent>,
    ) -> Result<Option<Latest>, GlCaptureError> {
        let last_update = events
            .iter()
            .rposition(|e| matches!(e, DmabufEvent::Update { .. }));
        let mut latest = None;
        for (i, event) in events.drain(..).enumerate() {
            match event {
                DmabufEvent::Surface => latest = Some(Latest::Surface),
                DmabufEvent::Scanout(scanout) => self.scanout(scanout)?,
                DmabufEvent::Disable => {
                    // QEMU let go of its scanout: so do we, fds and images.
                    self.current = None;
                    self.frame.reset(self.frame.width, self.frame.height);
                    self.free_imports();
                }
                DmabufEvent::Update {
                    release,
                    mut record,
                    ..
                } => {
                    if Some(i) != last_update || self.current.is_none() {
                        record.skipped = true;
                        record.released = Some(release.let_go());
                        self.finish(record);
                        continue;
                    }
                    // One frame's GL failure (e.g. a target of a size the
                    // guest chose) costs that frame: it is answered unshown
                    // (its release drops) and the last good picture stays.
                    match self.compose(record, release) {
                        Ok(()) => latest = Some(Latest::Composed),
                        Err(err) => {
                            tracing::warn!("dropping a DMA-BUF frame: {err}");
                            self.rejected += 1;
                        }
                    }
                }
            }
        }
        Ok(latest)
    }

    fn scanout(&mut self, scanout: DmabufScanout) -> Result<(), GlCaptureError> {
        let key = match scanout.buffer.check() {
            Ok(key) => key,
            Err(why) => {
                self.reject(why.into());
                return Ok(());
            }
        };
        let rect = scanout.rect;
        let y0_top = scanout.y0_top;
        self.uses += 1;
        let uses = self.uses;
        if let Some(hit) = self.cache.iter_mut().find(|c| c.key == key) {
            // The same buffer re-sent with a new fd: keep the import.
            hit.last_used = uses;
            tracing::debug!("DMA-BUF inode {} already imported", key.ino);
        } else {
            let image = match self.import(&scanout) {
                Ok(image) => image,
                Err(GlCaptureError::Render(gl_renderer::RenderError::Load(e))) => {
                    return Err(GlCaptureError::Render(gl_renderer::RenderError::Load(e)))
                }
                Err(err) => {
                    self.reject(InvalidInput::Dmabuf(format!("import failed: {err}")));
                    return Ok(());
                }
            };
            tracing::info!(
                "imported DMA-BUF inode {}: {}x{} {:?}",
                key.ino,
                scanout.buffer.width,
                scanout.buffer.height,
                scanout.buffer.fourcc
            );
            if self.cache.len() >= CACHE_SIZE {
                let oldest = (0..self.cache.len())
                    .min_by_key(|&i| self.cache[i].last_used)
                    .expect("cache is full");
                self.cache.swap_remove(oldest);
            }
            self.cache.push(CachedImport {
                key,
                image,
                _scanout: scanout,
                last_used: uses,
            });
        }
        self.current = Some(Current { key, rect, y0_top });
        Ok(())
    }

    fn import(&mut self, scanout: &DmabufScanout) -> Result<ImportedImage, GlCaptureError> {
        Ok(self.renderer()?.import(&scanout.buffer)?)
    }

    fn free_imports(&mut self) {
        self.cache.clear();
    }

    fn finish(&mut self, record: FrameRecord) {
        self.log.finish(record);
    }

    /// Updates that follow belong to the rejected buffer: they are answered
    /// unshown, and the last good picture stays.
    fn reject(&mut self, why: InvalidInput) {
        tracing::warn!("dropping a DMA-BUF scanout from QEMU: {why}");
        self.current = None;
        self.rejected += 1;
    }

    fn compose(
        &mut self,
        mut record: FrameRecord,
        release: FrameRelease,
    ) -> Result<(), GlCaptureError> {
        let current = self.current.expect("checked by the caller");
        let (w, h) = current.rect.size();
        let (tw, th) = self.size.unwrap_or((w, h));
        let renderer = self.renderer.as_mut().expect("a scanout created it");
        if self
            .target
            .as_ref()
            .is_none_or(|t| (t.width, t.height) != (tw, th))
        {
            self.target = None;
            self.target = Some(renderer.create_target(tw, th)?);
        }
        let target = self.target.as_ref().expect("just made");
        let cached = self
            .cache
            .iter()
            .find(|c| c.key == current.key)
            .expect("the current buffer is cached");
        // The guest rewrote the pixels: re-bind before sampling.
        renderer.rebind(&cached.image)?;
        record.imported = Some(monotonic_now());
        renderer.clear(target);
        let how = Composition::fit(current.rect, (tw, th), current.y0_top);
        renderer.draw(target, Source::Image(&cached.image), &how)?;
        let fence = renderer.fence()?;
        let waited = Instant::now();
        if !fence.wait(FENCE_WAIT) {
            tracing::warn!(
                "the GPU did not finish within {FENCE_WAIT:?}: releasing the frame anyway"
            );
        }
        record.committed = Some(monotonic_now());
        // The GPU is done with the guest's buffer: QEMU may go on.
        record.released = Some(release.let_go());
        tracing::trace!("composed in {:?}", waited.elapsed());
        renderer.read(target, &mut self.frame)?;
        self.finish(record);
        Ok(())
    }
}

/// Draws once, so that shader compilation (seconds for llvmpipe under
/// emulation) happens before the first guest frame waits on it.
pub(crate) fn first_draw(renderer: &mut Renderer) -> Result<(), gl_renderer::RenderError> {
    let texture = renderer.upload(drm_fourcc::DrmFourcc::Xbgr8888, 2, 2, 8, &[0; 16])?;
    let target = renderer.create_target(4, 4)?;
    let result = renderer
        .draw(
            &target,
            Source::Texture(&texture),
            &Composition::fit(Rect::of_size((2, 2)), (4, 4), false),
        )
        .and_then(|()| renderer.fence())
        .map(|fence| fence.wait(Duration::from_secs(30)));
    result.map(drop)
}
