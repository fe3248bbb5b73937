//! Finding a QEMU and attaching a listener to one of its consoles: on a bus
//! (`--bus`, default the session bus; `--vm` picks one of several QEMUs
//! queued on `org.qemu`), bus-less over QMP (`--qmp`, p2p), or through
//! libvirt (`--domain`: the domain's own bus, or its p2p socket).

use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use dbus_interfaces::proxies::{console_path, ConsoleProxy, ConsoleProxyBlocking, VmProxyBlocking};
use dbus_interfaces::QEMU_BUS_NAME;
use dbus_interfaces::{listener_socketpair, serve_listener, ListenerHandler, ListenerOptions};
use futures_lite::StreamExt;
use zbus::blocking::Connection;
use zbus::proxy::CacheProperties;

use crate::qmp::{Qmp, QmpError};
use crate::state::{Shared, StopReason};

#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error("no QEMU with -display dbus on the bus (nobody owns {QEMU_BUS_NAME})")]
    NoVm,
    #[error("no QEMU on the bus is named or has UUID {0:?}")]
    VmNotFound(String),
    #[error("QEMU has no console {0}")]
    NoConsole(u32),
    /// Whoever holds QEMU's name (or the p2p socket) took longer than
    /// [`CALL_TIMEOUT`] for one call: a hung QEMU, or not QEMU at all.
    #[error("{peer} did not answer {what} within {} s", CALL_TIMEOUT.as_secs())]
    NoAnswer { peer: String, what: String },
    #[error("{what}: {source}")]
    Dbus {
        what: String,
        #[source]
        source: Box<zbus::Error>,
    },
    #[error("attaching over QMP: {0}")]
    Qmp(#[from] QmpError),
    #[error("creating the listener socket: {0}")]
    Socket(#[from] std::io::Error),
    #[error(transparent)]
    Libvirt(#[from] crate::libvirt::LibvirtError),
}

/// The longest any one call to QEMU may take, and the p2p handshakes: a
/// peer that holds `org.qemu` and never answers must not hang the sink.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

fn dbus_err(what: impl Into<String>) -> impl FnOnce(zbus::Error) -> AttachError {
    let what = what.into();
    move |source| AttachError::Dbus {
        what,
        source: Box::new(source),
    }
}

fn is_timeout(err: &zbus::Error) -> bool {
    matches!(err, zbus::Error::InputOutput(e) if e.kind() == std::io::ErrorKind::TimedOut)
}

/// Like [`dbus_err`], but a call that timed out names the silent peer.
fn call_err(peer: &str, what: impl Into<String>) -> impl FnOnce(zbus::Error) -> AttachError {
    let (peer, what) = (peer.to_owned(), what.into());
    move |source| {
        if is_timeout(&source) {
            AttachError::NoAnswer { peer, what }
        } else {
            dbus_err(what)(source)
        }
    }
}

/// Runs a p2p handshake on `socket`, which is shut down if the handshake
/// takes longer than [`CALL_TIMEOUT`] (zbus has no handshake timeout of its
/// own): the handshake then fails, and this says who was silent.
fn bounded_handshake<T>(
    socket: &UnixStream,
    peer: &str,
    what: &str,
    handshake: impl FnOnce() -> zbus::Result<T>,
) -> Result<T, AttachError> {
    let watchdog = socket.try_clone()?;
    let (done, wait) = std::sync::mpsc::channel::<()>();
    let timer = std::thread::Builder::new()
        .name("handshake-timer".into())
        .spawn(move || {
            let late = matches!(
                wait.recv_timeout(CALL_TIMEOUT),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout)
            );
            late && watchdog.shutdown(std::net::Shutdown::Both).is_ok()
        })?;
    let result = handshake();
    drop(done);
    let timed_out = timer.join().unwrap_or(false);
    match result {
        Ok(_) | Err(_) if timed_out => Err(AttachError::NoAnswer {
            peer: peer.to_owned(),
            what: what.to_owned(),
        }),
        other => other.map_err(dbus_err(what)),
    }
}

/// Where to find QEMU.
#[derive(Debug, Clone, Default)]
pub struct AttachOptions {
    /// A D-Bus address; `None` for the session bus.
    pub bus: Option<String>,
    /// A QMP socket for a bus-less (p2p) attach.
    pub qmp: Option<PathBuf>,
    /// A VM's name or UUID, to pick one of several on the bus.
    pub vm: Option<String>,
    /// A libvirt domain's name or UUID: its display found through libvirt.
    pub domain: Option<String>,
    /// libvirt's connection URI for `domain` (default: libvirt's own).
    pub connect: Option<String>,
    pub console: u32,
    pub listener: ListenerOptions,
    /// Shares one p2p connection among everything that attaches to the
    /// same QEMU (several heads): see [`P2pShare`].
    pub p2p_share: Option<P2pShare>,
}

/// The one p2p connection to a QEMU (`--qmp`, or a p2p `--domain`), kept
/// for everything that attaches to it: QEMU keeps one p2p client and drops
/// the one before when another connects, so two heads connecting each
/// their own would take the display from each other in turn. Made at the
/// first attach; made again when it no longer answers (QEMU restarted).
#[derive(Clone, Default)]
pub struct P2pShare(Arc<std::sync::Mutex<Option<Control>>>);

impl std::fmt::Debug for P2pShare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("P2pShare")
    }
}

