//! Small KMS helpers for lab tests: cards found by driver name (card numbers
//! follow module load order), an output's connector/CRTC/primary plane,
//! DMA-BUFs as framebuffers, page-flip events and writeback captures.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use drm::buffer::{self, DrmModifier, PlanarBuffer};
use drm::control::{
    atomic::AtomicModeReq, connector, crtc, framebuffer, plane, property, AtomicCommitFlags,
    Device as ControlDevice, Event, FbCmd2Flags, Mode, ModeTypeFlags, PageFlipEvent, PlaneType,
    ResourceHandle,
};
use drm::{ClientCapability, Device};
use drm_fourcc::DrmFourcc;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::dmabuf::Layout;

/// An open DRM node.
#[derive(Debug)]
pub struct Card {
    file: File,
    path: PathBuf,
}

impl AsFd for Card {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

impl Device for Card {}
impl ControlDevice for Card {}

fn not_found(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, what)
}

impl Card {
    pub fn open(path: &Path) -> io::Result<Card> {
        // std opens with O_CLOEXEC.
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        Ok(Card {
            file,
            path: path.to_owned(),
        })
    }

    /// The primary node (`/dev/dri/cardN`) whose driver (`drmGetVersion`'s
    /// name) is `driver`, e.g. "vkms".
    pub fn open_by_driver(driver: &str) -> io::Result<Card> {
        open_node_by_driver("card", driver)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn driver_name(&self) -> io::Result<String> {
        Ok(self.get_driver()?.name().to_string_lossy().into_owned())
    }

    /// Universal planes and atomic modesetting; with `writeback`, also the
    /// writeback connectors, which the kernel shows only to atomic clients.
    pub fn enable_atomic(&self, writeback: bool) -> io::Result<()> {
        self.set_client_capability(ClientCapability::UniversalPlanes, true)?;
        self.set_client_capability(ClientCapability::Atomic, true)?;
        if writeback {
            self.set_client_capability(ClientCapability::WritebackConnectors, true)?;
        }
        Ok(())
    }
}

/// The render node (`/dev/dri/renderDN`) whose driver is `driver`, e.g. "vgem".
pub fn render_node_by_driver(driver: &str) -> io::Result<PathBuf> {
    open_node_by_driver("renderD", driver).map(|card| card.path)
}

fn open_node_by_driver(prefix: &str, driver: &str) -> io::Result<Card> {
    let mut seen = Vec::new();
    let mut nodes: Vec<PathBuf> = std::fs::read_dir("/dev/dri")?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_prefix(prefix))
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
        .collect();
    nodes.sort();
    for path in nodes {
        let card = Card::open(&path)?;
        let name = card.driver_name()?;
        if name == driver {
            return Ok(card);
        }
        seen.push(format!("{} = {name}", path.display()));
    }
    Err(not_found(format!(
        "no /dev/dri/{prefix}* node with driver {driver:?} (found: {})",
        seen.join(", ")
    )))
}

/// A KMS object's properties by name, with their current values.
#[derive(Debug)]
pub struct Props(HashMap<String, (property::Handle, property::RawValue)>);

impl Props {
    pub fn of<H: ResourceHandle>(card: &Card, object: H) -> io::Result<Props> {
        let mut map = HashMap::new();
        for (handle, value) in card.get_properties(object)? {
            let info = card.get_property(handle)?;
            map.insert(info.name().to_string_lossy().into_owned(), (handle, value));
        }
        Ok(Props(map))
    }

    pub fn handle(&self, name: &str) -> io::Result<property::Handle> {
        self.0
            .get(name)
            .map(|(handle, _)| *handle)
            .ok_or_else(|| not_found(format!("no property {name}")))
    }

    pub fn value(&self, name: &str) -> io::Result<property::RawValue> {
        self.0
            .get(name)
            .map(|(_, value)| *value)
            .ok_or_else(|| not_found(format!("no property {name}")))
    }
}

/// A connected connector with its preferred mode, a CRTC that can drive it
/// and that CRTC's primary plane.
#[derive(Debug, Clone)]
pub struct Output {
    pub name: String,
    pub connector: connector::Handle,
    pub crtc: crtc::Handle,
    pub primary: plane::Handle,
    pub mode: Mode,
}

impl Output {
    /// The first connected connector named `prefix`… (e.g. "Virtual-").
    /// Needs [`Card::enable_atomic`] first (universal planes).
    pub fn find(card: &Card, prefix: &str) -> io::Result<Output> {
        let resources = card.resource_handles()?;
        for &handle in resources.connectors() {
            let info = card.get_connector(handle, true)?;
            let name = info.to_string();
            if !name.starts_with(prefix) || info.state() != connector::State::Connected {
                continue;
            }
            let mode = info
                .modes()
                .iter()
                .find(|m| m.mode_type().contains(ModeTypeFlags::PREFERRED))
                .or_else(|| info.modes().first())
                .copied()
                .ok_or_else(|| not_found(format!("{name} has no modes")))?;
            let crtc = info
                .encoders()
                .iter()
                .filter_map(|&e| card.get_encoder(e).ok())
                .flat_map(|e| resources.filter_crtcs(e.possible_crtcs()))
                .next()
                .ok_or_else(|| not_found(format!("no CRTC can drive {name}")))?;
            let primary = primary_plane(card, crtc)?;
            return Ok(Output {
                name,
                connector: handle,
                crtc,
                primary,
                mode,
            });
        }
        Err(not_found(format!(
            "no connected {prefix}* connector on {}",
            card.path().display()
        )))
    }

