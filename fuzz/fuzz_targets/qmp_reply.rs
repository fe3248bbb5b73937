//! One line from QEMU's QMP socket: JSON, then a reply, an error or an
//! event for the command in flight.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = sink::qmp::reply(message, "getfd");
    }
});
