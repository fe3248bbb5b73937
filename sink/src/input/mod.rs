//! Input: the keyboards, mice, touchpads and touchscreens of the machine
//! the monitor is on, forwarded to the guest through QEMU's console
//! (`org.qemu.Display1.Keyboard` and `Mouse`).
//!
//! One thread of its own reads every device (evdev, `poll`), follows
//! devices plugged in later (inotify on `/dev/input`), translates their
//! events ([`translate`]) and sends them to the console of the QEMU
//! attached at the time ([`guest`]), without waiting for QEMU's answers:
//! input never blocks the output thread or the listener, and neither blocks
//! input. The pointer's position maps back through where the display shows
//! the guest (`Shared::placement`).
//!
//! With several heads, each is a screen of its own console, the monitors
//! side by side in head order (as the guest's desktop has them): the
//! pointer crosses from one to the next at their edges, and the keys, the
//! buttons and the touches go to the console whose monitor has the
//! pointer. What is held down stays with the console it was pressed on
//! (released there when the pointer leaves).
//!
//! Devices are grabbed (`EVIOCGRAB`) while the sink runs, so that keys
//! reach the guest and not the VT underneath; Ctrl+Alt+G gives them back
//! and takes them again.

pub mod evdev;
pub mod guest;
pub mod keymap;
pub mod pointer;
pub mod translate;

use std::collections::HashSet;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

use crate::frame::monotonic_now;
use crate::latency::{InputLatency, StageFigures};
use crate::seat::{Seat, SeatLease};
use crate::state::{Placement, Shared};
use evdev::{Capabilities, EVENT_SIZE};
use guest::{Dbus, Guest, Nobody, Target};
use translate::{Action, Device, Forwarder};

/// Where devices appear.
pub const INPUT_DIR: &str = "/dev/input";
/// How often the devices are looked for again without an inotify event
/// (a missed event, a listed device that is not there yet).
const RESCAN: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Default)]
pub struct InputOptions {
    /// Only these devices (paths of evdev nodes, or links to them such as
    /// `/dev/input/by-id/…`); empty: every keyboard, mouse, touchpad and
    /// touchscreen under `/dev/input`.
    pub devices: Vec<PathBuf>,
    /// Open the devices through the seat (and give them up while it is
    /// switched away); Ctrl+Alt+Fn switches VTs through it.
    pub seat: Option<Seat>,
}

/// A screen's console and its head's state; `None` while its QEMU is away.
type ScreenTarget = Option<(Target, Arc<Shared>)>;

#[derive(Default)]
struct Control {
    quit: bool,
    /// Per screen (a head; left to right): the console its input goes to
    /// and the head's state (where its monitor shows the guest), with a
    /// count of that screen's changes.
    screens: Vec<(u64, ScreenTarget)>,
    serial: u64,
}

