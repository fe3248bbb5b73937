//! EGL + GLES for qemu-sink: an EGL display on a chosen device (a GPU's
//! render node, Mesa's software device, or surfaceless), a configless GLES 3
//! context, DMA-BUF → EGLImage import, composition into output-sized
//! targets, fences, and readback.
//!
//! One [`Renderer`] lives on one thread (the output's owner thread); its GL
//! context is current there and nowhere else.

mod egl;
mod format;
mod gles;
mod import;

pub use dmabuf::{Dmabuf, DrmModifier, Plane, Rect};
pub use egl::{DeviceInfo, RenderDevice};
pub use gles::{Composition, Fence, Renderer, Source, Target, Texture};
pub use import::{FormatTable, ImportedImage};

/// What went wrong, naming the EGL or GL call.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("libEGL could not be loaded: {0}")]
    Load(String),
    #[error("{call} failed: {error}")]
    Egl {
        call: &'static str,
        #[source]
        error: khronos_egl::Error,
    },
    #[error("{0}")]
    Unsupported(String),
    #[error("{call}: GL error {code:#06x}")]
    Gl { call: &'static str, code: u32 },
    #[error("creating a GL object: {0}")]
    GlObject(String),
    #[error("DMA-BUF: {0}")]
    Dmabuf(String),
}

fn egl_err(call: &'static str) -> impl FnOnce(khronos_egl::Error) -> RenderError {
    move |error| RenderError::Egl { call, error }
}
