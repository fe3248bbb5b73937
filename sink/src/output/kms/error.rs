//! One error type for the KMS layer: each variant names the device, and
//! ioctl failures name the call (Smithay's `AccessError`).

use std::io;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum KmsError {
    #[error("opening {}: {source}", device.display())]
    Open {
        device: PathBuf,
        #[source]
        source: io::Error,
    },
    /// An ioctl (or a read, poll or mmap on the card) failed.
    #[error("{call} on {}: {source}", device.display())]
    Access {
        call: &'static str,
        device: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{} is not DRM master (another process, e.g. a compositor, drives it): {source}",
        device.display()
    )]
    NotMaster {
        device: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("no DRM node: {0}")]
    NoDevice(String),
    #[error("{}: {what}", device.display())]
    NotFound { device: PathBuf, what: String },
    #[error("{}: {object} has no property {name}", device.display())]
    MissingProperty {
        device: PathBuf,
        object: String,
        name: String,
    },
    #[error("{}: malformed {what}: {why}", device.display())]
    BadBlob {
        device: PathBuf,
        what: &'static str,
        why: String,
    },
    #[error("mode {0:?} is not WxH or WxH@Hz")]
    BadModeSpec(String),
    #[error("{}: bad buffer: {0}", device.display())]
    BadBuffer { device: PathBuf, why: String },
    /// The caller queued a commit while one was in flight; the kernel would
    /// say EBUSY. Wait for the page-flip event first.
    #[error("{}: a commit on CRTC {crtc} is still in flight", device.display())]
    FlipPending { device: PathBuf, crtc: u32 },
    #[error("{}: no {what} within {timeout:?}", device.display())]
    Timeout {
        device: PathBuf,
        what: &'static str,
        timeout: Duration,
    },
    #[error(transparent)]
    Capture(#[from] capture::CaptureError),
}

impl KmsError {
    /// Another process took the card (a VT switch, a compositor): the
    /// kernel refuses our commits with EACCES or EPERM.
    pub fn is_master_lost(&self) -> bool {
        matches!(self, KmsError::NotMaster { .. })
            || matches!(self.errno(), Some(libc::EACCES | libc::EPERM))
    }

    /// The errno of a failed call, if this is one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            KmsError::Open { source, .. }
            | KmsError::Access { source, .. }
            | KmsError::NotMaster { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}
