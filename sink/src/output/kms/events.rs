//! A card's page-flip events shared out by CRTC. One open card carries the
//! events of all its CRTCs, and several heads may drive one card from
//! threads of their own: whichever reads the card's fd keeps its own
//! CRTC's events and queues the others' for their owners, waking them
//! through an eventfd each. With one CRTC driven, every event is its
//! reader's and nothing is queued.

use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::device::poll_timeout;
use drm::control::{crtc, Device as ControlDevice, Event};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags};
use nix::sys::eventfd::{EfdFlags, EventFd};

use super::commit::FlipEvent;
use super::device::{wait_readable, Card};
use super::error::KmsError;

/// The CRTCs whose events someone waits for, with what came for each.
#[derive(Debug, Default)]
pub(super) struct FlipRoutes {
    routes: Mutex<HashMap<crtc::Handle, Route>>,
}

#[derive(Debug)]
struct Route {
    /// Events read by another CRTC's owner, oldest first.
    queued: VecDeque<FlipEvent>,
    /// Readable while `queued` may have something.
    wake: Arc<EventFd>,
    /// Committers routed here (one, unless a CRTC changes hands).
    users: usize,
}

/// A committer's claim on its CRTC's events; given back by
/// [`Card::unroute_flips`].
#[derive(Debug, Clone)]
pub struct FlipRoute {
    pub crtc: crtc::Handle,
    wake: Arc<EventFd>,
}

impl FlipRoute {
    /// Readable when another thread queued an event for this CRTC.
    pub fn wake_fd(&self) -> BorrowedFd<'_> {
        self.wake.as_fd()
    }
}

impl Card {
    fn flip_routes(&self) -> std::sync::MutexGuard<'_, HashMap<crtc::Handle, Route>> {
        self.flips
            .routes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// From now on, `crtc`'s page-flip events are kept for the route's
    /// owner (read through [`Card::take_flips`]).
    pub fn route_flips(&self, crtc: crtc::Handle) -> Result<FlipRoute, KmsError> {
        let mut routes = self.flip_routes();
        if let Some(route) = routes.get_mut(&crtc) {
            route.users += 1;
            return Ok(FlipRoute {
                crtc,
                wake: route.wake.clone(),
            });
        }
        let wake = EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
            .map_err(|errno| self.err("eventfd")(errno.into()))?;
        let wake = Arc::new(wake);
        routes.insert(
            crtc,
            Route {
                queued: VecDeque::new(),
                wake: wake.clone(),
                users: 1,
            },
        );
        Ok(FlipRoute { crtc, wake })
    }

    /// Gives a route back; the CRTC's events are dropped once no one is
    /// routed there.
    pub fn unroute_flips(&self, route: &FlipRoute) {
        let mut routes = self.flip_routes();
        if let Some(entry) = routes.get_mut(&route.crtc) {
            entry.users -= 1;
            if entry.users == 0 {
                routes.remove(&route.crtc);
            }
        }
    }

    /// Appends to `out` the page-flip events of `route`'s CRTC, waiting at
    /// most `timeout` for the first: those another thread read for it, else
    /// those on the card now (the others' queued for them, their owners
    /// woken). `false` when none came.
    pub fn take_flips(
        &self,
        route: &FlipRoute,
        timeout: Duration,
        out: &mut Vec<FlipEvent>,
    ) -> Result<bool, KmsError> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.take_flips_now(route, out)? {
                return Ok(true);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(false);
            }
            wait_card_or_route(self.as_fd(), route.wake_fd(), left).map_err(self.err("poll"))?;
        }
    }

    /// [`Card::take_flips`] without waiting.
    fn take_flips_now(
        &self,
        route: &FlipRoute,
        out: &mut Vec<FlipEvent>,
    ) -> Result<bool, KmsError> {
        let mut routes = self.flip_routes();
        // Cleared before looking: an event queued after this wakes us again.
        let _ = route.wake.read();
        // Only the holder of the lock reads the card, so a readable card
        // stays readable until the read (which would otherwise block).
        if wait_readable(self.as_fd(), Duration::ZERO).map_err(self.err("poll"))? {
            let events = self
                .receive_events()
                .map_err(self.err("read (DRM events)"))?;
            for event in events {
                let flip = match event {
                    Event::PageFlip(e) => FlipEvent {
                        crtc: e.crtc,
                        sequence: e.frame,
                        time: e.duration,
                    },
                    Event::Vblank(_) => continue,
                    Event::Unknown(raw) => {
                        tracing::debug!("unknown DRM event ({} bytes)", raw.len());
                        continue;
                    }
                };
                match routes.get_mut(&flip.crtc) {
                    Some(target) => {
                        target.queued.push_back(flip);
                        if flip.crtc != route.crtc {
                            // A full counter still wakes the poller.
                            let _ = target.wake.write(1);
                        }
                    }
                    None => {
                        tracing::debug!("a flip event for {:?}, which no one drives", flip.crtc)
                    }
                }
            }
        }
        let Some(ours) = routes.get_mut(&route.crtc) else {
            return Ok(false);
        };
        let found = !ours.queued.is_empty();
        out.extend(ours.queued.drain(..));
        Ok(found)
    }
}

/// Waits until the card has events or another thread queued one for us.
fn wait_card_or_route(
    card: BorrowedFd<'_>,
    route: BorrowedFd<'_>,
    timeout: Duration,
) -> std::io::Result<()> {
    let ms = poll_timeout(timeout);
    let mut fds = [
        PollFd::new(card, PollFlags::POLLIN),
        PollFd::new(route, PollFlags::POLLIN),
    ];
    match poll(&mut fds, ms) {
        Ok(_) | Err(Errno::EINTR) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
