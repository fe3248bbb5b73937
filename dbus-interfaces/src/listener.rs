//! The sink's side of the p2p listener connection: `org.qemu.Display1.Listener`,
//! `.Listener.Unix.Map` and `.Listener.Unix.ScanoutDMABUF2`, with QEMU's exact
//! signatures, all `spawn = false` so that messages are handled in the order
//! QEMU sent them, and all served before the connection processes a message.
//!
//! Every message is checked here and handed on as a typed [`ListenerEvent`];
//! a message that breaks a rule is dropped with one log line.

use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dmabuf::{Dmabuf, DrmFourcc, DrmModifier, Plane, Rect};
use zbus::interface;

use crate::map::SharedMap;
use crate::release::Release;
use crate::validate::{self, check_cursor, check_size, InvalidInput, Layout, Pixels};
use crate::{LISTENER_PATH, MAP_INTERFACE, SCANOUT_DMABUF2_INTERFACE};

/// QEMU gives up on an `UpdateDMABUF` answer after 1 s; the listener answers
/// on its own this long after the call if the frame's release has not come.
/// The margin covers a loaded machine's scheduling delay (seen: over 100 ms
/// on one emulated CPU while llvmpipe compiles shaders).
pub const RELEASE_DEADLINE: Duration = Duration::from_millis(800);

/// A DMA-BUF scanout (`ScanoutDMABUF` or `ScanoutDMABUF2`), with owned fds.
#[derive(Debug)]
pub struct DmabufScanout {
    /// The whole backing buffer.
    pub buffer: Dmabuf,
    /// The scanout rectangle within the backing buffer (non-negative,
    /// within it: checked here).
    pub rect: Rect,
    /// True when memory row 0 is the bottom of the image (GL-rendered).
    pub y0_top: bool,
}

/// A cursor image: `width * height` host-order ARGB8888 words.
#[derive(Debug, Clone, Copy)]
pub struct Cursor<'a> {
    pub width: u32,
    pub height: u32,
    pub hot_x: i32,
    pub hot_y: i32,
    pub data: &'a [u8],
}

