//! `qemu-sink demo`: the main job on an embedded default, for someone with no
//! VM at hand. A private dbus-daemon and a QEMU (SeaBIOS, no disk) are
//! started, attached to, captured (or, with `--display`, shown on a
//! monitor) for a few seconds, and stopped.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::attach::{attach, wait_for_vm, AttachError, AttachOptions};
use crate::output::display::{DisplaySummary, OutputThread};
use crate::output::headless::{run_capture, CaptureOptions, CaptureSummary};
use crate::source::dbus::DbusSource;
use crate::state::Shared;
use crate::vm::{start_qemu, PrivateBus, ProcessError, QemuConfig};

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error(transparent)]
    Process(#[from] ProcessError),
    #[error(transparent)]
    Attach(#[from] AttachError),
    #[error(transparent)]
    Capture(#[from] crate::output::headless::HeadlessError),
    #[error(transparent)]
    Display(#[from] crate::output::display::DisplayError),
    #[error("working directory: {0}")]
    Io(#[from] std::io::Error),
}

pub const DEMO_VM_NAME: &str = "qemu-sink-demo";

/// Runs the demo for `duration`; every process it started is stopped when
/// it returns (also on Ctrl-C, which ends the capture early).
pub fn run_demo(
    shared: Arc<Shared>,
    out: PathBuf,
    duration: Duration,
) -> Result<CaptureSummary, DemoError> {
    with_demo_vm(&shared, || {
        Ok(run_capture(
            &shared,
            &CaptureOptions {
                timeout: Some(duration),
                ..CaptureOptions::new(out)
            },
        )?)
    })
}

/// The demo on a monitor: `display` (already lit) shows the demo VM for
/// its `--timeout`, then everything started is stopped and the CRTC is
/// given back.
pub fn run_display_demo(
    shared: Arc<Shared>,
    display: OutputThread,
) -> Result<DisplaySummary, DemoError> {
    let stopped = with_demo_vm(&shared, || Ok(display.run()?))?;
    Ok(display.finish(stopped)?)
}

/// Starts a private bus and the demo QEMU, attaches the D-Bus source, runs
/// `output`, and stops them again.
fn with_demo_vm<R>(
    shared: &Arc<Shared>,
    output: impl FnOnce() -> Result<R, DemoError>,
) -> Result<R, DemoError> {
    let dir = std::env::temp_dir().join(format!("qemu-sink-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = (|| {
        let bus = PrivateBus::start(&dir)?;
        let mut config = QemuConfig::seabios(DEMO_VM_NAME, dir.join("qmp.sock"));
        config.bus = Some(bus.plain_address.clone());
        tracing::info!("starting {} on a private bus", crate::vm::qemu_binary());
        let _qemu = start_qemu(&config)?;
        let options = AttachOptions {
            bus: Some(bus.address.clone()),
            vm: Some(DEMO_VM_NAME.to_owned()),
            ..AttachOptions::default()
        };
        let connection = zbus::blocking::connection::Builder::address(bus.address.as_str())
            .and_then(|b| b.build())
            .map_err(|source| AttachError::Dbus {
                what: "connecting to the private bus".into(),
                source: Box::new(source),
            })?;
        wait_for_vm(&connection, DEMO_VM_NAME, Duration::from_secs(30))?;
        let _attached = attach(&options, Box::new(DbusSource::new(shared.clone())), shared)?;
        output()
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}
