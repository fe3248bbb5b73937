//! The D-Bus source: listener events applied to the shared surface.

use std::sync::Arc;

use dbus_interfaces::{InvalidInput, ListenerEvent, ListenerHandler};

use crate::frame::{monotonic_now, DmabufEvent, FrameRecord};
use crate::state::{Shared, SinkState};

/// Feeds listener messages into the shared state, in order, on the D-Bus
/// executor thread. 2D pixels are copied once, into the surface; DMA-BUF
/// events are queued for the output that owns the renderer.
pub struct DbusSource {
    shared: Arc<Shared>,
}

impl DbusSource {
    pub fn new(shared: Arc<Shared>) -> DbusSource {
        DbusSource { shared }
    }
}

fn changed(state: &mut SinkState) {
    state.generation += 1;
    state.updates += 1;
}

impl ListenerHandler for DbusSource {
    fn handle(&mut self, event: ListenerEvent<'_>) {
        let received = monotonic_now();
        self.shared.modify(|state| {
            let result: Result<(), (&str, InvalidInput)> = match event {
                ListenerEvent::Scanout(pixels) => {
                    let l = pixels.layout;
                    tracing::info!(
                        "scanout {}x{} {:?} by copy",
                        l.width,
                        l.height,
                        l.format.fourcc
                    );
                    state.surface.scanout(&pixels);
                    changed(state);
                    Ok(())
                }
                ListenerEvent::Update { x, y, pixels } => state
                    .surface
                    .update(x, y, &pixels)
                    .map(|()| changed(state))
                    .map_err(|e| ("Update", e)),
                ListenerEvent::ScanoutMap(map) => {
                    let l = map.layout;
                    tracing::info!(
                        "scanout {}x{} {:?} in shared memory (Unix.Map)",
                        l.width,
                        l.height,
                        l.format.fourcc
                    );
                    state.surface.scanout_map(map);
                    changed(state);
                    Ok(())
                }
                ListenerEvent::UpdateMap(rect) => state
                    .surface
                    .update_map(rect)
                    .map(|()| changed(state))
                    .map_err(|e| ("UpdateMap", e)),
                ListenerEvent::Disable => {
                    state.surface.disable();
                    state.dmabuf.push_back(DmabufEvent::Disable);
                    changed(state);
                    Ok(())
                }
                ListenerEvent::MouseSet { x, y, visible } => {
                    state.surface.set_pointer(x, y, visible);
                    state.generation += 1;
                    Ok(())
                }
                ListenerEvent::CursorDefine(cursor) => {
                    state.surface.define_cursor(&cursor);
                    state.generation += 1;
                    Ok(())
                }
                ListenerEvent::ScanoutDmabuf(scanout) => {
                    tracing::info!(
                        "scanout {}x{} {:?} as a DMA-BUF ({} plane(s), modifier {:#x})",
                        scanout.width,
                        scanout.height,
                        scanout.fourcc,
                        scanout.planes.len(),
                        scanout.modifier
                    );
                    state.dmabuf.push_back(DmabufEvent::Scanout(scanout));
                    state.generation += 1;
                    Ok(())
                }
                ListenerEvent::UpdateDmabuf { damage, release } => {
                    let record = FrameRecord {
                        id: state.next_frame_id,
                        received,
                        ..FrameRecord::default()
                    };
                    state.next_frame_id += 1;
                    state.dmabuf.push_back(DmabufEvent::Update {
                        damage,
                        release,
                        record,
                    });
                    changed(state);
                    Ok(())
                }
            };
            if let Err((member, why)) = result {
                tracing::warn!("dropping {member} from QEMU: {why}");
                state.rejected += 1;
            }
        });
    }

    fn rejected(&mut self, _member: &'static str, _why: &InvalidInput) {
        self.shared.modify(|state| state.rejected += 1);
    }
}
