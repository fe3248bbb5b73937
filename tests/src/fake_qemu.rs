//! A fake QEMU for the DMA-BUF path and for floods: it serves
//! `org.qemu.Display1` (VM and Console with `RegisterListener`) on a bus,
//! plays QEMU's side of each p2p listener connection (the auth server, as
//! QEMU is), and sends `ScanoutDMABUF`, `ScanoutDMABUF2` and `UpdateDMABUF`
//! with QEMU's exact signatures, recording when each `UpdateDMABUF` was
//! answered. Debian's QEMU 10.0 has no `ScanoutDMABUF2`: this is how the v2
//! path is exercised. It never replaces the real QEMU in a test; it adds the
//! messages a real one cannot be made to send.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::mpsc::{channel, Receiver};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context;
use dbus_interfaces::qemu_side::{
    ConsoleServer, InputCall, KeyboardServer, ListenerProxyBlocking, MapListenerProxyBlocking,
    MouseServer, MultiTouchServer, ScanoutDmabuf2ListenerProxyBlocking, UiInfo, VmServer,
};
use dbus_interfaces::QEMU_BUS_NAME;
use zbus::blocking::Connection;

/// What one console of the fake QEMU received: listener sockets and
/// `SetUIInfo` calls.
struct FakeConsole {
    listeners: Mutex<Receiver<OwnedFd>>,
    ui_infos: Mutex<Receiver<UiInfo>>,
    /// Its `Keyboard`/`Mouse`/`MultiTouch` calls.
    inputs: Mutex<Receiver<InputCall>>,
}

/// A fake QEMU on a bus, owning (or queued for) `org.qemu`.
pub struct FakeQemu {
    pub name: String,
    _bus: Connection,
    /// Per console, in order: listener sockets, `SetUIInfo` calls (each
    /// console can be waited on from a thread of its own, as QEMU serves
    /// them all at once).
    consoles: Vec<FakeConsole>,
}

fn console_path(id: usize) -> String {
    format!("/org/qemu/Display1/Console_{id}")
}

impl FakeQemu {
    /// One console (`VGA`) of `size`.
    pub fn on_bus(
        address: &str,
        name: &str,
        uuid: &str,
        size: (u32, u32),
    ) -> anyhow::Result<FakeQemu> {
        FakeQemu::with_consoles(address, name, uuid, &[size])
    }

    /// Consoles 0, 1, ... of the given sizes (several heads of one VM).
    pub fn with_consoles(
        address: &str,
        name: &str,
        uuid: &str,
        sizes: &[(u32, u32)],
    ) -> anyhow::Result<FakeQemu> {
        let mut builder = zbus::blocking::connection::Builder::address(address)?.serve_at(
            "/org/qemu/Display1/VM",
            VmServer {
                name: name.to_owned(),
                uuid: uuid.to_owned(),
                console_ids: (0..sizes.len() as u32).collect(),
            },
        )?;
        let mut consoles = Vec::new();
        for (id, &(width, height)) in sizes.iter().enumerate() {
            // Each console takes input of its own, as QEMU's do.
            let (input_tx, inputs) = channel();
            builder = builder
                .serve_at(
                    console_path(id),
                    KeyboardServer {
                        calls: input_tx.clone(),
                    },
                )?
                .serve_at(
                    console_path(id),
                    MouseServer {
                        calls: input_tx.clone(),
                        absolute: false,
                        width,
                        height,
                    },
                )?
                .serve_at(
                    console_path(id),
                    MultiTouchServer {
                        calls: input_tx,
                        max_slots: 10,
                        max_slots_after: Duration::ZERO,
                    },
                )?;
            let (tx, listeners) = channel();
            let (ui_info_tx, ui_infos) = channel();
            builder = builder.serve_at(
                console_path(id),
                ConsoleServer {
                    label: if id == 0 {
                        "VGA".into()
                    } else {
                        format!("head-{id}")
                    },
                    width,
                    height,
                    listeners: tx,
                    ui_infos: Some(ui_info_tx),
                },
            )?;
            consoles.push(FakeConsole {
                listeners: Mutex::new(listeners),
                ui_infos: Mutex::new(ui_infos),
                inputs: Mutex::new(inputs),
            });
        }
        let bus = builder
            .build()
            .context("connecting the fake QEMU to the bus")?;
        // No flags, as QEMU (G_BUS_NAME_OWNER_FLAGS_NONE): queue behind any owner.
        // (zbus's own request_name calls a queued place an error, and its
        // default flags are all set: ask the daemon, with no flag.)
        use zbus::fdo::RequestNameFlags::{AllowReplacement, DoNotQueue};
        let mut no_flags = DoNotQueue | AllowReplacement;
        no_flags.remove(no_flags);
        zbus::blocking::fdo::DBusProxy::new(&bus)?
            .request_name(QEMU_BUS_NAME.try_into()?, no_flags)
            .context("asking for org.qemu")?;
        Ok(FakeQemu {
            name: name.to_owned(),
            _bus: bus,
            consoles,
        })
    }

