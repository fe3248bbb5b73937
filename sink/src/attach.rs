//! Finding a QEMU and attaching a listener to one of its consoles: on a bus
//! (`--bus`, default the session bus; `--vm` picks one of several QEMUs
//! queued on `org.qemu`), or bus-less over QMP (`--qmp`, p2p).

use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::Arc;

use dbus_interfaces::proxies::{console_path, ConsoleProxyBlocking, VmProxyBlocking};
use dbus_interfaces::QEMU_BUS_NAME;
use dbus_interfaces::{listener_socketpair, serve_listener, ListenerHandler, ListenerOptions};
use zbus::blocking::Connection;

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
}

fn dbus_err(what: impl Into<String>) -> impl FnOnce(zbus::Error) -> AttachError {
    let what = what.into();
    move |source| AttachError::Dbus {
        what,
        source: Box::new(source),
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
    pub console: u32,
    pub listener: ListenerOptions,
}

/// A way to talk to QEMU's display objects: a bus and the unique name of
/// the chosen QEMU, or a p2p connection to QEMU itself.
pub struct Control {
    pub connection: Connection,
    /// The QEMU's unique bus name; `None` on a p2p connection.
    pub peer: Option<String>,
}

impl Control {
    pub fn connect(options: &AttachOptions) -> Result<Control, AttachError> {
        if let Some(path) = &options.qmp {
            let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
            Qmp::connect(path)?.add_dbus_client(theirs.as_fd())?;
            drop(theirs);
            let connection = zbus::blocking::connection::Builder::async_io_unix_stream(ours)
                .p2p()
                .build()
                .map_err(dbus_err("p2p handshake with QEMU"))?;
            return Ok(Control {
                connection,
                peer: None,
            });
        }
        let connection = match &options.bus {
            Some(address) => zbus::blocking::connection::Builder::address(address.as_str())
                .and_then(|b| b.build())
                .map_err(dbus_err(format!("connecting to the bus at {address}")))?,
            None => Connection::session().map_err(dbus_err("connecting to the session bus"))?,
        };
        let vms = list_vms_on_bus(&connection)?;
        let vm = match &options.vm {
            None => vms.into_iter().next().ok_or(AttachError::NoVm)?,
            Some(wanted) => vms
                .into_iter()
                .find(|vm| &vm.name == wanted || vm.uuid.eq_ignore_ascii_case(wanted))
                .ok_or_else(|| AttachError::VmNotFound(wanted.clone()))?,
        };
        Ok(Control {
            connection,
            peer: vm.unique_name,
        })
    }

    fn vm(&self) -> Result<VmProxyBlocking<'static>, AttachError> {
        let builder = VmProxyBlocking::builder(&self.connection);
        self.with_peer(builder)
            .build()
            .map_err(dbus_err("reaching QEMU's VM object"))
    }

    pub fn console(&self, id: u32) -> Result<ConsoleProxyBlocking<'static>, AttachError> {
        let builder = ConsoleProxyBlocking::builder(&self.connection)
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
        fn read<T>(what: &str, r: zbus::Result<T>) -> Result<T, AttachError> {
            r.map_err(dbus_err(format!("reading {what}")))
        }
        let vm = self.vm()?;
        let mut info = VmInfo {
            unique_name: self.peer.clone(),
            name: read("VM Name", vm.name())?,
            uuid: read("VM UUID", vm.uuid())?,
            consoles: Vec::new(),
        };
        for id in read("VM ConsoleIDs", vm.console_ids())? {
            let console = self.console(id)?;
            info.consoles.push(ConsoleInfo {
                id,
                label: read("console Label", console.label())?,
                kind: read("console Type", console.type_())?,
                width: read("console Width", console.width())?,
                height: read("console Height", console.height())?,
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

/// Every QEMU queued on `org.qemu`, the current owner first.
pub fn list_vms_on_bus(connection: &Connection) -> Result<Vec<VmInfo>, AttachError> {
    let dbus = zbus::blocking::fdo::DBusProxy::new(connection)
        .map_err(dbus_err("reaching the bus daemon"))?;
    let owners = match dbus.list_queued_owners(QEMU_BUS_NAME.try_into().expect("valid name")) {
        Ok(owners) => owners,
        Err(zbus::fdo::Error::NameHasNoOwner(_)) => return Ok(Vec::new()),
        Err(err) => return Err(dbus_err("listing QEMUs on the bus")(err.into())),
    };
    let mut vms = Vec::new();
    for owner in owners {
        let control = Control {
            connection: connection.clone(),
            peer: Some(owner.to_string()),
        };
        match control.describe() {
            Ok(vm) => vms.push(vm),
            // It may have exited since the listing: skip it, say so.
            Err(err) => tracing::warn!("skipping {owner}: {err}"),
        }
    }
    Ok(vms)
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
pub struct Attached {
    pub control: Control,
    pub listener: Connection,
}

/// Registers a listener on console `options.console` and serves it on the
/// p2p socket; watches the console's size and the connection's end.
pub fn attach(
    options: &AttachOptions,
    handler: Box<dyn ListenerHandler>,
    shared: &Arc<Shared>,
) -> Result<Attached, AttachError> {
    let control = Control::connect(options)?;
    let console = control.console(options.console)?;
    // A console that does not exist fails here, with QEMU's own error.
    console
        .label()
        .map_err(|_| AttachError::NoConsole(options.console))?;
    let (ours, theirs) = listener_socketpair()?;
    console
        .register_listener(theirs.as_fd().into())
        .map_err(dbus_err("RegisterListener"))?;
    drop(theirs);
    // QEMU waits (its main loop blocked) for this handshake: do it at once.
    let listener =
        serve_listener(ours, handler, options.listener).map_err(dbus_err("listener handshake"))?;
    tracing::info!(
        "attached to console {} of {}",
        options.console,
        control.peer.as_deref().unwrap_or("QEMU (p2p)")
    );
    watch_console_size(console, shared.clone());
    watch_disconnect(listener.clone(), shared.clone());
    Ok(Attached { control, listener })
}

/// QEMU announces some size changes only as the console's `Width`/`Height`
/// (VGA text mode): follow them.
fn watch_console_size(console: ConsoleProxyBlocking<'static>, shared: Arc<Shared>) {
    let path = console.inner().path().to_owned();
    let properties = zbus::blocking::fdo::PropertiesProxy::builder(console.inner().connection())
        .path(path)
        .and_then(|b| match console.inner().destination().as_str() {
            "" => Ok(b),
            dest => b.destination(dest.to_owned()),
        })
        .and_then(|b| b.build());
    let properties = match properties {
        Ok(p) => p,
        Err(err) => {
            tracing::warn!("cannot follow the console's size: {err}");
            return;
        }
    };
    std::thread::Builder::new()
        .name("console-size".into())
        .spawn(move || {
            // Subscribe first, then read the current size afresh, so that a
            // change between the two is not lost.
            let Ok(changes) = properties.receive_properties_changed() else {
                return;
            };
            let read = |name: &str| {
                let interface = "org.qemu.Display1.Console".try_into().expect("valid name");
                properties
                    .get(interface, name)
                    .ok()
                    .and_then(|v| u32::try_from(&*v).ok())
            };
            let (mut width, mut height) = (read("Width"), read("Height"));
            apply_console_size(&shared, width, height);
            for change in changes {
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
        })
        .expect("spawning a thread");
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

fn watch_disconnect(listener: Connection, shared: Arc<Shared>) {
    std::thread::Builder::new()
        .name("listener-closed".into())
        .spawn(move || {
            listener.closed();
            tracing::info!("QEMU closed the listener connection");
            shared.stop(StopReason::Disconnected);
        })
        .expect("spawning a thread");
}
