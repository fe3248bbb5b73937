//! The display output: the guest on a monitor of its own, through KMS.
//!
//! One thread owns the card, the GL renderer and every buffer (a
//! [`Display`] on an [`OutputThread`]); the sources reach it through
//! [`Shared`] and its wake fd.
//! Each guest frame goes to the primary plane as it is (**direct**: the
//! guest's DMA-BUF is the framebuffer, no copy) when a TEST_ONLY commit
//! says the plane takes it, else the renderer draws it into one of our
//! scanout buffers (**composite**: drawn into in place through an
//! EGLImage). One commit is in flight at a time; frames that arrive
//! meanwhile wait, and a newer one replaces (and releases) an older one.
//!
//! The rooms, one concern each:
//! - [`slots`]: queued → in flight → on screen → retired, and who releases
//!   each frame when (no card inside; the committer carries the flip in
//!   flight).
//! - [`imports`]: the guest's buffers as framebuffers and EGLImages, and
//!   the direct/composite decision per layout.
//! - `present`: turning the next picture into a commit (composition
//!   included).
//! - [`cursor`]: the cursor plane, or the cursor drawn by GL.
//! - [`capture`]: `--capture` by writeback or readback.
//! - [`link`] and `session`: unplugged, DRM master lost, lit again.

mod capture;
mod cursor;
mod imports;
mod link;
mod present;
mod session;
pub mod slots;
mod thread;

pub use self::thread::OutputThread;

use std::collections::VecDeque;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use drm::buffer::{DrmFourcc, DrmModifier};
use gl_renderer::{Composition, RenderDevice, Renderer, Target};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags};

use crate::frame::{monotonic_now, DmabufEvent, FrameRecord};
use crate::latency::LatencyStats;
use crate::output::gl_capture::first_draw;
use crate::output::headless::Stopped;
use crate::output::kms::device::poll_timeout;
use crate::output::kms::{
    Card, CardAccess, CardChoice, Committer, FlipEvent, Framebuffer, KmsError, ModeSpec, Rect,
    ScanoutBuffer,
};
use crate::state::{Shared, StopReason};

use self::capture::Capture;
use self::cursor::Cursor;
use self::imports::{Current, Imports};
use self::link::{Link, Probe};
use self::slots::{FrameSlots, Shown};

/// Our scanout buffers: one on screen, one being drawn or in flight.
const SCANOUT_BUFFERS: usize = 2;
/// A flip whose event has not come by then is given up on, so that held
/// buffers are released (a stuck driver, DPMS off).
const FLIP_TIMEOUT: Duration = Duration::from_millis(500);

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
    /// Do not tell the guest the monitor's size (`SetUIInfo`).
    pub no_resize: bool,
    /// How the card is opened: directly, or through the seat (then DRM
    /// master comes and goes with the seat, not `SET_MASTER`).
    pub access: CardAccess,
}

