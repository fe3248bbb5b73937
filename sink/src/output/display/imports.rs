//! The guest's buffers on this output: each imported on demand (as a
//! framebuffer for the plane, as an EGLImage for the renderer), the last
//! few kept, and the way each layout reaches the screen decided once.

use std::collections::HashMap;
use std::sync::Arc;

use dbus_interfaces::DmabufScanout;
use dmabuf::BufferKey;
use drm::buffer::{DrmFourcc, DrmModifier};
use nix::errno::Errno;

use crate::frame::ShowPath;
use crate::output::imports::ImportCache;
pub use crate::output::imports::{ImageError, Import};
use crate::output::kms::{KmsError, Rect, TestOutcome};

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

/// The imported guest buffers, the current one, and the decisions made.
#[derive(Default)]
pub struct Imports {
    cache: ImportCache,
    pub current: Option<Current>,
    decisions: HashMap<Layout, Decision>,
}

impl Imports {
    /// `scanout` (checked, identified as `key`) is the guest's buffer from
    /// now on: imported later, on demand; the same buffer re-sent with a
    /// new fd keeps its imports. The least recently used goes when full.
    pub fn scanout(&mut self, key: BufferKey, scanout: DmabufScanout) {
        let layout = Layout::of(&scanout);
        self.cache.insert(key, scanout);
        self.current = Some(Current { key, layout });
    }

    /// The import of `key`, if still kept.
    pub fn get(&mut self, key: BufferKey) -> Option<&mut Import> {
        self.cache.get(key)
    }

    /// Lets every import go (QEMU disabled its scanout, or left).
    pub fn forget_all(&mut self) {
        self.cache.clear();
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