/// A way to talk to QEMU's display objects: a bus and the unique name of
/// the chosen QEMU, or a p2p connection to QEMU itself.
#[derive(Clone)]
pub struct Control {
    pub connection: Connection,
    /// The QEMU's unique bus name; `None` on a p2p connection.
    pub peer: Option<String>,
}

impl Control {
    pub fn connect(options: &AttachOptions) -> Result<Control, AttachError> {
        let p2p = options.qmp.is_some() || options.domain.is_some();
        let Some(share) = options.p2p_share.as_ref().filter(|_| p2p) else {
            return Control::connect_anew(options);
        };
        let mut kept = share.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(control) = kept.as_ref() {
            if control.answers() {
                return Ok(control.clone());
            }
            tracing::debug!("the p2p connection kept no longer answers: connecting again");
        }
        let control = Control::connect_anew(options)?;
        *kept = Some(control.clone());
        Ok(control)
    }

    /// Whether QEMU still answers on this connection (a property read).
    fn answers(&self) -> bool {
        self.vm()
            .and_then(|vm| vm.name().map_err(dbus_err("VM Name")))
            .is_ok()
    }

    fn connect_anew(options: &AttachOptions) -> Result<Control, AttachError> {
        if let Some(domain) = &options.domain {
            let libvirt = crate::libvirt::Libvirt::connect(options.connect.as_deref())?;
            return match libvirt.display(domain)? {
                crate::libvirt::DomainDisplay::P2p(fd) => {
                    drop(libvirt);
                    tracing::info!("domain {domain}: its display p2p, through libvirt");
                    Control::p2p(UnixStream::from(fd), format!("domain {domain} (p2p)"))
                }
                crate::libvirt::DomainDisplay::Bus { address } => {
                    tracing::info!("domain {domain}: its display on libvirt's bus {address}");
                    Control::on_bus(Some(&address), None).map_err(|err| match err {
                        AttachError::Dbus { what, source } => AttachError::Dbus {
                            what: format!(
                                "{what} (domain {domain}'s bus: libvirt lets root and its \
                                 QEMU user on it)"
                            ),
                            source,
                        },
                        other => other,
                    })
                }
            };
        }
        if let Some(path) = &options.qmp {
            let (ours, theirs) = UnixStream::pair()?;
            Qmp::connect(path)?.add_dbus_client(theirs.as_fd())?;
            drop(theirs);
            return Control::p2p(ours, format!("QEMU at {}", path.display()));
        }
        Control::on_bus(options.bus.as_deref(), options.vm.as_deref())
    }

    /// The control connection on a socket to QEMU's display itself.
    fn p2p(socket: UnixStream, peer: String) -> Result<Control, AttachError> {
        let watched = socket.try_clone()?;
        let connection = bounded_handshake(&watched, &peer, "the p2p handshake", || {
            zbus::blocking::connection::Builder::async_io_unix_stream(socket)
                .p2p()
                .method_timeout(CALL_TIMEOUT)
                .build()
        })?;
        Ok(Control {
            connection,
            peer: None,
        })
    }

