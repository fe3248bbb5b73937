//! The DRM card: a primary node (`/dev/dri/cardN`) opened as master with
//! universal planes and atomic modesetting, its capabilities, the GEM
//! handles imported on it (counted: the kernel gives one handle per buffer
//! and file), and property maps by name.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use drm::buffer;
use drm::control::{connector, property, Device as ControlDevice, ResourceHandle};
use drm::{ClientCapability, Device, DriverCapability};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use super::error::KmsError;
use super::events::FlipRoutes;
use super::pipe::PipeClaims;
use crate::seat::{Seat, SeatLease};

/// What the driver can do, read once at open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// `DRM_CAP_ADDFB2_MODIFIERS`: AddFB2 takes explicit modifiers and
    /// planes publish `IN_FORMATS`.
    pub addfb2_modifiers: bool,
    /// `DRM_CAP_TIMESTAMP_MONOTONIC`: page-flip timestamps are
    /// CLOCK_MONOTONIC (else CLOCK_REALTIME).
    pub monotonic_timestamp: bool,
    /// `DRM_CLIENT_CAP_CURSOR_PLANE_HOTSPOT` was accepted (kernel 6.8+).
    /// Virtualized drivers (virtio_gpu, vmwgfx, qxl) hide their cursor
    /// plane from atomic clients without it; with it, a cursor plane's
    /// `HOTSPOT_X`/`HOTSPOT_Y` must be set where the plane has them.
    pub cursor_hotspot: bool,
}

/// An open primary node, DRM master, with universal planes and atomic
/// modesetting enabled.
#[derive(Debug)]
pub struct Card {
    /// The seat's hold on the card when it came through the seat (given
    /// back before the fd is closed: fields drop in order).
    _lease: Option<SeatLease>,
    file: File,
    path: PathBuf,
    driver: String,
    caps: Caps,
    /// Open GEM handles (raw) → users; closed when the last one goes.
    gem: Mutex<HashMap<u32, usize>>,
    /// Page-flip events shared out to the CRTCs' owners.
    pub(super) flips: FlipRoutes,
    /// What each pipe of ours drives here.
    pipes: Mutex<PipeClaims>,
}

impl AsFd for Card {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

impl Device for Card {}
impl ControlDevice for Card {}

/// A node opened only to look at it (no master, no caps).
struct Probe(File);

impl AsFd for Probe {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl Device for Probe {}
impl ControlDevice for Probe {}

fn open_rw(path: &Path) -> Result<File, KmsError> {
    // std opens with O_CLOEXEC.
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|source| KmsError::Open {
            device: path.to_owned(),
            source,
        })
}

/// How cards are opened: directly (the user needs access to
/// `/dev/dri/cardN`; master by opening first or `SET_MASTER`), or through
/// the seat (libseat hands out the fd, master while the seat is ours).
#[derive(Debug, Clone, Default)]
pub enum CardAccess {
    #[default]
    Direct,
    Seat(Seat),
}

impl CardAccess {
    fn open(&self, path: &Path) -> Result<(File, Option<SeatLease>), KmsError> {
        match self {
            CardAccess::Direct => Ok((open_rw(path)?, None)),
            CardAccess::Seat(seat) => {
                let (fd, lease) = seat.open_device(path).map_err(|source| KmsError::Open {
                    device: path.to_owned(),
                    source,
                })?;
                Ok((File::from(fd), Some(lease)))
            }
        }
    }
}

/// Which card an output drives (`--device`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CardChoice {
    /// The node at this path.
    Path(PathBuf),
    /// The first card of this kernel driver (e.g. `vkms`).
    Driver(String),
    /// The first card with a connected connector.
    FirstConnected,
}

impl CardChoice {
    /// `--device`'s value: a path, or a bare name that is no file (a
    /// kernel driver's name); none: the first card with a monitor.
    pub fn from_option(device: Option<&Path>) -> CardChoice {
        match device {
            Some(name) if !name.exists() && name.components().count() == 1 => {
                CardChoice::Driver(name.to_string_lossy().into_owned())
            }
            Some(path) => CardChoice::Path(path.to_owned()),
            None => CardChoice::FirstConnected,
        }
    }
}

