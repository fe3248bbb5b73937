//! The seat: the card and the input devices opened through libseat (seatd
//! or a logind session), so that `display` runs as an ordinary user, and
//! VT switches hand the devices over and back.
//!
//! libseat is loaded at run time (`libseat.so.1`): without it the sink
//! opens its devices itself, as before (root, or groups `video` and
//! `input`), and watches for lost DRM master.
//!
//! While the seat is ours (enabled) the card fd it gave is DRM master and
//! the input fds read. When the session is switched away (a VT switch),
//! seatd has already taken master and revoked the input fds by the time
//! we hear of it: the display stops committing (and goes on answering
//! QEMU), the input devices read ENODEV and are closed; the disable is
//! acknowledged at once, as libseat asks. When the seat is ours again, the
//! card fd is master again (the monitor is lit afresh: the console of the
//! other VT may have taken the CRTC) and the input devices are opened
//! again (revoked fds never come back).
//!
//! libseat is not thread-safe: one mutex guards every call; a thread of
//! our own dispatches its events (the seat fd polled).
//!
//! libseat 0.7 (Debian 12) needs a dispatch after opening the seat and
//! after each device call before its first event is delivered, and loses
//! its connection when asked to switch sessions while disabled: both are
//! kept clear of here.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Why no seat could be had.
#[derive(Debug, thiserror::Error)]
pub enum SeatError {
    #[error("libseat is not installed (libseat.so.1: {0}); install libseat1, or use --seat none")]
    NoLibrary(String),
    #[error(
        "libseat gave no seat (no seatd running that this user may use, no logind session): {0}"
    )]
    NoSeat(std::io::Error),
    #[error("the seat was not given to this session within {0:?} (is its VT in front?)")]
    NotEnabled(Duration),
    #[error("the seat is {found:?}, not {wanted:?}")]
    OtherSeat { found: String, wanted: String },
    #[error("starting the seat's thread: {0}")]
    Thread(std::io::Error),
}

/// `struct libseat_seat_listener`.
#[repr(C)]
struct Listener {
    enable_seat: extern "C" fn(*mut c_void, *mut c_void),
    disable_seat: extern "C" fn(*mut c_void, *mut c_void),
}

/// libseat's functions, resolved once.
struct Lib {
    open_seat: unsafe extern "C" fn(*const Listener, *mut c_void) -> *mut c_void,
    disable_seat: unsafe extern "C" fn(*mut c_void) -> c_int,
    close_seat: unsafe extern "C" fn(*mut c_void) -> c_int,
    open_device: unsafe extern "C" fn(*mut c_void, *const c_char, *mut c_int) -> c_int,
    close_device: unsafe extern "C" fn(*mut c_void, c_int) -> c_int,
    seat_name: unsafe extern "C" fn(*mut c_void) -> *const c_char,
    switch_session: unsafe extern "C" fn(*mut c_void, c_int) -> c_int,
    get_fd: unsafe extern "C" fn(*mut c_void) -> c_int,
    dispatch: unsafe extern "C" fn(*mut c_void, c_int) -> c_int,
    /// Keeps the functions above loaded.
    _library: libloading::Library,
}

impl Lib {
    fn load() -> Result<Lib, SeatError> {
        let no = |e: libloading::Error| SeatError::NoLibrary(e.to_string());
        // SAFETY: loading libseat runs no initialisers of consequence; each
        // symbol is given the type of its declaration in libseat.h (0.7).
        unsafe {
            let library = libloading::Library::new("libseat.so.1").map_err(no)?;
            macro_rules! sym {
                ($name:literal) => {
                    *library.get($name).map_err(no)?
                };
            }
            Ok(Lib {
                open_seat: sym!(b"libseat_open_seat\0"),
                disable_seat: sym!(b"libseat_disable_seat\0"),
                close_seat: sym!(b"libseat_close_seat\0"),
                open_device: sym!(b"libseat_open_device\0"),
                close_device: sym!(b"libseat_close_device\0"),
                seat_name: sym!(b"libseat_seat_name\0"),
                switch_session: sym!(b"libseat_switch_session\0"),
                get_fd: sym!(b"libseat_get_fd\0"),
                dispatch: sym!(b"libseat_dispatch\0"),
                _library: library,
            })
        }
    }
}

