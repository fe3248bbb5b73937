//! Atomic commits on one pipe: the first a blocking modeset, then
//! NONBLOCK flips with page-flip events (one in flight at a time), TEST_ONLY
//! checks of a plane configuration, the kernel's flip events, and on
//! shutdown the CRTC as it was before (or off).

use std::sync::Arc;
use std::time::{Duration, Instant};

use drm::buffer::{DrmFourcc, DrmModifier};
use drm::control::atomic::AtomicModeReq;
use drm::control::{
    crtc, property, AtomicCommitFlags, Device as ControlDevice, Mode, ResourceHandle,
};
use nix::errno::Errno;

pub use dmabuf::Rect;

use super::device::{Card, PropMap};
use super::error::KmsError;
use super::events::FlipRoute;
use super::framebuffer::Framebuffer;
use super::pipe::{describe, ModeSpec, Pipe};
use super::plane::Plane;

/// What a plane shows: `src` of `fb` on the CRTC's `dst`. Different sizes
/// mean scaling, which some planes (vkms') cannot do.
#[derive(Debug, Clone, Copy)]
pub struct PlaneConfig<'a> {
    pub fb: &'a Framebuffer,
    pub src: Rect,
    pub dst: Rect,
}

impl<'a> PlaneConfig<'a> {
    /// All of `fb`, 1:1 at the CRTC's origin.
    pub fn whole(fb: &'a Framebuffer) -> PlaneConfig<'a> {
        PlaneConfig {
            fb,
            src: Rect::of_size(fb.size()),
            dst: Rect::of_size(fb.size()),
        }
    }
}

/// A completed flip, from the kernel's event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlipEvent {
    pub crtc: crtc::Handle,
    /// The CRTC's vblank counter.
    pub sequence: u32,
    /// When the flip happened: CLOCK_MONOTONIC (see
    /// [`Caps::monotonic_timestamp`](super::Caps)), as a duration since boot.
    pub time: Duration,
}

/// What a TEST_ONLY commit said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestOutcome {
    Accepted,
    /// The plane does not list the framebuffer's format and modifier
    /// (found without asking the kernel).
    UnsupportedFormat {
        fourcc: DrmFourcc,
        modifier: DrmModifier,
    },
    /// The kernel refused the configuration (EINVAL, ERANGE, ...).
    Rejected(Errno),
}

impl TestOutcome {
    pub fn is_accepted(self) -> bool {
        self == TestOutcome::Accepted
    }
}

/// An atomic request under construction, with properties set by name.
#[derive(Debug, Clone, Default)]
pub struct Request {
    req: AtomicModeReq,
    modeset: bool,
}

impl Request {
    pub fn new() -> Request {
        Request::default()
    }

    /// Sets `object`'s property `name` (looked up in `props`).
    pub fn set<H: ResourceHandle>(
        &mut self,
        object: H,
        props: &PropMap,
        name: &str,
        value: property::Value<'_>,
    ) -> Result<&mut Request, KmsError> {
        self.req.add_property(object, props.handle(name)?, value);
        Ok(self)
    }

