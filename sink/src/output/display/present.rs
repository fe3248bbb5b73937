//! The next picture to the screen: the guest's buffer on the plane as it
//! is (direct) or composed into a scanout buffer of ours, the 2D surface,
//! black; each one commit, whose payload carries the frame it holds.

use std::sync::Arc;

use gl_renderer::{Composition, Source};

use super::imports::{direct_outcome, Current, Decision, NotDirect};
use super::slots::{Frame, Held, Shown};
use super::{Display, DisplayError, Next, PathChoice, Picture};
use crate::frame::{monotonic_now, ShowPath};
use crate::output::kms::{Framebuffer, KmsError, PlaneConfig, Rect, Request};
use crate::output::wait_for_gpu;

impl Display {
    /// Presents the queued picture, if any.
    pub(super) fn present_queued(&mut self) {
        let Some((next, frame)) = self.slots.take_queued() else {
            return;
        };
        let result = match (next, frame) {
            (Next::Frame(current), Some(frame)) => self.present_frame(current, frame),
            (Next::Frame(_), None) => Ok(()),
            (Next::Surface, _) => self.present_surface(),
            (Next::Again, _) => self.present_again(),
            (Next::Blank, _) => self.present_blank(),
        };
        if let Err(err) = result {
            tracing::warn!("dropping a frame: {err}");
            self.counters.rejected += 1;
        }
    }

    /// Which of our scanout buffers is free to draw into.
    fn free_buffer(&self) -> Result<usize, DisplayError> {
        let on_screen = self.slots.on_screen().and_then(|s| s.picture.buffer);
        let in_flight = self.committer.in_flight().and_then(|s| s.picture.buffer);
        (0..self.canvases.len())
            .find(|&i| Some(i) != on_screen && Some(i) != in_flight)
            .ok_or(DisplayError::NoFreeBuffer)
    }

    /// Clears scanout buffer `index` to black.
    fn draw_blank(&mut self, index: usize) -> Result<(), DisplayError> {
        self.renderer.clear(&self.canvases[index].target);
        wait_for_gpu(&mut self.renderer, "flipping anyway")?;
        Ok(())
    }

    /// Black, flipped.
    pub(super) fn present_blank(&mut self) -> Result<(), DisplayError> {
        let index = self.free_buffer()?;
        self.draw_blank(index)?;
        self.flip_canvas(index, None)
    }

    fn flip_canvas(&mut self, index: usize, frame: Option<Held>) -> Result<(), DisplayError> {
        let picture = Picture::whole(self.canvases[index].buffer.fb.clone(), index);
        self.commit(Shown { picture, frame })
    }

    /// The modeset that lights the pipe, black (scanout buffer 0) until the
    /// next picture.
    pub(super) fn light_black(&mut self) -> Result<(), DisplayError> {
        self.draw_blank(0)?;
        let fb = self.canvases[0].buffer.fb.clone();
        self.committer.modeset(&PlaneConfig::whole(&fb))?;
        self.slots.lit(Shown {
            picture: Picture::whole(fb, 0),
            frame: None,
        });
        self.capture.dirty = true;
        Ok(())
    }

    /// Flips to `shown` (primary plane and the cursor as it is now); on
    /// failure its frame is let go.
    fn commit(&mut self, shown: Shown<Picture>) -> Result<(), DisplayError> {
        let request = match self.request(&shown.picture) {
            Ok(request) => request,
            Err(err) => {
                self.slots.failed(shown);
                return Err(err.into());
            }
        };
        match self.committer.queue_flip(request, shown) {
            Ok(()) => {
                self.cursor.dirty = false;
                Ok(())
            }
            Err((err, shown)) => {
                self.slots.failed(shown);
                if err.is_master_lost() {
                    self.lost_master(&err);
                    return Ok(());
                }
                Err(err.into())
            }
        }
    }

    /// The atomic request showing `picture` on the primary plane, with the
    /// cursor plane at the pointer (or off).
    fn request(&self, picture: &Picture) -> Result<Request, KmsError> {
        let pipe = self.committer.pipe();
        let mut request = Request::new();
        let primary = PlaneConfig {
            fb: &picture.fb,
            src: picture.src,
            dst: picture.dst,
        };
        request.plane(&pipe.primary, pipe.crtc, Some(&primary))?;
        if let (Some(plane), Some(config)) = (&pipe.cursor, self.cursor.plane_config(self.picture))
        {
            request.plane(plane, pipe.crtc, config.as_ref())?;
        }
        Ok(request)
    }