/// The input thread; stops (giving every device back) when dropped.
pub struct InputThread {
    latency: Arc<Mutex<InputLatency>>,
    control: Arc<Mutex<Control>>,
    wake: Arc<EventFd>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl InputThread {
    pub fn start(options: InputOptions) -> std::io::Result<InputThread> {
        let wake = Arc::new(EventFd::from_value_and_flags(
            0,
            EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK,
        )?);
        let control = Arc::new(Mutex::new(Control::default()));
        if let Some(seat) = &options.seat {
            // The seat switched away or back: devices to give up or open.
            let wake = wake.clone();
            seat.watch(Arc::new(move || {
                let _ = wake.write(1);
            }));
        }
        let latency = Arc::new(Mutex::new(InputLatency::default()));
        let reader = Reader::new(options, control.clone(), wake.clone(), latency.clone());
        let thread = std::thread::Builder::new()
            .name("input".into())
            .spawn(move || reader.run())?;
        Ok(InputThread {
            latency,
            control,
            wake,
            thread: Some(thread),
        })
    }

    fn steer(&self, f: impl FnOnce(&mut Control)) {
        f(&mut self.control.lock().unwrap_or_else(|p| p.into_inner()));
        let _ = self.wake.write(1);
    }

    /// Screen `screen`'s input goes to `target`'s console from now on;
    /// `shared` is its head's state (where its monitor shows the guest).
    pub fn attach(&self, screen: usize, target: Target, shared: Arc<Shared>) {
        self.set_screen(screen, Some((target, shared)));
    }

    fn set_screen(&self, screen: usize, to: ScreenTarget) {
        self.steer(|c| {
            if c.screens.len() <= screen {
                c.screens.resize_with(screen + 1, Default::default);
            }
            let (changes, at) = &mut c.screens[screen];
            *changes += 1;
            *at = to;
            c.serial += 1;
        });
    }

    /// Input event → D-Bus call so far; `None` before anything was sent.
    pub fn latency(&self) -> Option<StageFigures> {
        self.latency
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .figures()
    }

    /// Screen `screen`'s QEMU went away: its input goes nowhere until the
    /// next attach.
    pub fn detach(&self, screen: usize) {
        self.set_screen(screen, None);
    }
}

impl Drop for InputThread {
    fn drop(&mut self) {
        self.steer(|c| c.quit = true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One open device.
struct Open {
    path: PathBuf,
    rdev: u64,
    /// The seat's hold on it, given back before the fd is closed.
    _lease: Option<SeatLease>,
    fd: OwnedFd,
    device: Device,
}

/// A head's console and monitor, as input sees them.
struct Screen {
    console: u32,
    shared: Arc<Shared>,
    /// Which of the main thread's changes of this screen it is.
    change: u64,
    /// `None`: its console's keyboard and mouse are not reached yet (or
    /// cannot be).
    guest: Option<Dbus>,
}

/// A console's proxies, made on a thread of their own: making them reads
/// `IsAbsolute` and `MaxSlots` from QEMU, and a QEMU slow to answer must
/// not keep the input thread from reading the devices it holds grabbed
/// (Ctrl+Alt+G, Ctrl+Alt+Fn, the other heads).
struct Made {
    screen: usize,
    change: u64,
    console: u32,
    guest: zbus::Result<Dbus>,
}

/// Screen `focus`'s guest (or nobody) and where its monitor shows it.
fn focused<'a>(
    screens: &'a mut [Option<Screen>],
    focus: usize,
    nobody: &'a mut Nobody,
) -> (&'a mut dyn Guest, Option<Placement>) {
    match screens.get_mut(focus).and_then(Option::as_mut) {
        Some(Screen {
            shared,
            guest: Some(guest),
            ..
        }) => (guest, shared.placement()),
        Some(Screen { shared, .. }) => (nobody, shared.placement()),
        None => (nobody, None),
    }
}

struct Reader {
    options: InputOptions,
    control: Arc<Mutex<Control>>,
    wake: Arc<EventFd>,
    inotify: Option<Inotify>,
    open: Vec<Open>,
    /// Device numbers looked at and left alone (not input devices).
    ignored: HashSet<u64>,
    /// Paths already warned about (could not open).
    warned: HashSet<PathBuf>,
    forwarder: Forwarder,
    /// By head, left to right, as the main thread last set them; which
    /// change of each was taken.
    screens: Vec<Option<Screen>>,
    screen_changes: Vec<u64>,
    /// The screen with the pointer (and the keys).
    focus: usize,
    nobody: Nobody,
    made_tx: std::sync::mpsc::Sender<Made>,
    made: std::sync::mpsc::Receiver<Made>,
    serial: u64,
    grabbed: bool,
    /// The seat's enable count the devices were opened at.
    seat_generation: u64,
    latency: Arc<Mutex<InputLatency>>,
}

impl Reader {
    fn new(
        options: InputOptions,
        control: Arc<Mutex<Control>>,
        wake: Arc<EventFd>,
        latency: Arc<Mutex<InputLatency>>,
    ) -> Reader {
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
            .and_then(|i| {
                i.add_watch(
                    INPUT_DIR,
                    AddWatchFlags::IN_CREATE | AddWatchFlags::IN_ATTRIB | AddWatchFlags::IN_DELETE,
                )?;
                Ok(i)
            })
            .map_err(|err| {
                tracing::warn!(
                    "input: cannot watch {INPUT_DIR} ({err}): new devices are looked for every {} s",
                    RESCAN.as_secs()
                )
            })
            .ok();
        let (made_tx, made) = std::sync::mpsc::channel();
        Reader {
            options,
            control,
            wake,
            inotify,
            open: Vec::new(),
            ignored: HashSet::new(),
            warned: HashSet::new(),
            forwarder: Forwarder::default(),
            screens: Vec::new(),
            screen_changes: Vec::new(),
            focus: 0,
            nobody: Nobody,
            made_tx,
            made,
            serial: 0,
            grabbed: true,
            seat_generation: 0,
            latency,
        }
    }

    fn run(mut self) {
        self.scan();
        let mut pollfds: Vec<libc::pollfd> = Vec::with_capacity(16);
        let mut buf = [0u8; EVENT_SIZE * 64];
        let mut next_scan = Instant::now() + RESCAN;
        loop {
            pollfds.clear();
            let entry = |fd: i32| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            pollfds.push(entry(self.wake.as_fd().as_raw_fd()));
            pollfds.push(entry(
                self.inotify.as_ref().map_or(-1, |i| i.as_fd().as_raw_fd()),
            ));
            pollfds.extend(self.open.iter().map(|o| entry(o.fd.as_raw_fd())));
            let timeout = next_scan.saturating_duration_since(Instant::now());
            // SAFETY: `pollfds` is a live array of `pollfds.len()` entries;
            // each fd stays open across the call (negative ones are skipped).
            let ready = unsafe {
                libc::poll(
                    pollfds.as_mut_ptr(),
                    pollfds.len() as libc::nfds_t,
                    timeout.as_millis().min(i32::MAX as u128) as i32,
                )
            };
            if ready < 0 {
                let err = std::io::Error::last_os_error();
                if err.kind() != std::io::ErrorKind::Interrupted {
                    tracing::warn!("input: poll: {err}; input stops");
                    break;
                }
                continue;
            }
            let mut rescan = Instant::now() >= next_scan;
            if pollfds[0].revents != 0 {
                let _ = self.wake.read();
                if self.steered() {
                    break;
                }
                self.take_made();
                if let Some(seat) = &self.options.seat {
                    // Ours again: the devices revoked while away are
                    // opened afresh now, not at the next look.
                    if seat.is_enabled() && seat.generation() != self.seat_generation {
                        rescan = true;
                    }
                }
            }
            if pollfds[1].revents != 0 {
                if let Some(inotify) = &self.inotify {
                    if let Ok(events) = inotify.read_events() {
                        if events
                            .iter()
                            .any(|e| e.mask.contains(AddWatchFlags::IN_DELETE))
                        {
                            self.ignored.clear();
                        }
                    }
                }
                rescan = true;
            }
            // Devices, newest index first so that a removal keeps the
            // earlier indices valid.
            for i in (0..self.open.len()).rev() {
                let revents = pollfds[i + 2].revents;
                if revents == 0 {
                    continue;
                }
                if !self.read_device(i, &mut buf) {
                    self.close(i);
                }
            }
            if rescan {
                self.scan();
                next_scan = Instant::now() + RESCAN;
            }
        }
        self.give_back_everything();
    }

    /// Takes the main thread's news; true to stop.
    fn steered(&mut self) -> bool {
        let (quit, serial, screens) = {
            let c = self.control.lock().unwrap_or_else(|p| p.into_inner());
            let changed: Vec<(usize, u64, ScreenTarget)> = if c.serial != self.serial {
                c.screens
                    .iter()
                    .enumerate()
                    .filter(|(i, (changes, _))| self.screen_changes.get(*i) != Some(changes))
                    .map(|(i, (changes, at))| (i, *changes, at.clone()))
                    .collect()
            } else {
                Vec::new()
            };
            self.screen_changes = c.screens.iter().map(|(changes, _)| *changes).collect();
            (c.quit, c.serial, changed)
        };
        if quit {
            return true;
        }
        self.serial = serial;
        for (i, change, at) in screens {
            if i == self.focus {
                // What the old console holds is released there.
                self.release_everything();
            }
            if self.screens.len() <= i {
                self.screens.resize_with(i + 1, || None);
            }
            self.screens[i] = at.map(|(target, shared)| {
                self.make_guest(i, change, target.clone());
                Screen {
                    console: target.console,
                    shared,
                    change,
                    guest: None,
                }
            });
        }
        false
    }

    /// Makes screen `screen`'s proxies on a thread of its own; the result
    /// comes back through `made` (see [`Made`]).
    fn make_guest(&self, screen: usize, change: u64, target: Target) {
        let (tx, wake) = (self.made_tx.clone(), self.wake.clone());
        let console = target.console;
        let spawned = std::thread::Builder::new()
            .name("input-console".into())
            .spawn(move || {
                let guest = Dbus::new(&target);
                if tx
                    .send(Made {
                        screen,
                        change,
                        console,
                        guest,
                    })
                    .is_ok()
                {
                    let _ = wake.write(1);
                }
            });
        if let Err(err) = spawned {
            tracing::warn!("input: console {console}: no thread to reach it: {err}");
        }
    }

    /// Takes the proxies made meanwhile, for the screens still as they
    /// were when they were asked for.
    fn take_made(&mut self) {
        while let Ok(made) = self.made.try_recv() {
            let screen = self.screens.get_mut(made.screen).and_then(Option::as_mut);
            let Some(screen) = screen.filter(|s| s.change == made.change) else {
                continue;
            };
            match made.guest {
                Ok(guest) => {
                    tracing::info!("input: sending to console {}", made.console);
                    screen.guest = Some(guest);
                }
                Err(err) => tracing::warn!(
                    "input: cannot reach console {}'s keyboard and mouse: {err}",
                    made.console
                ),
            }
        }
    }

    /// The pointer went `spill` pixels past the left (negative) or right
    /// edge of its monitor: onto the next monitor that way, if a head is
    /// there and shows its guest; the keys follow it.
    fn cross(&mut self, spill: i64) {
        let next = if spill > 0 {
            self.focus + 1
        } else {
            match self.focus.checked_sub(1) {
                Some(previous) => previous,
                None => return,
            }
        };
        let Some((to, console)) = self
            .screens
            .get(next)
            .and_then(Option::as_ref)
            .and_then(|s| Some((s.shared.placement()?, s.console)))
        else {
            return;
        };
        let (_, from) = focused(&mut self.screens, self.focus, &mut self.nobody);
        let from_height = from.map_or(to.mode.1, |p| p.mode.1);
        let (_, y) = self.forwarder.pointer.at(from.map_or(to.mode, |p| p.mode));
        self.release_everything();
        self.focus = next;
        // The same height up the monitor; the first pixel in from the edge.
        let y = y * i64::from(to.mode.1) / i64::from(from_height.max(1));
        let x = if spill > 0 {
            spill - 1
        } else {
            i64::from(to.mode.0) + spill
        };
        let (guest, _) = focused(&mut self.screens, self.focus, &mut self.nobody);
        self.forwarder.place_pointer(guest, to, (x, y));
        tracing::debug!("input: the pointer is on console {console}'s monitor");
    }

    /// Reads what device `i` has; false when it is gone.
    fn read_device(&mut self, i: usize, buf: &mut [u8]) -> bool {
        loop {
            let n = match evdev::read_events(&self.open[i].fd, buf) {
                Ok(0) => return true,
                Ok(n) => n,
                Err(err) => {
                    let o = &self.open[i];
                    match &self.options.seat {
                        Some(seat) if !seat.is_enabled() => tracing::debug!(
                            "input: {} taken back by the seat ({err})",
                            o.path.display()
                        ),
                        _ => tracing::info!("input: {} went away ({err})", o.path.display()),
                    }
                    return false;
                }
            };
            for chunk in buf[..n * EVENT_SIZE].chunks_exact(EVENT_SIZE) {
                let event = evdev::Event::parse(chunk.try_into().expect("EVENT_SIZE bytes"));
                let (guest, placement) = focused(&mut self.screens, self.focus, &mut self.nobody);
                let calls_before = guest.calls();
                let action =
                    self.forwarder
                        .event(&mut self.open[i].device, event, guest, placement);
                if guest.calls() != calls_before {
                    // A frame went out: from the kernel's stamp on it to
                    // its last call written.
                    let d = monotonic_now().saturating_sub(event.time());
                    self.latency
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .record(d);
                }
                match action {
                    Action::None => {}
                    Action::ToggleGrab => self.toggle_grab(),
                    Action::SwitchVt(vt) => self.switch_vt(vt),
                    Action::Resync => self.resync(i),
                }
                let spill = self.forwarder.pointer.take_spill();
                if spill != 0 {
                    self.cross(spill);
                }
            }
        }
    }

    /// Device `i` lost events: nothing it no longer holds stays held in
    /// the guest.
    fn resync(&mut self, i: usize) {
        let mut down = [0u8; evdev::KEY_CNT / 8];
        let o = &mut self.open[i];
        tracing::debug!("input: {} lost events (SYN_DROPPED)", o.path.display());
        if let Err(err) = evdev::keys_down(o.fd.as_fd(), &mut down) {
            tracing::debug!("input: reading {}'s keys: {err}", o.path.display());
            return;
        }
        let (guest, _) = focused(&mut self.screens, self.focus, &mut self.nobody);
        self.forwarder.resync(&mut o.device, &down, guest);
    }

    fn close(&mut self, i: usize) {
        let mut gone = self.open.swap_remove(i);
        let (guest, _) = focused(&mut self.screens, self.focus, &mut self.nobody);
        self.forwarder.forget(&mut gone.device, guest);
    }

    /// Ctrl+Alt+G: give the devices back to the VT (and the guest nothing),
    /// or take them again.
    fn toggle_grab(&mut self) {
        self.grabbed = !self.grabbed;
        if !self.grabbed {
            self.release_everything();
        }
        for o in &self.open {
            if let Err(err) = evdev::grab(o.fd.as_fd(), self.grabbed) {
                tracing::warn!("input: grabbing {}: {err}", o.path.display());
            }
        }
        self.forwarder.forwarding = self.grabbed;
        if self.grabbed {
            tracing::info!("input: taken (keys go to the guest; Ctrl+Alt+G gives them back)");
        } else {
            tracing::info!("input: given back (Ctrl+Alt+G takes it again)");
        }
    }

    /// Ctrl+Alt+Fn: through the seat (which takes the devices and the card
    /// from us and gives them back when the user comes back to our VT).
    fn switch_vt(&mut self, vt: u32) {
        match &self.options.seat {
            Some(seat) => {
                tracing::info!("input: Ctrl+Alt+F{vt}: switching to VT {vt}");
                if let Err(err) = seat.switch_session(vt) {
                    tracing::warn!("input: switching to VT {vt}: {err}");
                }
            }
            None => tracing::warn!(
                "input: Ctrl+Alt+F{vt}: no seat to switch VTs through (run with a seat: seatd \
                 or a logind session); Ctrl+Alt+G gives the keys back to the VT"
            ),
        }
    }

    /// Everything held down in the guest is released there.
    fn release_everything(&mut self) {
        let (guest, _) = focused(&mut self.screens, self.focus, &mut self.nobody);
        for o in &mut self.open {
            self.forwarder.release_all(&mut o.device, guest);
        }
    }

    fn give_back_everything(&mut self) {
        self.release_everything();
        // Closing a device ends its grab.
        self.open.clear();
    }

    /// Opens the devices not open yet.
    fn scan(&mut self) {
        if let Some(seat) = &self.options.seat {
            if !seat.is_enabled() {
                // Switched away: the seat opens nothing for us now.
                return;
            }
            self.seat_generation = seat.generation();
        }
        let listed = !self.options.devices.is_empty();
        let candidates: Vec<PathBuf> = if listed {
            self.options.devices.clone()
        } else {
            match std::fs::read_dir(INPUT_DIR) {
                Ok(dir) => {
                    let mut paths: Vec<PathBuf> = dir
                        .filter_map(|e| e.ok())
                        .map(|e| e.path())
                        .filter(|p| {
                            p.file_name()
                                .and_then(|n| n.to_str())
                                .is_some_and(|n| n.starts_with("event"))
                        })
                        .collect();
                    paths.sort();
                    paths
                }
                Err(err) => {
                    if self.warned.insert(PathBuf::from(INPUT_DIR)) {
                        tracing::warn!("input: reading {INPUT_DIR}: {err}");
                    }
                    return;
                }
            }
        };
        for path in candidates {
            self.consider(&path, listed);
        }
    }

    fn consider(&mut self, path: &Path, listed: bool) {
        let rdev = match std::fs::metadata(path) {
            Ok(m) => std::os::unix::fs::MetadataExt::rdev(&m),
            Err(err) => {
                if listed && self.warned.insert(path.to_owned()) {
                    tracing::warn!("input: {}: {err} (waiting for it)", path.display());
                }
                return;
            }
        };
        if self.open.iter().any(|o| o.rdev == rdev) || self.ignored.contains(&rdev) {
            return;
        }
        let opened = evdev::open_device(path, self.options.seat.as_ref());
        let (fd, lease) = match opened {
            Ok(opened) => opened,
            Err(err) => {
                if self.warned.insert(path.to_owned()) {
                    let hint = if err.kind() == std::io::ErrorKind::PermissionDenied {
                        " (the user needs read access: group `input`)"
                    } else {
                        ""
                    };
                    tracing::warn!("input: opening {}: {err}{hint}", path.display());
                }
                return;
            }
        };
        let caps = match evdev::capabilities(fd.as_fd()) {
            Ok(caps) => caps,
            Err(err) => {
                tracing::debug!("input: {} is no evdev device: {err}", path.display());
                self.ignored.insert(rdev);
                return;
            }
        };
        if let Err(err) = evdev::use_monotonic_clock(fd.as_fd()) {
            tracing::debug!("input: {}: EVIOCSCLOCKID: {err}", path.display());
        }
        if !listed && !caps.is_input() {
            tracing::debug!("input: leaving {} ({}) alone", path.display(), caps.name);
            self.ignored.insert(rdev);
            return;
        }
        if self.grabbed {
            if let Err(err) = evdev::grab(fd.as_fd(), true) {
                tracing::warn!(
                    "input: grabbing {} ({}): {err}; its events also reach others",
                    path.display(),
                    caps.name
                );
            }
        }
        tracing::info!(
            "input: {} ({}): {}",
            path.display(),
            caps.name,
            describe(&caps)
        );
        self.warned.remove(path);
        self.open.push(Open {
            path: path.to_owned(),
            rdev,
            device: Device::new(&caps),
            _lease: lease,
            fd,
        });
    }
}

fn describe(caps: &Capabilities) -> String {
    let mut kinds = Vec::new();
    if caps.is_keyboard() {
        kinds.push("keyboard");
    }
    if caps.is_mouse() {
        kinds.push("mouse");
    }
    match caps.abs_kind() {
        Some(evdev::AbsKind::Touchpad) => kinds.push("touchpad"),
        Some(evdev::AbsKind::Touchscreen) => kinds.push("touchscreen"),
        Some(evdev::AbsKind::Tablet) => kinds.push("tablet"),
        None => {}
    }
    if kinds.is_empty() {
        kinds.push("listed");
    }
    kinds.join(", ")
}