/// A checked listener message.
#[derive(Debug)]
pub enum ListenerEvent<'a> {
    /// A new surface with all its pixels.
    Scanout(Pixels<'a>),
    /// Pixels for a rectangle of the surface; may reach beyond the current
    /// surface when QEMU resized it without a new scanout.
    Update {
        x: u32,
        y: u32,
        pixels: Pixels<'a>,
    },
    /// A new surface in shared memory.
    ScanoutMap(SharedMap),
    /// The shared memory changed within this rectangle.
    UpdateMap(Rect),
    ScanoutDmabuf(DmabufScanout),
    /// The guest rewrote the DMA-BUF within `damage` (`None` when the
    /// rectangle was invalid). QEMU holds the guest until `release` is dropped.
    UpdateDmabuf {
        damage: Option<Rect>,
        release: Release,
    },
    /// No scanout until the next `Scanout*`.
    Disable,
    MouseSet {
        x: i32,
        y: i32,
        visible: bool,
    },
    CursorDefine(Cursor<'a>),
}

/// What the sink does with listener messages. Called on the D-Bus executor
/// thread, in message order: copy or hand on, never block.
pub trait ListenerHandler: Send + 'static {
    fn handle(&mut self, event: ListenerEvent<'_>);

    /// A message was dropped for bad input (already logged).
    fn rejected(&mut self, _member: &'static str, _why: &InvalidInput) {}

    /// An `UpdateDMABUF` was answered by the deadline, not by its release.
    fn release_deadline_passed(&mut self) {}
}

/// Which optional listener interfaces to offer QEMU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerOptions {
    /// `Listener.Unix.Map`: QEMU shares the surface's memory instead of copying it.
    pub map: bool,
    /// `Listener.Unix.ScanoutDMABUF2` (QEMU 10.1+).
    pub scanout_dmabuf2: bool,
}

impl Default for ListenerOptions {
    fn default() -> Self {
        ListenerOptions {
            map: true,
            scanout_dmabuf2: true,
        }
    }
}

impl ListenerOptions {
    pub fn interfaces(&self) -> Vec<String> {
        let mut list = Vec::new();
        if self.map {
            list.push(MAP_INTERFACE.to_owned());
        }
        if self.scanout_dmabuf2 {
            list.push(SCANOUT_DMABUF2_INTERFACE.to_owned());
        }
        list
    }
}

type SharedHandler = Arc<Mutex<Box<dyn ListenerHandler>>>;

fn deliver(handler: &SharedHandler, event: ListenerEvent<'_>) {
    let mut handler = handler
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    handler.handle(event);
}

fn reject(handler: &SharedHandler, member: &'static str, why: InvalidInput) {
    tracing::warn!("dropping {member} from QEMU: {why}");
    let mut handler = handler
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    handler.rejected(member, &why);
}

fn deliver_or_reject(
    handler: &SharedHandler,
    member: &'static str,
    event: Result<ListenerEvent<'_>, InvalidInput>,
) {
    match event {
        Ok(event) => deliver(handler, event),
        Err(why) => reject(handler, member, why),
    }
}

/// `org.qemu.Display1.Listener`.
pub struct Listener {
    handler: SharedHandler,
    options: ListenerOptions,
}

#[interface(name = "org.qemu.Display1.Listener", spawn = false)]
impl Listener {
    async fn scanout(&self, width: u32, height: u32, stride: u32, pixman_format: u32, data: &[u8]) {
        let event =
            check_scanout(width, height, stride, pixman_format, data).map(ListenerEvent::Scanout);
        deliver_or_reject(&self.handler, "Scanout", event);
    }

    #[allow(clippy::too_many_arguments)] // QEMU's signature
    async fn update(
        &self,
        x: i32,
        y: i32,
        w: i32,
        h: i32,
        stride: u32,
        pixman_format: u32,
        data: &[u8],
    ) {
        let event = check_update(x, y, w, h, stride, pixman_format, data)
            .map(|(x, y, pixels)| ListenerEvent::Update { x, y, pixels });
        deliver_or_reject(&self.handler, "Update", event);
    }

    #[zbus(name = "ScanoutDMABUF")]
    #[allow(clippy::too_many_arguments)] // QEMU's signature
    async fn scanout_dmabuf(
        &self,
        dmabuf: zbus::zvariant::OwnedFd,
        width: u32,
        height: u32,
        stride: u32,
        fourcc: u32,
        modifier: u64,
        y0_top: bool,
    ) {
        let plane = Plane {
            fd: dmabuf.into(),
            offset: 0,
            stride,
        };
        let event = dmabuf_scanout(
            vec![plane],
            fourcc,
            modifier,
            (0, 0, width, height),
            (width, height),
            y0_top,
        )
        .map(ListenerEvent::ScanoutDmabuf);
        deliver_or_reject(&self.handler, "ScanoutDMABUF", event);
    }

    #[zbus(name = "UpdateDMABUF")]
    async fn update_dmabuf(&self, x: i32, y: i32, w: i32, h: i32) {
        let damage = match validate::rect_from_wire(x, y, w, h) {
            Ok(rect) => Some(rect),
            Err(why) => {
                // Still handed on (and answered): QEMU holds the guest until then.
                tracing::warn!("UpdateDMABUF from QEMU with bad damage: {why}");
                None
            }
        };
        let (release, done) = Release::new();
        deliver(
            &self.handler,
            ListenerEvent::UpdateDmabuf { damage, release },
        );
        if !done.wait_until(RELEASE_DEADLINE).await {
            tracing::warn!(
                "frame not released within {} ms: answering UpdateDMABUF at the deadline",
                RELEASE_DEADLINE.as_millis()
            );
            let mut handler = self.handler.lock().unwrap_or_else(|p| p.into_inner());
            handler.release_deadline_passed();
        }
    }

    async fn disable(&self) {
        deliver(&self.handler, ListenerEvent::Disable);
    }

    async fn mouse_set(&self, x: i32, y: i32, on: i32) {
        deliver(
            &self.handler,
            ListenerEvent::MouseSet {
                x,
                y,
                visible: on != 0,
            },
        );
    }

    async fn cursor_define(&self, width: i32, height: i32, hot_x: i32, hot_y: i32, data: &[u8]) {
        let event =
            check_cursor_define(width, height, hot_x, hot_y, data).map(ListenerEvent::CursorDefine);
        deliver_or_reject(&self.handler, "CursorDefine", event);
    }

    #[zbus(property)]
    fn interfaces(&self) -> Vec<String> {
        self.options.interfaces()
    }
}

/// `org.qemu.Display1.Listener.Unix.Map`.
pub struct MapListener {
    handler: SharedHandler,
}

#[interface(name = "org.qemu.Display1.Listener.Unix.Map", spawn = false)]
impl MapListener {
    /// Synchronous on QEMU's side: answered at once. A refused map makes QEMU
    /// fall back to `Scanout`/`Update` copies, which is how a bad map recovers.
    async fn scanout_map(
        &self,
        handle: zbus::zvariant::OwnedFd,
        offset: u32,
        width: u32,
        height: u32,
        stride: u32,
        pixman_format: u32,
    ) -> zbus::fdo::Result<()> {
        let map = Layout::new(width, height, stride, pixman_format)
            .and_then(|layout| SharedMap::new(handle.into(), offset, layout));
        match map {
            Ok(map) => {
                deliver(&self.handler, ListenerEvent::ScanoutMap(map));
                Ok(())
            }
            Err(why) => {
                let message = why.to_string();
                reject(&self.handler, "ScanoutMap", why);
                Err(zbus::fdo::Error::InvalidArgs(message))
            }
        }
    }

    async fn update_map(&self, x: i32, y: i32, w: i32, h: i32) {
        let event = validate::rect_from_wire(x, y, w, h).map(ListenerEvent::UpdateMap);
        deliver_or_reject(&self.handler, "UpdateMap", event);
    }

    #[zbus(property)]
    fn interfaces(&self) -> Vec<String> {
        Vec::new()
    }
}

/// `org.qemu.Display1.Listener.Unix.ScanoutDMABUF2`.
pub struct ScanoutDmabuf2Listener {
    handler: SharedHandler,
}

#[interface(name = "org.qemu.Display1.Listener.Unix.ScanoutDMABUF2", spawn = false)]
impl ScanoutDmabuf2Listener {
    /// `ahuuuuauauuuuutb`.
    #[zbus(name = "ScanoutDMABUF2")]
    #[allow(clippy::too_many_arguments)] // QEMU's signature
    async fn scanout_dmabuf2(
        &self,
        dmabuf: Vec<zbus::zvariant::OwnedFd>,
        x: u32,
        y: u32,
        width: u32,
        height: u32,
        offset: Vec<u32>,
        stride: Vec<u32>,
        num_planes: u32,
        fourcc: u32,
        backing_width: u32,
        backing_height: u32,
        modifier: u64,
        y0_top: bool,
    ) {
        let event = check_plane_counts(num_planes, dmabuf.len(), offset.len(), stride.len())
            .and_then(|()| {
                let planes = dmabuf
                    .into_iter()
                    .zip(offset)
                    .zip(stride)
                    .take(num_planes as usize)
                    .map(|((fd, offset), stride)| Plane {
                        fd: fd.into(),
                        offset,
                        stride,
                    })
                    .collect();
                dmabuf_scanout(
                    planes,
                    fourcc,
                    modifier,
                    (x, y, width, height),
                    (backing_width, backing_height),
                    y0_top,
                )
            })
            .map(ListenerEvent::ScanoutDmabuf);
        deliver_or_reject(&self.handler, "ScanoutDMABUF2", event);
    }

    #[zbus(property)]
    fn interfaces(&self) -> Vec<String> {
        Vec::new()
    }
}

/// `Scanout`'s checks: a known format, a size within the cap, a stride
/// that holds a row, and data that holds every row.
pub fn check_scanout(
    width: u32,
    height: u32,
    stride: u32,
    pixman_format: u32,
    data: &[u8],
) -> Result<Pixels<'_>, InvalidInput> {
    Layout::new(width, height, stride, pixman_format).and_then(|layout| Pixels::new(layout, data))
}