    /// Puts `config` on `plane` on `crtc`, or turns the plane off (`None`).
    /// `SRC_*` are 16.16 fixed point; `CRTC_*` whole pixels.
    pub fn plane(
        &mut self,
        plane: &Plane,
        crtc: crtc::Handle,
        config: Option<&PlaneConfig<'_>>,
    ) -> Result<&mut Request, KmsError> {
        use property::Value::{SignedRange, UnsignedRange};
        let (p, h) = (&plane.props, plane.handle);
        let Some(c) = config else {
            self.set(h, p, "FB_ID", property::Value::Framebuffer(None))?;
            return self.set(h, p, "CRTC_ID", property::Value::CRTC(None));
        };
        let fixed = |v: u32| UnsignedRange(u64::from(v) << 16);
        let src_x = u32::try_from(c.src.x).unwrap_or(0);
        let src_y = u32::try_from(c.src.y).unwrap_or(0);
        self.set(
            h,
            p,
            "FB_ID",
            property::Value::Framebuffer(Some(c.fb.handle())),
        )?;
        self.set(h, p, "CRTC_ID", property::Value::CRTC(Some(crtc)))?;
        self.set(h, p, "SRC_X", fixed(src_x))?;
        self.set(h, p, "SRC_Y", fixed(src_y))?;
        self.set(h, p, "SRC_W", fixed(c.src.width))?;
        self.set(h, p, "SRC_H", fixed(c.src.height))?;
        self.set(h, p, "CRTC_X", SignedRange(i64::from(c.dst.x)))?;
        self.set(h, p, "CRTC_Y", SignedRange(i64::from(c.dst.y)))?;
        self.set(h, p, "CRTC_W", UnsignedRange(u64::from(c.dst.width)))?;
        self.set(h, p, "CRTC_H", UnsignedRange(u64::from(c.dst.height)))
    }

    /// Routes `pipe`'s connector to its CRTC and lights the CRTC with the
    /// mode in blob `mode_blob`; the commit will need ALLOW_MODESET.
    pub fn modeset(&mut self, pipe: &Pipe, mode_blob: u64) -> Result<&mut Request, KmsError> {
        self.modeset = true;
        let crtc = pipe.crtc;
        self.set(
            pipe.connector,
            &pipe.connector_props,
            "CRTC_ID",
            property::Value::CRTC(Some(crtc)),
        )?;
        self.set(
            crtc,
            &pipe.crtc_props,
            "MODE_ID",
            property::Value::Blob(mode_blob),
        )?;
        self.set(
            crtc,
            &pipe.crtc_props,
            "ACTIVE",
            property::Value::Boolean(true),
        )
    }

    /// Sets a pointer- or fd-valued property (`WRITEBACK_OUT_FENCE_PTR`,
    /// `IN_FENCE_FD`) as its raw value.
    pub fn set_raw<H: ResourceHandle>(
        &mut self,
        object: H,
        props: &PropMap,
        name: &str,
        value: u64,
    ) -> Result<&mut Request, KmsError> {
        self.req
            .add_raw_property(object.into(), props.handle(name)?, value);
        Ok(self)
    }

    /// The commit changes routing or modes: it needs ALLOW_MODESET.
    pub fn allow_modeset(&mut self) -> &mut Request {
        self.modeset = true;
        self
    }
}

/// A mode blob we created, destroyed when dropped (the CRTC keeps its own
/// reference while it uses the mode).
struct ModeBlob<'a> {
    card: &'a Card,
    id: u64,
}

impl<'a> ModeBlob<'a> {
    fn new(card: &'a Card, mode: &Mode) -> Result<ModeBlob<'a>, KmsError> {
        match card
            .create_property_blob(mode)
            .map_err(card.err("DRM_IOCTL_MODE_CREATEPROPBLOB"))?
        {
            property::Value::Blob(id) => Ok(ModeBlob { card, id }),
            other => Err(card.not_found(format!("a mode blob, not {other:?}"))),
        }
    }
}

impl Drop for ModeBlob<'_> {
    fn drop(&mut self) {
        if let Err(err) = self.card.destroy_property_blob(self.id) {
            tracing::warn!("DRM_IOCTL_MODE_DESTROYPROPBLOB {}: {err}", self.id);
        }
    }
}

