//! The D-Bus source: listener events applied to the shared surface.

use std::sync::Arc;

use dbus_interfaces::{InvalidInput, ListenerEvent, ListenerHandler};

use crate::frame::{monotonic_now, DmabufEvent, FrameRecord, FrameRelease, ReleasePolicy};
use crate::state::{Shared, SinkState};
use crate::surface::Painter;

/// Feeds listener messages into the shared state, in order, on the D-Bus
/// executor thread. 2D pixels are decoded once, into the painter's picture,
/// outside the shared lock; DMA-BUF events are queued for the output that
/// owns the renderer.
pub struct DbusSource {
    shared: Arc<Shared>,
    last_scanout: Option<ScanoutShape>,
}

impl DbusSource {
    pub fn new(shared: Arc<Shared>) -> DbusSource {
        DbusSource {
            shared,
            last_scanout: None,
        }
    }
}

/// What a scanout looks like, to log a change once rather than every flip
/// (virtio-gpu with blobs sends a scanout per guest frame).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ScanoutShape {
    how: &'static str,
    width: u32,
    height: u32,
    fourcc: drm_fourcc::DrmFourcc,
    modifier: u64,
}

fn announce(last: &mut Option<ScanoutShape>, shape: ScanoutShape) {
    if *last != Some(shape) {
        tracing::info!(
            "scanout {}x{} {:?} {} (modifier {:#x})",
            shape.width,
            shape.height,
            shape.fourcc,
            shape.how,
            shape.modifier
        );
        *last = Some(shape);
    }
}

fn shape(
    how: &'static str,
    width: u32,
    height: u32,
    fourcc: drm_fourcc::DrmFourcc,
) -> ScanoutShape {
    ScanoutShape {
        how,
        width,
        height,
        fourcc,
        modifier: 0,
    }
}

fn changed(state: &mut SinkState) {
    state.generation += 1;
    state.updates += 1;
}

/// The 2D surface's pixels changed.
fn changed_2d(state: &mut SinkState) {
    changed(state);
    state.surface_changes += 1;
}

/// The 2D surface's pixels changed and it is the picture now: marked in
/// the event queue, in order with the DMA-BUF events (a run of 2D changes
/// leaves one marker).
fn shown_2d(state: &mut SinkState) {
    changed_2d(state);
    if !matches!(state.dmabuf.back(), Some(DmabufEvent::Surface)) {
        state.push_dmabuf(DmabufEvent::Surface);
    }
}

fn cursor_changed(state: &mut SinkState) {
    state.generation += 1;
    state.cursor_changes += 1;
}

impl DbusSource {
    /// Paints a 2D message into the picture outside the shared lock, then
    /// publishes it under a short one (a swap) and marks it: shown, or
    /// (`Disable`) blank in order with the DMA-BUF events.
    fn paint(
        &self,
        member: &'static str,
        disable: bool,
        f: impl FnOnce(&mut Painter) -> Result<(), InvalidInput>,
    ) {
        let mut painter = self.shared.painter();
        let result = f(&mut painter);
        if result.is_ok() {
            painter.prepare();
        }
        self.shared.modify(|state| match result {
            Ok(()) => {
                painter.publish(&mut state.surface);
                if disable {
                    state.push_dmabuf(DmabufEvent::Disable);
                    changed_2d(state);
                } else {
                    shown_2d(state);
                }
            }
            Err(why) => {
                tracing::warn!("dropping {member} from QEMU: {why}");
                state.rejected += 1;
            }
        });
    }
}

impl ListenerHandler for DbusSource {
    fn handle(&mut self, event: ListenerEvent<'_>) {
        let received = monotonic_now();
        let last = &mut self.last_scanout;
        let event = match event {
            ListenerEvent::Scanout(pixels) => {
                let l = pixels.layout;
                announce(last, shape("by copy", l.width, l.height, l.format.fourcc));
                return self.paint("Scanout", false, |p| {
                    p.scanout(&pixels);
                    Ok(())
                });
            }
            ListenerEvent::Update { x, y, pixels } => {
                return self.paint("Update", false, |p| p.update(x, y, &pixels));
            }
            ListenerEvent::ScanoutMap(map) => {
                let l = map.layout;
                let how = "in shared memory (Unix.Map)";
                announce(last, shape(how, l.width, l.height, l.format.fourcc));
                return self.paint("ScanoutMap", false, |p| p.scanout_map(map));
            }
            ListenerEvent::UpdateMap(rect) => {
                return self.paint("UpdateMap", false, |p| p.update_map(rect));
            }
            ListenerEvent::Disable => {
                return self.paint("Disable", true, |p| {
                    p.disable();
                    Ok(())
                });
            }
            other => other,
        };
        self.shared.modify(|state| match event {
            ListenerEvent::MouseSet { x, y, visible } => {
                state.surface.set_pointer(x, y, visible);
                cursor_changed(state);
            }
            ListenerEvent::CursorDefine(cursor) => {
                state.surface.define_cursor(&cursor);
                cursor_changed(state);
            }
            ListenerEvent::ScanoutDmabuf(scanout) => {
                let how = if scanout.buffer.planes.len() == 1 {
                    "as a DMA-BUF"
                } else {
                    "as a multi-plane DMA-BUF"
                };
                announce(
                    last,
                    ScanoutShape {
                        modifier: u64::from(scanout.buffer.modifier),
                        ..shape(
                            how,
                            scanout.rect.width,
                            scanout.rect.height,
                            scanout.buffer.fourcc,
                        )
                    },
                );
                state.push_dmabuf(DmabufEvent::Scanout(scanout));
                state.generation += 1;
            }
            ListenerEvent::UpdateDmabuf { damage, release } => {
                let record = FrameRecord {
                    id: state.next_frame_id,
                    received,
                    ..FrameRecord::default()
                };
                state.next_frame_id += 1;
                state.push_dmabuf(DmabufEvent::Update {
                    damage,
                    release: FrameRelease::answer(release, ReleasePolicy::AtOwnFlip),
                    record,
                });
                changed(state);
            }
            // Painted above.
            ListenerEvent::Scanout(_)
            | ListenerEvent::Update { .. }
            | ListenerEvent::ScanoutMap(_)
            | ListenerEvent::UpdateMap(_)
            | ListenerEvent::Disable => {}
        });
    }

    fn rejected(&mut self, _member: &'static str, _why: &InvalidInput) {
        self.shared.modify(|state| state.rejected += 1);
    }

    fn release_deadline_passed(&mut self) {
        self.shared.modify(|state| state.deadline_answers += 1);
    }
}
