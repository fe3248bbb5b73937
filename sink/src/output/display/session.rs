//! The output's session with its monitor: the connector unplugged and
//! back (polled: vkms and others send no hotplug event for it), DRM master
//! lost to another process and taken back; each time lit again with the
//! mode picked afresh, and the guest told the monitor it is shown on.

use super::link::Link;
use super::{canvases, Display, DisplayError, Next};
use crate::output::kms::CardAccess;
use crate::state::{Monitor, Shared};

impl Display {
    /// Looks at the link once a second (and when the seat changes).
    pub(super) fn probe_link(&mut self) {
        if let CardAccess::Seat(seat) = &self.options.access {
            let (enabled, generation) = (seat.is_enabled(), seat.generation());
            if !enabled && self.link != Link::MasterLost {
                self.lost_master(&"the seat was switched away");
                return;
            }
            if enabled && generation != self.seat_generation && self.link == Link::Lit {
                // Away and back between two looks: the console of the
                // other VT may have taken the CRTC.
                self.link = Link::MasterLost;
            }
        }
        match self.link {
            Link::Lit | Link::Unplugged => self.probe_connector(),
            Link::MasterLost => self.regain_master(),
        }
    }

    /// Another process took the card (a VT switch, a compositor): stop
    /// committing, keep answering, try to take it back each second (or,
    /// on a seat, wait until the seat is ours again).
    pub(super) fn lost_master(&mut self, why: &dyn std::fmt::Display) {
        if self.link != Link::MasterLost {
            tracing::warn!(
                "lost DRM master ({why}): not committing until it is back; frames are answered as they come"
            );
        }
        self.link = Link::MasterLost;
        // Our flip in flight, if any, is not ours to wait for any more.
        if let Some(shown) = self.committer.abandon_flip() {
            self.slots.abandoned(shown);
            self.capture.dirty = true;
        }
    }

    fn regain_master(&mut self) {
        let ours = match &self.options.access {
            CardAccess::Seat(seat) if seat.is_enabled() => {
                self.seat_generation = seat.generation();
                true
            }
            CardAccess::Seat(_) => false,
            CardAccess::Direct => drm::Device::acquire_master_lock(&*self.card).is_ok(),
        };
        if !ours {
            return;
        }
        match self.replug() {
            Ok(()) => {
                self.link = Link::Lit;
                tracing::info!("DRM master is back: lit at {}", self.output_name());
            }
            Err(err) => {
                // Ours again, but dark: the probe finds out what is there.
                self.link = Link::Unplugged;
                tracing::warn!("DRM master is back, but lighting the output failed: {err}");
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
        let name = self.committer.pipe().name.clone();
        match (self.link, connected) {
            (Link::Lit, false) => {
                tracing::warn!("{name} was unplugged: not committing until it is back");
                self.settle_flip();
                self.link = Link::Unplugged;
            }
            (Link::Unplugged, true) => match self.replug() {
                Ok(()) => {
                    self.link = Link::Lit;
                    tracing::info!("{name} is back: lit at {}", self.output_name());
                }
                Err(err) => tracing::warn!("{name} is back, but lighting it failed: {err}"),
            },
            _ => {}
        }
    }

    /// The connector is back (or the card): picks its mode again (it may be
    /// another monitor), reallocates the scanout buffers if the size
    /// changed, lights it black and shows the guest's picture again.
    /// Nothing changes if the new buffers cannot be made.
    fn replug(&mut self) -> Result<(), DisplayError> {
        let pipe = self.committer.reselect(self.options.mode.as_ref())?;
        let size = pipe.size();
        let resized = if self.canvases[0].buffer.size() != size {
            Some(canvases(
                &self.card,
                &mut self.renderer,
                size,
                self.fourcc,
                &pipe.primary,
            )?)
        } else {
            None
        };
        self.settle_flip();
        self.committer.replace_pipe(pipe);
        // What was on the old mode's screen is gone: let its frames go.
        let in_flight = self.committer.take_flight();
        self.slots.let_go(in_flight);
        // Decisions may have been made while the card was not ours.
        self.imports.forget_decisions();
        if let Some(canvases) = resized {
            self.canvases = canvases;
            self.capture.resized();
        }
        self.light_black()?;
        self.told = false;
        // The guest's picture shows again at once: a guest that draws
        // nothing new (an idle desktop, after a VT switch back) would
        // otherwise leave the monitor black. A DMA-BUF console's current
        // buffer is composed again (its next frame may go direct again).
        if self.imports.current.is_some() {
            self.slots.enqueue(Next::Again, None);
        } else if self.surface.live && self.surface.frame.width > 0 {
            self.slots.enqueue(Next::Surface, None);
        }
        Ok(())
    }

    /// Publishes the monitor once per lighting (at start, after a replug or
    /// master regained: it may be another monitor, or the guest may have
    /// moved on), for the attachments to tell QEMU (`SetUIInfo`); not with
    /// `--no-resize`, nor while unlit.
    pub(super) fn tell_monitor(&mut self, shared: &Shared) {
        if self.told || self.options.no_resize || self.link != Link::Lit {
            return;
        }
        let pipe = self.committer.pipe();
        let (width, height) = pipe.size();
        let mm = |v: u32| u16::try_from(v).unwrap_or(u16::MAX);
        let (width_mm, height_mm) = pipe.size_mm.map_or((0, 0), |(w, h)| (mm(w), mm(h)));
        let monitor = Monitor {
            width,
            height,
            width_mm,
            height_mm,
        };
        self.told = true;
        shared.set_monitor(monitor);
    }
}