/// The pipe as it was before us, to put back on shutdown.
#[derive(Debug)]
struct Saved {
    mode: Option<Mode>,
    active: bool,
    connector_crtc: u64,
    primary: Vec<(&'static str, u64)>,
}

const PLANE_STATE: [&str; 10] = [
    "FB_ID", "CRTC_ID", "SRC_X", "SRC_Y", "SRC_W", "SRC_H", "CRTC_X", "CRTC_Y", "CRTC_W", "CRTC_H",
];

impl Saved {
    fn read(card: &Card, pipe: &Pipe) -> Result<Saved, KmsError> {
        let crtc = card
            .get_crtc(pipe.crtc)
            .map_err(card.err("DRM_IOCTL_MODE_GETCRTC"))?;
        let crtc_props = PropMap::read(card, pipe.crtc)?;
        let connector_props = PropMap::read(card, pipe.connector)?;
        let plane_props = PropMap::read(card, pipe.primary.handle)?;
        Ok(Saved {
            mode: crtc.mode(),
            active: crtc_props.value("ACTIVE") == Some(1),
            connector_crtc: connector_props.value("CRTC_ID").unwrap_or(0),
            primary: PLANE_STATE
                .iter()
                .filter_map(|&name| Some((name, plane_props.value(name)?)))
                .collect(),
        })
    }
}

/// Submits `request` with `flags` (plus ALLOW_MODESET when it needs it).
fn submit(card: &Card, request: Request, flags: AtomicCommitFlags) -> Result<(), KmsError> {
    let mut flags = flags;
    if request.modeset {
        flags |= AtomicCommitFlags::ALLOW_MODESET;
    }
    card.atomic_commit(flags, request.req)
        .map_err(card.err("DRM_IOCTL_MODE_ATOMIC"))
}

/// A page-flip event read from the card, with what the flip showed when
/// it was ours (our CRTC's flip in flight).
#[derive(Debug)]
pub struct Flipped<P> {
    pub event: FlipEvent,
    pub payload: Option<P>,
}

/// The NONBLOCK commit in flight: when it was queued and what it shows.
#[derive(Debug)]
struct InFlight<P> {
    since: Instant,
    payload: P,
}

/// Commits on one pipe, tracking the one flip that may be in flight and
/// carrying its payload `P` (what the output put on screen with it, e.g.
/// the frame it holds): given back by the flip's event or on abandon,
/// never lost in between.
#[derive(Debug)]
pub struct Committer<P = ()> {
    card: Arc<Card>,
    pipe: Pipe,
    /// We have lit the pipe (modeset done).
    active: bool,
    /// A NONBLOCK commit is in flight; its event is due.
    pending: Option<InFlight<P>>,
    /// When we gave up on a flip whose event never came: the kernel may
    /// still hold it (a fence not signalled), until its event comes late.
    abandoned: Option<Instant>,
    saved: Saved,
    /// Our CRTC's page-flip events (the card may carry other heads').
    route: FlipRoute,
    /// Our entry in the card's [`PipeClaims`](super::pipe::PipeClaims).
    claim: u64,
    /// The flip events of one read (kept: no allocation per flip).
    events: Vec<FlipEvent>,
}

/// How long after giving up on a flip the kernel is assumed to hold it
/// still (a commit meanwhile would only get EBUSY), unless its event comes.
const ABANDONED_HOLD: Duration = Duration::from_secs(1);

impl<P> Committer<P> {
    /// Takes over `pipe`, remembering what it shows now (for [`restore`]);
    /// flips carry a payload of type `P` ([`Committer::new`]: none).
    ///
    /// [`restore`]: Committer::restore
    pub fn carrying(card: Arc<Card>, pipe: Pipe) -> Result<Committer<P>, KmsError> {
        let claim = card.pipe_claims().claim(pipe.objects()).map_err(|clash| {
            card.not_found(format!(
                "{} needs objects {clash:?}, which another output of ours drives",
                pipe.name
            ))
        })?;
        Committer::with_claim(card, pipe, claim)
    }

    /// Selects a pipe as [`Pipe::select`] does among what no other output
    /// of ours drives on the card, and takes it over (the choice and the
    /// claim in one step: two heads starting at once never pick the same
    /// CRTC).
    pub fn select(
        card: Arc<Card>,
        connector: Option<&str>,
        mode: Option<&ModeSpec>,
    ) -> Result<Committer<P>, KmsError> {
        let (pipe, claim) = {
            let mut claims = card.pipe_claims();
            let pipe = Pipe::select_avoiding(&card, connector, mode, &claims.taken(None))?;
            let claim = claims
                .claim(pipe.objects())
                .expect("chosen among the free ones under the lock");
            (pipe, claim)
        };
        Committer::with_claim(card, pipe, claim)
    }