/// The two kinds of DRM node this layer looks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    /// `/dev/dri/cardN`: modesetting (needs master).
    Primary,
    /// `/dev/dri/renderDN`: rendering and buffer sharing only.
    Render,
}

impl NodeKind {
    fn prefix(self) -> &'static str {
        match self {
            NodeKind::Primary => "card",
            NodeKind::Render => "renderD",
        }
    }
}

/// The `/dev/dri` nodes of `kind`, in number order.
fn nodes(kind: NodeKind) -> Result<Vec<PathBuf>, KmsError> {
    let dir = Path::new("/dev/dri");
    let entries = std::fs::read_dir(dir).map_err(|source| KmsError::Open {
        device: dir.to_owned(),
        source,
    })?;
    let mut found: Vec<(u32, PathBuf)> = entries
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter_map(|path| {
            let name = path.file_name()?.to_str()?;
            let number = name.strip_prefix(kind.prefix())?.parse().ok()?;
            Some((number, path))
        })
        .collect();
    found.sort();
    Ok(found.into_iter().map(|(_, path)| path).collect())
}

fn driver_name(device: &impl Device, path: &Path) -> Result<String, KmsError> {
    let driver = device.get_driver().map_err(|source| KmsError::Access {
        call: "DRM_IOCTL_VERSION",
        device: path.to_owned(),
        source,
    })?;
    Ok(driver.name().to_string_lossy().into_owned())
}

/// The first node of `kind` whose kernel driver is `driver` (e.g. "vkms",
/// "vgem"). Node numbers follow the drivers' load order: tests find a
/// card by its driver, never by number.
pub fn find_node(kind: NodeKind, driver: &str) -> Result<PathBuf, KmsError> {
    let mut seen = Vec::new();
    for path in nodes(kind)? {
        let name = driver_name(&Probe(open_rw(&path)?), &path)?;
        if name == driver {
            return Ok(path);
        }
        seen.push(format!("{} = {name}", path.display()));
    }
    Err(KmsError::NoDevice(format!(
        "no /dev/dri/{}* node with driver {driver:?} (found: {})",
        kind.prefix(),
        if seen.is_empty() {
            "none".into()
        } else {
            seen.join(", ")
        }
    )))
}

/// A connected monitor: its card, the card's kernel driver, the
/// connector's kernel name and its preferred mode's size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectedOutput {
    pub card: PathBuf,
    pub driver: String,
    pub connector: String,
    pub preferred: Option<(u32, u32)>,
}

/// Every connected connector (writeback ones aside) of every card, in
/// card then connector order. Cards that cannot be read are skipped.
pub fn connected_outputs() -> Result<Vec<ConnectedOutput>, KmsError> {
    let mut found = Vec::new();
    for path in nodes(NodeKind::Primary)? {
        let Ok(file) = open_rw(&path) else { continue };
        let probe = Probe(file);
        let Ok(driver) = driver_name(&probe, &path) else {
            continue;
        };
        let Ok(resources) = probe.resource_handles() else {
            continue;
        };
        for &handle in resources.connectors() {
            let Ok(info) = probe.get_connector(handle, false) else {
                continue;
            };
            if info.interface() == connector::Interface::Writeback
                || info.state() != connector::State::Connected
            {
                continue;
            }
            let preferred = super::pipe::pick_mode(info.modes(), None)
                .map(|m| (u32::from(m.size().0), u32::from(m.size().1)));
            found.push(ConnectedOutput {
                card: path.clone(),
                driver: driver.clone(),
                connector: info.to_string(),
                preferred,
            });
        }
    }
    Ok(found)
}

/// Does `device` have a connected connector (writeback ones aside)?
fn has_connected_connector(device: &impl ControlDevice) -> io::Result<bool> {
    for &handle in device.resource_handles()?.connectors() {
        let info = device.get_connector(handle, false)?;
        if info.interface() != connector::Interface::Writeback
            && info.state() == connector::State::Connected
        {
            return Ok(true);
        }
    }
    Ok(false)
}

impl Card {
    /// Opens the primary node at `path`: takes DRM master (opening a node
    /// that no one else drives does; else `SET_MASTER`, which needs
    /// CAP_SYS_ADMIN) and enables universal planes and atomic modesetting.
    pub fn open(path: impl AsRef<Path>) -> Result<Card, KmsError> {
        Card::open_with(path.as_ref(), &CardAccess::Direct)
    }