    /// The cursor moved or changed, and nothing else is to be shown:
    /// re-commits what is on screen with the cursor where it is now.
    pub(super) fn move_cursor(&mut self) {
        let Some(picture) = self.slots.on_screen().map(|s| s.picture.clone()) else {
            return;
        };
        // The same picture again; a frame it holds stays held.
        let frame = self.slots.take_on_screen_frame();
        if let Err(err) = self.commit(Shown { picture, frame }) {
            tracing::warn!("moving the cursor: {err}");
            self.cursor.dirty = false;
        }
    }

    fn present_frame(&mut self, current: Current, mut frame: Frame) -> Result<(), DisplayError> {
        if self.imports.get(current.key).is_none() {
            // Evicted meanwhile (a burst of new buffers): nothing to show.
            self.slots.end(frame);
            return Ok(());
        }
        let mut decision = self.decide(current);
        if decision.is_direct() && self.cursor.drawn_by_gl() {
            // No cursor plane: a visible cursor is drawn, so the frame is too.
            decision = Decision::Show(ShowPath::Composite);
        }
        let copied_before = self.counters.cpu_bytes;
        match decision {
            Decision::Drop(why) => {
                tracing::debug!("dropping a frame: {why}");
                self.slots.end(frame);
                Ok(())
            }
            Decision::Show(ShowPath::Direct) => {
                let fb = match self
                    .imports
                    .get(current.key)
                    .map(|i| i.framebuffer(&self.card))
                {
                    Some(Ok(fb)) => fb,
                    // decide() imported it; gone or failed since: not shown.
                    _ => {
                        self.slots.end(frame);
                        return Ok(());
                    }
                };
                frame.record.path = Some(ShowPath::Direct);
                let config = self.direct_config(&fb, current);
                let (src, dst) = (config.src, config.dst);
                self.picture = Some(self.fit(current));
                let shown = Shown {
                    picture: Picture {
                        fb,
                        buffer: None,
                        direct: Some(current),
                        src,
                        dst,
                    },
                    frame: Some(Held::new(frame)),
                };
                self.commit(shown)?;
                // (Not in flight: the commit found the card taken away.)
                if let Some(held) = self
                    .committer
                    .in_flight_mut()
                    .and_then(|s| s.frame.as_mut())
                {
                    held.record.committed = Some(monotonic_now());
                    self.counters.direct += 1;
                    self.counters.direct_cpu_bytes += self.counters.cpu_bytes - copied_before;
                }
                Ok(())
            }
            Decision::Show(ShowPath::Composite) => {
                let target_index = self.free_buffer()?;
                let drawn = self.compose_frame(current, target_index);
                frame.record.path = Some(ShowPath::Composite);
                if let Err(err) = drawn {
                    self.slots.end(frame);
                    return match err {
                        DisplayError::Image(image) => {
                            // This buffer cannot be imported: said once,
                            // its frames dropped (answered) while it stays
                            // current; the guest's next buffer is tried.
                            if image.first {
                                tracing::warn!(
                                    "{}: {image}; its frames are dropped",
                                    current.layout
                                );
                                self.counters.rejected += 1;
                            }
                            Ok(())
                        }
                        err => Err(err),
                    };
                }
                frame.record.committed = Some(monotonic_now());
                self.counters.composite += 1;
                // The renderer is done with the guest's buffer, but QEMU is
                // answered at the flip (it paces the guest to the display).
                self.flip_canvas(target_index, Some(Held::new(frame)))
            }
        }
    }