    /// The control connection on the bus at `address` (the session bus if
    /// none), to the QEMU named or with the UUID `vm` (the first if none).
    fn on_bus(address: Option<&str>, vm: Option<&str>) -> Result<Control, AttachError> {
        let (builder, what) = match address {
            Some(address) => (
                zbus::blocking::connection::Builder::address(address),
                format!("connecting to the bus at {address}"),
            ),
            None => (
                zbus::blocking::connection::Builder::session(),
                "connecting to the session bus".to_owned(),
            ),
        };
        let connection = builder
            .and_then(|b| b.method_timeout(CALL_TIMEOUT).build())
            .map_err(dbus_err(what))?;
        let BusSurvey { vms, mut silent } = survey_bus(&connection)?;
        let found = match vm {
            None => vms.into_iter().next(),
            Some(wanted) => vms
                .into_iter()
                .find(|vm| vm.name == wanted || vm.uuid.eq_ignore_ascii_case(wanted)),
        };
        let vm_info = match found {
            Some(vm) => vm,
            // What was not found may be the peer that did not answer: say so.
            None if !silent.is_empty() => return Err(silent.swap_remove(0)),
            None => match vm {
                None => return Err(AttachError::NoVm),
                Some(wanted) => return Err(AttachError::VmNotFound(wanted.to_owned())),
            },
        };
        Ok(Control {
            connection,
            peer: vm_info.unique_name,
        })
    }

    pub fn peer_name(&self) -> &str {
        self.peer.as_deref().unwrap_or("QEMU (p2p)")
    }

    fn vm(&self) -> Result<VmProxyBlocking<'static>, AttachError> {
        // Read once, so no cache: it would add a match rule and a task.
        let builder =
            VmProxyBlocking::builder(&self.connection).cache_properties(CacheProperties::No);
        self.with_peer(builder)
            .build()
            .map_err(dbus_err("reaching QEMU's VM object"))
    }

    pub fn console(&self, id: u32) -> Result<ConsoleProxyBlocking<'static>, AttachError> {
        let builder = ConsoleProxyBlocking::builder(&self.connection)
            .cache_properties(CacheProperties::No)
            .path(console_path(id))
            .map_err(dbus_err("console path"))?;
        self.with_peer(builder)
            .build()
            .map_err(dbus_err(format!("reaching console {id}")))
    }

    fn with_peer<'a, T>(
        &self,
        builder: zbus::blocking::proxy::Builder<'a, T>,
    ) -> zbus::blocking::proxy::Builder<'a, T> {
        match &self.peer {
            Some(peer) => builder
                .destination(peer.clone())
                .expect("a unique name from the bus is a valid destination"),
            None => builder,
        }
    }

    /// Describes the VM behind this control connection.
    pub fn describe(&self) -> Result<VmInfo, AttachError> {
        let peer = self.peer_name();
        let read = |what: &str| call_err(peer, format!("reading {what}"));
        let vm = self.vm()?;
        let mut info = VmInfo {
            unique_name: self.peer.clone(),
            name: vm.name().map_err(read("VM Name"))?,
            uuid: vm.uuid().map_err(read("VM UUID"))?,
            consoles: Vec::new(),
        };
        for id in vm.console_ids().map_err(read("VM ConsoleIDs"))? {
            let console = self.console(id)?;
            info.consoles.push(ConsoleInfo {
                id,
                label: console.label().map_err(read("console Label"))?,
                kind: console.type_().map_err(read("console Type"))?,
                width: console.width().map_err(read("console Width"))?,
                height: console.height().map_err(read("console Height"))?,
            });
        }
        Ok(info)
    }
}

/// One QEMU on a bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmInfo {
    pub unique_name: Option<String>,
    pub name: String,
    pub uuid: String,
    pub consoles: Vec<ConsoleInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleInfo {
    pub id: u32,
    pub label: String,
    pub kind: String,
    pub width: u32,
    pub height: u32,
}

/// What answered on a bus, and what did not.
pub struct BusSurvey {
    /// Every QEMU queued on `org.qemu` that answered, the current owner first.
    pub vms: Vec<VmInfo>,
    /// Why each of the others was skipped (gone since the listing, or silent).
    pub silent: Vec<AttachError>,
}