    /// Our connector's pipe chosen again (after a replug: the mode may
    /// differ), among what no other output of ours drives; for
    /// [`Committer::replace_pipe`].
    pub fn reselect(&self, mode: Option<&ModeSpec>) -> Result<Pipe, KmsError> {
        let claims = self.card.pipe_claims();
        Pipe::select_avoiding(
            &self.card,
            Some(&self.pipe.name),
            mode,
            &claims.taken(Some(self.claim)),
        )
    }

    fn with_claim(card: Arc<Card>, pipe: Pipe, claim: u64) -> Result<Committer<P>, KmsError> {
        let release = |card: &Card| card.pipe_claims().release(claim);
        let saved = Saved::read(&card, &pipe).inspect_err(|_| release(&card))?;
        let route = card
            .route_flips(pipe.crtc)
            .inspect_err(|_| release(&card))?;
        tracing::debug!(
            "{}: {} before us: {saved:?}",
            card.path().display(),
            pipe.name
        );
        Ok(Committer {
            card,
            pipe,
            active: false,
            pending: None,
            abandoned: None,
            saved,
            route,
            claim,
            events: Vec::new(),
        })
    }

    /// Readable when another output's thread read an event of our CRTC
    /// off the card (poll it beside the card's fd).
    pub fn flip_wake_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.route.wake_fd()
    }

    pub fn card(&self) -> &Arc<Card> {
        &self.card
    }

    pub fn pipe(&self) -> &Pipe {
        &self.pipe
    }

    /// Is a flip in flight (its event not read yet)?
    pub fn flip_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// Drives `pipe` from now on (the same connector and CRTC after a
    /// hotplug, with the mode picked again); the next commit is a modeset.
    /// What [`Committer::restore`] puts back stays what was there first.
    /// (A flip still in flight is waited for and its payload dropped:
    /// settle it first to keep it.)
    pub fn replace_pipe(&mut self, pipe: Pipe) {
        self.settle();
        self.card.pipe_claims().replace(self.claim, pipe.objects());
        if pipe.crtc != self.route.crtc {
            match self.card.route_flips(pipe.crtc) {
                Ok(route) => self
                    .card
                    .unroute_flips(&std::mem::replace(&mut self.route, route)),
                Err(err) => tracing::error!("following {:?}'s flip events: {err}", pipe.crtc),
            }
        }
        self.pipe = pipe;
        self.active = false;
    }

    /// When the flip in flight was queued.
    pub fn flip_queued_at(&self) -> Option<Instant> {
        self.pending.as_ref().map(|f| f.since)
    }

    /// What the flip in flight shows.
    pub fn in_flight(&self) -> Option<&P> {
        self.pending.as_ref().map(|f| &f.payload)
    }

    /// What the flip in flight shows (to stamp it once queued).
    pub fn in_flight_mut(&mut self) -> Option<&mut P> {
        self.pending.as_mut().map(|f| &mut f.payload)
    }

    /// Forgets the flip in flight without a word and gives its payload
    /// back: the screen no longer shows what it queued (a restore, another
    /// mode).
    pub fn take_flight(&mut self) -> Option<P> {
        self.pending.take().map(|f| f.payload)
    }

    /// Gives up on the flip in flight (its event never came: a stuck
    /// driver, DPMS off, the card taken away) and gives its payload back.
    /// The next commit may still get EBUSY.
    pub fn abandon_flip(&mut self) -> Option<P> {
        let flight = self.pending.take()?;
        self.abandoned = Some(Instant::now());
        tracing::warn!(
            "{}: no page-flip event {:?} after the commit: giving up on it",
            self.card.path().display(),
            flight.since.elapsed()
        );
        Some(flight.payload)
    }

