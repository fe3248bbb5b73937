//! Image comparison for tests: same size, and how far apart the RGB
//! channels are (alpha is not part of what a screen shows).

use crate::RgbaFrame;

/// How two pictures differ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Difference {
    Size {
        left: (u32, u32),
        right: (u32, u32),
    },
    Pixels {
        /// Pixels with any RGB channel further apart than the tolerance.
        count: usize,
        /// The first such pixel and its two RGB values.
        first: (u32, u32, [u8; 3], [u8; 3]),
        max_channel_delta: u8,
    },
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Difference::Size { left, right } => write!(
                f,
                "sizes differ: {}x{} vs {}x{}",
                left.0, left.1, right.0, right.1
            ),
            Difference::Pixels {
                count,
                first: (x, y, a, b),
                max_channel_delta,
            } => write!(
                f,
                "{count} pixels differ (max channel delta {max_channel_delta}); first at ({x},{y}): {a:?} vs {b:?}"
            ),
        }
    }
}

/// Compares RGB channel by channel; `Ok` when every channel is within
/// `tolerance` (0 for pixel-exact).
pub fn compare_rgb(left: &RgbaFrame, right: &RgbaFrame, tolerance: u8) -> Result<(), Difference> {
    if (left.width, left.height) != (right.width, right.height) {
        return Err(Difference::Size {
            left: (left.width, left.height),
            right: (right.width, right.height),
        });
    }
    let mut count = 0;
    let mut first = None;
    let mut max_channel_delta = 0;
    for (i, (a, b)) in left
        .pixels
        .chunks_exact(4)
        .zip(right.pixels.chunks_exact(4))
        .enumerate()
    {
        let delta = (0..3).map(|c| a[c].abs_diff(b[c])).max().unwrap_or(0);
        if delta > tolerance {
            count += 1;
            max_channel_delta = max_channel_delta.max(delta);
            first.get_or_insert((
                (i % left.width as usize) as u32,
                (i / left.width as usize) as u32,
                [a[0], a[1], a[2]],
                [b[0], b[1], b[2]],
            ));
        }
    }
    match first {
        None => Ok(()),
        Some(first) => Err(Difference::Pixels {
            count,
            first,
            max_channel_delta,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_size_and_pixel_differences() {
        let mut a = RgbaFrame::default();
        a.reset(4, 2);
        let mut b = a.clone();
        assert_eq!(compare_rgb(&a, &b, 0), Ok(()));
        b.pixels[3] = 0; // alpha does not count
        assert_eq!(compare_rgb(&a, &b, 0), Ok(()));
        b.pixels[4 * 5 + 1] = 3;
        let err = compare_rgb(&a, &b, 0).unwrap_err();
        assert_eq!(
            err,
            Difference::Pixels {
                count: 1,
                first: (1, 1, [0, 0, 0], [0, 3, 0]),
                max_channel_delta: 3
            }
        );
        assert_eq!(compare_rgb(&a, &b, 3), Ok(()));
        let mut c = RgbaFrame::default();
        c.reset(2, 4);
        assert!(matches!(
            compare_rgb(&a, &c, 0),
            Err(Difference::Size { .. })
        ));
    }
}