    /// The guest's rect on the whole output: letterboxed, scaled to fit.
    fn direct_config<'a>(&self, fb: &'a Framebuffer, current: Current) -> PlaneConfig<'a> {
        PlaneConfig {
            fb,
            src: current.layout.rect,
            dst: self.fit(current).dst,
        }
    }

    /// The guest's rect letterboxed on the whole output.
    fn fit(&self, current: Current) -> Composition {
        Composition::fit(current.layout.rect, self.mode_size(), false)
    }

    /// The path for frames of this layout: decided (and logged) once.
    fn decide(&mut self, current: Current) -> Decision {
        if let Some(decision) = self.imports.decision(&current.layout).cloned() {
            // A new buffer of a direct layout still needs its framebuffer;
            // if that import fails, decide again.
            let mut imported = || {
                self.imports
                    .get(current.key)
                    .is_some_and(|i| i.framebuffer(&self.card).is_ok())
            };
            if !decision.is_direct() || imported() {
                return decision;
            }
        }
        let layout = current.layout;
        let failed_before = self
            .imports
            .get(current.key)
            .and_then(|i| i.framebuffer_failure());
        if let Some(why) = failed_before {
            // This buffer was found unfit before (and said so): the same
            // answer, quietly.
            return match self.options.path {
                PathChoice::Direct => Decision::Drop(NotDirect::Framebuffer(why)),
                _ => Decision::Show(ShowPath::Composite),
            };
        }
        let mut this_buffer_only = false;
        let decision = match self.options.path {
            PathChoice::Composite => {
                tracing::info!("{layout}: composed by GL (--path composite)");
                Decision::Show(ShowPath::Composite)
            }
            choice => match self.try_direct(current).inspect_err(|why| {
                // A buffer that cannot be a framebuffer says nothing of its
                // layout: the next one is tried afresh.
                this_buffer_only = matches!(why, NotDirect::Framebuffer(_));
            }) {
                Ok(()) => {
                    tracing::info!("{layout}: direct scanout (no copy)");
                    Decision::Show(ShowPath::Direct)
                }
                Err(why) if choice == PathChoice::Direct => {
                    tracing::warn!("{layout}: no direct scanout ({why}); --path direct drops it");
                    Decision::Drop(why)
                }
                Err(why) => {
                    tracing::info!("{layout}: composed by GL ({why})");
                    Decision::Show(ShowPath::Composite)
                }
            },
        };
        if !this_buffer_only {
            self.imports.decide(layout, decision.clone());
        }
        decision
    }

    fn try_direct(&mut self, current: Current) -> Result<(), NotDirect> {
        if current.layout.y0_top {
            return Err(NotDirect::BottomUp);
        }
        let fb = match self.imports.get(current.key) {
            Some(import) => import.framebuffer(&self.card),
            None => return Err(NotDirect::Gone),
        }
        .map_err(NotDirect::Framebuffer)?;
        let config = self.direct_config(&fb, current);
        let outcome = self
            .committer
            .test(&config)
            .map_err(|e| NotDirect::Framebuffer(Arc::new(e)))?;
        direct_outcome(outcome)
    }

    /// Draws the guest's buffer into scanout buffer `target_index`.
    fn compose_frame(&mut self, current: Current, target_index: usize) -> Result<(), DisplayError> {
        let mode = self.mode_size();
        let Some(import) = self.imports.get(current.key) else {
            return Ok(());
        };
        let image = import.image(&mut self.renderer)?;
        self.renderer.rebind(image)?;
        let target = &self.canvases[target_index].target;
        self.renderer.clear(target);
        let how = Composition::fit(current.layout.rect, mode, current.layout.y0_top);
        self.renderer.draw(target, Source::Image(image), &how)?;
        self.picture = Some(how);
        self.cursor.draw(&mut self.renderer, target, self.picture)?;
        wait_for_gpu(&mut self.renderer, "flipping anyway")?;
        Ok(())
    }

    /// The guest's current buffer composed again, e.g. under a moved cursor.
    fn present_again(&mut self) -> Result<(), DisplayError> {
        let Some(current) = self.imports.current else {
            return Ok(());
        };
        if self.imports.get(current.key).is_none() {
            return Ok(());
        }
        let target_index = self.free_buffer()?;
        self.compose_frame(current, target_index)?;
        self.flip_canvas(target_index, None)
    }

    /// Uploads the 2D surface and draws it into a free scanout buffer.
    fn present_surface(&mut self) -> Result<(), DisplayError> {
        let frame = &self.surface.frame;
        let (w, h) = (frame.width, frame.height);
        if w == 0 {
            return Ok(());
        }
        let stride = w * 4;
        match &self.surface.texture {
            Some(t) if (t.width, t.height) == (w, h) => {
                self.renderer
                    .update_texture(t, Rect::of_size((w, h)), stride, &frame.pixels)?;
            }
            _ => {
                self.surface.texture = None;
                let texture = self.renderer.upload(
                    drm::buffer::DrmFourcc::Xbgr8888,
                    w,
                    h,
                    stride,
                    &frame.pixels,
                )?;
                self.surface.texture = Some(texture);
            }
        }
        self.counters.cpu_bytes += frame.pixels.len() as u64;
        let index = self.free_buffer()?;
        let target = &self.canvases[index].target;
        let Some(texture) = &self.surface.texture else {
            return Ok(());
        };
        self.renderer.clear(target);
        let how = Composition::fit(Rect::of_size((w, h)), self.mode_size(), false);
        self.renderer.draw(target, Source::Texture(texture), &how)?;
        self.picture = Some(how);
        wait_for_gpu(&mut self.renderer, "flipping anyway")?;
        self.flip_canvas(index, None)
    }
}