/// What the callbacks tell (their `userdata`; boxed so it stays put).
#[derive(Default)]
struct Events {
    enabled: AtomicBool,
    /// Counts enables: a display that lit at an older one lights again.
    generation: AtomicU64,
    /// A disable not acknowledged yet.
    disable_pending: AtomicBool,
}

extern "C" fn on_enable(_seat: *mut c_void, data: *mut c_void) {
    // SAFETY: `data` is the `Events` box given to `libseat_open_seat`,
    // alive until the seat is closed.
    let events = unsafe { &*(data as *const Events) };
    events.enabled.store(true, Ordering::SeqCst);
    events.generation.fetch_add(1, Ordering::SeqCst);
}

extern "C" fn on_disable(_seat: *mut c_void, data: *mut c_void) {
    // SAFETY: as in `on_enable`.
    let events = unsafe { &*(data as *const Events) };
    events.enabled.store(false, Ordering::SeqCst);
    events.disable_pending.store(true, Ordering::SeqCst);
}

static LISTENER: Listener = Listener {
    enable_seat: on_enable,
    disable_seat: on_disable,
};

/// The libseat handle, behind the mutex.
struct Handle(*mut c_void);

// SAFETY: the handle is only used with the mutex held, one call at a time.
unsafe impl Send for Handle {}

struct Inner {
    lib: Lib,
    handle: Mutex<Handle>,
    events: Box<Events>,
    name: String,
    fd: c_int,
    stop: AtomicBool,
    /// Called (from the seat's thread) after the seat was enabled or
    /// disabled.
    watchers: Mutex<Vec<Arc<dyn Fn() + Send + Sync>>>,
}

impl Inner {
    /// Runs libseat's pending events and acknowledges a disable at once;
    /// tells the watchers when anything changed. Call with `handle` held.
    fn dispatch_locked(&self, handle: &Handle) -> bool {
        let before = (
            self.events.enabled.load(Ordering::SeqCst),
            self.events.generation.load(Ordering::SeqCst),
        );
        // SAFETY: a live seat handle, the mutex held.
        let n = unsafe { (self.lib.dispatch)(handle.0, 0) };
        if n < 0 {
            tracing::debug!("seat: dispatch: {}", std::io::Error::last_os_error());
        }
        if self.events.disable_pending.swap(false, Ordering::SeqCst) {
            // SAFETY: as above; libseat wants the acknowledgement once per
            // disable, and seatd has taken the devices already.
            if unsafe { (self.lib.disable_seat)(handle.0) } < 0 {
                tracing::warn!(
                    "seat: acknowledging the switch away: {}",
                    std::io::Error::last_os_error()
                );
            }
        }
        let after = (
            self.events.enabled.load(Ordering::SeqCst),
            self.events.generation.load(Ordering::SeqCst),
        );
        after != before
    }

    fn dispatch(&self) {
        let changed = {
            let handle = self.handle.lock().unwrap_or_else(|p| p.into_inner());
            self.dispatch_locked(&handle)
        };
        if changed {
            if self.events.enabled.load(Ordering::SeqCst) {
                tracing::info!("seat: {} is ours again", self.name);
            } else {
                tracing::info!(
                    "seat: {} was switched away: the display stops, QEMU is still answered",
                    self.name
                );
            }
            let watchers = self.watchers.lock().unwrap_or_else(|p| p.into_inner());
            for w in watchers.iter() {
                w();
            }
        }
    }
}

/// A seat of libseat's, shared by the display and the input.
#[derive(Clone)]
pub struct Seat {
    inner: Arc<Inner>,
    _thread: Arc<SeatThread>,
}

impl std::fmt::Debug for Seat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Seat")
            .field("name", &self.inner.name)
            .finish()
    }
}