/// Every holder of `org.qemu`, asked in queue order; each one's calls are
/// bounded by the connection's method timeout ([`CALL_TIMEOUT`] on ours).
pub fn survey_bus(connection: &Connection) -> Result<BusSurvey, AttachError> {
    let dbus = zbus::blocking::fdo::DBusProxy::new(connection)
        .map_err(dbus_err("reaching the bus daemon"))?;
    let mut survey = BusSurvey {
        vms: Vec::new(),
        silent: Vec::new(),
    };
    let owners = match dbus.list_queued_owners(QEMU_BUS_NAME.try_into().expect("valid name")) {
        Ok(owners) => owners,
        Err(zbus::fdo::Error::NameHasNoOwner(_)) => return Ok(survey),
        Err(err) => return Err(dbus_err("listing QEMUs on the bus")(err.into())),
    };
    for owner in owners {
        let control = Control {
            connection: connection.clone(),
            peer: Some(owner.to_string()),
        };
        match control.describe() {
            Ok(vm) => survey.vms.push(vm),
            // It may have exited since the listing, or never answer: skip
            // it, say so.
            Err(err) => {
                tracing::warn!("skipping {owner}: {err}");
                survey.silent.push(err);
            }
        }
    }
    Ok(survey)
}

/// Every QEMU queued on `org.qemu` that answers, the current owner first.
pub fn list_vms_on_bus(connection: &Connection) -> Result<Vec<VmInfo>, AttachError> {
    Ok(survey_bus(connection)?.vms)
}

/// Waits until a QEMU named `name` is on the bus (it owns or queues for
/// `org.qemu` a moment after its QMP socket appears).
pub fn wait_for_vm(
    connection: &Connection,
    name: &str,
    timeout: std::time::Duration,
) -> Result<VmInfo, AttachError> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(vm) = list_vms_on_bus(connection)?
            .into_iter()
            .find(|vm| vm.name == name)
        {
            return Ok(vm);
        }
        if std::time::Instant::now() > deadline {
            return Err(AttachError::VmNotFound(name.to_owned()));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A listener attached to a console: keep it alive to keep receiving.
/// Dropping it ends everything the attachment started: its watchers, and
/// with them the last users of both connections (and their executors).
pub struct Attached {
    pub control: Control,
    pub listener: Connection,
    /// Tasks on the connections' own executors; dropping one cancels it.
    _watchers: Vec<zbus::Task<()>>,
}

/// Registers a listener on console `options.console` and serves it on the
/// p2p socket; watches the console's size and the connection's end.
pub fn attach(
    options: &AttachOptions,
    handler: Box<dyn ListenerHandler>,
    shared: &Arc<Shared>,
) -> Result<Attached, AttachError> {
    let attached = attach_to(Control::connect(options)?, options, handler, shared)?;
    tracing::info!(
        "attached to console {} of {}",
        options.console,
        attached.control.peer_name()
    );
    Ok(attached)
}

/// [`attach`] over a control connection made already (another console of
/// the same QEMU: one p2p client at a time, so it is shared).
pub fn attach_to(
    control: Control,
    options: &AttachOptions,
    handler: Box<dyn ListenerHandler>,
    shared: &Arc<Shared>,
) -> Result<Attached, AttachError> {
    let peer = control.peer_name().to_owned();
    let console = control.console(options.console)?;
    // A console that does not exist fails here, with QEMU's own error.
    if let Err(err) = console.label() {
        return Err(match call_err(&peer, "reading console Label")(err) {
            silent @ AttachError::NoAnswer { .. } => silent,
            _ => AttachError::NoConsole(options.console),
        });
    }
    let (ours, theirs) = listener_socketpair()?;
    console
        .register_listener(theirs.as_fd().into())
        .map_err(call_err(&peer, "RegisterListener"))?;
    drop(theirs);
    // QEMU waits (its main loop blocked) for this handshake: do it at once.
    let socket = ours.try_clone()?;
    let listener = bounded_handshake(&socket, &peer, "the listener handshake", || {
        serve_listener(ours, handler, options.listener)
    })?;
    drop(socket);
    tracing::debug!(
        "listener registered on console {} of {peer}",
        options.console
    );
    let mut watchers = vec![watch_disconnect(&listener, shared.clone())];
    watchers.extend(watch_console_size(&console, shared.clone()));
    watchers.push(tell_monitor(&console, shared.clone()));
    Ok(Attached {
        control,
        listener,
        _watchers: watchers,
    })
}

/// QEMU announces some size changes only as the console's `Width`/`Height`
/// (VGA text mode): follow them, for as long as the attachment lives.
fn watch_console_size(
    console: &ConsoleProxyBlocking<'static>,
    shared: Arc<Shared>,
) -> Option<zbus::Task<()>> {
    let connection = console.inner().connection().inner().clone();
    let path = console.inner().path().to_owned();
    let destination = console.inner().destination().to_owned();
    let properties = zbus::fdo::PropertiesProxy::builder(&connection)
        .path(path)
        .and_then(|b| match destination.as_str() {
            "" => Ok(b),
            dest => b.destination(dest.to_owned()),
        })
        .map(|b| b.cache_properties(CacheProperties::No));
    let properties = match properties {
        Ok(p) => p,
        Err(err) => {
            tracing::warn!("cannot follow the console's size: {err}");
            return None;
        }
    };
    let watch = async move {
        let Ok(properties) = properties.build().await else {
            return;
        };
        // Subscribe first, then read the current size afresh, so that a
        // change between the two is not lost.
        let Ok(mut changes) = properties.receive_properties_changed().await else {
            return;
        };
        let interface = "org.qemu.Display1.Console";
        let read = |name: &'static str| {
            let properties = &properties;
            async move {
                let interface = interface.try_into().expect("valid name");
                properties
                    .get(interface, name)
                    .await
                    .ok()
                    .and_then(|v| u32::try_from(&*v).ok())
            }
        };
        let (mut width, mut height) = (read("Width").await, read("Height").await);
        apply_console_size(&shared, width, height);
        while let Some(change) = changes.next().await {
            let Ok(args) = change.args() else { continue };
            let get = |name: &str| {
                args.changed_properties()
                    .get(name)
                    .and_then(|v| u32::try_from(v).ok())
            };
            width = get("Width").or(width);
            height = get("Height").or(height);
            apply_console_size(&shared, width, height);
        }
    };
    Some(connection.executor().spawn(watch, "console-size"))
}

