//! The one rectangle type: a scanout within its buffer, an update within a
//! surface, a plane's source and destination, a composition's.

/// A rectangle in whole pixels. The origin is signed because a plane's
/// destination may start left of or above the screen (a cursor at an edge);
/// rectangles in a buffer are checked non-negative where they are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Rect {
    pub x: i32,
    pub y: i32,
    pub width: u32,
    pub height: u32,
}

impl Rect {
    pub const fn new(x: i32, y: i32, width: u32, height: u32) -> Rect {
        Rect {
            x,
            y,
            width,
            height,
        }
    }

    /// `width` x `height` at the origin.
    pub const fn of_size((width, height): (u32, u32)) -> Rect {
        Rect::new(0, 0, width, height)
    }

    pub const fn size(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    /// One past the last column, widened so that it cannot overflow.
    pub fn right(&self) -> i64 {
        i64::from(self.x) + i64::from(self.width)
    }

    /// One past the last row, widened so that it cannot overflow.
    pub fn bottom(&self) -> i64 {
        i64::from(self.y) + i64::from(self.height)
    }

    /// Whether the rectangle lies within `width` x `height` at the origin.
    pub fn is_within(&self, (width, height): (u32, u32)) -> bool {
        self.x >= 0
            && self.y >= 0
            && self.right() <= i64::from(width)
            && self.bottom() <= i64::from(height)
    }

    /// The origin as buffer coordinates, a negative one clamped to 0.
    pub fn origin(&self) -> (u32, u32) {
        (self.x.max(0) as u32, self.y.max(0) as u32)
    }

    /// One past the far corner as buffer coordinates, clamped to `u32`.
    pub fn end(&self) -> (u32, u32) {
        let clamp = |v: i64| v.clamp(0, i64::from(u32::MAX)) as u32;
        (clamp(self.right()), clamp(self.bottom()))
    }

    /// The smallest rectangle holding both (damage accumulated), clamped to
    /// the `i32`/`u32` range.
    pub fn union(&self, other: &Rect) -> Rect {
        let (x, y) = (self.x.min(other.x), self.y.min(other.y));
        let span = |far: i64, near: i32| (far - i64::from(near)).min(i64::from(u32::MAX)) as u32;
        Rect::new(
            x,
            y,
            span(self.right().max(other.right()), x),
            span(self.bottom().max(other.bottom()), y),
        )
    }

    /// The whole of `self`, scaled to fit `target` with its aspect ratio
    /// kept and centred in it (letterbox or pillarbox).
    pub fn fit_into(&self, (tw, th): (u32, u32)) -> Rect {
        let (sw, sh) = (u64::from(self.width.max(1)), u64::from(self.height.max(1)));
        let (tw64, th64) = (u64::from(tw), u64::from(th));
        // Scale = min(tw/sw, th/sh), in integers: compare tw*sh with th*sw.
        let (w, h) = if tw64 * sh <= th64 * sw {
            (tw, ((sh * tw64 + sw / 2) / sw) as u32)
        } else {
            (((sw * th64 + sh / 2) / sh) as u32, th)
        };
        Rect::new(((tw - w) / 2) as i32, ((th - h) / 2) as i32, w, h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn within_counts_the_far_edge_and_refuses_negative_origins() {
        assert!(Rect::new(0, 0, 640, 480).is_within((640, 480)));
        assert!(!Rect::new(1, 0, 640, 480).is_within((640, 480)));
        assert!(!Rect::new(-1, 0, 1, 1).is_within((640, 480)));
        let far = Rect::new(i32::MAX, i32::MAX, u32::MAX, u32::MAX);
        assert!(!far.is_within((u32::MAX, u32::MAX)));
        assert_eq!(far.right(), i64::from(i32::MAX) + i64::from(u32::MAX));
    }

    #[test]
    fn fit_letterboxes_and_pillarboxes_centred() {
        let wide = Rect::of_size((1920, 1080));
        assert_eq!(wide.fit_into((1024, 768)), Rect::new(0, 96, 1024, 576));
        let tall = Rect::of_size((640, 480));
        assert_eq!(tall.fit_into((1920, 1080)), Rect::new(240, 0, 1440, 1080));
        assert_eq!(tall.fit_into((640, 480)), tall);
        let odd = Rect::new(5, 7, 3, 1);
        assert_eq!(odd.fit_into((10, 10)), Rect::new(0, 3, 10, 3));
    }

    #[test]
    fn origin_clamps_a_negative_start() {
        assert_eq!(Rect::new(-5, 3, 1, 1).origin(), (0, 3));
        assert_eq!(Rect::new(-5, 3, 1, 1).end(), (0, 4));
        let far = Rect::new(i32::MAX, 0, u32::MAX, 1);
        assert_eq!(far.end(), (u32::MAX, 1));
    }

    #[test]
    fn union_holds_both() {
        let a = Rect::new(2, 3, 4, 5);
        let b = Rect::new(10, 1, 1, 1);
        assert_eq!(a.union(&b), Rect::new(2, 1, 9, 7));
        assert_eq!(b.union(&a), a.union(&b));
        assert_eq!(a.union(&a), a);
        let wide = Rect::new(i32::MIN, 0, u32::MAX, 1).union(&Rect::new(i32::MAX, 0, u32::MAX, 1));
        assert_eq!(wide.width, u32::MAX);
    }
}