    /// Opens the primary node at `path` as `access` says.
    pub fn open_with(path: &Path, access: &CardAccess) -> Result<Card, KmsError> {
        let (file, lease) = access.open(path)?;
        Card::from_file(path, file, lease)
    }

    fn from_file(path: &Path, file: File, lease: Option<SeatLease>) -> Result<Card, KmsError> {
        let seated = lease.is_some();
        let mut card = Card {
            _lease: lease,
            file,
            path: path.to_owned(),
            driver: String::new(),
            caps: Caps {
                addfb2_modifiers: false,
                monotonic_timestamp: false,
                cursor_hotspot: false,
            },
            gem: Mutex::new(HashMap::new()),
            flips: FlipRoutes::default(),
            pipes: Mutex::new(PipeClaims::default()),
        };
        card.driver = driver_name(&card, path)?;
        // The seat's fd is master while the seat is ours (and SET_MASTER
        // is refused to a process that did not open the node itself).
        if !seated {
            card.acquire_master_lock()
                .map_err(|source| KmsError::NotMaster {
                    device: path.to_owned(),
                    source,
                })?;
        }
        card.set_client_capability(ClientCapability::UniversalPlanes, true)
            .map_err(card.err("DRM_CLIENT_CAP_UNIVERSAL_PLANES"))?;
        card.set_client_capability(ClientCapability::Atomic, true)
            .map_err(card.err("DRM_CLIENT_CAP_ATOMIC"))?;
        let cursor_hotspot = card
            .set_client_capability(ClientCapability::CursorPlaneHotspot, true)
            .inspect_err(|err| {
                tracing::debug!(
                    "DRM_CLIENT_CAP_CURSOR_PLANE_HOTSPOT on {}: {err}",
                    path.display()
                )
            })
            .is_ok();
        card.caps = Caps {
            addfb2_modifiers: card.cap(DriverCapability::AddFB2Modifiers, "ADDFB2_MODIFIERS")?,
            monotonic_timestamp: card
                .cap(DriverCapability::MonotonicTimestamp, "TIMESTAMP_MONOTONIC")?,
            cursor_hotspot,
        };
        if !card.caps.monotonic_timestamp {
            tracing::warn!(
                "{}: page-flip timestamps are CLOCK_REALTIME, not CLOCK_MONOTONIC",
                path.display()
            );
        }
        tracing::debug!(
            "opened {} ({}, master, atomic): {:?}",
            path.display(),
            card.driver,
            card.caps
        );
        Ok(card)
    }

    /// The first card (in number order) with a connected connector.
    pub fn open_default() -> Result<Card, KmsError> {
        Card::open_default_with(&CardAccess::Direct)
    }

    /// [`Card::open_default`], each card opened as `access` says.
    pub fn open_default_with(access: &CardAccess) -> Result<Card, KmsError> {
        let mut seen = Vec::new();
        for path in nodes(NodeKind::Primary)? {
            let (file, lease) = access.open(&path)?;
            let probe = Probe(file);
            let driver = driver_name(&probe, &path)?;
            match has_connected_connector(&probe) {
                Ok(true) => return Card::from_file(&path, probe.0, lease),
                Ok(false) => seen.push(format!("{} ({driver}): nothing connected", path.display())),
                Err(err) => seen.push(format!("{} ({driver}): {err}", path.display())),
            }
        }
        Err(KmsError::NoDevice(format!(
            "no /dev/dri/card* with a connected connector ({})",
            if seen.is_empty() {
                "no cards".into()
            } else {
                seen.join("; ")
            }
        )))
    }

    /// The card driven by the kernel driver `driver` (e.g. "vkms").
    pub fn open_by_driver(driver: &str) -> Result<Card, KmsError> {
        Card::open_by_driver_with(driver, &CardAccess::Direct)
    }

