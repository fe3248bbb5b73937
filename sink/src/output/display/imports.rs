//! The guest's buffers on this output: each imported on demand (as a
//! framebuffer for the plane, as an EGLImage for the renderer), the last
//! few kept, and the way each layout reaches the screen decided once.

use std::collections::HashMap;
use std::sync::Arc;

use dbus_interfaces::DmabufScanout;
use dmabuf::BufferKey;
use drm::buffer::{DrmFourcc, DrmModifier};
use gl_renderer::{ImportedImage, RenderError, Renderer};
use nix::errno::Errno;

use crate::frame::ShowPath;
use crate::output::kms::{Card, Framebuffer, KmsError, Rect, TestOutcome};

/// Guest buffers kept imported (guests double- or triple-buffer).
const IMPORTS: usize = 4;

/// How a guest buffer is laid out: the path decision is made once per layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Layout {
    pub fourcc: DrmFourcc,
    pub modifier: DrmModifier,
    pub backing: (u32, u32),
    pub stride: u32,
    /// The guest's picture within the backing buffer.
    pub rect: Rect,
    pub y0_top: bool,
}

impl Layout {
    pub fn of(scanout: &DmabufScanout) -> Layout {
        let buffer = &scanout.buffer;
        Layout {
            fourcc: buffer.fourcc,
            modifier: buffer.modifier,
            backing: (buffer.width, buffer.height),
            stride: buffer.planes.first().map_or(0, |p| p.stride),
            rect: scanout.rect,
            y0_top: scanout.y0_top,
        }
    }
}

impl std::fmt::Display for Layout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}x{} {:?} (modifier {:#x}, stride {})",
            self.rect.width,
            self.rect.height,
            self.fourcc,
            u64::from(self.modifier),
            self.stride
        )
    }
}

/// The guest's current scanout: which buffer, laid out how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Current {
    pub key: BufferKey,
    pub layout: Layout,
}

/// Why a layout is not scanned out directly.
#[derive(Debug, Clone, thiserror::Error)]
pub enum NotDirect {
    #[error("the buffer is bottom-up (y0_top)")]
    BottomUp,
    #[error("the buffer is no longer imported")]
    Gone,
    #[error("the plane does not list {fourcc:?} with modifier {:#x}", u64::from(*.modifier))]
    Format {
        fourcc: DrmFourcc,
        modifier: DrmModifier,
    },
    #[error("the kernel refused it in a TEST_ONLY commit: {errno}{}", if *.0 == Errno::ERANGE { " (scaling)" } else { "" }, errno = .0)]
    Refused(Errno),
    #[error("it cannot be a framebuffer: {0}")]
    Framebuffer(Arc<KmsError>),
}

/// How frames of a layout reach the screen.
#[derive(Debug, Clone)]
pub enum Decision {
    Show(ShowPath),
    /// Not at all: `--path direct` and the plane refuses it, or the
    /// renderer cannot import it. Its frames are released unshown.
    Drop(NotDirect),
}

impl Decision {
    pub fn is_direct(&self) -> bool {
        matches!(self, Decision::Show(ShowPath::Direct))
    }
}

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

/// The imported guest buffers, the current one, and the decisions made.
#[derive(Default)]
pub struct Imports {
    list: Vec<Import>,
    uses: u64,
    pub current: Option<Current>,
    decisions: HashMap<Layout, Decision>,
}

impl Imports {
    /// `scanout` (checked, identified as `key`) is the guest's buffer from
    /// now on: imported later, on demand; the same buffer re-sent with a
    /// new fd keeps its imports. The least recently used goes when full.
    pub fn scanout(&mut self, key: BufferKey, scanout: DmabufScanout) {
        let layout = Layout::of(&scanout);
        self.uses += 1;
        let uses = self.uses;
        if let Some(hit) = self.list.iter_mut().find(|i| i.key == key) {
            hit.last_used = uses;
        } else {
            if self.list.len() >= IMPORTS {
                if let Some(oldest) = (0..self.list.len()).min_by_key(|&i| self.list[i].last_used) {
                    // Its framebuffer lives on while a commit uses it.
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
        }
        self.current = Some(Current { key, layout });
    }

    /// The import of `key`, if still kept.
    pub fn get(&mut self, key: BufferKey) -> Option<&mut Import> {
        self.list.iter_mut().find(|i| i.key == key)
    }

    /// Lets every import go (QEMU disabled its scanout, or left).
    pub fn forget_all(&mut self) {
        self.list.clear();
    }

    pub fn decision(&self, layout: &Layout) -> Option<&Decision> {
        self.decisions.get(layout)
    }

    pub fn decide(&mut self, layout: Layout, decision: Decision) {
        self.decisions.insert(layout, decision);
    }

    /// Forgets the decisions (a new mode, the card back from another
    /// process: the plane may answer otherwise now).
    pub fn forget_decisions(&mut self) {
        self.decisions.clear();
    }
}

/// What a TEST_ONLY outcome means for the direct path.
pub fn direct_outcome(outcome: TestOutcome) -> Result<(), NotDirect> {
    match outcome {
        TestOutcome::Accepted => Ok(()),
        TestOutcome::UnsupportedFormat { fourcc, modifier } => {
            Err(NotDirect::Format { fourcc, modifier })
        }
        TestOutcome::Rejected(errno) => Err(NotDirect::Refused(errno)),
    }
}
