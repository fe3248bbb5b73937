//! Processes the sink starts itself (for `demo`, and shared with the tests):
//! a private `dbus-daemon` and a QEMU with `-display dbus`, each stopped when
//! its guard drops, also on error paths.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("starting {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Failed(String),
}

/// A child process, terminated (SIGTERM, then SIGKILL) when dropped.
#[derive(Debug)]
pub struct Guard {
    name: String,
    child: Child,
}

impl Guard {
    pub fn spawn(name: &str, command: &mut Command) -> Result<Guard, ProcessError> {
        // SAFETY: only async-signal-safe calls between fork and exec: the
        // sink blocks SIGINT/SIGTERM for its own signal thread, and children
        // must not inherit that mask.
        unsafe {
            command.pre_exec(|| {
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
                Ok(())
            });
        }
        let child = command.spawn().map_err(|source| ProcessError::Spawn {
            program: format!("{:?}", command.get_program()),
            source,
        })?;
        Ok(Guard {
            name: name.to_owned(),
            child,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn stdout(&mut self) -> Option<std::process::ChildStdout> {
        self.child.stdout.take()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if !self.is_running() {
            return;
        }
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if !self.is_running() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        tracing::warn!("{} did not stop on SIGTERM: killing it", self.name);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A private session bus.
#[derive(Debug)]
pub struct PrivateBus {
    /// The address dbus-daemon printed (with its guid).
    pub address: String,
    /// `unix:path=…` alone: QEMU's `-display dbus,addr=` cannot take the
    /// commas of a full address.
    pub plain_address: String,
    _daemon: Guard,
}

impl PrivateBus {
    pub fn start(dir: &Path) -> Result<PrivateBus, ProcessError> {
        let socket = dir.join("bus");
        let mut daemon = Guard::spawn(
            "dbus-daemon",
            Command::new("dbus-daemon")
                .arg("--session")
                .arg("--nofork")
                .arg("--nosyslog")
                .arg("--print-address=1")
                .arg(format!("--address=unix:path={}", socket.display()))
                .stdin(Stdio::null())
                .stdout(Stdio::piped()),
        )?;
        let stdout = daemon.stdout().expect("stdout is piped");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .map_err(|e| ProcessError::Failed(format!("reading dbus-daemon's address: {e}")))?;
        let address = line.trim().to_owned();
        if address.is_empty() {
            return Err(ProcessError::Failed(
                "dbus-daemon printed no address".into(),
            ));
        }
        Ok(PrivateBus {
            address,
            plain_address: format!("unix:path={}", socket.display()),
            _daemon: daemon,
        })
    }
}

/// How to start a QEMU for the sink to attach to.
#[derive(Debug, Clone)]
pub struct QemuConfig {
    pub name: String,
    pub uuid: Option<String>,
    /// A bus address for `-display dbus,addr=`; `None` with `p2p` for a
    /// bus-less QEMU reached through QMP.
    pub bus: Option<String>,
    pub p2p: bool,
    pub qmp: PathBuf,
    pub extra_args: Vec<String>,
}

impl QemuConfig {
    /// SeaBIOS with no disk: a banner, then a static "No bootable device".
    pub fn seabios(name: &str, qmp: PathBuf) -> QemuConfig {
        QemuConfig {
            name: name.to_owned(),
            uuid: None,
            bus: None,
            p2p: false,
            qmp,
            extra_args: Vec::new(),
        }
    }
}

/// The QEMU binary: `$QEMU_SINK_QEMU` or `qemu-system-x86_64` on PATH.
pub fn qemu_binary() -> String {
    std::env::var("QEMU_SINK_QEMU").unwrap_or_else(|_| "qemu-system-x86_64".to_owned())
}

pub fn start_qemu(config: &QemuConfig) -> Result<Guard, ProcessError> {
    let mut display = String::from("dbus");
    if config.p2p {
        display.push_str(",p2p=on");
    } else if let Some(bus) = &config.bus {
        display.push_str(",addr=");
        display.push_str(bus);
    }
    let mut command = Command::new(qemu_binary());
    command
        // No NIC, floppy or CD: SeaBIOS reaches its static screen sooner.
        .args(["-accel", "tcg", "-m", "64", "-nodefaults", "-vga", "std"])
        .args(["-display", &display])
        .args(["-name", &config.name])
        .arg("-qmp")
        .arg(format!("unix:{},server=on,wait=off", config.qmp.display()))
        .args(["-serial", "none", "-monitor", "none", "-parallel", "none"])
        .args(&config.extra_args)
        .stdin(Stdio::null());
    if let Some(uuid) = &config.uuid {
        command.args(["-uuid", uuid]);
    }
    let mut guard = Guard::spawn("qemu", &mut command)?;
    // Ready when its QMP socket answers.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if std::os::unix::net::UnixStream::connect(&config.qmp).is_ok() {
            return Ok(guard);
        }
        if !guard.is_running() {
            return Err(ProcessError::Failed(format!(
                "{} exited at start-up (is -display dbus available? it needs qemu-system-modules-opengl)",
                qemu_binary()
            )));
        }
        if Instant::now() > deadline {
            return Err(ProcessError::Failed(
                "QEMU's QMP socket did not appear in 30 s".into(),
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