/// Tells the console the monitor it is shown on (`SetUIInfo`), at attach
/// and whenever the output lights another mode or panel, for as long as the
/// attachment lives. A console that cannot take it (std VGA: QEMU answers
/// `Unsupported`) is said so once and left at its own size.
fn tell_monitor(console: &ConsoleProxyBlocking<'static>, shared: Arc<Shared>) -> zbus::Task<()> {
    let connection = console.inner().connection().inner().clone();
    // The same object through the same connection, as an async proxy.
    let console = ConsoleProxy::from(console.inner().inner().clone());
    let tell = async move {
        let mut told = None;
        loop {
            let changed = shared.monitor_changed();
            let moved = shared.layout_changed();
            let at = shared.monitor_position();
            if let Some((serial, m)) = shared
                .monitor()
                .filter(|&(serial, _)| told != Some((serial, at)))
            {
                told = Some((serial, at));
                let (w, h, w_mm, h_mm) = (m.width, m.height, m.width_mm, m.height_mm);
                let place = match at {
                    (0, 0) => String::new(),
                    (x, y) => format!(" at ({x}, {y})"),
                };
                match console.set_ui_info(w_mm, h_mm, at.0, at.1, w, h).await {
                    Ok(()) => tracing::info!(
                        "told the guest its monitor: {w}x{h}{place}, {w_mm}x{h_mm} mm (SetUIInfo)"
                    ),
                    Err(zbus::Error::MethodError(name, message, _))
                        if name.ends_with("Unsupported") || name.ends_with("NotSupported") =>
                    {
                        tracing::info!(
                            "this console cannot be sized to the monitor ({}): the guest keeps its own size",
                            message.as_deref().unwrap_or(name.as_str())
                        );
                        return;
                    }
                    Err(err) => tracing::warn!("SetUIInfo {w}x{h}: {err}"),
                }
            }
            match moved {
                Some(moved) => futures_lite::future::or(changed, moved).await,
                None => changed.await,
            }
        }
    };
    connection.executor().spawn(tell, "tell-monitor")
}

fn apply_console_size(shared: &Shared, width: Option<u32>, height: Option<u32>) {
    if let (Some(w), Some(h)) = (width, height) {
        if dbus_interfaces::validate::check_size(w, h).is_ok() {
            let mut painter = shared.painter();
            if painter.set_console_size(w, h) {
                painter.prepare();
                shared.modify(|s| {
                    painter.publish(&mut s.surface);
                    s.generation += 1;
                    s.surface_changes += 1;
                });
            }
        }
    }
}

/// Stops the sink's wait when QEMU closes the listener connection.
fn watch_disconnect(listener: &Connection, shared: Arc<Shared>) -> zbus::Task<()> {
    let connection = listener.inner().clone();
    let executor = connection.executor().clone();
    executor.spawn(
        async move {
            connection.closed().await;
            tracing::info!("QEMU closed the listener connection");
            shared.stop(StopReason::Disconnected);
        },
        "listener-closed",
    )
}