    /// [`Card::open_by_driver`], each card opened as `access` says (with a
    /// seat, the user may not open a card to read its driver's name); the
    /// card found is kept open, not opened again.
    pub fn open_by_driver_with(driver: &str, access: &CardAccess) -> Result<Card, KmsError> {
        let mut seen = Vec::new();
        for path in nodes(NodeKind::Primary)? {
            let (file, lease) = access.open(&path)?;
            let probe = Probe(file);
            let name = driver_name(&probe, &path)?;
            if name == driver {
                return Card::from_file(&path, probe.0, lease);
            }
            seen.push(format!("{} = {name}", path.display()));
        }
        Err(KmsError::NoDevice(format!(
            "no /dev/dri/card* node with driver {driver:?} (found: {})",
            if seen.is_empty() {
                "none".into()
            } else {
                seen.join(", ")
            }
        )))
    }

    /// The card `choice` names, opened once per process: heads on one card
    /// share one open file, which is DRM master for all of them (master
    /// belongs to an open file, and a second open of the node would not
    /// be). Cards open already are looked at before unopened ones, in the
    /// same number order.
    pub fn open_shared(choice: &CardChoice, access: &CardAccess) -> Result<Arc<Card>, KmsError> {
        static OPEN: Mutex<Vec<Weak<Card>>> = Mutex::new(Vec::new());
        let mut open = OPEN.lock().unwrap_or_else(PoisonError::into_inner);
        open.retain(|card| card.strong_count() > 0);
        let opened = |path: &Path| {
            let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
            open.iter().filter_map(Weak::upgrade).find(|card| {
                std::fs::canonicalize(&card.path).unwrap_or_else(|_| card.path.clone()) == path
            })
        };
        let card = match choice {
            CardChoice::Path(path) => match opened(path) {
                Some(card) => return Ok(card),
                None => Card::open_with(path, access)?,
            },
            CardChoice::Driver(driver) => {
                if let Some(card) = nodes(NodeKind::Primary)?
                    .iter()
                    .filter_map(|path| opened(path))
                    .find(|card| card.driver == *driver)
                {
                    return Ok(card);
                }
                Card::open_by_driver_with(driver, access)?
            }
            CardChoice::FirstConnected => {
                for path in nodes(NodeKind::Primary)? {
                    match opened(&path) {
                        Some(card) if has_connected_connector(&*card).unwrap_or(false) => {
                            return Ok(card)
                        }
                        Some(_) => {}
                        None => break,
                    }
                }
                Card::open_default_with(access)?
            }
        };
        let card = Arc::new(card);
        open.push(Arc::downgrade(&card));
        Ok(card)
    }

