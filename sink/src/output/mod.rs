//! Outputs: where frames go. The headless capture (`capture`, `latency`)
//! and the KMS display, one thread per output; the import cache both keep.

pub mod display;
pub mod gl_capture;
pub mod headless;
pub mod imports;
pub mod kms;

use std::time::Duration;

use gl_renderer::{RenderError, Renderer};

/// A composed frame must be released before QEMU's 1 s deadline (the
/// listener answers at 800 ms regardless): the GPU is waited for at most
/// this long.
pub const FENCE_WAIT: Duration = Duration::from_millis(700);

/// Waits until the GPU has finished what was drawn, at most
/// [`FENCE_WAIT`]; past that it says so (`anyway`: what happens all the
/// same) and returns, so that no frame waits on a stuck GPU.
pub fn wait_for_gpu(renderer: &mut Renderer, anyway: &str) -> Result<(), RenderError> {
    if !renderer.fence()?.wait(FENCE_WAIT) {
        tracing::warn!("the GPU did not finish within {FENCE_WAIT:?}: {anyway}");
    }
    Ok(())
}
