//! Linux evdev devices (`/dev/input/event*`), read directly: what a device
//! can send (its capability bits), taking it for ourselves (`EVIOCGRAB`),
//! and its events. No libinput: the sink needs raw keycodes, raw relative
//! motion and absolute positions, which evdev gives as they are; libinput
//! would add a C library and a udev context for gestures this slice does
//! not forward.
//!
//! Opening a device is [`open_device`]: `open(2)`, or the fd the seat
//! (libseat: seatd, logind) hands out.

use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::seat::{Seat, SeatLease};

// Event types and codes (the kernel's `input-event-codes.h`).
pub const EV_SYN: u16 = 0x00;
pub const EV_KEY: u16 = 0x01;
pub const EV_REL: u16 = 0x02;
pub const EV_ABS: u16 = 0x03;
pub const SYN_REPORT: u16 = 0;
pub const SYN_DROPPED: u16 = 3;
pub const REL_X: u16 = 0x00;
pub const REL_Y: u16 = 0x01;
pub const REL_HWHEEL: u16 = 0x06;
pub const REL_WHEEL: u16 = 0x08;
pub const ABS_X: u16 = 0x00;
pub const ABS_Y: u16 = 0x01;
pub const ABS_MT_SLOT: u16 = 0x2f;
pub const ABS_MT_POSITION_X: u16 = 0x35;
pub const ABS_MT_POSITION_Y: u16 = 0x36;
pub const ABS_MT_TRACKING_ID: u16 = 0x39;
pub const BTN_MOUSE: u16 = 0x110;
pub const BTN_LEFT: u16 = 0x110;
pub const BTN_RIGHT: u16 = 0x111;
pub const BTN_MIDDLE: u16 = 0x112;
pub const BTN_SIDE: u16 = 0x113;
pub const BTN_EXTRA: u16 = 0x114;
pub const BTN_FORWARD: u16 = 0x115;
pub const BTN_BACK: u16 = 0x116;
pub const BTN_TOOL_FINGER: u16 = 0x145;
pub const BTN_TOUCH: u16 = 0x14a;
pub const KEY_CNT: usize = 0x300;
const ABS_CNT: usize = 0x40;
const INPUT_PROP_POINTER: usize = 0x00;
const INPUT_PROP_DIRECT: usize = 0x01;

/// One `struct input_event` as the kernel writes it on a 64-bit machine
/// (a `timeval` of two 64-bit fields, then type, code, value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    pub sec: i64,
    pub usec: i64,
    pub kind: u16,
    pub code: u16,
    pub value: i32,
}

pub const EVENT_SIZE: usize = 24;

impl Event {
    /// When the kernel stamped it: CLOCK_MONOTONIC once
    /// [`use_monotonic_clock`] was set on its device.
    pub fn time(&self) -> std::time::Duration {
        let secs = u64::try_from(self.sec).unwrap_or(0);
        let micros = u32::try_from(self.usec.clamp(0, 999_999)).unwrap_or(0);
        std::time::Duration::new(secs, micros * 1000)
    }

    pub fn parse(bytes: &[u8; EVENT_SIZE]) -> Event {
        let i64_at = |o: usize| i64::from_ne_bytes(bytes[o..o + 8].try_into().expect("8 bytes"));
        Event {
            sec: i64_at(0),
            usec: i64_at(8),
            kind: u16::from_ne_bytes([bytes[16], bytes[17]]),
            code: u16::from_ne_bytes([bytes[18], bytes[19]]),
            value: i32::from_ne_bytes([bytes[20], bytes[21], bytes[22], bytes[23]]),
        }
    }
}

/// The range of an absolute axis (`struct input_absinfo`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AbsInfo {
    pub value: i32,
    pub minimum: i32,
    pub maximum: i32,
    pub fuzz: i32,
    pub flat: i32,
    /// Units per millimetre (0: unknown).
    pub resolution: i32,
}

/// What kind of pointer an absolute device is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbsKind {
    /// A touchpad (`INPUT_PROP_POINTER`, or a finger tool on an indirect
    /// device): its positions are turned into relative motion.
    Touchpad,
    /// A touchscreen (`INPUT_PROP_DIRECT`): positions on the monitor.
    Touchscreen,
    /// A tablet or an absolute mouse (QEMU's own usb-tablet, a pen):
    /// positions on the monitor.
    Tablet,
}

/// What a device can send, read once at open.
#[derive(Debug, Clone, Default)]
pub struct Capabilities {
    pub name: String,
    keys: Vec<u8>,
    rel: u32,
    abs: u64,
    props: u32,
    pub abs_x: AbsInfo,
    pub abs_y: AbsInfo,
    pub mt_x: AbsInfo,
    pub mt_y: AbsInfo,
    pub mt_slots: AbsInfo,
}

fn bit(bits: &[u8], n: usize) -> bool {
    bits.get(n / 8).is_some_and(|b| b & (1 << (n % 8)) != 0)
}

