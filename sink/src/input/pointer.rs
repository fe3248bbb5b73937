//! The pointer on the monitor and where it lands in the guest: the display
//! scales the guest's picture into a letterboxed rectangle
//! (`Composition::fit`, published as a [`Placement`]); a point of the
//! monitor maps back into the guest's pixels here.

use crate::state::Placement;

/// The guest pixel under monitor pixel (`mx`, `my`), the exact inverse of
/// `Composition::map_point` (which puts guest pixel `g` at
/// `shown.x + g * shown.width / guest.width`, rounded down): monitor pixel
/// `m` belongs to the last guest pixel placed at or before it. Points in
/// the bars land on the nearest edge of the guest.
pub fn monitor_to_guest(p: &Placement, mx: i64, my: i64) -> (u32, u32) {
    let axis = |m: i64, start: i32, shown: u32, guest: u32| -> u32 {
        if guest == 0 {
            return 0;
        }
        let k = m - i64::from(start);
        let (g, s) = (i64::from(guest), i64::from(shown.max(1)));
        // The largest g with floor(g * s / guest) <= k: g * s < (k + 1) * guest.
        let inside = ((k + 1) * g - 1).div_euclid(s);
        inside.clamp(0, g - 1) as u32
    };
    (
        axis(mx, p.shown.x, p.shown.width, p.guest.width),
        axis(my, p.shown.y, p.shown.height, p.guest.height),
    )
}

/// The pointer's place on the monitor, moved by relative motion (a mouse,
/// a touchpad) or set by absolute devices, always on the monitor.
#[derive(Debug, Default, Clone, Copy)]
pub struct Pointer {
    /// Monitor pixel; `None` until the first placement (then the centre).
    at: Option<(i64, i64)>,
    /// How far the last motion wanted to go past the left (negative) or
    /// the right (positive) edge: where a monitor beside this one takes
    /// the pointer over.
    spill: i64,
}

impl Pointer {
    /// Moves by (`dx`, `dy`) monitor pixels within a `mode`-sized monitor.
    pub fn move_by(&mut self, mode: (u32, u32), dx: i64, dy: i64) -> (i64, i64) {
        let (x, y) = self.at(mode);
        let wanted = x.saturating_add(dx);
        let last = i64::from(mode.0.max(1)) - 1;
        self.spill = if wanted < 0 {
            wanted
        } else {
            (wanted - last).max(0)
        };
        self.set(mode, wanted, y.saturating_add(dy))
    }

    /// Where it is on a `mode`-sized monitor (its centre before anything
    /// placed it).
    pub fn at(&self, mode: (u32, u32)) -> (i64, i64) {
        self.at
            .unwrap_or((i64::from(mode.0 / 2), i64::from(mode.1 / 2)))
    }

    /// How far the last motion went past the left (negative) or right
    /// (positive) edge, taken once.
    pub fn take_spill(&mut self) -> i64 {
        std::mem::take(&mut self.spill)
    }

    /// Puts it at (`x`, `y`), kept on the monitor.
    pub fn set(&mut self, mode: (u32, u32), x: i64, y: i64) -> (i64, i64) {
        let at = (
            x.clamp(0, i64::from(mode.0.max(1)) - 1),
            y.clamp(0, i64::from(mode.1.max(1)) - 1),
        );
        self.at = Some(at);
        at
    }
}

/// Scales `value` from an axis range `[min, max]` onto `0..size` pixels:
/// `min` is pixel 0 and `max` the last pixel.
pub fn scale_axis(value: i32, min: i32, max: i32, size: u32) -> i64 {
    let span = i64::from(max) - i64::from(min);
    if span <= 0 || size == 0 {
        return 0;
    }
    let v = (i64::from(value) - i64::from(min)).clamp(0, span);
    v * (i64::from(size) - 1) / span
}

#[cfg(test)]
mod tests {
    use super::*;
    use dmabuf::Rect;
    use gl_renderer::Composition;

    fn placement(guest: (u32, u32), mode: (u32, u32)) -> Placement {
        let how = Composition::fit(Rect::of_size(guest), mode, false);
        Placement {
            mode,
            guest: how.src,
            shown: how.dst,
        }
    }

    /// Every guest pixel the display puts on the monitor comes back to
    /// itself, whenever the picture is shown at its size or larger.
    #[test]
    fn every_guest_pixel_comes_back_through_the_letterbox() {
        for (guest, mode) in [
            ((640, 480), (1280, 720)),
            ((640, 480), (800, 600)),
            ((720, 400), (1024, 768)),
            ((640, 480), (640, 480)),
            ((1024, 768), (1920, 1080)),
            ((800, 600), (1366, 768)),
        ] {
            let p = placement(guest, mode);
            let how = Composition::fit(Rect::of_size(guest), mode, false);
            for g in 0..guest.0.max(guest.1) {
                let (gx, gy) = (g.min(guest.0 - 1), g.min(guest.1 - 1));
                let (mx, my) = how.map_point(i64::from(gx), i64::from(gy));
                assert_eq!(
                    monitor_to_guest(&p, mx, my),
                    (gx, gy),
                    "{guest:?} on {mode:?}: guest ({gx}, {gy}) at monitor ({mx}, {my})"
                );
            }
        }
    }

