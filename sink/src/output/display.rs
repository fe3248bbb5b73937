//! The display output: the guest on a monitor of its own, through KMS.
//!
//! One thread owns the card, the GL renderer and every buffer (this
//! struct); the sources reach it through [`Shared`] and its wake fd. Each
//! guest frame goes to the primary plane as it is (**direct**: the guest's
//! DMA-BUF is the framebuffer, no copy) when a TEST_ONLY commit says the
//! plane takes it, else the renderer draws it into one of our scanout
//! buffers (**composite**: dumb buffers drawn into in place through an
//! EGLImage). One commit is in flight at a time; frames that arrive
//! meanwhile wait, and a newer one replaces (and releases) an older one.
//!
//! Release on flip: a frame's release token lives in the state that still
//! reads its buffer and fires when that state is retired. QEMU's
//! `UpdateDMABUF` answer goes out once the frame's own flip completed; a
//! vdmabuf buffer on the plane is released by the flip that replaced it.
//! The listener answers QEMU by its deadline if no flip ever comes.

use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsFd, BorrowedFd, FromRawFd};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use capture::{write_png_atomic, RgbaFrame};
use dbus_interfaces::{DmabufScanout, InvalidInput};
use drm::buffer::{DrmFourcc, DrmModifier};
use gl_renderer::{
    Composition, DmabufDesc, DmabufPlane as GlPlane, ImportedImage, RenderDevice, Renderer, Source,
    Target, Texture,
};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::dmabuf::{check_scanout, BufferKey, MOD_LINEAR};
use crate::frame::{monotonic_now, DmabufEvent, FrameRecord, FrameRelease, ShowPath};
use crate::latency::{FrameLog, LatencyStats};
use crate::output::gl_capture::{first_draw, import_scanout};
use crate::output::headless::Stopped;
use crate::output::kms::{
    Card, Committer, Dmabuf, DmabufPlane, DumbBuffer, FlipEvent, Framebuffer, KmsError, ModeSpec,
    Pipe, PlaneConfig, Rect, Request, TestOutcome, Writeback,
};
use crate::state::{Shared, StopReason};

/// Our scanout buffers: one on screen, one being drawn or in flight.
const SCANOUT_BUFFERS: usize = 2;
/// Guest buffers kept imported (guests double- or triple-buffer).
const IMPORTS: usize = 4;
/// A flip whose event has not come by then is given up on, so that held
/// buffers are released (a stuck driver, DPMS off).
const FLIP_TIMEOUT: Duration = Duration::from_millis(500);
/// A composed frame's fence: well inside QEMU's 1 s deadline.
const FENCE_WAIT: Duration = Duration::from_millis(700);
const WRITEBACK_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the connector's state is read (a cached GETCONNECTOR, no probe).
const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// Which way frames may reach the plane (`--path`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PathChoice {
    /// Direct where the plane takes the buffer, composite otherwise.
    #[default]
    Auto,
    /// Direct only: a frame the plane refuses is dropped (and released).
    Direct,
    /// Always through the GL renderer.
    Composite,
}