    /// Whether a flip may be queued now: none is in flight, and none we
    /// gave up on may still be held by the kernel (for [`ABANDONED_HOLD`],
    /// or until its late event is read), where a commit would only get
    /// EBUSY.
    pub fn ready(&self) -> bool {
        self.pending.is_none()
            && self
                .abandoned
                .is_none_or(|at| at.elapsed() >= ABANDONED_HOLD)
    }

    /// [`KmsError::FlipPending`] while a flip is in flight.
    pub fn check_idle(&self) -> Result<(), KmsError> {
        match self.pending {
            Some(_) => Err(KmsError::FlipPending {
                device: self.card.path().to_owned(),
                crtc: self.pipe.crtc.into(),
            }),
            None => Ok(()),
        }
    }

    /// The request lighting the pipe with `primary` (the cursor off).
    fn modeset_request(&self, blob: u64, primary: &PlaneConfig<'_>) -> Result<Request, KmsError> {
        let mut req = Request::new();
        req.modeset(&self.pipe, blob)?;
        req.plane(&self.pipe.primary, self.pipe.crtc, Some(primary))?;
        if let Some(cursor) = &self.pipe.cursor {
            req.plane(cursor, self.pipe.crtc, None)?;
        }
        Ok(req)
    }

    /// The first commit: a blocking modeset (connector routed to the CRTC,
    /// the mode, ACTIVE) with `primary` on the primary plane.
    pub fn modeset(&mut self, primary: &PlaneConfig<'_>) -> Result<(), KmsError> {
        self.check_idle()?;
        let started = Instant::now();
        let blob = ModeBlob::new(&self.card, &self.pipe.mode)?;
        let req = self.modeset_request(blob.id, primary)?;
        submit(&self.card, req, AtomicCommitFlags::empty())?;
        self.active = true;
        tracing::info!(
            "{}: {} lit at {} in {:?}",
            self.card.path().display(),
            self.pipe.name,
            describe(&self.pipe.mode),
            started.elapsed()
        );
        Ok(())
    }

    /// Would the primary plane take `primary`? Checks the plane's formats,
    /// then asks the kernel (TEST_ONLY; with the modeset before the first).
    pub fn test(&self, primary: &PlaneConfig<'_>) -> Result<TestOutcome, KmsError> {
        let (fourcc, modifier) = (primary.fb.fourcc(), primary.fb.modifier());
        if !self.pipe.primary.supports(fourcc, modifier) {
            return Ok(TestOutcome::UnsupportedFormat { fourcc, modifier });
        }
        if self.active {
            let mut req = Request::new();
            req.plane(&self.pipe.primary, self.pipe.crtc, Some(primary))?;
            self.test_request(req)
        } else {
            let blob = ModeBlob::new(&self.card, &self.pipe.mode)?;
            self.test_request(self.modeset_request(blob.id, primary)?)
        }
    }

    /// A TEST_ONLY commit of `request`.
    pub fn test_request(&self, request: Request) -> Result<TestOutcome, KmsError> {
        match submit(&self.card, request, AtomicCommitFlags::TEST_ONLY) {
            Ok(()) => Ok(TestOutcome::Accepted),
            Err(err) => match err.errno().map(Errno::from_raw) {
                Some(
                    errno @ (Errno::EINVAL | Errno::ERANGE | Errno::ENOSPC | Errno::EOPNOTSUPP),
                ) => Ok(TestOutcome::Rejected(errno)),
                _ => Err(err),
            },
        }
    }