/// Stops the dispatching thread and closes the seat with the last clone.
struct SeatThread {
    inner: Arc<Inner>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Drop for SeatThread {
    fn drop(&mut self) {
        self.inner.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = t.join();
        }
        let handle = self.inner.handle.lock().unwrap_or_else(|p| p.into_inner());
        // A disable is acknowledged as it comes, so none is pending here
        // (seatd 0.7 aborts when a client leaves with one).
        self.inner.dispatch_locked(&handle);
        // SAFETY: the last user of the handle; nothing calls it after this.
        unsafe { (self.inner.lib.close_seat)(handle.0) };
    }
}

/// How long `open` waits for the seat to be given to us.
const ENABLE_WAIT: Duration = Duration::from_secs(10);

impl Seat {
    /// Opens the seat libseat finds for this process (seatd, a logind
    /// session; `LIBSEAT_BACKEND` chooses) and waits until it is ours.
    /// `wanted`: the seat's name must be this.
    pub fn open(wanted: Option<&str>) -> Result<Seat, SeatError> {
        let lib = Lib::load()?;
        let events = Box::<Events>::default();
        // SAFETY: LISTENER is static; `events` is boxed and outlives the
        // seat (closed in SeatThread's drop, before Inner is dropped).
        let handle =
            unsafe { (lib.open_seat)(&LISTENER, &*events as *const Events as *mut c_void) };
        if handle.is_null() {
            return Err(SeatError::NoSeat(std::io::Error::last_os_error()));
        }
        // SAFETY: a live handle; the name is a C string libseat owns.
        let name = unsafe {
            let p = (lib.seat_name)(handle);
            if p.is_null() {
                String::new()
            } else {
                CStr::from_ptr(p).to_string_lossy().into_owned()
            }
        };
        // SAFETY: a live handle.
        let fd = unsafe { (lib.get_fd)(handle) };
        let inner = Arc::new(Inner {
            lib,
            handle: Mutex::new(Handle(handle)),
            events,
            name,
            fd,
            stop: AtomicBool::new(false),
            watchers: Mutex::new(Vec::new()),
        });
        let closer = Arc::new(SeatThread {
            inner: inner.clone(),
            thread: Mutex::new(None),
        });
        if let Some(wanted) = wanted {
            if wanted != inner.name {
                return Err(SeatError::OtherSeat {
                    found: inner.name.clone(),
                    wanted: wanted.to_owned(),
                });
            }
        }
        // Wait for the seat to be given to us (libseat 0.7 delivers the
        // first enable only from a dispatch).
        let started = Instant::now();
        loop {
            // (Not `dispatch`: the first enable is no news to tell.)
            inner.dispatch_locked(&inner.handle.lock().unwrap_or_else(|p| p.into_inner()));
            if inner.events.enabled.load(Ordering::SeqCst) {
                break;
            }
            if started.elapsed() > ENABLE_WAIT {
                return Err(SeatError::NotEnabled(ENABLE_WAIT));
            }
            poll_readable(fd, Duration::from_millis(100));
        }
        let worker = inner.clone();
        let thread = std::thread::Builder::new()
            .name("seat".into())
            .spawn(move || {
                while !worker.stop.load(Ordering::SeqCst) {
                    if poll_readable(worker.fd, Duration::from_millis(200)) {
                        worker.dispatch();
                    }
                }
            })
            .map_err(SeatError::Thread)?;
        *closer.thread.lock().unwrap_or_else(|p| p.into_inner()) = Some(thread);
        tracing::info!("seat: {} (through libseat)", inner.name);
        Ok(Seat {
            inner,
            _thread: closer,
        })
    }

    /// The seat is ours: the card is master, input devices can be opened.
    pub fn is_enabled(&self) -> bool {
        self.inner.events.enabled.load(Ordering::SeqCst)
    }

    /// Counts the times the seat was given to us.
    pub fn generation(&self) -> u64 {
        self.inner.events.generation.load(Ordering::SeqCst)
    }

    /// `f` is called (on the seat's thread) after each enable or disable.
    pub fn watch(&self, f: Arc<dyn Fn() + Send + Sync>) {
        self.inner
            .watchers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(f);
    }