    pub fn size(&self) -> (u32, u32) {
        let (w, h) = self.mode.size();
        (u32::from(w), u32::from(h))
    }

    /// A blocking modeset: this output lit with its mode, `fb` full-screen on
    /// the primary plane (`fb` must be the mode's size).
    pub fn modeset(&self, card: &Card, fb: framebuffer::Handle) -> io::Result<()> {
        let mut req = AtomicModeReq::new();
        let conn = Props::of(card, self.connector)?;
        let crtc = Props::of(card, self.crtc)?;
        req.add_property(
            self.connector,
            conn.handle("CRTC_ID")?,
            property::Value::CRTC(Some(self.crtc)),
        );
        let blob = match card.create_property_blob(&self.mode)? {
            property::Value::Blob(id) => id,
            other => {
                return Err(io::Error::other(format!(
                    "mode blob came back as {other:?}"
                )))
            }
        };
        req.add_property(
            self.crtc,
            crtc.handle("MODE_ID")?,
            property::Value::Blob(blob),
        );
        req.add_property(
            self.crtc,
            crtc.handle("ACTIVE")?,
            property::Value::Boolean(true),
        );
        self.add_primary(card, &mut req, fb)?;
        let result = card.atomic_commit(AtomicCommitFlags::ALLOW_MODESET, req);
        // The CRTC keeps its own reference to the mode blob.
        let _ = card.destroy_property_blob(blob);
        result
    }

    /// Queues a flip of the primary plane to `fb` (NONBLOCK, with a
    /// page-flip event); see [`wait_page_flip`].
    pub fn flip(&self, card: &Card, fb: framebuffer::Handle) -> io::Result<()> {
        let mut req = AtomicModeReq::new();
        self.add_primary(card, &mut req, fb)?;
        card.atomic_commit(
            AtomicCommitFlags::NONBLOCK | AtomicCommitFlags::PAGE_FLIP_EVENT,
            req,
        )
    }

    fn add_primary(
        &self,
        card: &Card,
        req: &mut AtomicModeReq,
        fb: framebuffer::Handle,
    ) -> io::Result<()> {
        let props = Props::of(card, self.primary)?;
        let (w, h) = self.size();
        let plane = self.primary;
        let mut set = |name: &str, value: property::Value| -> io::Result<()> {
            req.add_property(plane, props.handle(name)?, value);
            Ok(())
        };
        set("FB_ID", property::Value::Framebuffer(Some(fb)))?;
        set("CRTC_ID", property::Value::CRTC(Some(self.crtc)))?;
        // SRC_* are 16.16 fixed point.
        set("SRC_X", property::Value::UnsignedRange(0))?;
        set("SRC_Y", property::Value::UnsignedRange(0))?;
        set("SRC_W", property::Value::UnsignedRange(u64::from(w) << 16))?;
        set("SRC_H", property::Value::UnsignedRange(u64::from(h) << 16))?;
        set("CRTC_X", property::Value::SignedRange(0))?;
        set("CRTC_Y", property::Value::SignedRange(0))?;
        set("CRTC_W", property::Value::UnsignedRange(u64::from(w)))?;
        set("CRTC_H", property::Value::UnsignedRange(u64::from(h)))?;
        Ok(())
    }
}

fn primary_plane(card: &Card, crtc: crtc::Handle) -> io::Result<plane::Handle> {
    let resources = card.resource_handles()?;
    for handle in card.plane_handles()? {
        let info = card.get_plane(handle)?;
        if !resources
            .filter_crtcs(info.possible_crtcs())
            .contains(&crtc)
        {
            continue;
        }
        if Props::of(card, handle)?.value("type")? == PlaneType::Primary as u64 {
            return Ok(handle);
        }
    }
    Err(not_found(format!("no primary plane for CRTC {crtc:?}")))
}

/// One packed plane imported from a DMA-BUF (a GEM handle on the card).
struct PrimeBuffer {
    layout: Layout,
    handle: buffer::Handle,
    modifier: Option<DrmModifier>,
}

impl PlanarBuffer for PrimeBuffer {
    fn size(&self) -> (u32, u32) {
        (self.layout.width, self.layout.height)
    }
    fn format(&self) -> DrmFourcc {
        self.layout.fourcc
    }
    fn modifier(&self) -> Option<DrmModifier> {
        self.modifier
    }
    fn pitches(&self) -> [u32; 4] {
        [self.layout.stride, 0, 0, 0]
    }
    fn handles(&self) -> [Option<buffer::Handle>; 4] {
        [Some(self.handle), None, None, None]
    }
    fn offsets(&self) -> [u32; 4] {
        [self.layout.offset, 0, 0, 0]
    }
}