impl FromStr for PathChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<PathChoice, String> {
        match s {
            "auto" => Ok(PathChoice::Auto),
            "direct" => Ok(PathChoice::Direct),
            "composite" => Ok(PathChoice::Composite),
            _ => Err(format!("{s:?}: expected auto, direct or composite")),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct DisplayOptions {
    /// The card: a path, or a kernel driver's name such as `vkms`
    /// (default: the first card with a connected connector).
    pub device: Option<PathBuf>,
    /// The connector's name, e.g. `Virtual-1`, `HDMI-A-1`.
    pub connector: Option<String>,
    /// The mode (default: the connector's preferred one).
    pub mode: Option<ModeSpec>,
    pub path: PathChoice,
    /// Write what the monitor shows to this PNG after each change.
    pub capture: Option<PathBuf>,
    pub render_device: RenderDevice,
    /// Stop once this many updates were received and shown.
    pub frames: Option<u64>,
    pub timeout: Option<Duration>,
    /// Log the stage table this often.
    pub latency_interval: Option<Duration>,
    /// Draw the cursor with GL, not on the cursor plane.
    pub no_cursor_plane: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum DisplayError {
    #[error(transparent)]
    Kms(#[from] KmsError),
    #[error("GL renderer: {0}")]
    Render(#[from] gl_renderer::RenderError),
    #[error(transparent)]
    Capture(#[from] capture::CaptureError),
    #[error("waiting for DRM events: {0}")]
    Poll(#[source] std::io::Error),
}

/// How a display run went.
pub struct DisplaySummary {
    pub stopped_by: Stopped,
    pub stats: LatencyStats,
    pub records: VecDeque<FrameRecord>,
    /// Frames shown each way.
    pub direct: u64,
    pub composite: u64,
    /// Page flips completed (ours, including 2D and blank frames).
    pub flips: u64,
    /// Bytes the CPU copied while presenting direct frames (the code that
    /// copies counts them): 0 is the claim.
    pub direct_cpu_bytes: u64,
    /// Bytes the CPU copied in all (2D surfaces, captures).
    pub cpu_bytes: u64,
    pub updates: u64,
    pub rejected: u64,
    pub refresh: Duration,
    /// The connector and mode shown on.
    pub output: String,
}

/// A scanout buffer of ours: a dumb buffer, its framebuffer, and the
/// renderer's target over the same memory.
struct ScanoutBuffer {
    target: Option<Target>,
    fb: Arc<Framebuffer>,
    /// The memory: kept alive while the framebuffer and target use it.
    _backing: Backing,
}

/// What a scanout buffer of ours is made of.
enum Backing {
    /// A GBM buffer object (allocated for scanout and rendering, with a
    /// modifier both the plane and the renderer take).
    Gbm(#[allow(dead_code)] gbm::BufferObject<()>),
    /// A dumb buffer (linear; where GBM cannot serve).
    Dumb(#[allow(dead_code)] DumbBuffer),
}

/// How a guest buffer is laid out: the path decision is made once per layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Layout {
    fourcc: DrmFourcc,
    modifier: u64,
    backing: (u32, u32),
    stride: u32,
    rect: (u32, u32, u32, u32),
    y0_top: bool,
}

/// The guest's current scanout.
#[derive(Debug, Clone, Copy)]
struct Current {
    key: BufferKey,
    layout: Layout,
}

/// A guest buffer, imported on the card and/or into the renderer on demand.
struct Import {
    key: BufferKey,
    scanout: DmabufScanout,
    fb: Option<Result<Arc<Framebuffer>, String>>,
    image: Option<ImportedImage>,
    last_used: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Decision {
    Show(ShowPath),
    /// `--path direct` and the plane refuses it.
    Drop(String),
}

/// A guest frame on its way to the screen or on it, with its release.
struct Held {
    record: FrameRecord,
    release: Option<FrameRelease>,
    /// Released when replaced on screen, not at its own flip.
    until_replaced: bool,
}

/// What a commit put on the plane.
struct Shown {
    /// Kept alive while the plane may show it (removing an FB in use turns
    /// the plane off).
    fb: Arc<Framebuffer>,
    /// Which of our scanout buffers, for composed pictures.
    buffer: Option<usize>,
    frame: Option<Held>,
    /// The guest buffer shown directly, for a GL readback.
    direct: Option<Current>,
    /// The primary plane's source and destination (a cursor move
    /// re-commits them).
    src: Rect,
    dst: Rect,
}

impl Shown {
    /// All of one of our scanout buffers, with `frame` (if any) on it.
    fn whole(fb: Arc<Framebuffer>, buffer: usize, frame: Option<Held>) -> Shown {
        let whole = Rect::of_size(fb.size());
        Shown {
            fb,
            buffer: Some(buffer),
            frame,
            direct: None,
            src: whole,
            dst: whole,
        }
    }
}

/// The cursor plane's buffer (ARGB8888 of the size the driver asks for).
struct CursorPlane {
    buffer: DumbBuffer,
    fb: Arc<Framebuffer>,
    size: (u32, u32),
}

/// How guest coordinates land on the output: the picture's source rect
/// and where it is drawn.
#[derive(Debug, Clone, Copy)]
struct PictureMap {
    src: (u32, u32, u32, u32),
    dst: (i32, i32, u32, u32),
}

impl PictureMap {
    fn map(&self, x: i64, y: i64) -> (i64, i64) {
        let (sx, sy, sw, sh) = self.src;
        let (dx, dy, dw, dh) = self.dst;
        (
            i64::from(dx) + (x - i64::from(sx)) * i64::from(dw) / i64::from(sw.max(1)),
            i64::from(dy) + (y - i64::from(sy)) * i64::from(dh) / i64::from(sh.max(1)),
        )
    }
}

/// The next picture, waiting for the flip in flight.
// One lives at a time: boxing the frame would allocate per frame.
#[allow(clippy::large_enum_variant)]
enum Queued {
    Frame {
        current: Current,
        record: FrameRecord,
        release: FrameRelease,
    },
    /// The 2D surface, rendered into `Display::frame_2d`.
    Surface,
    /// The guest's current buffer composed again (the GL-drawn cursor
    /// moved); no frame of QEMU's.
    Again,
    Blank,
}

pub struct Display {
    options: DisplayOptions,
    card: Arc<Card>,
    committer: Committer,
    writeback: Option<Writeback>,
    renderer: Renderer,
    buffers: Vec<ScanoutBuffer>,
    imports: Vec<Import>,
    uses: u64,
    current: Option<Current>,
    decisions: HashMap<Layout, Decision>,
    on_screen: Option<Shown>,
    in_flight: Option<Shown>,
    queued: Option<Queued>,
    frame_2d: RgbaFrame,
    texture_2d: Option<Texture>,
    seen_surface: u64,
    cursor_plane: Option<CursorPlane>,
    /// The guest's cursor (position minus hot spot, size) and its pixels.
    cursor: Option<(i64, i64, u32, u32)>,
    cursor_argb: Vec<u8>,
    /// What the cursor plane's buffer holds now.
    cursor_written: Vec<u8>,
    seen_cursor: u64,
    /// The cursor changed since the last commit.
    cursor_dirty: bool,
    /// Where the picture being shown sits on the output.
    picture: Option<PictureMap>,
    /// Without a cursor plane: the cursor's image as a texture.
    cursor_texture: Option<Texture>,
    /// The picture changed since the last capture.
    capture_dirty: bool,
    capture_frame: RgbaFrame,
    readback_target: Option<Target>,
    log: FrameLog,
    direct: u64,
    composite: u64,
    flips: u64,
    cpu_bytes: u64,
    direct_cpu_bytes: u64,
    rejected: u64,
    /// When the first run began (`--timeout` counts from it).
    started: Option<Instant>,
    /// The scanout buffers' format.
    fourcc: DrmFourcc,
    /// Is the connector connected (polled: not every driver sends hotplug
    /// events)? While it is not, nothing is committed.
    connected: bool,
    /// Do we hold DRM master? Lost (a VT switch), nothing is committed.
    master: bool,
    next_probe: Instant,
}

fn layout_text(l: &Layout) -> String {
    format!(
        "{}x{} {:?} (modifier {:#x}, stride {})",
        l.rect.2, l.rect.3, l.fourcc, l.modifier, l.stride
    )
}

impl Display {
    /// Opens the card, picks the pipe, brings up the renderer (warmed up:
    /// the first draw compiles shaders) and lights the monitor black.
    pub fn open(options: DisplayOptions) -> Result<Display, DisplayError> {
        let card = Arc::new(match &options.device {
            // A bare name that is no file: the card of that kernel driver.
            Some(name) if !name.exists() && name.components().count() == 1 => {
                Card::open_by_driver(&name.to_string_lossy())?
            }
            Some(path) => Card::open(path)?,
            None => Card::open_default()?,
        });
        let pipe = Pipe::select(&card, options.connector.as_deref(), options.mode.as_ref())?;
        let mode_size = pipe.size();
        let fourcc = [DrmFourcc::Xrgb8888, DrmFourcc::Argb8888]
            .into_iter()
            .find(|&f| {
                pipe.primary.supports(f, DrmModifier::Linear)
                    || pipe.primary.supports(f, DrmModifier::Invalid)
            })
            .ok_or_else(|| {
                card.not_found("the primary plane takes neither XR24 nor AR24".into())
            })?;
        let writeback = if options.capture.is_some() {
            match Writeback::find(&card) {
                Ok(w) => Some(w),
                Err(err) => {
                    tracing::info!("--capture reads back through GL: {err}");
                    None
                }
            }
        } else {
            None
        };
        let committer = Committer::new(card.clone(), pipe)?;
        let started = Instant::now();
        let mut renderer = Renderer::new(&options.render_device)?;
        first_draw(&mut renderer)?;
        tracing::debug!("renderer up in {:?}", started.elapsed());
        let buffers = scanout_buffers(
            &card,
            &mut renderer,
            mode_size,
            fourcc,
            &committer.pipe().primary,
        )?;
        let cursor_plane = match &committer.pipe().cursor {
            Some(_) if options.no_cursor_plane => None,
            Some(_) => match cursor_plane(&card) {
                Ok(plane) => Some(plane),
                Err(err) => {
                    tracing::info!("no cursor plane buffer ({err}): the cursor is drawn by GL");
                    None
                }
            },
            None => None,
        };
        let mut display = Display {
            options,
            card,
            committer,
            writeback,
            renderer,
            buffers,
            imports: Vec::new(),
            uses: 0,
            current: None,
            decisions: HashMap::new(),
            on_screen: None,
            in_flight: None,
            queued: None,
            frame_2d: RgbaFrame::default(),
            texture_2d: None,
            seen_surface: 0,
            cursor_plane,
            cursor: None,
            cursor_argb: Vec::new(),
            cursor_written: Vec::new(),
            seen_cursor: 0,
            cursor_dirty: false,
            picture: None,
            cursor_texture: None,
            capture_dirty: false,
            capture_frame: RgbaFrame::default(),
            readback_target: None,
            log: FrameLog::default(),
            direct: 0,
            composite: 0,
            flips: 0,
            cpu_bytes: 0,
            direct_cpu_bytes: 0,
            rejected: 0,
            started: None,
            fourcc,
            connected: true,
            master: true,
            next_probe: Instant::now() + PROBE_INTERVAL,
        };
        // Black until the guest's first frame.
        display.light_black()?;
        Ok(display)
    }

    /// The refresh period of the mode shown.
    pub fn refresh(&self) -> Duration {
        Duration::from_secs(1) / self.committer.pipe().mode.vrefresh().max(1)
    }

    /// The mode's size: what our scanout buffers and compositions cover.
    fn mode_size(&self) -> (u32, u32) {
        self.committer.pipe().size()
    }

    /// The card, connector and mode, for the log.
    fn output_name(&self) -> String {
        let pipe = self.committer.pipe();
        let (w, h) = pipe.size();
        format!(
            "{} {} {w}x{h}@{}",
            self.card.path().display(),
            pipe.name,
            pipe.mode.vrefresh()
        )
    }

    /// Runs until a signal, QEMU's disconnect, `--frames` or `--timeout`
    /// (counted from the first call).
    pub fn run(&mut self, shared: &Shared) -> Result<Stopped, DisplayError> {
        let wake = shared.wake_fd().map_err(DisplayError::Poll)?;
        let started = *self.started.get_or_insert_with(Instant::now);
        let deadline = self.options.timeout.map(|t| started + t);
        let mut next_table = self.options.latency_interval.map(|i| Instant::now() + i);
        let mut batch = VecDeque::new();
        let stopped_by = loop {
            let mut wait = Duration::from_secs(1);
            for t in [deadline, next_table].into_iter().flatten() {
                wait = wait.min(t.saturating_duration_since(Instant::now()));
            }
            if let Some(at) = self.committer.flip_queued_at() {
                wait = wait.min((at + FLIP_TIMEOUT).saturating_duration_since(Instant::now()));
            }
            wait = wait.min(self.next_probe.saturating_duration_since(Instant::now()));
            let card_ready = wait_for(self.card.as_fd(), wake, wait).map_err(DisplayError::Poll)?;
            shared.clear_wake();
            if card_ready {
                for event in self.committer.read_events(Duration::ZERO)? {
                    self.flipped(event);
                }
            }
            self.check_flip_timeout();
            // The frame that waited for that flip goes first, before the
            // news: a frame arriving now (e.g. the buffer just released,
            // re-exported) must queue behind it, not replace it.
            if self.connected && self.master && !self.committer.flip_pending() {
                if let Some(next) = self.queued.take() {
                    self.present(next);
                }
            }
            if Instant::now() >= self.next_probe {
                self.next_probe = Instant::now() + PROBE_INTERVAL;
                if self.master {
                    self.probe_connector();
                } else {
                    self.regain_master();
                }
            }

            let mut state = shared.lock();
            let stop = state.stop;
            let updates = state.updates;
            std::mem::swap(&mut batch, &mut state.dmabuf);
            let cursor_changed = state.cursor_changes != self.seen_cursor;
            if cursor_changed {
                self.seen_cursor = state.cursor_changes;
                self.cursor = state
                    .surface
                    .cursor_overlay()
                    .map(|c| c.to_owned_overlay(&mut self.cursor_argb));
                self.cursor_dirty = self.cursor_plane.is_some();
                self.write_cursor_image();
            }
            // Without a cursor plane the cursor is drawn into 2D pictures,
            // and a DMA-BUF picture is composed again with it.
            let redraw_2d = cursor_changed && self.cursor_plane.is_none() && self.current.is_none();
            if cursor_changed && self.cursor_plane.is_none() && self.current.is_some() {
                self.upload_cursor();
                if self.queued.is_none() {
                    self.queued = Some(Queued::Again);
                }
            }
            if state.surface_changes != self.seen_surface || redraw_2d {
                self.seen_surface = state.surface_changes;
                let cursor_in_picture = self.cursor_plane.is_none();
                if state.surface.render(&mut self.frame_2d, cursor_in_picture) {
                    self.cpu_bytes += self.frame_2d.pixels.len() as u64;
                    self.enqueue(Queued::Surface);
                }
            }
            drop(state);
            self.take(&mut batch);

            if !self.connected || !self.master {
                // Nothing to show it on: answer frames as they come.
                self.skip_queued();
            } else if !self.committer.flip_pending() {
                if let Some(next) = self.queued.take() {
                    self.present(next);
                } else if self.cursor_dirty {
                    self.move_cursor();
                } else if self.capture_dirty {
                    self.capture_or_warn();
                }
            }
            if let Some(t) = next_table.filter(|&t| Instant::now() >= t) {
                tracing::info!("frame stages so far:\n{}", self.log.stats.table());
                next_table = Some(t + self.options.latency_interval.unwrap_or_default());
            }
            let idle = !self.committer.flip_pending() && self.queued.is_none();
            if let Some(reason) = stop {
                break match reason {
                    StopReason::Signal(sig) => Stopped::Signal(sig),
                    StopReason::Disconnected | StopReason::Finished => Stopped::Disconnected,
                };
            }
            if idle && self.options.frames.is_some_and(|n| updates >= n) {
                break Stopped::Frames;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break Stopped::Timeout;
            }
        };
        Ok(stopped_by)
    }

    /// QEMU went away: its buffers are let go and the monitor goes black
    /// (the monitor stays lit, waiting for it to come back).
    pub fn blank(&mut self) -> Result<(), DisplayError> {
        self.settle_flip();
        self.skip_queued();
        self.current = None;
        self.cursor = None;
        self.picture = None;
        let index = self.free_buffer();
        self.draw_blank(index)?;
        self.flip_buffer(index, None)?;
        self.settle_flip();
        self.forget_unused_imports();
        if self.capture_dirty {
            self.capture_or_warn();
        }
        Ok(())
    }

    /// Lets the flip in flight complete (at most [`FLIP_TIMEOUT`]).
    fn settle_flip(&mut self) {
        let waited = Instant::now();
        while self.committer.flip_pending() && waited.elapsed() < FLIP_TIMEOUT {
            match self.committer.read_events(FLIP_TIMEOUT) {
                Ok(events) => events.into_iter().for_each(|e| self.flipped(e)),
                Err(err) => {
                    tracing::warn!("waiting for a flip: {err}");
                    break;
                }
            }
        }
        self.check_flip_timeout();
    }

    /// Shuts the output down (the CRTC back as it was) and sums up.
    pub fn finish_run(mut self, shared: &Shared, stopped_by: Stopped) -> DisplaySummary {
        let (updates, rejected) = {
            let state = shared.lock();
            (state.updates, state.rejected)
        };
        self.log.stats.deadline_answers = shared.lock().deadline_answers;
        self.shut_down();
        DisplaySummary {
            stopped_by,
            stats: std::mem::take(&mut self.log.stats),
            records: std::mem::take(&mut self.log.records),
            direct: self.direct,
            composite: self.composite,
            flips: self.flips,
            direct_cpu_bytes: self.direct_cpu_bytes,
            cpu_bytes: self.cpu_bytes,
            updates,
            rejected: rejected + self.rejected,
            refresh: self.refresh(),
            output: self.output_name(),
        }
    }

    /// Another process took the card (a VT switch, a compositor): stop
    /// committing, keep answering, try to take it back each second.
    fn lost_master(&mut self, err: &KmsError) {
        if self.master {
            tracing::warn!(
                "lost DRM master ({err}): not committing until it is back; frames are answered as they come"
            );
        }
        self.master = false;
        // Our flip in flight, if any, is not ours to wait for any more.
        self.committer.abandon_flip();
        if let Some(shown) = self.in_flight.take() {
            self.now_on_screen(shown);
        }
    }

    fn regain_master(&mut self) {
        if drm::Device::acquire_master_lock(&*self.card).is_err() {
            return;
        }
        self.master = true;
        match self.replug() {
            Ok(()) => tracing::info!("DRM master is back: lit at {}", self.output_name()),
            Err(err) => tracing::warn!("DRM master is back, but lighting the output failed: {err}"),
        }
    }

    /// Forgets what is on screen and in flight, letting their frames go
    /// (the CRTC no longer shows them: restored, or a new mode).
    fn let_go_of_the_screen(&mut self) {
        for shown in [self.in_flight.take(), self.on_screen.take()]
            .into_iter()
            .flatten()
        {
            if let Some(held) = shown.frame {
                self.retire(held);
            }
        }
    }

    /// Reads the connector's state; on a change, stops committing
    /// (unplugged) or lights it again with the mode picked afresh.
    fn probe_connector(&mut self) {
        let handle = self.committer.pipe().connector;
        let state = match drm::control::Device::get_connector(&*self.card, handle, false) {
            Ok(info) => info.state(),
            Err(err) => {
                tracing::debug!("GETCONNECTOR: {err}");
                return;
            }
        };
        let connected = state == drm::control::connector::State::Connected;
        if connected == self.connected {
            return;
        }
        let name = self.committer.pipe().name.clone();
        if !connected {
            tracing::warn!("{name} was unplugged: not committing until it is back");
            self.settle_flip();
            self.connected = false;
            return;
        }
        match self.replug() {
            Ok(()) => {
                self.connected = true;
                tracing::info!("{name} is back: lit at {}", self.output_name());
            }
            Err(err) => tracing::warn!("{name} is back, but lighting it failed: {err}"),
        }
    }

    /// The connector is back: picks its mode again (it may be another
    /// monitor), reallocates the scanout buffers if the size changed, and
    /// lights it black; the next frame shows.
    fn replug(&mut self) -> Result<(), DisplayError> {
        let name = self.committer.pipe().name.clone();
        let pipe = Pipe::select(&self.card, Some(&name), self.options.mode.as_ref())?;
        let size = pipe.size();
        self.committer.replace_pipe(pipe);
        // What was on the old mode's screen is gone: let its frames go.
        self.let_go_of_the_screen();
        // Decisions may have been made while the card was not ours.
        self.decisions.clear();
        if self.buffers[0].fb.size() != size {
            for buffer in &mut self.buffers {
                if let Some(t) = buffer.target.take() {
                    self.renderer.destroy_target(t);
                }
            }
            self.buffers = scanout_buffers(
                &self.card,
                &mut self.renderer,
                size,
                self.fourcc,
                &self.committer.pipe().primary,
            )?;
            if let Some(t) = self.readback_target.take() {
                self.renderer.destroy_target(t);
            }
        }
        self.light_black()?;
        // A 2D console shows again at once; a DMA-BUF one with its next frame.
        if self.frame_2d.width > 0 && self.current.is_none() {
            self.enqueue(Queued::Surface);
        }
        Ok(())
    }

    /// Applies a batch of DMA-BUF events in order.
    fn take(&mut self, batch: &mut VecDeque<DmabufEvent>) {
        for event in batch.drain(..) {
            match event {
                DmabufEvent::Scanout(scanout) => self.scanout(scanout),
                DmabufEvent::Disable => {
                    self.current = None;
                    self.enqueue(Queued::Blank);
                    self.forget_unused_imports();
                }
                DmabufEvent::Update {
                    release,
                    mut record,
                    ..
                } => match self.current {
                    Some(current) => {
                        // Its buffer was imported (or found) at its scanout.
                        record.imported = Some(monotonic_now());
                        self.enqueue(Queued::Frame {
                            current,
                            record,
                            release,
                        })
                    }
                    None => {
                        record.skipped = true;
                        self.release_now(record, release);
                    }
                },
            }
        }
    }

    fn scanout(&mut self, scanout: DmabufScanout) {
        let key = match check_scanout(&scanout) {
            Ok(key) => key,
            Err(why) => return self.reject(why),
        };
        let layout = Layout {
            fourcc: scanout.fourcc,
            modifier: scanout.modifier,
            backing: (scanout.backing_width, scanout.backing_height),
            stride: scanout.planes[0].stride,
            rect: (scanout.x, scanout.y, scanout.width, scanout.height),
            y0_top: scanout.y0_top,
        };
        self.uses += 1;
        let uses = self.uses;
        if let Some(hit) = self.imports.iter_mut().find(|i| i.key == key) {
            // The same buffer re-sent with a new fd: keep the imports.
            hit.last_used = uses;
        } else {
            if self.imports.len() >= IMPORTS {
                let oldest = (0..self.imports.len())
                    .min_by_key(|&i| self.imports[i].last_used)
                    .expect("imports are full");
                let evicted = self.imports.swap_remove(oldest);
                self.drop_import(evicted);
            }
            self.imports.push(Import {
                key,
                scanout,
                fb: None,
                image: None,
                last_used: uses,
            });
        }
        self.current = Some(Current { key, layout });
    }

    fn reject(&mut self, why: InvalidInput) {
        tracing::warn!("dropping a DMA-BUF scanout: {why}");
        self.rejected += 1;
    }

    /// Frees an import (its framebuffer lives on while a commit uses it).
    fn drop_import(&mut self, import: Import) {
        if let Some(image) = import.image {
            self.renderer.release_image(image);
        }
    }

    fn forget_unused_imports(&mut self) {
        for import in std::mem::take(&mut self.imports) {
            self.drop_import(import);
        }
    }

    /// Drops the queued picture; a frame is skipped and released now.
    fn skip_queued(&mut self) {
        let dropped = self.queued.take();
        self.skip(dropped);
    }

    /// Queues `next`; a frame it replaces is skipped and released now.
    fn enqueue(&mut self, next: Queued) {
        let replaced = self.queued.replace(next);
        self.skip(replaced);
    }

    /// A queued frame that will not be shown: released now, counted skipped.
    fn skip(&mut self, queued: Option<Queued>) {
        if let Some(Queued::Frame {
            mut record,
            release,
            ..
        }) = queued
        {
            record.skipped = true;
            self.release_now(record, release);
        }
    }

    fn release(&mut self, record: &mut FrameRecord, release: FrameRelease) {
        record.released = Some(release.let_go());
    }

    /// Releases a frame that ends here (not shown) and counts it.
    fn release_now(&mut self, mut record: FrameRecord, release: FrameRelease) {
        self.release(&mut record, release);
        self.finish(record);
    }

    fn finish(&mut self, record: FrameRecord) {
        self.log.finish(record);
    }

    /// Lets go of a held frame (its buffer is no longer read).
    fn retire(&mut self, held: Held) {
        let Held {
            mut record,
            release,
            ..
        } = held;
        if let Some(release) = release {
            self.release(&mut record, release);
        }
        self.finish(record);
    }

    /// A completed flip: what was in flight is on screen now; what it
    /// replaced, and its frame, are let go.
    fn flipped(&mut self, event: FlipEvent) {
        if event.crtc != self.committer.pipe().crtc {
            return;
        }
        let read_at = monotonic_now();
        self.flips += 1;
        let Some(mut shown) = self.in_flight.take() else {
            return;
        };
        if let Some(held) = shown.frame.as_mut() {
            // A cursor move re-commits a frame already shown: its flip stays.
            if held.record.flipped.is_none() {
                held.record.flipped = Some(event.time);
                held.record.event_read = Some(read_at);
            }
        }
        self.now_on_screen(shown);
    }

    fn now_on_screen(&mut self, mut shown: Shown) {
        if let Some(held) = shown.frame.as_mut() {
            if !held.until_replaced {
                if let Some(release) = held.release.take() {
                    self.release(&mut held.record, release);
                }
            }
        }
        if let Some(old) = self.on_screen.replace(shown) {
            if let Some(held) = old.frame {
                self.retire(held);
            }
        }
        self.capture_dirty = true;
    }

    fn check_flip_timeout(&mut self) {
        let Some(at) = self.committer.flip_queued_at() else {
            return;
        };
        if at.elapsed() >= FLIP_TIMEOUT {
            self.committer.abandon_flip();
            if let Some(shown) = self.in_flight.take() {
                self.now_on_screen(shown);
            }
        }
    }

    /// Which of our scanout buffers is free to draw into.
    fn free_buffer(&self) -> usize {
        let busy = |s: &Option<Shown>| s.as_ref().and_then(|s| s.buffer);
        let (a, b) = (busy(&self.on_screen), busy(&self.in_flight));
        (0..self.buffers.len())
            .find(|&i| Some(i) != a && Some(i) != b)
            .expect("one buffer more than can be busy")
    }

    fn present(&mut self, next: Queued) {
        let result = match next {
            Queued::Frame {
                current,
                record,
                release,
            } => self.present_frame(current, record, release),
            Queued::Surface => self.present_surface(),
            Queued::Again => self.present_again(),
            Queued::Blank => {
                let index = self.free_buffer();
                self.draw_blank(index)
                    .and_then(|()| self.flip_buffer(index, None))
            }
        };
        if let Err(err) = result {
            tracing::warn!("dropping a frame: {err}");
            self.rejected += 1;
        }
    }

    /// Clears scanout buffer `index` to black.
    fn draw_blank(&mut self, index: usize) -> Result<(), DisplayError> {
        let target = self.buffers[index].target.as_ref().expect("live");
        self.renderer.clear(target);
        self.renderer.fence()?.wait(FENCE_WAIT);
        Ok(())
    }

    fn flip_buffer(&mut self, index: usize, frame: Option<Held>) -> Result<(), DisplayError> {
        let fb = self.buffers[index].fb.clone();
        self.commit(Shown::whole(fb, index, frame))
    }

    /// The modeset that lights the pipe, black (scanout buffer 0) until the
    /// next picture.
    fn light_black(&mut self) -> Result<(), DisplayError> {
        self.draw_blank(0)?;
        let fb = self.buffers[0].fb.clone();
        self.committer.modeset(&PlaneConfig::whole(&fb))?;
        self.on_screen = Some(Shown::whole(fb, 0, None));
        self.capture_dirty = true;
        Ok(())
    }

    /// Flips to `shown` (primary plane and the cursor as it is now); on
    /// failure its frame is let go.
    fn commit(&mut self, mut shown: Shown) -> Result<(), DisplayError> {
        let request = self.request(&shown);
        let result = request.and_then(|r| self.committer.flip_request(r));
        if let Err(err) = result {
            if let Some(held) = shown.frame.take() {
                self.retire(held);
            }
            if matches!(
                err.errno().map(Errno::from_raw),
                Some(Errno::EACCES | Errno::EPERM)
            ) {
                self.lost_master(&err);
                return Ok(());
            }
            return Err(err.into());
        }
        self.cursor_dirty = false;
        self.in_flight = Some(shown);
        Ok(())
    }

    /// The atomic request showing `shown` on the primary plane, with the
    /// cursor plane at the pointer (or off).
    fn request(&self, shown: &Shown) -> Result<Request, KmsError> {
        let pipe = self.committer.pipe();
        let mut request = Request::new();
        let primary = PlaneConfig {
            fb: &shown.fb,
            src: shown.src,
            dst: shown.dst,
        };
        request.plane(&pipe.primary, pipe.crtc, Some(&primary))?;
        if let (Some(plane), Some(cursor)) = (&pipe.cursor, &self.cursor_plane) {
            let at = self
                .cursor
                .zip(self.picture)
                .map(|((x, y, _, _), picture)| picture.map(x, y));
            match at {
                Some((x, y)) => {
                    let config = PlaneConfig {
                        fb: &cursor.fb,
                        src: Rect::of_size(cursor.size),
                        dst: Rect {
                            x: x.clamp(-4096, 16384) as i32,
                            y: y.clamp(-4096, 16384) as i32,
                            width: cursor.size.0,
                            height: cursor.size.1,
                        },
                    };
                    request.plane(plane, pipe.crtc, Some(&config))?;
                }
                None => {
                    request.plane(plane, pipe.crtc, None)?;
                }
            }
        }
        Ok(request)
    }

    /// Writes the cursor's image into the cursor plane's buffer, when it
    /// changed (a move alone writes nothing).
    fn write_cursor_image(&mut self) {
        if let Some(plane) = self.cursor_plane.as_mut() {
            if self.cursor.is_some() && self.cursor_written != self.cursor_argb {
                let (w, h) = self.cursor.map_or((0, 0), |(_, _, w, h)| (w, h));
                if let Err(err) = write_cursor(plane, w, h, &self.cursor_argb) {
                    tracing::warn!("writing the cursor image: {err}");
                }
                self.cursor_written.clone_from(&self.cursor_argb);
            }
        }
    }

    /// The cursor moved or changed, and nothing else is to be shown:
    /// re-commits what is on screen with the cursor where it is now.
    fn move_cursor(&mut self) {
        let Some(on_screen) = self.on_screen.as_mut() else {
            return;
        };
        // The same picture again; a frame it holds stays held.
        let again = Shown {
            fb: on_screen.fb.clone(),
            buffer: on_screen.buffer,
            frame: on_screen.frame.take(),
            direct: on_screen.direct,
            src: on_screen.src,
            dst: on_screen.dst,
        };
        if let Err(err) = self.commit(again) {
            tracing::warn!("moving the cursor: {err}");
            self.cursor_dirty = false;
        }
    }

    fn import_index(&self, key: BufferKey) -> Option<usize> {
        self.imports.iter().position(|i| i.key == key)
    }

    fn present_frame(
        &mut self,
        current: Current,
        mut record: FrameRecord,
        release: FrameRelease,
    ) -> Result<(), DisplayError> {
        let Some(index) = self.import_index(current.key) else {
            // Evicted meanwhile (a burst of new buffers): nothing to show.
            self.release_now(record, release);
            return Ok(());
        };
        let mut decision = self.decide(index, current);
        if decision == Decision::Show(ShowPath::Direct)
            && self.cursor_plane.is_none()
            && self.cursor.is_some()
        {
            // No cursor plane: a visible cursor is drawn, so the frame is too.
            decision = Decision::Show(ShowPath::Composite);
        }
        let copied_before = self.cpu_bytes;
        let until_replaced = matches!(release, FrameRelease::Vdmabuf(_));
        let held = |record: FrameRecord, release, until_replaced| Held {
            record,
            release: Some(release),
            until_replaced,
        };
        match decision {
            Decision::Drop(why) => {
                tracing::debug!("dropping a frame: {why}");
                self.release_now(record, release);
                Ok(())
            }
            Decision::Show(ShowPath::Direct) => {
                let fb = match &self.imports[index].fb {
                    Some(Ok(fb)) => fb.clone(),
                    _ => unreachable!("decide imported it"),
                };
                record.path = Some(ShowPath::Direct);
                let config = self.direct_config(&fb, current.layout);
                let (src, dst) = (config.src, config.dst);
                self.picture = Some(PictureMap {
                    src: current.layout.rect,
                    dst: (dst.x, dst.y, dst.width, dst.height),
                });
                let shown = Shown {
                    fb,
                    buffer: None,
                    frame: Some(held(record, release, until_replaced)),
                    direct: Some(current),
                    src,
                    dst,
                };
                self.commit(shown)?;
                // (Not in flight: the commit found the card taken away.)
                if let Some(frame) = self.in_flight.as_mut().and_then(|s| s.frame.as_mut()) {
                    frame.record.committed = Some(monotonic_now());
                    self.direct += 1;
                    self.direct_cpu_bytes += self.cpu_bytes - copied_before;
                }
                Ok(())
            }
            Decision::Show(ShowPath::Composite) => {
                let target_index = self.free_buffer();
                let drawn = self.compose_frame(index, current, target_index);
                record.path = Some(ShowPath::Composite);
                if let Err(err) = drawn {
                    self.release_now(record, release);
                    if matches!(err, DisplayError::Render(_)) && self.imports[index].image.is_none()
                    {
                        // The renderer cannot import this layout: say it
                        // once, drop its frames (answered) from now on.
                        let why = format!("the renderer cannot import it: {err}");
                        tracing::warn!(
                            "{}: {why}; its frames are dropped",
                            layout_text(&current.layout)
                        );
                        self.decisions.insert(current.layout, Decision::Drop(why));
                        self.rejected += 1;
                        return Ok(());
                    }
                    return Err(err);
                }
                record.committed = Some(monotonic_now());
                self.composite += 1;
                // The renderer is done with the guest's buffer, but QEMU is
                // answered at the flip (it paces the guest to the display).
                let frame = held(record, release, false);
                self.flip_buffer(target_index, Some(frame))
            }
        }
    }

    /// The guest's rect on the whole output: letterboxed, scaled to fit.
    fn direct_config<'a>(&self, fb: &'a Framebuffer, layout: Layout) -> PlaneConfig<'a> {
        let (x, y, w, h) = layout.rect;
        let how = Composition::fit(layout.rect, self.mode_size(), false);
        let (dx, dy, dw, dh) = how.dst;
        PlaneConfig {
            fb,
            src: Rect {
                x: x as i32,
                y: y as i32,
                width: w,
                height: h,
            },
            dst: Rect {
                x: dx,
                y: dy,
                width: dw,
                height: dh,
            },
        }
    }

    /// The path for frames of this layout: decided (and logged) once.
    fn decide(&mut self, index: usize, current: Current) -> Decision {
        if let Some(decision) = self.decisions.get(&current.layout).cloned() {
            // A new buffer of a direct layout still needs its framebuffer;
            // if that import fails, decide again.
            if decision != Decision::Show(ShowPath::Direct) || self.import_fb(index).is_ok() {
                return decision;
            }
        }
        let text = layout_text(&current.layout);
        let decision = match self.options.path {
            PathChoice::Composite => Decision::Show(ShowPath::Composite),
            choice => match self.try_direct(index, current) {
                Ok(()) => {
                    tracing::info!("{text}: direct scanout (no copy)");
                    Decision::Show(ShowPath::Direct)
                }
                Err(why) if choice == PathChoice::Direct => {
                    tracing::warn!("{text}: no direct scanout ({why}); --path direct drops it");
                    Decision::Drop(why)
                }
                Err(why) => {
                    tracing::info!("{text}: composed by GL ({why})");
                    Decision::Show(ShowPath::Composite)
                }
            },
        };
        if self.options.path == PathChoice::Composite {
            tracing::info!("{text}: composed by GL (--path composite)");
        }
        self.decisions.insert(current.layout, decision.clone());
        decision
    }

    fn import_fb(&mut self, index: usize) -> Result<Arc<Framebuffer>, String> {
        let import = &mut self.imports[index];
        if import.fb.is_none() {
            let s = &import.scanout;
            let dmabuf = Dmabuf {
                width: s.backing_width,
                height: s.backing_height,
                fourcc: s.fourcc,
                modifier: DrmModifier::from(s.modifier),
                planes: s
                    .planes
                    .iter()
                    .map(|p| DmabufPlane {
                        fd: p.fd.as_fd(),
                        offset: p.offset,
                        stride: p.stride,
                    })
                    .collect(),
            };
            import.fb = Some(
                Framebuffer::import(&self.card, &dmabuf)
                    .map(Arc::new)
                    .map_err(|e| e.to_string()),
            );
        }
        import.fb.clone().expect("just set")
    }

    fn try_direct(&mut self, index: usize, current: Current) -> Result<(), String> {
        if current.layout.y0_top {
            return Err("the buffer is bottom-up (y0_top)".into());
        }
        let fb = self.import_fb(index)?;
        let config = self.direct_config(&fb, current.layout);
        match self.committer.test(&config).map_err(|e| e.to_string())? {
            TestOutcome::Accepted => Ok(()),
            TestOutcome::UnsupportedFormat { fourcc, modifier } => Err(format!(
                "the plane does not list {fourcc:?} with modifier {:#x}",
                u64::from(modifier)
            )),
            TestOutcome::Rejected(errno) => Err(format!(
                "the kernel refused it in a TEST_ONLY commit: {errno}{}",
                if errno == Errno::ERANGE {
                    " (scaling)"
                } else {
                    ""
                }
            )),
        }
    }

    /// Draws the guest's buffer into scanout buffer `target_index`.
    fn compose_frame(
        &mut self,
        index: usize,
        current: Current,
        target_index: usize,
    ) -> Result<(), DisplayError> {
        if self.imports[index].image.is_none() {
            let image = import_scanout(&mut self.renderer, &self.imports[index].scanout)?;
            self.imports[index].image = Some(image);
        }
        let image = self.imports[index].image.as_ref().expect("just imported");
        self.renderer.rebind(image)?;
        let target = self.buffers[target_index].target.as_ref().expect("live");
        self.renderer.clear(target);
        let how = Composition::fit(current.layout.rect, self.mode_size(), current.layout.y0_top);
        self.renderer.draw(target, Source::Image(image), &how)?;
        self.picture = Some(PictureMap {
            src: how.src,
            dst: how.dst,
        });
        self.draw_cursor(target_index)?;
        if !self.renderer.fence()?.wait(FENCE_WAIT) {
            tracing::warn!("the GPU did not finish within {FENCE_WAIT:?}: flipping anyway");
        }
        Ok(())
    }

    /// The guest's current buffer composed again, e.g. under a moved cursor.
    fn present_again(&mut self) -> Result<(), DisplayError> {
        let Some(current) = self.current else {
            return Ok(());
        };
        let Some(index) = self.import_index(current.key) else {
            return Ok(());
        };
        let target_index = self.free_buffer();
        self.compose_frame(index, current, target_index)?;
        self.flip_buffer(target_index, None)
    }

    /// Uploads the cursor's image as a texture when it changed (no cursor
    /// plane).
    fn upload_cursor(&mut self) {
        let Some((_, _, w, h)) = self.cursor else {
            return;
        };
        if self.cursor_texture.is_some() && self.cursor_written == self.cursor_argb {
            return;
        }
        if let Some(old) = self.cursor_texture.take() {
            self.renderer.destroy_texture(old);
        }
        match self
            .renderer
            .upload(DrmFourcc::Argb8888, w, h, w * 4, &self.cursor_argb)
        {
            Ok(texture) => {
                self.cursor_texture = Some(texture);
                self.cursor_written.clone_from(&self.cursor_argb);
            }
            Err(err) => tracing::warn!("uploading the cursor: {err}"),
        }
    }

    /// Blends the cursor over scanout buffer `index` (no cursor plane),
    /// unscaled, at the pointer.
    fn draw_cursor(&mut self, index: usize) -> Result<(), DisplayError> {
        if self.cursor_plane.is_some() {
            return Ok(());
        }
        let (Some((x, y, w, h)), Some(picture)) = (self.cursor, self.picture) else {
            return Ok(());
        };
        self.upload_cursor();
        let Some(texture) = &self.cursor_texture else {
            return Ok(());
        };
        let (x, y) = picture.map(x, y);
        let how = Composition {
            src: (0, 0, w, h),
            dst: (
                x.clamp(-16384, 16384) as i32,
                y.clamp(-16384, 16384) as i32,
                w,
                h,
            ),
            flip_y: false,
            blend: true,
        };
        let target = self.buffers[index].target.as_ref().expect("live");
        Ok(self.renderer.draw(target, Source::Texture(texture), &how)?)
    }

    /// Uploads the 2D surface and draws it into a free scanout buffer.
    fn present_surface(&mut self) -> Result<(), DisplayError> {
        let (w, h) = (self.frame_2d.width, self.frame_2d.height);
        if w == 0 {
            return Ok(());
        }
        let stride = w * 4;
        match &self.texture_2d {
            Some(t) if (t.width, t.height) == (w, h) => {
                self.renderer
                    .update_texture(t, (0, 0, w, h), stride, &self.frame_2d.pixels)?;
            }
            _ => {
                if let Some(old) = self.texture_2d.take() {
                    self.renderer.destroy_texture(old);
                }
                let texture = self.renderer.upload(
                    DrmFourcc::Xbgr8888,
                    w,
                    h,
                    stride,
                    &self.frame_2d.pixels,
                )?;
                self.texture_2d = Some(texture);
            }
        }
        self.cpu_bytes += self.frame_2d.pixels.len() as u64;
        let index = self.free_buffer();
        let target = self.buffers[index].target.as_ref().expect("live");
        let texture = self.texture_2d.as_ref().expect("just uploaded");
        self.renderer.clear(target);
        let how = Composition::fit((0, 0, w, h), self.mode_size(), false);
        self.renderer.draw(target, Source::Texture(texture), &how)?;
        self.picture = Some(PictureMap {
            src: how.src,
            dst: how.dst,
        });
        self.renderer.fence()?.wait(FENCE_WAIT);
        self.flip_buffer(index, None)
    }

    /// A capture that fails is logged; the display goes on.
    fn capture_or_warn(&mut self) {
        if let Err(err) = self.capture() {
            tracing::warn!("--capture: {err}");
        }
    }

    /// Writes what the monitor shows to `--capture`: by writeback where the
    /// card has it, else by reading back what we put on the plane.
    fn capture(&mut self) -> Result<(), DisplayError> {
        self.capture_dirty = false;
        let Some(path) = self.options.capture.clone() else {
            return Ok(());
        };
        match self.writeback.as_mut() {
            Some(writeback) => {
                self.capture_frame = writeback.capture(&mut self.committer, WRITEBACK_TIMEOUT)?;
            }
            None => self.read_back()?,
        }
        self.cpu_bytes += self.capture_frame.pixels.len() as u64;
        write_png_atomic(&path, &self.capture_frame)?;
        tracing::debug!("wrote {}", path.display());
        Ok(())
    }

    fn read_back(&mut self) -> Result<(), DisplayError> {
        let Some(shown) = &self.on_screen else {
            return Ok(());
        };
        if let Some(index) = shown.buffer {
            let target = self.buffers[index].target.as_ref().expect("live");
            return Ok(self.renderer.read(target, &mut self.capture_frame)?);
        }
        let Some(current) = shown.direct else {
            return Ok(());
        };
        let Some(index) = self.import_index(current.key) else {
            return Ok(());
        };
        if self.readback_target.is_none() {
            let (w, h) = self.mode_size();
            self.readback_target = Some(self.renderer.create_target(w, h)?);
        }
        if self.imports[index].image.is_none() {
            let image = import_scanout(&mut self.renderer, &self.imports[index].scanout)?;
            self.imports[index].image = Some(image);
        }
        let image = self.imports[index].image.as_ref().expect("imported");
        let target = self.readback_target.as_ref().expect("made");
        self.renderer.rebind(image)?;
        self.renderer.clear(target);
        let how = Composition::fit(current.layout.rect, self.mode_size(), false);
        self.renderer.draw(target, Source::Image(image), &how)?;
        Ok(self.renderer.read(target, &mut self.capture_frame)?)
    }

    /// On the way out: the last flip completes, the last picture is
    /// captured, the CRTC gets back what it showed before us, and only then
    /// are the buffers on it released.
    fn shut_down(&mut self) {
        self.settle_flip();
        self.skip_queued();
        if self.capture_dirty {
            if let Err(err) = self.capture() {
                tracing::warn!("the last capture: {err}");
            }
        }
        if let Err(err) = self.committer.restore() {
            tracing::warn!("restoring the CRTC: {err}");
        }
        self.let_go_of_the_screen();
        self.forget_unused_imports();
        if let Some(t) = self.texture_2d.take() {
            self.renderer.destroy_texture(t);
        }
        if let Some(t) = self.cursor_texture.take() {
            self.renderer.destroy_texture(t);
        }
        if let Some(t) = self.readback_target.take() {
            self.renderer.destroy_target(t);
        }
        for buffer in &mut self.buffers {
            if let Some(t) = buffer.target.take() {
                self.renderer.destroy_target(t);
            }
        }
    }
}

/// Our scanout buffers at `size`: GBM buffer objects where GBM serves
/// (with a modifier the plane scans out and the renderer draws into),
/// else dumb buffers; each with its framebuffer and a renderer target over
/// the same memory.
fn scanout_buffers(
    card: &Arc<Card>,
    renderer: &mut Renderer,
    size: (u32, u32),
    fourcc: DrmFourcc,
    primary: &crate::output::kms::Plane,
) -> Result<Vec<ScanoutBuffer>, DisplayError> {
    let mut made = Vec::with_capacity(SCANOUT_BUFFERS);
    match gbm_buffers(card, renderer, size, fourcc, primary, &mut made) {
        Ok(()) => return Ok(made),
        Err(why) => {
            for buffer in &mut made {
                if let Some(t) = buffer.target.take() {
                    renderer.destroy_target(t);
                }
            }
            tracing::info!("scanout buffers: dumb buffers (GBM: {why})");
        }
    }
    let (width, height) = size;
    let mut buffers = Vec::with_capacity(SCANOUT_BUFFERS);
    for _ in 0..SCANOUT_BUFFERS {
        let dumb = DumbBuffer::create(card, width, height, fourcc)?;
        let fb = Arc::new(dumb.framebuffer()?);
        let fd = dumb.export()?;
        let target = renderer.import_target(&DmabufDesc {
            width,
            height,
            fourcc,
            modifier: Some(MOD_LINEAR),
            planes: vec![GlPlane {
                fd: fd.as_fd(),
                offset: 0,
                stride: dumb.stride(),
            }],
        })?;
        buffers.push(ScanoutBuffer {
            target: Some(target),
            fb,
            _backing: Backing::Dumb(dumb),
        });
    }
    Ok(buffers)
}

/// GBM scanout buffers, allocated through a second open of the card: GBM's
/// GEM handles then never mix with the ones our framebuffers count on the
/// commit fd (the buffers come over as DMA-BUFs, like a guest's).
fn gbm_buffers(
    card: &Arc<Card>,
    renderer: &mut Renderer,
    (width, height): (u32, u32),
    fourcc: DrmFourcc,
    primary: &crate::output::kms::Plane,
    buffers: &mut Vec<ScanoutBuffer>,
) -> Result<(), String> {
    let file = std::fs::File::options()
        .read(true)
        .write(true)
        .open(card.path())
        .map_err(|e| format!("opening {}: {e}", card.path().display()))?;
    let device = gbm::Device::new(file).map_err(|e| format!("gbm_create_device: {e}"))?;
    // Modifiers the plane scans out and the renderer can draw into.
    let drawable: Vec<u64> = renderer
        .formats
        .modifiers(fourcc)
        .iter()
        .filter(|&&(_, external_only)| !external_only)
        .map(|&(m, _)| m)
        .collect();
    let modifiers: Vec<DrmModifier> = primary
        .formats
        .modifiers(fourcc)
        .into_iter()
        .filter(|&m| m != DrmModifier::Invalid && drawable.contains(&u64::from(m)))
        .collect();
    let usage = gbm::BufferObjectFlags::SCANOUT | gbm::BufferObjectFlags::RENDERING;
    for _ in 0..SCANOUT_BUFFERS {
        let bo = if modifiers.is_empty() {
            device.create_buffer_object::<()>(width, height, fourcc, usage)
        } else {
            device.create_buffer_object_with_modifiers2::<()>(
                width,
                height,
                fourcc,
                modifiers.iter().copied(),
                usage,
            )
        }
        .map_err(|e| format!("gbm_bo_create: {e}"))?;
        let modifier = bo.modifier();
        let mut fds = Vec::new();
        for plane in 0..bo.plane_count() as i32 {
            // Exported writable (gbm_bo_get_fd_for_plane's fd is read-only
            // on some drivers, e.g. kms_swrast, and the renderer draws here).
            // SAFETY: a GBM BO on a DRM device has a GEM handle in the u32.
            let handle = unsafe { bo.handle_for_plane(plane).u32_ };
            let prime = drm_ffi::gem::handle_to_fd(
                device.as_fd(),
                handle,
                (libc::O_CLOEXEC | libc::O_RDWR) as u32,
            )
            .map_err(|e| format!("DRM_IOCTL_PRIME_HANDLE_TO_FD: {e}"))?;
            // SAFETY: the ioctl returned a new fd that is ours.
            let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(prime.fd) };
            fds.push((fd, bo.offset(plane), bo.stride_for_plane(plane)));
        }
        let fb = Framebuffer::import(
            card,
            &Dmabuf {
                width,
                height,
                fourcc,
                modifier,
                planes: fds
                    .iter()
                    .map(|(fd, offset, stride)| DmabufPlane {
                        fd: fd.as_fd(),
                        offset: *offset,
                        stride: *stride,
                    })
                    .collect(),
            },
        )
        .map_err(|e| e.to_string())?;
        let target = renderer
            .import_target(&DmabufDesc {
                width,
                height,
                fourcc,
                modifier: (modifier != DrmModifier::Invalid).then(|| u64::from(modifier)),
                planes: fds
                    .iter()
                    .map(|(fd, offset, stride)| GlPlane {
                        fd: fd.as_fd(),
                        offset: *offset,
                        stride: *stride,
                    })
                    .collect(),
            })
            .map_err(|e| format!("the renderer cannot draw into it: {e}"))?;
        if buffers.is_empty() {
            tracing::info!(
                "scanout buffers: GBM ({}), {fourcc:?}, modifier {:#x}",
                device.backend_name(),
                u64::from(modifier)
            );
        }
        buffers.push(ScanoutBuffer {
            target: Some(target),
            fb: Arc::new(fb),
            _backing: Backing::Gbm(bo),
        });
    }
    Ok(())
}

/// A dumb buffer for the cursor plane, of the size the driver asks for.
fn cursor_plane(card: &Arc<Card>) -> Result<CursorPlane, KmsError> {
    use drm::{Device as _, DriverCapability};
    let cap = |c| card.get_driver_capability(c).ok().filter(|&v| v > 0);
    let width = cap(DriverCapability::CursorWidth).unwrap_or(64).min(512) as u32;
    let height = cap(DriverCapability::CursorHeight).unwrap_or(64).min(512) as u32;
    let buffer = DumbBuffer::create(card, width, height, DrmFourcc::Argb8888)?;
    let fb = Arc::new(buffer.framebuffer()?);
    Ok(CursorPlane {
        buffer,
        fb,
        size: (width, height),
    })
}

/// Copies a `w` x `h` ARGB8888 cursor into the plane's buffer (cropped to
/// it), transparent around it.
fn write_cursor(plane: &mut CursorPlane, w: u32, h: u32, argb: &[u8]) -> Result<(), KmsError> {
    let (pw, ph) = plane.size;
    let stride = plane.buffer.stride() as usize;
    let mut map = plane.buffer.map()?;
    let bytes: &mut [u8] = map.as_mut();
    bytes.fill(0);
    let (cw, ch) = (w.min(pw) as usize, h.min(ph) as usize);
    for row in 0..ch {
        let src = row * w as usize * 4;
        let Some(line) = argb.get(src..src + cw * 4) else {
            break;
        };
        bytes[row * stride..row * stride + cw * 4].copy_from_slice(line);
    }
    Ok(())
}

/// Waits until the card has events (true) or the state changed (false),
/// at most `timeout`.
fn wait_for(
    card: BorrowedFd<'_>,
    wake: BorrowedFd<'_>,
    timeout: Duration,
) -> std::io::Result<bool> {
    // Round up: a 0.4 ms remainder must not become a busy 0 ms poll.
    let ms = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
    let ms = PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX);
    let mut fds = [
        PollFd::new(card, PollFlags::POLLIN),
        PollFd::new(wake, PollFlags::POLLIN),
    ];
    match poll(&mut fds, ms) {
        Ok(_) => Ok(fds[0]
            .revents()
            .is_some_and(|r| r.contains(PollFlags::POLLIN))),
        Err(Errno::EINTR) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

impl DisplaySummary {
    /// One line for the log.
    pub fn line(&self) -> String {
        format!(
            "display on {}: {} DMA-BUF frames shown ({} direct, {} composed), {} skipped, \
             {} flips (2D pictures included), {} answered by the deadline; \
             CPU bytes copied on the direct path: {}",
            self.output,
            self.stats.shown,
            self.direct,
            self.composite,
            self.stats.skipped,
            self.flips,
            self.stats.deadline_answers,
            self.direct_cpu_bytes
        )
    }
}
