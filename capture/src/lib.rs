//! Pixels to pictures: DRM fourcc rows decoded to RGBA, PNG written so that
//! a reader never sees half a file, and images compared the way a test needs.

mod compare;
mod decode;
mod png;

pub use compare::{compare_rgb, Difference};
pub use decode::{bytes_per_pixel, decode_row, RgbaFrame};
pub use png::{read_png, write_png_atomic};

/// What went wrong while capturing.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("pixel format {0:?} cannot be decoded")]
    UnsupportedFormat(drm_fourcc::DrmFourcc),
    #[error("writing {path}: {source}")]
    Write {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("encoding PNG {path}: {source}")]
    Encode {
        path: std::path::PathBuf,
        #[source]
        source: image::ImageError,
    },
    #[error("reading {path}: {source}")]
    Read {
        path: std::path::PathBuf,
        #[source]
        source: image::ImageError,
    },
}