/// A DMA-BUF imported into a card and added as a framebuffer; removed (and
/// the GEM handle closed) on drop. Keep it alive while it is on screen:
/// removing a framebuffer in use turns its plane off.
pub struct DmabufFramebuffer<'a> {
    card: &'a Card,
    pub fb: framebuffer::Handle,
    gem: buffer::Handle,
}

impl<'a> DmabufFramebuffer<'a> {
    /// `modifier: Some(_)` uses AddFB2 with `DRM_MODE_FB_MODIFIERS`; `None`
    /// is plain AddFB2 (the driver assumes linear).
    pub fn new(
        card: &'a Card,
        dmabuf: BorrowedFd<'_>,
        layout: Layout,
        modifier: Option<DrmModifier>,
    ) -> io::Result<DmabufFramebuffer<'a>> {
        let gem = card.prime_fd_to_buffer(dmabuf)?;
        let buffer = PrimeBuffer {
            layout,
            handle: gem,
            modifier,
        };
        let flags = if modifier.is_some() {
            FbCmd2Flags::MODIFIERS
        } else {
            FbCmd2Flags::empty()
        };
        match card.add_planar_framebuffer(&buffer, flags) {
            Ok(fb) => Ok(DmabufFramebuffer { card, fb, gem }),
            Err(err) => {
                let _ = card.close_buffer(gem);
                Err(err)
            }
        }
    }
}

impl Drop for DmabufFramebuffer<'_> {
    fn drop(&mut self) {
        let _ = self.card.destroy_framebuffer(self.fb);
        let _ = self.card.close_buffer(self.gem);
    }
}

/// Waits until `fd` is readable; `false` on timeout.
pub fn wait_readable(fd: BorrowedFd<'_>, timeout: Duration) -> io::Result<bool> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ms = PollTimeout::try_from(left.as_millis().min(i32::MAX as u128) as i32)
            .unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
        match poll(&mut fds, ms) {
            Ok(0) => return Ok(false),
            Ok(_) => return Ok(true),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(errno) => return Err(errno.into()),
        }
    }
}

/// Waits for the next page-flip event on `card` (`receive_events` does a
/// single read, so poll first).
pub fn wait_page_flip(card: &Card, timeout: Duration) -> io::Result<PageFlipEvent> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if !wait_readable(card.as_fd(), left)? {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no page-flip event within {timeout:?}"),
            ));
        }
        for event in card.receive_events()? {
            if let Event::PageFlip(flip) = event {
                return Ok(flip);
            }
        }
    }
}

/// The writeback connector (shown after `ClientCapability::WritebackConnectors`).
pub fn find_writeback(card: &Card) -> io::Result<connector::Handle> {
    for &handle in card.resource_handles()?.connectors() {
        if card.get_connector(handle, false)?.interface() == connector::Interface::Writeback {
            return Ok(handle);
        }
    }
    Err(not_found(format!(
        "no writeback connector on {} (vkms needs enable_writeback=1)",
        card.path().display()
    )))
}

/// Captures what `crtc` shows into `fb` through the writeback connector
/// `connector`, and waits (at most `timeout`) for the out-fence: `fb`
/// holds the picture when this returns. Returns the time to the fence.
pub fn writeback(
    card: &Card,
    connector: connector::Handle,
    crtc: crtc::Handle,
    fb: framebuffer::Handle,
    timeout: Duration,
) -> io::Result<Duration> {
    let props = Props::of(card, connector)?;
    let mut fence: i32 = -1;
    let mut req = AtomicModeReq::new();
    req.add_property(
        connector,
        props.handle("CRTC_ID")?,
        property::Value::CRTC(Some(crtc)),
    );
    req.add_property(
        connector,
        props.handle("WRITEBACK_FB_ID")?,
        property::Value::Framebuffer(Some(fb)),
    );
    // The kernel writes the sync_file fd through this pointer during the
    // ioctl; `fence` outlives the call.
    req.add_raw_property(
        connector.into(),
        props.handle("WRITEBACK_OUT_FENCE_PTR")?,
        &mut fence as *mut i32 as u64,
    );
    let start = Instant::now();
    // Binding the writeback connector to the CRTC the first time is a
    // routing change, which the kernel treats as a modeset.
    card.atomic_commit(AtomicCommitFlags::ALLOW_MODESET, req)?;
    if fence < 0 {
        return Err(io::Error::other(
            "the writeback commit returned no out-fence",
        ));
    }
    // SAFETY: on success the kernel stored a new sync_file fd in `fence`,
    // owned by nobody else.
    let fence = unsafe { OwnedFd::from_raw_fd(fence) };
    if !wait_readable(fence.as_fd(), timeout)? {
        return Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("the writeback out-fence did not signal within {timeout:?}"),
        ));
    }
    Ok(start.elapsed())
}