    /// The next `Keyboard`/`Mouse`/`MultiTouch` call console 0 received
    /// (and accepted), waiting at most `timeout`.
    pub fn next_input(&self, timeout: Duration) -> Option<InputCall> {
        self.next_input_on(0, timeout)
    }

    /// The next input call console `id` received, waiting at most `timeout`.
    pub fn next_input_on(&self, id: usize, timeout: Duration) -> Option<InputCall> {
        let calls = self.consoles[id].inputs.lock().unwrap();
        calls.recv_timeout(timeout).ok()
    }

    /// Every input call received within `quiet` of the previous one.
    pub fn inputs_until_quiet(&self, quiet: Duration) -> Vec<InputCall> {
        std::iter::from_fn(|| self.next_input(quiet)).collect()
    }

    /// Makes the guest's mouse absolute (a tablet) or relative, as QEMU
    /// does when the guest's pointer device changes: `IsAbsolute` changes
    /// and is signalled.
    pub fn set_absolute(&self, absolute: bool) -> anyhow::Result<()> {
        self.set_absolute_on(0, absolute)
    }

    /// From now on console 0 answers `MaxSlots` only after `delay`, and
    /// the whole fake QEMU stands still meanwhile (a hung QEMU).
    pub fn answer_max_slots_after(&self, delay: Duration) -> anyhow::Result<()> {
        let touch = self
            ._bus
            .object_server()
            .interface::<_, MultiTouchServer>(console_path(0))?;
        touch.get_mut().max_slots_after = delay;
        Ok(())
    }

    /// [`FakeQemu::set_absolute`] for console `id`.
    pub fn set_absolute_on(&self, id: usize, absolute: bool) -> anyhow::Result<()> {
        let mouse = self
            ._bus
            .object_server()
            .interface::<_, MouseServer>(console_path(id))?;
        mouse.get_mut().absolute = absolute;
        zbus::block_on(mouse.get().is_absolute_changed(mouse.signal_emitter()))?;
        Ok(())
    }

    /// The next `SetUIInfo` console 0 received, waiting at most `timeout`.
    pub fn next_ui_info(&self, timeout: Duration) -> Option<UiInfo> {
        self.next_ui_info_on(0, timeout)
    }

    /// The next `SetUIInfo` console `id` received, waiting at most `timeout`.
    pub fn next_ui_info_on(&self, id: usize, timeout: Duration) -> Option<UiInfo> {
        let calls = self.consoles[id].ui_infos.lock().unwrap();
        calls.recv_timeout(timeout).ok()
    }

    /// Waits for a sink's `RegisterListener` on console 0 and completes the
    /// p2p handshake on QEMU's side.
    pub fn accept_listener(&self, timeout: Duration) -> anyhow::Result<FakeListener> {
        self.accept_listener_on(0, timeout)
    }

    /// Waits for a sink's `RegisterListener` on console `id`.
    pub fn accept_listener_on(&self, id: usize, timeout: Duration) -> anyhow::Result<FakeListener> {
        let fd = self.consoles[id]
            .listeners
            .lock()
            .unwrap()
            .recv_timeout(timeout)
            .with_context(|| format!("no RegisterListener from the sink on console {id}"))?;
        FakeListener::serve(UnixStream::from(fd))
    }
}

/// A DMA-BUF (or any fd, for hostile tests) with its layout, as QEMU sends it.
#[derive(Debug, Clone, Copy)]
pub struct BufferDesc {
    pub width: u32,
    pub height: u32,
    pub stride: u32,
    pub fourcc: u32,
    pub modifier: u64,
}

impl BufferDesc {
    /// A packed XRGB8888 buffer of `width` x `height` (modifier LINEAR).
    pub fn xrgb(width: u32, height: u32) -> BufferDesc {
        BufferDesc {
            width,
            height,
            stride: width * 4,
            fourcc: drm_fourcc::DrmFourcc::Xrgb8888 as u32,
            modifier: 0,
        }
    }
}

/// One answered (or failed) `UpdateDMABUF`.
#[derive(Debug, Clone)]
pub struct Answer {
    pub sent: Instant,
    pub answered: Instant,
    /// When the answer came, on CLOCK_MONOTONIC (the clock of the sink's
    /// flip timestamps, in the same machine).
    pub answered_at: Duration,
    pub ok: bool,
}

impl Answer {
    pub fn latency(&self) -> Duration {
        self.answered - self.sent
    }
}