    /// The corners and the centre of the shown rectangle are the guest's
    /// corners and centre; the bars land on the nearest edge.
    #[test]
    fn corners_and_centre_land_exactly() {
        // 640x480 pillarboxed on 1280x720: shown at (160, 0) 960x720.
        let p = placement((640, 480), (1280, 720));
        assert_eq!(p.shown, Rect::new(160, 0, 960, 720));
        assert_eq!(monitor_to_guest(&p, 160, 0), (0, 0));
        assert_eq!(monitor_to_guest(&p, 1119, 0), (639, 0));
        assert_eq!(monitor_to_guest(&p, 160, 719), (0, 479));
        assert_eq!(monitor_to_guest(&p, 1119, 719), (639, 479));
        assert_eq!(monitor_to_guest(&p, 640, 360), (320, 240));
        assert_eq!(monitor_to_guest(&p, 0, 0), (0, 0), "left bar");
        assert_eq!(monitor_to_guest(&p, 1279, 719), (639, 479), "right bar");
        assert_eq!(monitor_to_guest(&p, 159, 300), (0, 200), "just left");
        // 720x400 letterboxed on 1024x768: shown at (0, 99) 1024x569.
        let p = placement((720, 400), (1024, 768));
        assert_eq!(p.shown, Rect::new(0, 99, 1024, 569));
        assert_eq!(monitor_to_guest(&p, 0, 99), (0, 0));
        assert_eq!(monitor_to_guest(&p, 1023, 99 + 568), (719, 399));
        assert_eq!(monitor_to_guest(&p, 512, 99 + 284), (360, 200));
        assert_eq!(monitor_to_guest(&p, 10, 0), (7, 0), "top bar");
        assert_eq!(monitor_to_guest(&p, 10, 767), (7, 399), "bottom bar");
    }

    /// Shown smaller than it is (a 1080p guest on 1024x768), the monitor's
    /// pixels still cover the guest from its first pixel to its last.
    #[test]
    fn a_downscaled_guest_is_covered_edge_to_edge() {
        let p = placement((1920, 1080), (1024, 768));
        let last = p.shown.y + p.shown.height as i32 - 1;
        assert_eq!(monitor_to_guest(&p, 1023, i64::from(last)), (1919, 1079));
        let (x, y) = monitor_to_guest(&p, 0, i64::from(p.shown.y));
        assert!(x <= 1 && y <= 1, "({x}, {y})");
    }

    #[test]
    fn the_pointer_stays_on_the_monitor() {
        let mut pointer = Pointer::default();
        assert_eq!(
            pointer.move_by((800, 600), 0, 0),
            (400, 300),
            "starts centred"
        );
        assert_eq!(pointer.move_by((800, 600), -5000, 7), (0, 307));
        assert_eq!(pointer.move_by((800, 600), 10_000, 10_000), (799, 599));
        assert_eq!(pointer.set((800, 600), 12, -1), (12, 0));
    }

    /// Motion past a side edge says by how much (where the monitor beside
    /// takes over), once; within the monitor, or up and down, it is 0.
    #[test]
    fn motion_past_a_side_edge_spills_over() {
        let mut pointer = Pointer::default();
        pointer.set((800, 600), 790, 300);
        assert_eq!(pointer.move_by((800, 600), 9, 0), (799, 300));
        assert_eq!(pointer.take_spill(), 0, "onto the last pixel");
        assert_eq!(pointer.move_by((800, 600), 25, -1000), (799, 0));
        assert_eq!(pointer.take_spill(), 25);
        assert_eq!(pointer.take_spill(), 0, "taken once");
        pointer.set((800, 600), 3, 300);
        assert_eq!(pointer.move_by((800, 600), -10, 0), (0, 300));
        assert_eq!(pointer.take_spill(), -7);
        assert_eq!(pointer.move_by((800, 600), 0, 10_000), (0, 599));
        assert_eq!(pointer.take_spill(), 0, "the bottom edge has no neighbour");
    }

    #[test]
    fn an_axis_range_covers_every_pixel() {
        assert_eq!(scale_axis(0, 0, 32767, 1024), 0);
        assert_eq!(scale_axis(32767, 0, 32767, 1024), 1023);
        assert_eq!(scale_axis(-5, 0, 100, 1024), 0);
        assert_eq!(scale_axis(799, 0, 799, 800), 799);
        assert_eq!(scale_axis(5, 5, 5, 800), 0, "an empty range");
    }
}
