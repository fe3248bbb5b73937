//! Writeback: what a CRTC shows, written by the display engine into a
//! buffer (vkms in the lab; some real hardware). The capture is a dumb
//! buffer of the mode's size; its out-fence says when the pixels are there.

use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use capture::RgbaFrame;
use drm::buffer::DrmFourcc;
use drm::control::{connector, property, Device as ControlDevice};

use super::commit::{Committer, Request};
use super::device::{wait_readable, Card, PropMap};
use super::error::KmsError;
use super::framebuffer::{DumbBuffer, Framebuffer};

/// Fill for the capture buffer before each capture: a writeback that writes
/// nothing leaves this, not the previous picture.
const UNWRITTEN: u8 = 0x5a;

/// A writeback connector and its capture buffer.
#[derive(Debug)]
pub struct Writeback {
    card: Arc<Card>,
    connector: connector::Handle,
    props: PropMap,
    formats: Vec<u32>,
    /// The capture buffer and its framebuffer, kept between captures.
    target: Option<(DumbBuffer, Framebuffer)>,
}

impl Writeback {
    /// The card's first writeback connector (enables the client cap that
    /// shows them).
    pub fn find(card: &Arc<Card>) -> Result<Writeback, KmsError> {
        card.enable_writeback()?;
        let resources = card
            .resource_handles()
            .map_err(card.err("DRM_IOCTL_MODE_GETRESOURCES"))?;
        for &handle in resources.connectors() {
            let info = card
                .get_connector(handle, false)
                .map_err(card.err("DRM_IOCTL_MODE_GETCONNECTOR"))?;
            if info.interface() != connector::Interface::Writeback {
                continue;
            }
            let props = PropMap::read(card, handle)?;
            let blob = props.value("WRITEBACK_PIXEL_FORMATS").unwrap_or(0);
            let bytes = card
                .get_property_blob(blob)
                .map_err(card.err("DRM_IOCTL_MODE_GETPROPBLOB"))?;
            let formats = bytes
                .chunks_exact(4)
                .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            tracing::debug!("{}: writeback connector {info}", card.path().display());
            return Ok(Writeback {
                card: card.clone(),
                connector: handle,
                props,
                formats,
                target: None,
            });
        }
        Err(card.not_found("no writeback connector (vkms needs enable_writeback=1)".to_owned()))
    }

    pub fn connector(&self) -> connector::Handle {
        self.connector
    }

    /// The formats it writes (`WRITEBACK_PIXEL_FORMATS`).
    pub fn formats(&self) -> impl Iterator<Item = DrmFourcc> + '_ {
        self.formats
            .iter()
            .filter_map(|&f| DrmFourcc::try_from(f).ok())
    }

    /// XRGB8888 if it writes that, else a format `capture` decodes.
    fn format(&self) -> Result<DrmFourcc, KmsError> {
        let decodable: Vec<DrmFourcc> = self
            .formats()
            .filter(|&f| capture::bytes_per_pixel(f).is_some())
            .collect();
        [DrmFourcc::Xrgb8888, DrmFourcc::Argb8888]
            .into_iter()
            .find(|f| decodable.contains(f))
            .or(decodable.first().copied())
            .ok_or_else(|| {
                self.card.not_found(format!(
                    "no decodable writeback format in {:?}",
                    self.formats().collect::<Vec<_>>()
                ))
            })
    }

    /// Captures what `committer`'s CRTC shows (it must be lit and have no
    /// flip in flight), waiting at most `timeout` for the out-fence.
    pub fn capture<P>(
        &mut self,
        committer: &mut Committer<P>,
        timeout: Duration,
    ) -> Result<RgbaFrame, KmsError> {
        committer.check_idle()?;
        let (width, height) = committer.pipe().size();
        let fourcc = self.format()?;
        let fits = |(dumb, _): &(DumbBuffer, Framebuffer)| {
            dumb.size() == (width, height) && dumb.fourcc() == fourcc
        };
        if !self.target.as_ref().is_some_and(fits) {
            self.target = None;
            let dumb = DumbBuffer::create(&self.card, width, height, fourcc)?;
            let fb = dumb.framebuffer()?;
            self.target = Some((dumb, fb));
        }
        let (dumb, fb) = self.target.as_mut().expect("just made");
        dumb.map()?.fill(UNWRITTEN);

        // The kernel stores the out-fence's fd through this pointer during
        // the commit ioctl; `fence` lives until after it.
        let mut fence: i32 = -1;
        let mut req = Request::new();
        req.allow_modeset(); // routing the connector the first time is a modeset
        req.set(
            self.connector,
            &self.props,
            "CRTC_ID",
            property::Value::CRTC(Some(committer.pipe().crtc)),
        )?;
        req.set(
            self.connector,
            &self.props,
            "WRITEBACK_FB_ID",
            property::Value::Framebuffer(Some(fb.handle())),
        )?;
        req.set_raw(
            self.connector,
            &self.props,
            "WRITEBACK_OUT_FENCE_PTR",
            std::ptr::addr_of_mut!(fence) as u64,
        )?;
        let started = Instant::now();
        committer.commit(req)?;
        if fence < 0 {
            return Err(self
                .card
                .not_found("an out-fence from the writeback commit".to_owned()));
        }
        // SAFETY: the commit succeeded, so the kernel stored a new sync_file
        // fd in `fence`, which nothing else owns.
        let fence = unsafe { OwnedFd::from_raw_fd(fence) };
        if !wait_readable(fence.as_fd(), timeout).map_err(self.card.err("poll (out-fence)"))? {
            return Err(KmsError::Timeout {
                device: self.card.path().to_owned(),
                what: "writeback out-fence",
                timeout,
            });
        }
        tracing::debug!("writeback: out-fence after {:?}", started.elapsed());

        let stride = dumb.stride() as usize;
        let map = dumb.map()?;
        let mut frame = RgbaFrame::default();
        frame.reset(width, height);
        for y in 0..height {
            let row = &map[y as usize * stride..][..stride];
            capture::decode_row(fourcc, row, frame.row_mut(y))?;
        }
        Ok(frame)
    }
}