/// QEMU's side of one listener connection.
pub struct FakeListener {
    pub connection: Connection,
    pub answers: Vec<Answer>,
}

impl FakeListener {
    /// QEMU is the auth server on the listener socket.
    pub fn serve(socket: UnixStream) -> anyhow::Result<FakeListener> {
        let connection = zbus::blocking::connection::Builder::async_io_unix_stream(socket)
            .server(zbus::Guid::generate())?
            .p2p()
            // QEMU waits 1 s for an UpdateDMABUF answer, then gives up.
            .method_timeout(Duration::from_secs(1))
            .build()
            .context("p2p handshake as QEMU")?;
        Ok(FakeListener {
            connection,
            answers: Vec::new(),
        })
    }

    /// Returns once the sink has handled every message sent before: most
    /// listener methods expect no reply, and the sink serves its listener in
    /// order (`spawn = false`), so the answer to a `Peer.Ping` sent after
    /// them says they were all delivered.
    pub fn sync(&self) {
        self.connection
            .call_method(
                None::<()>,
                dbus_interfaces::LISTENER_PATH,
                Some("org.freedesktop.DBus.Peer"),
                "Ping",
                &(),
            )
            .expect("the sink answers Peer.Ping on its listener");
    }

    pub fn listener(&self) -> ListenerProxyBlocking<'_> {
        ListenerProxyBlocking::builder(&self.connection)
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .expect("a proxy on a p2p connection")
    }

    pub fn map_listener(&self) -> MapListenerProxyBlocking<'_> {
        MapListenerProxyBlocking::builder(&self.connection)
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .expect("a proxy on a p2p connection")
    }

    pub fn v2_listener(&self) -> ScanoutDmabuf2ListenerProxyBlocking<'_> {
        ScanoutDmabuf2ListenerProxyBlocking::builder(&self.connection)
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .expect("a proxy on a p2p connection")
    }

    /// The optional interfaces the sink offers (QEMU reads this once).
    pub fn interfaces(&self) -> anyhow::Result<Vec<String>> {
        Ok(self.listener().interfaces()?)
    }

    pub fn scanout_dmabuf(
        &self,
        fd: BorrowedFd<'_>,
        desc: BufferDesc,
        y0_top: bool,
    ) -> anyhow::Result<()> {
        self.listener().scanout_dmabuf(
            fd.into(),
            desc.width,
            desc.height,
            desc.stride,
            desc.fourcc,
            desc.modifier,
            y0_top,
        )?;
        Ok(())
    }

    /// A single-plane `ScanoutDMABUF2` of the rectangle (`x`, `y`, `width`,
    /// `height`) within a `desc`-sized backing buffer.
    #[allow(clippy::too_many_arguments)]
    pub fn scanout_dmabuf2(
        &self,
        fd: &impl AsFd,
        desc: BufferDesc,
        offset: u32,
        rect: (u32, u32, u32, u32),
        y0_top: bool,
    ) -> anyhow::Result<()> {
        self.scanout_dmabuf2_planes(&[(fd.as_fd(), offset)], desc, rect, y0_top)
    }

    /// `ScanoutDMABUF2` with several planes (fd and offset each; every
    /// plane with `desc.stride`), as many as given, whatever the format
    /// says: a hostile or mistaken QEMU.
    pub fn scanout_dmabuf2_planes(
        &self,
        planes: &[(BorrowedFd<'_>, u32)],
        desc: BufferDesc,
        rect: (u32, u32, u32, u32),
        y0_top: bool,
    ) -> anyhow::Result<()> {
        let (x, y, width, height) = rect;
        let fds: Vec<zbus::zvariant::Fd<'_>> = planes.iter().map(|&(fd, _)| fd.into()).collect();
        let offsets: Vec<u32> = planes.iter().map(|&(_, offset)| offset).collect();
        self.v2_listener().scanout_dmabuf2(
            &fds,
            x,
            y,
            width,
            height,
            &offsets,
            &vec![desc.stride; planes.len()],
            planes.len() as u32,
            desc.fourcc,
            desc.width,
            desc.height,
            desc.modifier,
            y0_top,
        )?;
        Ok(())
    }

    /// Sends `UpdateDMABUF` and waits for the answer as QEMU does (1 s),
    /// recording when it came.
    pub fn update_dmabuf(&mut self, x: i32, y: i32, w: i32, h: i32) -> &Answer {
        let sent = Instant::now();
        let ok = self.listener().update_dmabuf(x, y, w, h).is_ok();
        self.answers.push(Answer {
            sent,
            answered: Instant::now(),
            answered_at: sink::frame::monotonic_now(),
            ok,
        });
        self.answers.last().expect("just pushed")
    }
}