    /// Queues `request` as a flip (NONBLOCK, page-flip event) showing
    /// `payload`, which comes back with the flip's event (or on abandon);
    /// on failure it comes back with the error. One flip at a time.
    pub fn queue_flip(&mut self, request: Request, payload: P) -> Result<(), (KmsError, P)> {
        if let Err(err) = self.check_idle() {
            return Err((err, payload));
        }
        if !self.active {
            let err = self.card.not_found(format!(
                "{} is not lit yet: the first commit is a modeset",
                self.pipe.name
            ));
            return Err((err, payload));
        }
        let flags = AtomicCommitFlags::NONBLOCK | AtomicCommitFlags::PAGE_FLIP_EVENT;
        match submit(&self.card, request, flags) {
            Ok(()) => {
                self.abandoned = None;
                self.pending = Some(InFlight {
                    since: Instant::now(),
                    payload,
                });
                Ok(())
            }
            Err(err) => {
                if err.errno() == Some(Errno::EBUSY as i32) {
                    if self.abandoned.is_some() {
                        tracing::warn!(
                            "{}: EBUSY: the flip given up on is still held by the kernel",
                            self.card.path().display()
                        );
                    } else {
                        tracing::error!(
                            "{}: EBUSY: a commit was in flight that flip tracking missed (a bug)",
                            self.card.path().display()
                        );
                    }
                }
                Err((err, payload))
            }
        }
    }

    /// A blocking commit of `request` (e.g. a writeback), once no flip is
    /// in flight.
    pub fn commit(&mut self, request: Request) -> Result<(), KmsError> {
        self.check_idle()?;
        submit(&self.card, request, AtomicCommitFlags::empty())
    }

    /// Reads our CRTC's page-flip events, waiting at most `timeout` for
    /// the first (other CRTCs' events on the card go to their owners). The
    /// event of the flip in flight ends it and brings its payload back.
    pub fn read_events(&mut self, timeout: Duration) -> Result<Vec<Flipped<P>>, KmsError> {
        let mut events = std::mem::take(&mut self.events);
        events.clear();
        let read = self.card.take_flips(&self.route, timeout, &mut events);
        let mut flips = Vec::new();
        for &event in &events {
            if self.pending.is_none() {
                // The flip given up on completed after all.
                self.abandoned = None;
            }
            let payload = self.pending.take().map(|flight| {
                tracing::trace!("flip done {:?} after the commit", flight.since.elapsed());
                flight.payload
            });
            flips.push(Flipped { event, payload });
        }
        self.events = events;
        read?;
        Ok(flips)
    }

