//! Reference pictures the tests compare against: crops, flips, GL's
//! bilinear scale done on the CPU, and a picture letterboxed onto a screen.

use capture::RgbaFrame;
use dbus_interfaces::Rect;

/// The part of `frame` under `rect` (which lies within it).
pub fn crop(frame: &RgbaFrame, rect: Rect) -> RgbaFrame {
    let ((x, y), (w, h)) = (rect.origin(), rect.size());
    let mut out = RgbaFrame::default();
    out.reset(w, h);
    for row in 0..h {
        let src = (((y + row) * frame.width + x) * 4) as usize;
        out.row_mut(row)
            .copy_from_slice(&frame.pixels[src..src + (w * 4) as usize]);
    }
    out
}

/// `frame` upside down.
pub fn flipped(frame: &RgbaFrame) -> RgbaFrame {
    let mut out = frame.clone();
    for row in 0..frame.height {
        let src = ((frame.height - 1 - row) * frame.width * 4) as usize;
        out.row_mut(row)
            .copy_from_slice(&frame.pixels[src..src + (frame.width * 4) as usize]);
    }
    out
}

/// The CPU reference of a bilinear scale with clamped edges, as GL samples
/// a texture drawn over a larger quad.
pub fn bilinear(src: &RgbaFrame, width: u32, height: u32) -> RgbaFrame {
    let mut out = RgbaFrame::default();
    out.reset(width, height);
    let texel = |x: i64, y: i64, c: usize| -> f64 {
        let x = x.clamp(0, src.width as i64 - 1) as u32;
        let y = y.clamp(0, src.height as i64 - 1) as u32;
        f64::from(src.pixels[((y * src.width + x) * 4) as usize + c])
    };
    for oy in 0..height {
        for ox in 0..width {
            let u = (f64::from(ox) + 0.5) * f64::from(src.width) / f64::from(width) - 0.5;
            let v = (f64::from(oy) + 0.5) * f64::from(src.height) / f64::from(height) - 0.5;
            let (x0, y0) = (u.floor() as i64, v.floor() as i64);
            let (fx, fy) = (u - u.floor(), v - v.floor());
            let i = ((oy * width + ox) * 4) as usize;
            for c in 0..3 {
                let top = texel(x0, y0, c) * (1.0 - fx) + texel(x0 + 1, y0, c) * fx;
                let bottom = texel(x0, y0 + 1, c) * (1.0 - fx) + texel(x0 + 1, y0 + 1, c) * fx;
                out.pixels[i + c] = (top * (1.0 - fy) + bottom * fy).round() as u8;
            }
            out.pixels[i + 3] = 255;
        }
    }
    out
}

/// Where a `src`-sized picture lands on a `screen`-sized output when
/// scaled to fit with its aspect ratio kept and centred. Written here again
/// on purpose, in floating point: the tests' oracle for the sink's
/// integer `Rect::fit_into`.
pub fn fit((sw, sh): (u32, u32), (tw, th): (u32, u32)) -> Rect {
    let (sw, sh, tw, th) = (f64::from(sw), f64::from(sh), f64::from(tw), f64::from(th));
    let scale = (tw / sw).min(th / sh);
    let (w, h) = ((sw * scale).round(), (sh * scale).round());
    Rect::new(
        ((tw - w) / 2.0).floor() as i32,
        ((th - h) / 2.0).floor() as i32,
        w as u32,
        h as u32,
    )
}

/// `src` scaled to fit a black `screen` (bilinear, opaque): what a monitor
/// shows of a guest picture of another size.
pub fn letterboxed(src: &RgbaFrame, screen: (u32, u32)) -> RgbaFrame {
    let at = fit((src.width, src.height), screen);
    let ((x, y), (w, h)) = (at.origin(), at.size());
    let scaled = if (w, h) == (src.width, src.height) {
        src.clone()
    } else {
        bilinear(src, w, h)
    };
    let mut out = RgbaFrame::default();
    out.reset(screen.0, screen.1);
    for px in out.pixels.chunks_exact_mut(4) {
        px.copy_from_slice(&[0, 0, 0, 255]);
    }
    for row in 0..h {
        let src_row = &scaled.pixels[(row * w * 4) as usize..((row + 1) * w * 4) as usize];
        let start = (((y + row) * screen.0 + x) * 4) as usize;
        out.pixels[start..start + (w * 4) as usize].copy_from_slice(src_row);
    }
    for px in out.pixels.chunks_exact_mut(4) {
        px[3] = 255;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_centres_with_bars() {
        assert_eq!(fit((400, 200), (640, 480)), Rect::new(0, 80, 640, 320));
        assert_eq!(fit((640, 480), (640, 480)), Rect::new(0, 0, 640, 480));
        assert_eq!(fit((640, 480), (1280, 720)), Rect::new(160, 0, 960, 720));
        assert_eq!(fit((720, 400), (1024, 768)), Rect::new(0, 99, 1024, 569));
    }

    #[test]
    fn letterbox_puts_the_picture_between_black_bars() {
        let mut src = RgbaFrame::default();
        src.reset(2, 1);
        src.pixels
            .copy_from_slice(&[255, 0, 0, 255, 255, 0, 0, 255]);
        let out = letterboxed(&src, (4, 4));
        // 2x1 into 4x4: 4x2 at y 1.
        assert_eq!(&out.pixels[0..4], &[0, 0, 0, 255]);
        assert_eq!(&out.pixels[16..20], &[255, 0, 0, 255]);
        assert_eq!(&out.pixels[3 * 16..3 * 16 + 4], &[0, 0, 0, 255]);
    }
}