    /// Opens a device of the seat; the fd is closed and the device given
    /// back when both the returned fd and lease are dropped (the lease
    /// first).
    pub fn open_device(&self, path: &Path) -> std::io::Result<(OwnedFd, SeatLease)> {
        let cpath = CString::new(path.as_os_str().as_encoded_bytes())
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
        let mut fd: c_int = -1;
        let handle = self.inner.handle.lock().unwrap_or_else(|p| p.into_inner());
        // SAFETY: a live handle, the mutex held; `fd` is written by libseat.
        let id = unsafe { (self.inner.lib.open_device)(handle.0, cpath.as_ptr(), &mut fd) };
        let err = std::io::Error::last_os_error();
        self.inner.dispatch_locked(&handle);
        if id < 0 || fd < 0 {
            return Err(err);
        }
        // SAFETY: libseat hands the fd over to us.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok((
            fd,
            SeatLease {
                seat: self.clone(),
                id,
            },
        ))
    }

    /// Switches to session (VT) `n`, when the seat is ours (libseat 0.7
    /// loses its connection when asked while it is not).
    pub fn switch_session(&self, n: u32) -> std::io::Result<()> {
        let handle = self.inner.handle.lock().unwrap_or_else(|p| p.into_inner());
        if !self.is_enabled() {
            return Err(std::io::Error::other("the seat is not ours now"));
        }
        let n = c_int::try_from(n)
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
        // SAFETY: a live handle, the mutex held.
        let rc = unsafe { (self.inner.lib.switch_session)(handle.0, n) };
        let err = std::io::Error::last_os_error();
        self.inner.dispatch_locked(&handle);
        if rc < 0 {
            return Err(err);
        }
        Ok(())
    }
}

/// A device opened through the seat: given back (`libseat_close_device`)
/// when dropped. Keep it beside its fd, dropped before it.
pub struct SeatLease {
    /// Keeps the seat open as long as the device is.
    seat: Seat,
    id: c_int,
}

impl std::fmt::Debug for SeatLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SeatLease({})", self.id)
    }
}

impl Drop for SeatLease {
    fn drop(&mut self) {
        let inner = &self.seat.inner;
        let handle = inner.handle.lock().unwrap_or_else(|p| p.into_inner());
        // SAFETY: a live handle, the mutex held; `id` came from open_device.
        if unsafe { (inner.lib.close_device)(handle.0, self.id) } < 0 {
            tracing::debug!(
                "seat: closing device {}: {}",
                self.id,
                std::io::Error::last_os_error()
            );
        }
        inner.dispatch_locked(&handle);
    }
}

/// Waits up to `timeout` for `fd` to be readable.
fn poll_readable(fd: c_int, timeout: Duration) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one pollfd, alive across the call.
    let n = unsafe { libc::poll(&mut p, 1, timeout.as_millis() as c_int) };
    n > 0
}

/// Which seat `display` uses (`--seat`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SeatChoice {
    /// libseat when there is a seat manager for us (seatd's socket, a
    /// logind session, or `LIBSEAT_BACKEND` set), else the devices opened
    /// directly.
    Auto,
    /// The devices opened directly (root, or groups `video` and `input`).
    None,
    /// libseat's seat, which must have this name.
    Named(String),
}

impl std::str::FromStr for SeatChoice {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<SeatChoice, Self::Err> {
        Ok(match s {
            "auto" => SeatChoice::Auto,
            "none" => SeatChoice::None,
            name => SeatChoice::Named(name.to_owned()),
        })
    }
}

/// Where seatd listens unless `SEATD_SOCK` says otherwise.
const SEATD_SOCKET: &str = "/run/seatd.sock";

/// The libseat backend `--seat auto` may use here: seatd when its socket
/// is there, logind inside a logind session; none otherwise. (libseat's
/// own fallback, its built-in seat server, would take the VT of whatever
/// runs on it when started as root: `auto` never lets it.)
pub fn auto_backend() -> Option<&'static str> {
    let seatd = std::env::var_os("SEATD_SOCK")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| SEATD_SOCKET.into());
    if seatd.exists() {
        return Some("seatd");
    }
    let in_session = std::env::var_os("XDG_SESSION_ID").is_some_and(|s| !s.is_empty());
    if in_session && Path::new("/run/systemd/seats").exists() {
        return Some("logind");
    }
    None
}