/// `Update`'s checks: a rectangle within the size cap, then `Scanout`'s
/// for its pixels. Gives the rectangle's corner and its pixels.
pub fn check_update(
    x: i32,
    y: i32,
    w: i32,
    h: i32,
    stride: u32,
    pixman_format: u32,
    data: &[u8],
) -> Result<(u32, u32, Pixels<'_>), InvalidInput> {
    let rect = validate::rect_from_wire(x, y, w, h)?;
    let pixels = check_scanout(rect.width, rect.height, stride, pixman_format, data)?;
    let (x, y) = rect.origin();
    Ok((x, y, pixels))
}

/// `CursorDefine`'s checks: each side in 1..=[`MAX_CURSOR_DIM`], and ARGB
/// data for every pixel.
pub fn check_cursor_define(
    width: i32,
    height: i32,
    hot_x: i32,
    hot_y: i32,
    data: &[u8],
) -> Result<Cursor<'_>, InvalidInput> {
    let (width, height) = check_cursor(width, height, data.len())?;
    Ok(Cursor {
        width,
        height,
        hot_x,
        hot_y,
        data,
    })
}

/// `ScanoutDMABUF2`'s plane counts: 1 to 4 planes, and an fd, an offset
/// and a stride for each.
pub fn check_plane_counts(
    num_planes: u32,
    fds: usize,
    offsets: usize,
    strides: usize,
) -> Result<(), InvalidInput> {
    let n = num_planes as usize;
    if n == 0 || n > 4 || fds < n || offsets < n || strides < n {
        return Err(InvalidInput::Dmabuf(format!(
            "{num_planes} planes with {fds} fds, {offsets} offsets, {strides} strides"
        )));
    }
    Ok(())
}

