//! The guest's buffers an output keeps imported, by identity (QEMU sends a
//! new fd for the same buffer at each scanout): each imported on demand, as
//! a framebuffer for a plane or as an EGLImage for the renderer, a failure
//! remembered for that buffer; the least recently used goes when full. The
//! display and the headless capture keep theirs in one of these.

use std::sync::Arc;

use dbus_interfaces::DmabufScanout;
use dmabuf::BufferKey;
use gl_renderer::{ImportedImage, RenderError, Renderer};

use crate::output::kms::{Card, Framebuffer, KmsError};

/// Guest buffers kept imported (guests double- or triple-buffer).
const IMPORTS: usize = 4;

/// A guest buffer, imported on the card and/or into the renderer on demand.
pub struct Import {
    pub key: BufferKey,
    pub scanout: DmabufScanout,
    fb: Option<Result<Arc<Framebuffer>, Arc<KmsError>>>,
    image: Option<Result<ImportedImage, Arc<RenderError>>>,
    last_used: u64,
}

impl Import {
    /// The buffer as a framebuffer on `card` (imported once; a failure is
    /// remembered too).
    pub fn framebuffer(&mut self, card: &Arc<Card>) -> Result<Arc<Framebuffer>, Arc<KmsError>> {
        self.fb
            .get_or_insert_with(|| {
                Framebuffer::import(card, &self.scanout.buffer)
                    .map(Arc::new)
                    .map_err(Arc::new)
            })
            .clone()
    }

    /// Why this buffer could not be a framebuffer, once it was tried.
    pub fn framebuffer_failure(&self) -> Option<Arc<KmsError>> {
        self.fb.as_ref()?.as_ref().err().cloned()
    }

    /// The buffer as an EGLImage in `renderer` (imported once; a failure
    /// is remembered too, for this buffer only: the next buffer of the same
    /// layout is tried afresh).
    pub fn image(&mut self, renderer: &mut Renderer) -> Result<&ImportedImage, ImageError> {
        let first = self.image.is_none();
        let image = self
            .image
            .get_or_insert_with(|| renderer.import(&self.scanout.buffer).map_err(Arc::new));
        image.as_ref().map_err(|why| ImageError {
            why: why.clone(),
            first,
        })
    }
}

/// A guest buffer the renderer cannot import.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the renderer cannot import it: {why}")]
pub struct ImageError {
    pub why: Arc<RenderError>,
    /// This call tried (and failed); later calls only repeat the answer.
    pub first: bool,
}

/// The imported guest buffers, least recently used evicted.
#[derive(Default)]
pub struct ImportCache {
    list: Vec<Import>,
    uses: u64,
}

impl ImportCache {
    /// `scanout` (checked, identified as `key`) is in use from now on:
    /// imported later, on demand; the same buffer re-sent with a new fd
    /// keeps its imports. Returns whether it is new here.
    pub fn insert(&mut self, key: BufferKey, scanout: DmabufScanout) -> bool {
        self.uses += 1;
        let uses = self.uses;
        if let Some(hit) = self.list.iter_mut().find(|i| i.key == key) {
            hit.last_used = uses;
            return false;
        }
        if self.list.len() >= IMPORTS {
            if let Some(oldest) = (0..self.list.len()).min_by_key(|&i| self.list[i].last_used) {
                // A framebuffer lives on while a commit uses it (an Arc).
                self.list.swap_remove(oldest);
            }
        }
        self.list.push(Import {
            key,
            scanout,
            fb: None,
            image: None,
            last_used: uses,
        });
        true
    }

    /// The import of `key`, if still kept.
    pub fn get(&mut self, key: BufferKey) -> Option<&mut Import> {
        self.list.iter_mut().find(|i| i.key == key)
    }

    /// Lets every import go.
    pub fn clear(&mut self) {
        self.list.clear();
    }
}