    /// The pipes of ours on this card (see [`PipeClaims`]).
    pub fn pipe_claims(&self) -> MutexGuard<'_, PipeClaims> {
        self.pipes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Shows writeback connectors, which the kernel lists only to atomic
    /// clients that ask.
    pub fn enable_writeback(&self) -> Result<(), KmsError> {
        self.set_client_capability(ClientCapability::WritebackConnectors, true)
            .map_err(self.err("DRM_CLIENT_CAP_WRITEBACK_CONNECTORS"))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The kernel driver's name, e.g. "vkms".
    pub fn driver(&self) -> &str {
        &self.driver
    }

    pub fn caps(&self) -> Caps {
        self.caps
    }

    fn cap(&self, cap: DriverCapability, name: &'static str) -> Result<bool, KmsError> {
        let value = self
            .get_driver_capability(cap)
            .map_err(|source| KmsError::Access {
                call: name,
                device: self.path.clone(),
                source,
            })?;
        Ok(value == 1)
    }

    /// Maps an io::Error of `call` to [`KmsError::Access`] on this card.
    pub fn err(&self, call: &'static str) -> impl FnOnce(io::Error) -> KmsError + '_ {
        move |source| KmsError::Access {
            call,
            device: self.path.clone(),
            source,
        }
    }

    /// A [`KmsError::NotFound`] on this card.
    pub fn not_found(&self, what: String) -> KmsError {
        KmsError::NotFound {
            device: self.path.clone(),
            what,
        }
    }

    /// Waits until the card has events to read; `false` on timeout.
    pub fn wait_readable(&self, timeout: Duration) -> Result<bool, KmsError> {
        wait_readable(self.as_fd(), timeout).map_err(self.err("poll"))
    }

    /// Imports a DMA-BUF as a GEM handle and counts the new user (the
    /// kernel returns the same handle for a buffer it has seen).
    pub(super) fn import_gem(&self, dmabuf: BorrowedFd<'_>) -> Result<buffer::Handle, KmsError> {
        let mut users = self.gem.lock().unwrap_or_else(PoisonError::into_inner);
        let handle = self
            .prime_fd_to_buffer(dmabuf)
            .map_err(self.err("DRM_IOCTL_PRIME_FD_TO_HANDLE"))?;
        *users.entry(handle.into()).or_default() += 1;
        Ok(handle)
    }

    /// Counts one more user of a GEM handle this card holds (a new dumb
    /// buffer, or a clone).
    pub(super) fn retain_gem(&self, handle: buffer::Handle) {
        let mut users = self.gem.lock().unwrap_or_else(PoisonError::into_inner);
        *users.entry(handle.into()).or_default() += 1;
    }

    /// Drops a user of a GEM handle; the last one closes it.
    pub(super) fn release_gem(&self, handle: buffer::Handle) {
        let mut users = self.gem.lock().unwrap_or_else(PoisonError::into_inner);
        let raw = u32::from(handle);
        let Some(count) = users.get_mut(&raw) else {
            tracing::error!("{}: GEM handle {raw} released twice", self.path.display());
            return;
        };
        *count -= 1;
        if *count == 0 {
            users.remove(&raw);
            if let Err(err) = self.close_buffer(handle) {
                tracing::warn!("{}: GEM_CLOSE of handle {raw}: {err}", self.path.display());
            }
        }
    }

    /// How many users a GEM handle has here (0: not open through this card).
    pub fn gem_users(&self, handle: buffer::Handle) -> usize {
        let users = self.gem.lock().unwrap_or_else(PoisonError::into_inner);
        users.get(&u32::from(handle)).copied().unwrap_or(0)
    }
}

/// `timeout` as poll(2) takes it, rounded up: a 0.4 ms remainder must not
/// become a busy 0 ms poll.
pub(crate) fn poll_timeout(timeout: Duration) -> PollTimeout {
    let ms = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
    PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
}

/// Waits until `fd` is readable; `false` on timeout.
pub(super) fn wait_readable(fd: BorrowedFd<'_>, timeout: Duration) -> io::Result<bool> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ms = poll_timeout(left);
        let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
        match poll(&mut fds, ms) {
            Ok(0) => return Ok(false),
            Ok(_) => return Ok(true),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(errno) => return Err(errno.into()),
        }
    }
}

/// A KMS object's properties by name: handles for requests, and the values
/// they had when read.
#[derive(Debug, Clone)]
pub struct PropMap {
    device: PathBuf,
    object: String,
    props: HashMap<String, (property::Handle, property::RawValue)>,
}

impl PropMap {
    /// Reads every property of `object` (one ioctl per property: cache it).
    pub fn read<H: ResourceHandle + std::fmt::Debug>(
        card: &Card,
        object: H,
    ) -> Result<PropMap, KmsError> {
        let values = card
            .get_properties(object)
            .map_err(card.err("DRM_IOCTL_MODE_OBJ_GETPROPERTIES"))?;
        let mut props = HashMap::new();
        for (&handle, &value) in values.iter() {
            let info = card
                .get_property(handle)
                .map_err(card.err("DRM_IOCTL_MODE_GETPROPERTY"))?;
            props.insert(info.name().to_string_lossy().into_owned(), (handle, value));
        }
        Ok(PropMap {
            device: card.path().to_owned(),
            object: format!("{object:?}"),
            props,
        })
    }

    /// The property `name`'s handle, or an error naming the object.
    pub fn handle(&self, name: &str) -> Result<property::Handle, KmsError> {
        self.props
            .get(name)
            .map(|&(handle, _)| handle)
            .ok_or_else(|| KmsError::MissingProperty {
                device: self.device.clone(),
                object: self.object.clone(),
                name: name.to_owned(),
            })
    }

    /// The value `name` had when this map was read.
    pub fn value(&self, name: &str) -> Option<property::RawValue> {
        self.props.get(name).map(|&(_, value)| value)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.props.contains_key(name)
    }
}