/// The checks every DMA-BUF scanout passes at the edge: a known fourcc and a
/// scanout rectangle within a backing buffer within the size cap. The
/// buffer-level checks (is it a DMA-BUF, do the planes fit) need the fd and
/// happen where it is imported.
pub fn dmabuf_scanout(
    planes: Vec<Plane<OwnedFd>>,
    fourcc: u32,
    modifier: u64,
    (x, y, width, height): (u32, u32, u32, u32),
    (backing_width, backing_height): (u32, u32),
    y0_top: bool,
) -> Result<DmabufScanout, InvalidInput> {
    let fourcc_code =
        DrmFourcc::try_from(fourcc).map_err(|_| InvalidInput::UnknownFormat(fourcc))?;
    check_size(backing_width, backing_height)?;
    check_size(width, height)?;
    let within = u64::from(x) + u64::from(width) <= u64::from(backing_width)
        && u64::from(y) + u64::from(height) <= u64::from(backing_height);
    if !within {
        return Err(InvalidInput::Dmabuf(format!(
            "scanout ({x},{y}) {width}x{height} outside the {backing_width}x{backing_height} buffer"
        )));
    }
    // Within the size cap (checked above): the origin fits an i32.
    Ok(DmabufScanout {
        buffer: Dmabuf {
            width: backing_width,
            height: backing_height,
            fourcc: fourcc_code,
            modifier: DrmModifier::from(modifier),
            planes,
        },
        rect: Rect::new(x as i32, y as i32, width, height),
        y0_top,
    })
}

/// Socket buffers for the listener socketpair: 4 MiB gave +15–90 % on
/// full-frame `Update` floods (`rust-crates.md` §5); more only costs memory.
const SOCKET_BUFFER: usize = 4 << 20;

/// A socketpair for `RegisterListener`: QEMU's end and ours, both with large
/// buffers so that big `Update`s stream instead of ping-ponging.
pub fn listener_socketpair() -> std::io::Result<(UnixStream, UnixStream)> {
    use nix::sys::socket::{setsockopt, sockopt};
    let (ours, theirs) = UnixStream::pair()?;
    for sock in [&ours, &theirs] {
        // Best effort: the kernel caps these at net.core.{w,r}mem_max.
        let _ = setsockopt(sock, sockopt::SndBuf, &SOCKET_BUFFER);
        let _ = setsockopt(sock, sockopt::RcvBuf, &SOCKET_BUFFER);
    }
    Ok((ours, theirs))
}

/// Serves every listener interface on `ours` (our end of the socket whose
/// other end went to `RegisterListener`) and completes the p2p handshake as
/// the auth client. Nothing is processed before all interfaces are served.
pub fn serve_listener(
    ours: UnixStream,
    handler: Box<dyn ListenerHandler>,
    options: ListenerOptions,
) -> zbus::Result<zbus::blocking::Connection> {
    let handler: SharedHandler = Arc::new(Mutex::new(handler));
    let mut builder = zbus::blocking::connection::Builder::async_io_unix_stream(ours)
        .p2p()
        // Bounded queue: at 4K a full Update is 33 MB.
        .max_queued(8)
        .serve_at(
            LISTENER_PATH,
            Listener {
                handler: handler.clone(),
                options,
            },
        )?;
    if options.map {
        builder = builder.serve_at(
            LISTENER_PATH,
            MapListener {
                handler: handler.clone(),
            },
        )?;
    }
    if options.scanout_dmabuf2 {
        builder = builder.serve_at(LISTENER_PATH, ScanoutDmabuf2Listener { handler })?;
    }
    builder.build()
}