impl Capabilities {
    /// A touchscreen with `slots` fingers over `0..=max.0` x `0..=max.1`,
    /// with the kernel's single-touch emulation (ABS_X/Y, BTN_TOUCH).
    #[cfg(test)]
    pub fn touchscreen(max: (i32, i32), slots: i32) -> Capabilities {
        let axis = |maximum| AbsInfo {
            maximum,
            ..AbsInfo::default()
        };
        let mut keys = vec![0u8; usize::from(BTN_TOUCH) / 8 + 1];
        keys[usize::from(BTN_TOUCH) / 8] |= 1 << (BTN_TOUCH % 8);
        Capabilities {
            name: "touchscreen".into(),
            keys,
            abs: [
                ABS_X,
                ABS_Y,
                ABS_MT_SLOT,
                ABS_MT_POSITION_X,
                ABS_MT_POSITION_Y,
                ABS_MT_TRACKING_ID,
            ]
            .iter()
            .fold(0, |bits, &a| bits | 1 << a),
            props: 1 << INPUT_PROP_DIRECT,
            abs_x: axis(max.0),
            abs_y: axis(max.1),
            mt_x: axis(max.0),
            mt_y: axis(max.1),
            mt_slots: axis(slots - 1),
            ..Capabilities::default()
        }
    }

    pub fn has_key(&self, code: u16) -> bool {
        bit(&self.keys, usize::from(code))
    }
    pub fn has_rel(&self, code: u16) -> bool {
        code < 32 && self.rel & (1 << code) != 0
    }
    pub fn has_abs(&self, code: u16) -> bool {
        code < 64 && self.abs & (1 << code) != 0
    }

    /// A keyboard: it has (nearly) all the letter keys (Q to P, A to L,
    /// Z to M: Linux numbers them by row).
    pub fn is_keyboard(&self) -> bool {
        let letters = (16..=25).chain(30..=38).chain(44..=50);
        letters.filter(|&k| self.has_key(k)).count() >= 20
    }

    /// A mouse (or trackball, trackpoint): relative X and Y.
    pub fn is_mouse(&self) -> bool {
        self.has_rel(REL_X) && self.has_rel(REL_Y)
    }

    /// An absolute pointer, and which kind.
    pub fn abs_kind(&self) -> Option<AbsKind> {
        let xy = (self.has_abs(ABS_X) && self.has_abs(ABS_Y))
            || (self.has_abs(ABS_MT_POSITION_X) && self.has_abs(ABS_MT_POSITION_Y));
        if !xy {
            return None;
        }
        let prop = |p: usize| self.props & (1 << p) != 0;
        Some(if prop(INPUT_PROP_DIRECT) {
            AbsKind::Touchscreen
        } else if prop(INPUT_PROP_POINTER) || self.has_key(BTN_TOOL_FINGER) {
            AbsKind::Touchpad
        } else {
            AbsKind::Tablet
        })
    }

    /// Worth forwarding: a keyboard, a mouse or an absolute pointer (not a
    /// power button, a lid switch or a speaker).
    pub fn is_input(&self) -> bool {
        self.is_keyboard() || self.is_mouse() || self.abs_kind().is_some()
    }
}

/// Opens an evdev node for reading, non-blocking: itself, or through
/// `seat` (then with the seat's lease on it, to drop before the fd).
pub fn open_device(path: &Path, seat: Option<&Seat>) -> io::Result<(OwnedFd, Option<SeatLease>)> {
    let Some(seat) = seat else {
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path)?;
        return Ok((file.into(), None));
    };
    let (fd, lease) = seat.open_device(path)?;
    // The seat's fd comes as seatd opened it: reads here must not block.
    let flags = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_GETFL)?;
    let flags = nix::fcntl::OFlag::from_bits_retain(flags) | nix::fcntl::OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_SETFL(flags))?;
    Ok((fd, Some(lease)))
}

mod ioctl {
    use super::AbsInfo;
    // EVIOCGNAME, EVIOCGPROP, EVIOCGBIT(type), EVIOCGKEY: _IOC(_IOC_READ, 'E', nr, len).
    nix::ioctl_read_buf!(name, b'E', 0x06, u8);
    nix::ioctl_read_buf!(props, b'E', 0x09, u8);
    nix::ioctl_read_buf!(key_state, b'E', 0x18, u8);
    nix::ioctl_read_buf!(bits_key, b'E', 0x20 + 0x01, u8);
    nix::ioctl_read_buf!(bits_rel, b'E', 0x20 + 0x02, u8);
    nix::ioctl_read_buf!(bits_abs, b'E', 0x20 + 0x03, u8);
    // EVIOCGABS(axis): _IOR('E', 0x40 + axis, struct input_absinfo).
    nix::ioctl_read!(abs_x, b'E', 0x40, AbsInfo);
    nix::ioctl_read!(abs_y, b'E', 0x41, AbsInfo);
    nix::ioctl_read!(abs_mt_slot, b'E', 0x40 + 0x2f, AbsInfo);
    nix::ioctl_read!(abs_mt_x, b'E', 0x40 + 0x35, AbsInfo);
    nix::ioctl_read!(abs_mt_y, b'E', 0x40 + 0x36, AbsInfo);
    // EVIOCGRAB: _IOW('E', 0x90, int), the int passed by value.
    nix::ioctl_write_int!(grab, b'E', 0x90);
    // EVIOCSCLOCKID: _IOW('E', 0xa0, int), the int passed by pointer.
    nix::ioctl_write_ptr!(set_clock_id, b'E', 0xa0, libc::c_int);
}