#[derive(Debug, thiserror::Error)]
pub enum DisplayError {
    #[error(transparent)]
    Kms(#[from] KmsError),
    #[error("GL renderer: {0}")]
    Render(#[from] gl_renderer::RenderError),
    #[error(transparent)]
    Image(#[from] imports::ImageError),
    #[error(transparent)]
    Capture(#[from] ::capture::CaptureError),
    #[error("waiting for DRM events: {0}")]
    Poll(#[source] std::io::Error),
    #[error("no scanout buffer is free (a flip the kernel never completed holds one)")]
    NoFreeBuffer,
    #[error("starting the output's thread: {0}")]
    Thread(#[source] std::io::Error),
    #[error("the output's thread ended unexpectedly (see the log above)")]
    OutputGone,
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

/// What this output counts.
#[derive(Debug, Default)]
struct Counters {
    direct: u64,
    composite: u64,
    flips: u64,
    cpu_bytes: u64,
    direct_cpu_bytes: u64,
    rejected: u64,
}

/// A scanout buffer of ours and the renderer's target over its memory.
struct Canvas {
    // The target first: it goes before the memory it draws into.
    target: Target,
    buffer: ScanoutBuffer,
}

/// What one commit puts on the primary plane (the cursor plane follows
/// the cursor at each commit).
#[derive(Debug, Clone)]
pub struct Picture {
    /// Kept alive while the plane may show it (removing an FB in use turns
    /// the plane off).
    fb: Arc<Framebuffer>,
    /// Which of our scanout buffers, for composed pictures.
    buffer: Option<usize>,
    /// The guest buffer shown directly, for a GL readback.
    direct: Option<Current>,
    src: Rect,
    dst: Rect,
}

impl Picture {
    /// All of one of our scanout buffers.
    fn whole(fb: Arc<Framebuffer>, buffer: usize) -> Picture {
        let whole = Rect::of_size(fb.size());
        Picture {
            fb,
            buffer: Some(buffer),
            direct: None,
            src: whole,
            dst: whole,
        }
    }
}

/// The next picture, waiting for the flip in flight.
#[derive(Debug, Clone, Copy)]
enum Next {
    /// The guest's buffer with its frame.
    Frame(Current),
    /// The 2D surface, rendered into `Display::frame_2d`.
    Surface,
    /// The guest's current buffer composed again (the GL-drawn cursor
    /// moved); no frame of QEMU's.
    Again,
    Blank,
}

/// The 2D console: rendered from the shared state, uploaded to a texture.
#[derive(Default)]
struct Surface2d {
    /// As the source painted it, without the cursor.
    picture: crate::surface::SurfacePicture,
    /// With the cursor when GL draws it.
    frame: ::capture::RgbaFrame,
    texture: Option<gl_renderer::Texture>,
    /// The source's surface change counter last seen.
    seen: u64,
    /// The last render found a surface (not disabled, not gone).
    live: bool,
}

pub struct Display {
    options: DisplayOptions,
    card: Arc<Card>,
    committer: Committer<Shown<Picture>>,
    renderer: Renderer,
    canvases: Vec<Canvas>,
    /// The scanout buffers' format.
    fourcc: DrmFourcc,
    slots: FrameSlots<Next, Picture>,
    imports: Imports,
    surface: Surface2d,
    cursor: Cursor,
    /// Where the picture being shown sits on the output.
    picture: Option<Composition>,
    /// What `Shared` was last told of `picture` (for the pointer).
    placement: Option<crate::state::Placement>,
    capture: Capture,
    link: Link,
    probe: Probe,
    counters: Counters,
    /// When the first run began (`--timeout` counts from it).
    started: Option<Instant>,
    /// Whether the monitor lit now was published for the guest to be
    /// sized to (see `tell_monitor`).
    told: bool,
    /// The seat's enable count when the monitor was last lit (a switch
    /// away and back that no commit noticed still lights it afresh).
    seat_generation: u64,
    /// This output's place among those the service watchdog waits for.
    watchdog_id: usize,
}

impl Display {
    pub(super) fn watchdog_id(&self) -> usize {
        self.watchdog_id
    }

    /// Opens the card, picks the pipe, brings up the renderer (warmed up:
    /// the first draw compiles shaders) and lights the monitor black.
    pub fn open(options: DisplayOptions) -> Result<Display, DisplayError> {
        // Another head on the same card shares its open file.
        let choice = CardChoice::from_option(options.device.as_deref());
        let card = Card::open_shared(&choice, &options.access)?;
        let committer: Committer<Shown<Picture>> = Committer::select(
            card.clone(),
            options.connector.as_deref(),
            options.mode.as_ref(),
        )?;
        let pipe = committer.pipe();
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
        let capture = Capture::new(&card, options.capture.clone());
        let has_cursor_plane = pipe.cursor.is_some();
        let started = Instant::now();
        let mut renderer = Renderer::new(&options.render_device)?;
        first_draw(&mut renderer)?;
        tracing::debug!("renderer up in {:?}", started.elapsed());
        let canvases = canvases(
            &card,
            &mut renderer,
            mode_size,
            fourcc,
            &committer.pipe().primary,
        )?;
        let cursor = Cursor::new(&card, has_cursor_plane, !options.no_cursor_plane);
        let mut display = Display {
            options,
            card,
            committer,
            renderer,
            canvases,
            fourcc,
            slots: FrameSlots::default(),
            imports: Imports::default(),
            surface: Surface2d::default(),
            cursor,
            picture: None,
            placement: None,
            capture,
            link: Link::Lit,
            probe: Probe::default(),
            counters: Counters::default(),
            started: None,
            told: false,
            seat_generation: 0,
            watchdog_id: crate::notify::register_output(),
        };
        if let CardAccess::Seat(seat) = &display.options.access {
            display.seat_generation = seat.generation();
        }
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
            crate::notify::output_turned(self.watchdog_id);
            let mut wait = Duration::from_secs(1);
            for t in [deadline, next_table].into_iter().flatten() {
                wait = wait.min(t.saturating_duration_since(Instant::now()));
            }
            if let Some(at) = self.committer.flip_queued_at() {
                wait = wait.min((at + FLIP_TIMEOUT).saturating_duration_since(Instant::now()));
            }
            wait = wait.min(self.probe.wait());
            if let Some(turn) = crate::notify::turn_at_least_every() {
                wait = wait.min(turn);
            }
            let flips_ready = wait_for(
                [self.card.as_fd(), self.committer.flip_wake_fd()],
                wake,
                wait,
            )
            .map_err(DisplayError::Poll)?;
            shared.clear_wake();
            if flips_ready {
                self.read_flips(Duration::ZERO)?;
            }
            self.check_flip_timeout();
            // The frame that waited for that flip goes first, before the
            // news: a frame arriving now (e.g. the buffer just released,
            // re-exported) must queue behind it, not replace it.
            if self.link == Link::Lit && self.committer.ready() {
                if self.capture.overdue() {
                    self.capture_or_warn();
                }
                self.present_queued();
            }
            if self.probe.due() {
                self.probe_link();
            }
            self.tell_monitor(shared);
            self.publish_placement(shared);

            let mut state = shared.lock();
            let stop = state.stop;
            let updates = state.updates;
            std::mem::swap(&mut batch, &mut state.dmabuf);
            let cursor_changed = state.cursor_changes != self.cursor.seen;
            if cursor_changed {
                self.cursor.seen = state.cursor_changes;
                self.cursor.update(state.surface.cursor_overlay());
            }
            // Without a cursor plane the cursor is drawn into 2D pictures,
            // and a DMA-BUF picture is composed again with it.
            let gl_cursor = cursor_changed && !self.cursor.on_plane();
            let redraw_2d = gl_cursor && self.imports.current.is_none();
            if gl_cursor && self.imports.current.is_some() {
                self.cursor.upload(&mut self.renderer);
                self.slots.enqueue_if_idle(Next::Again);
            }
            // The 2D picture is taken under the lock (a swap), composed
            // with the cursor outside it.
            let mut compose_2d = false;
            if state.surface_changes != self.surface.seen || redraw_2d {
                self.surface.seen = state.surface_changes;
                self.surface.live = state.surface.take_picture(&mut self.surface.picture);
                compose_2d = self.surface.live;
                if self.surface.live {
                    self.counters.cpu_bytes += self.surface.frame.pixels.len() as u64;
                }
                // New pixels are shown where their marker sits among the
                // DMA-BUF events (below); a cursor drawn in moved now.
                if self.surface.live && redraw_2d {
                    self.slots.enqueue(Next::Surface, None);
                }
            }
            drop(state);
            if compose_2d {
                let cursor = (!self.cursor.on_plane())
                    .then(|| self.cursor.copy())
                    .flatten();
                self.surface
                    .picture
                    .compose(&mut self.surface.frame, cursor);
            }
            self.take(&mut batch);

            if self.link != Link::Lit {
                // Nothing to show it on: answer frames as they come.
                self.slots.skip_queued();
            } else if self.committer.ready() {
                if self.capture.overdue() {
                    self.capture_or_warn();
                } else if self.slots.has_queued() {
                    self.present_queued();
                } else if self.cursor.dirty {
                    self.move_cursor();
                } else if self.capture.dirty {
                    self.capture_or_warn();
                }
            }
            if let Some(t) = next_table.filter(|&t| Instant::now() >= t) {
                tracing::info!("frame stages so far:\n{}", self.slots.log().stats.table());
                next_table = Some(t + self.options.latency_interval.unwrap_or_default());
            }
            let idle = !self.committer.flip_pending() && !self.slots.has_queued();
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

    /// Publishes where the picture sits on the monitor, for the pointer
    /// (see `crate::input`), when it changed.
    fn publish_placement(&mut self, shared: &Shared) {
        let placement =
            self.picture
                .filter(|_| self.link == Link::Lit)
                .map(|how| crate::state::Placement {
                    mode: self.mode_size(),
                    guest: how.src,
                    shown: how.dst,
                });
        if placement != self.placement {
            self.placement = placement;
            shared.set_placement(placement);
        }
    }

    /// QEMU went away: its buffers are let go and the monitor goes black
    /// (the monitor stays lit, waiting for it to come back).
    pub fn blank(&mut self) -> Result<(), DisplayError> {
        self.settle_flip();
        self.slots.skip_queued();
        self.imports.current = None;
        // Nor is its 2D picture shown again (a replug while it is gone).
        self.surface.live = false;
        self.cursor.shape = None;
        self.picture = None;
        self.present_blank()?;
        self.settle_flip();
        self.imports.forget_all();
        // GL keeps the texture it sampled last (and with it the guest's
        // buffer) until it samples another: draw once with one of ours.
        if let Err(err) = first_draw(&mut self.renderer) {
            tracing::warn!("letting go of the last sampled texture: {err}");
        }
        if self.capture.dirty {
            self.capture_or_warn();
        }
        Ok(())
    }

    /// Reads our CRTC's flip events (waiting at most `timeout`).
    fn read_flips(&mut self, timeout: Duration) -> Result<(), KmsError> {
        for flip in self.committer.read_events(timeout)? {
            self.counters.flips += 1;
            if let Some(shown) = flip.payload {
                self.flipped(shown, flip.event);
            }
        }
        Ok(())
    }

    /// Our flip completed: what it showed is on screen, what it replaced
    /// is let go.
    fn flipped(&mut self, shown: Shown<Picture>, event: FlipEvent) {
        self.slots.flipped(shown, event.time, monotonic_now());
        self.capture.dirty = true;
    }

    /// Lets the flip in flight complete (at most [`FLIP_TIMEOUT`]).
    fn settle_flip(&mut self) {
        let waited = Instant::now();
        while self.committer.flip_pending() && waited.elapsed() < FLIP_TIMEOUT {
            if let Err(err) = self.read_flips(FLIP_TIMEOUT) {
                tracing::warn!("waiting for a flip: {err}");
                break;
            }
        }
        self.check_flip_timeout();
    }

    fn check_flip_timeout(&mut self) {
        let Some(at) = self.committer.flip_queued_at() else {
            return;
        };
        if at.elapsed() >= FLIP_TIMEOUT {
            if let Some(shown) = self.committer.abandon_flip() {
                self.slots.abandoned(shown);
                self.capture.dirty = true;
            }
        }
    }

    /// Shuts the output down (the CRTC back as it was) and sums up.
    pub fn finish_run(mut self, shared: &Shared, stopped_by: Stopped) -> DisplaySummary {
        let (updates, rejected, deadline_answers) = {
            let state = shared.lock();
            (state.updates, state.rejected, state.deadline_answers)
        };
        self.shut_down();
        let refresh = self.refresh();
        let output = self.output_name();
        let log = self.slots.log();
        log.stats.deadline_answers = deadline_answers;
        DisplaySummary {
            stopped_by,
            stats: std::mem::take(&mut log.stats),
            records: std::mem::take(&mut log.records),
            direct: self.counters.direct,
            composite: self.counters.composite,
            flips: self.counters.flips,
            direct_cpu_bytes: self.counters.direct_cpu_bytes,
            cpu_bytes: self.counters.cpu_bytes,
            updates,
            rejected: rejected + self.counters.rejected,
            refresh,
            output,
        }
    }

    /// Applies a batch of DMA-BUF events in order.
    fn take(&mut self, batch: &mut VecDeque<DmabufEvent>) {
        for event in batch.drain(..) {
            match event {
                DmabufEvent::Scanout(scanout) => match scanout.buffer.check() {
                    Ok(key) => self.imports.scanout(key, scanout),
                    Err(why) => {
                        // Updates that follow belong to the rejected buffer:
                        // they are answered unshown, the last good picture
                        // stays (the old buffer may be rewritten by now).
                        tracing::warn!("dropping a DMA-BUF scanout: {why}");
                        self.imports.current = None;
                        self.counters.rejected += 1;
                    }
                },
                DmabufEvent::Disable => {
                    self.imports.current = None;
                    self.slots.enqueue(Next::Blank, None);
                    self.imports.forget_all();
                }
                DmabufEvent::Surface => {
                    if self.surface.live {
                        self.imports.current = None;
                        self.slots.enqueue(Next::Surface, None);
                    }
                }
                DmabufEvent::Update {
                    release,
                    mut record,
                    ..
                } => match self.imports.current {
                    Some(current) => {
                        // Its buffer was imported (or found) at its scanout.
                        record.imported = Some(monotonic_now());
                        let frame = slots::Frame { record, release };
                        self.slots.enqueue(Next::Frame(current), Some(frame));
                    }
                    None => self.slots.skip(slots::Frame { record, release }),
                },
            }
        }
    }

    /// On the way out: the last flip completes, the last picture is
    /// captured, the CRTC gets back what it showed before us, and only then
    /// are the buffers on it released.
    fn shut_down(&mut self) {
        self.settle_flip();
        // The last picture QEMU sent goes on screen before it is captured.
        if self.link == Link::Lit && self.slots.has_queued() {
            self.present_queued();
            self.settle_flip();
        }
        self.slots.skip_queued();
        if self.capture.dirty {
            if let Err(err) = self.capture() {
                tracing::warn!("the last capture: {err}");
            }
        }
        if let Err(err) = self.committer.restore() {
            tracing::warn!("restoring the CRTC: {err}");
        }
        let in_flight = self.committer.take_flight();
        self.slots.let_go(in_flight);
        self.imports.forget_all();
    }
}

/// Our scanout buffers at `size` with the renderer's targets over them:
/// GBM buffer objects where GBM serves (with a modifier the plane scans
/// out and the renderer draws into), else dumb buffers.
fn canvases(
    card: &Arc<Card>,
    renderer: &mut Renderer,
    size: (u32, u32),
    fourcc: DrmFourcc,
    primary: &crate::output::kms::Plane,
) -> Result<Vec<Canvas>, DisplayError> {
    // Modifiers the plane scans out and the renderer can draw into.
    let drawable: Vec<DrmModifier> = renderer
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
        .filter(|&m| m != DrmModifier::Invalid && drawable.contains(&m))
        .collect();
    let gbm = ScanoutBuffer::gbm(card, size, fourcc, &modifiers, SCANOUT_BUFFERS)
        .map_err(DisplayError::from)
        .and_then(|buffers| with_targets(renderer, buffers));
    match gbm {
        Ok(canvases) => return Ok(canvases),
        Err(why) => tracing::info!("scanout buffers: dumb buffers (GBM: {why})"),
    }
    let buffers = ScanoutBuffer::dumb(card, size, fourcc, SCANOUT_BUFFERS)?;
    with_targets(renderer, buffers)
}

/// Each buffer as a target the renderer draws into.
fn with_targets(
    renderer: &mut Renderer,
    buffers: Vec<ScanoutBuffer>,
) -> Result<Vec<Canvas>, DisplayError> {
    buffers
        .into_iter()
        .map(|buffer| {
            let target = renderer.import_target(&buffer.export)?;
            Ok(Canvas { target, buffer })
        })
        .collect()
}

/// Waits until flip events came (true: the card has events, or another
/// head's thread read ours off it) or the state changed (false), at most
/// `timeout`.
fn wait_for(
    [card, routed]: [BorrowedFd<'_>; 2],
    wake: BorrowedFd<'_>,
    timeout: Duration,
) -> std::io::Result<bool> {
    let ms = poll_timeout(timeout);
    let mut fds = [
        PollFd::new(card, PollFlags::POLLIN),
        PollFd::new(routed, PollFlags::POLLIN),
        PollFd::new(wake, PollFlags::POLLIN),
    ];
    match poll(&mut fds, ms) {
        Ok(_) => Ok(fds[..2]
            .iter()
            .any(|fd| fd.revents().is_some_and(|r| r.contains(PollFlags::POLLIN)))),
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
