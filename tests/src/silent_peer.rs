//! A bus client that owns (or queues for) `org.qemu` and never answers: no
//! object server, so every call to it is left without a reply, as a hung
//! QEMU (or a squatter) would leave it.

/// Connects to `bus` and requests `org.qemu`; keep the connection to keep
/// the name. Returns it with its unique name.
pub fn silent_peer(bus: &str) -> (zbus::blocking::Connection, String) {
    let connection = zbus::blocking::connection::Builder::address(bus)
        .and_then(|b| b.build())
        .expect("connecting the silent peer");
    let dbus = zbus::blocking::fdo::DBusProxy::new(&connection).expect("bus daemon proxy");
    dbus.request_name(
        dbus_interfaces::QEMU_BUS_NAME.try_into().unwrap(),
        zbus::fdo::RequestNameFlags::AllowReplacement.into(),
    )
    .expect("RequestName org.qemu");
    let name = connection.unique_name().expect("a unique name").to_string();
    (connection, name)
}
