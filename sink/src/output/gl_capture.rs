//! Headless DMA-BUF frames: each guest buffer imported once (cached by
//! inode), composed into an output-sized target on the GPU (or Mesa's
//! software device), released when the GPU's fence says it is done reading,
//! and read back for the PNG.

use std::time::{Duration, Instant};

use capture::RgbaFrame;
use dbus_interfaces::{DmabufScanout, InvalidInput};
use dmabuf::{BufferKey, Rect};
use gl_renderer::{Composition, RenderDevice, RenderError, Renderer, Source, Target};

use crate::frame::{monotonic_now, DmabufEvent, FrameRecord, FrameRelease};
use crate::latency::FrameLog;
use crate::output::imports::{ImageError, ImportCache};
use crate::output::wait_for_gpu;

#[derive(Debug, thiserror::Error)]
pub enum GlCaptureError {
    #[error(transparent)]
    Render(#[from] gl_renderer::RenderError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error("the current buffer is no longer imported")]
    NotImported,
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
    imports: ImportCache,
    current: Option<Current>,
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
            imports: ImportCache::default(),
            current: None,
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
        let target = self.size.unwrap_or(current.rect.size());
        Composition::fit(current.rect, target, current.y0_top).map_point(x, y)
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
        renderer_in(&mut self.renderer, &self.device)
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
        let (rect, y0_top) = (scanout.rect, scanout.y0_top);
        let (width, height, fourcc) = (
            scanout.buffer.width,
            scanout.buffer.height,
            scanout.buffer.fourcc,
        );
        let renderer = match renderer_in(&mut self.renderer, &self.device) {
            Ok(renderer) => renderer,
            Err(GlCaptureError::Render(RenderError::Load(e))) => {
                return Err(GlCaptureError::Render(RenderError::Load(e)))
            }
            Err(err) => {
                self.reject(InvalidInput::Dmabuf(format!("no renderer: {err}")));
                return Ok(());
            }
        };
        let new = self.imports.insert(key, scanout);
        let import = self.imports.get(key).expect("just inserted");
        match import.image(renderer) {
            Ok(_) if new => tracing::info!(
                "imported DMA-BUF inode {}: {width}x{height} {fourcc:?}",
                key.ino
            ),
            // The same buffer re-sent with a new fd: the import is kept.
            Ok(_) => tracing::debug!("DMA-BUF inode {} already imported", key.ino),
            Err(err) => {
                self.reject(InvalidInput::Dmabuf(err.to_string()));
                return Ok(());
            }
        }
        self.current = Some(Current { key, rect, y0_top });
        Ok(())
    }

    fn free_imports(&mut self) {
        self.imports.clear();
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
        let image = self
            .imports
            .get(current.key)
            .ok_or(GlCaptureError::NotImported)?
            .image(renderer)?;
        // The guest rewrote the pixels: re-bind before sampling.
        renderer.rebind(image)?;
        record.imported = Some(monotonic_now());
        renderer.clear(target);
        let how = Composition::fit(current.rect, (tw, th), current.y0_top);
        renderer.draw(target, Source::Image(image), &how)?;
        let waited = Instant::now();
        wait_for_gpu(renderer, "releasing the frame anyway")?;
        record.committed = Some(monotonic_now());
        // The GPU is done with the guest's buffer: QEMU may go on.
        record.released = Some(release.let_go());
        tracing::trace!("composed in {:?}", waited.elapsed());
        renderer.read(target, &mut self.frame)?;
        self.finish(record);
        Ok(())
    }
}

/// The renderer in `slot`, brought up on first use.
fn renderer_in<'a>(
    slot: &'a mut Option<Renderer>,
    device: &RenderDevice,
) -> Result<&'a mut Renderer, GlCaptureError> {
    if slot.is_none() {
        *slot = Some(Renderer::new(device)?);
    }
    Ok(slot.as_mut().expect("just created"))
}

/// Draws once with a texture of our own: at start, so that shader
/// compilation (seconds for llvmpipe under emulation) happens before the
/// first guest frame waits on it; and after the guest's buffers are let go,
/// so that the driver's last sampled texture (which keeps a guest buffer
/// alive) is ours.
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