/// Reads a device's name and capability bits.
pub fn capabilities(fd: BorrowedFd<'_>) -> io::Result<Capabilities> {
    let raw = fd.as_raw_fd();
    let mut caps = Capabilities {
        keys: vec![0; KEY_CNT / 8],
        ..Capabilities::default()
    };
    let mut name = [0u8; 256];
    // SAFETY: each call writes at most the buffer's length (the length is
    // in the request code) into a live buffer, on a live fd.
    unsafe {
        if ioctl::name(raw, &mut name).is_ok() {
            let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
            caps.name = String::from_utf8_lossy(&name[..end]).into_owned();
        }
        ioctl::bits_key(raw, &mut caps.keys).map_err(io::Error::from)?;
        let mut rel = [0u8; 4];
        ioctl::bits_rel(raw, &mut rel).map_err(io::Error::from)?;
        caps.rel = u32::from_le_bytes(rel);
        let mut abs = [0u8; ABS_CNT / 8];
        ioctl::bits_abs(raw, &mut abs).map_err(io::Error::from)?;
        caps.abs = u64::from_le_bytes(abs);
        let mut props = [0u8; 4];
        // Older kernels lack EVIOCGPROP: no properties then.
        if ioctl::props(raw, &mut props).is_ok() {
            caps.props = u32::from_le_bytes(props);
        }
    }
    let read_abs = |has: bool, f: unsafe fn(i32, *mut AbsInfo) -> nix::Result<i32>| {
        let mut info = AbsInfo::default();
        // SAFETY: EVIOCGABS writes one `input_absinfo` (our `repr(C)`
        // twin) into `info`.
        if has && unsafe { f(raw, &mut info) }.is_ok() {
            info
        } else {
            AbsInfo::default()
        }
    };
    caps.abs_x = read_abs(caps.has_abs(ABS_X), ioctl::abs_x);
    caps.abs_y = read_abs(caps.has_abs(ABS_Y), ioctl::abs_y);
    caps.mt_x = read_abs(caps.has_abs(ABS_MT_POSITION_X), ioctl::abs_mt_x);
    caps.mt_y = read_abs(caps.has_abs(ABS_MT_POSITION_Y), ioctl::abs_mt_y);
    caps.mt_slots = read_abs(caps.has_abs(ABS_MT_SLOT), ioctl::abs_mt_slot);
    Ok(caps)
}

/// Takes the device for ourselves (`true`: nobody else, the VT included,
/// gets its events) or gives it back.
/// Stamps the device's events on CLOCK_MONOTONIC (the kernel's default
/// is CLOCK_REALTIME, which jumps), the clock of the latency stages.
pub fn use_monotonic_clock(fd: BorrowedFd<'_>) -> io::Result<()> {
    let id: libc::c_int = libc::CLOCK_MONOTONIC;
    // SAFETY: EVIOCSCLOCKID reads one int from the live `id`.
    unsafe { ioctl::set_clock_id(fd.as_raw_fd(), &id) }
        .map(drop)
        .map_err(io::Error::from)
}

pub fn grab(fd: BorrowedFd<'_>, on: bool) -> io::Result<()> {
    // SAFETY: EVIOCGRAB takes its argument by value.
    unsafe { ioctl::grab(fd.as_raw_fd(), nix::sys::ioctl::ioctl_param_type::from(on)) }
        .map(drop)
        .map_err(io::Error::from)
}

/// The keys (and buttons) the device holds down now (`EVIOCGKEY`), into
/// `bits` (at least [`KEY_CNT`] / 8 bytes).
pub fn keys_down(fd: BorrowedFd<'_>, bits: &mut [u8]) -> io::Result<()> {
    // SAFETY: writes at most `bits.len()` bytes into `bits`.
    unsafe { ioctl::key_state(fd.as_raw_fd(), bits) }
        .map(drop)
        .map_err(io::Error::from)
}

/// Whether bit `n` is set in an `EVIOCGKEY` answer.
pub fn is_down(bits: &[u8], code: u16) -> bool {
    bit(bits, usize::from(code))
}

/// Reads what the device has (non-blocking) into `buf`; the events read
/// are the whole `EVENT_SIZE` chunks. `Ok(0)`: nothing now.
pub fn read_events(fd: impl AsFd, buf: &mut [u8]) -> io::Result<usize> {
    match nix::unistd::read(fd, buf) {
        Ok(n) => Ok(n / EVENT_SIZE),
        Err(nix::errno::Errno::EAGAIN) => Ok(0),
        Err(err) => Err(err.into()),
    }
}