    /// Waits (at most `timeout`) for the flip in flight to complete.
    pub fn wait_flip(&mut self, timeout: Duration) -> Result<FlipEvent, KmsError> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let events = self.read_events(left)?;
            let crtc = self.pipe.crtc;
            if let Some(ours) = events.into_iter().find(|f| f.event.crtc == crtc) {
                return Ok(ours.event);
            }
            if left.is_zero() {
                return Err(KmsError::Timeout {
                    device: self.card.path().to_owned(),
                    what: "page-flip event",
                    timeout,
                });
            }
        }
    }

    /// Turns off every connector routed to our CRTC (ours, a writeback
    /// connector) in `req`, as disabling the CRTC requires.
    fn unroute_all(&self, req: &mut Request) -> Result<(), KmsError> {
        let resources = self
            .card
            .resource_handles()
            .map_err(self.card.err("DRM_IOCTL_MODE_GETRESOURCES"))?;
        let ours = u64::from(u32::from(self.pipe.crtc));
        for &handle in resources.connectors() {
            let props = PropMap::read(&self.card, handle)?;
            if props.value("CRTC_ID") == Some(ours) || handle == self.pipe.connector {
                req.set(handle, &props, "CRTC_ID", property::Value::CRTC(None))?;
            }
        }
        Ok(())
    }

    /// Turns the pipe off: planes off, connectors unrouted, CRTC inactive.
    pub fn disable(&mut self) -> Result<(), KmsError> {
        self.settle();
        let mut req = Request::new();
        req.allow_modeset();
        self.unroute_all(&mut req)?;
        let crtc = self.pipe.crtc;
        req.set(
            crtc,
            &self.pipe.crtc_props,
            "ACTIVE",
            property::Value::Boolean(false),
        )?;
        req.set(
            crtc,
            &self.pipe.crtc_props,
            "MODE_ID",
            property::Value::Blob(0),
        )?;
        req.plane(&self.pipe.primary, crtc, None)?;
        if let Some(cursor) = &self.pipe.cursor {
            req.plane(cursor, crtc, None)?;
        }
        submit(&self.card, req, AtomicCommitFlags::empty())?;
        self.active = false;
        Ok(())
    }

    /// Puts back what the pipe showed before [`Committer::new`] (e.g. the
    /// kernel's console); turns it off if that fails.
    pub fn restore(&mut self) -> Result<(), KmsError> {
        self.settle();
        let saved = &self.saved;
        let attempt = || -> Result<(), KmsError> {
            let mut req = Request::new();
            req.allow_modeset();
            self.unroute_all(&mut req)?;
            let connector_crtc = crtc_from_raw(saved.connector_crtc);
            req.set(
                self.pipe.connector,
                &self.pipe.connector_props,
                "CRTC_ID",
                property::Value::CRTC(connector_crtc),
            )?;
            let blob = match (&saved.mode, saved.active) {
                (Some(mode), true) => Some(ModeBlob::new(&self.card, mode)?),
                _ => None,
            };
            let crtc = self.pipe.crtc;
            let props = &self.pipe.crtc_props;
            let mode_id = blob.as_ref().map_or(0, |b| b.id);
            req.set(crtc, props, "MODE_ID", property::Value::Blob(mode_id))?;
            req.set(
                crtc,
                props,
                "ACTIVE",
                property::Value::Boolean(blob.is_some()),
            )?;
            for &(name, value) in &saved.primary {
                req.set_raw(
                    self.pipe.primary.handle,
                    &self.pipe.primary.props,
                    name,
                    value,
                )?;
            }
            submit(&self.card, req, AtomicCommitFlags::empty())
        };
        match attempt() {
            Ok(()) => {
                self.active = false;
                Ok(())
            }
            Err(err) => {
                tracing::warn!(
                    "{}: restoring {}: {err}; turning it off",
                    self.card.path().display(),
                    self.pipe.name
                );
                self.disable()
            }
        }
    }

    /// Lets a flip in flight complete (a commit now would get EBUSY).
    fn settle(&mut self) {
        if self.pending.is_some() {
            if let Err(err) = self.wait_flip(Duration::from_secs(1)) {
                tracing::warn!("waiting for the last flip: {err}");
                self.pending = None;
            }
        }
    }
}

impl Committer<()> {
    /// Takes over `pipe`, remembering what it shows now (for [`restore`]);
    /// flips carry no payload.
    ///
    /// [`restore`]: Committer::restore
    pub fn new(card: Arc<Card>, pipe: Pipe) -> Result<Committer, KmsError> {
        Committer::carrying(card, pipe)
    }

    /// Queues `primary` for the next vblank (NONBLOCK, with a page-flip
    /// event). One flip at a time: read its event before the next.
    pub fn flip(&mut self, primary: &PlaneConfig<'_>) -> Result<(), KmsError> {
        let mut req = Request::new();
        req.plane(&self.pipe.primary, self.pipe.crtc, Some(primary))?;
        self.flip_request(req)
    }

    /// Queues `request` as a flip (NONBLOCK, page-flip event).
    pub fn flip_request(&mut self, request: Request) -> Result<(), KmsError> {
        self.queue_flip(request, ()).map_err(|(err, ())| err)
    }
}

impl<P> Drop for Committer<P> {
    fn drop(&mut self) {
        if self.active {
            if let Err(err) = self.restore() {
                tracing::warn!("{}: on shutdown: {err}", self.card.path().display());
            }
        }
        self.card.unroute_flips(&self.route);
        self.card.pipe_claims().release(self.claim);
    }
}

/// A CRTC from a `CRTC_ID` property value (0: none).
fn crtc_from_raw(raw: u64) -> Option<crtc::Handle> {
    drm::control::from_u32(u32::try_from(raw).ok()?)
}
