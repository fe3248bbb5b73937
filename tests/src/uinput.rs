//! Virtual input devices through `/dev/uinput` (the lab loads `uinput`):
//! a keyboard, a mouse or a tablet that the sink sees under `/dev/input`
//! like any plugged-in device, driven event by event by a test.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

pub const EV_SYN: u16 = 0;
pub const EV_KEY: u16 = 1;
pub const EV_REL: u16 = 2;
pub const EV_ABS: u16 = 3;
pub const REL_X: u16 = 0;
pub const REL_Y: u16 = 1;
pub const REL_HWHEEL: u16 = 6;
pub const REL_WHEEL: u16 = 8;
pub const ABS_X: u16 = 0;
pub const ABS_Y: u16 = 1;
pub const ABS_MT_SLOT: u16 = 0x2f;
pub const ABS_MT_POSITION_X: u16 = 0x35;
pub const ABS_MT_POSITION_Y: u16 = 0x36;
pub const ABS_MT_TRACKING_ID: u16 = 0x39;
/// A touchscreen's property: positions are on the screen.
pub const INPUT_PROP_DIRECT: u16 = 1;
pub const BTN_LEFT: u16 = 0x110;
pub const BTN_RIGHT: u16 = 0x111;
pub const BTN_MIDDLE: u16 = 0x112;
pub const BTN_SIDE: u16 = 0x113;
pub const BTN_EXTRA: u16 = 0x114;
pub const BTN_TOUCH: u16 = 0x14a;

mod ioctl {
    // `struct uinput_setup`: an input_id, a name of 80 bytes, ff_effects_max.
    #[repr(C)]
    pub struct Setup {
        pub bustype: u16,
        pub vendor: u16,
        pub product: u16,
        pub version: u16,
        pub name: [u8; 80],
        pub ff_effects_max: u32,
    }
    // `struct uinput_abs_setup`: the axis, then its `input_absinfo`.
    #[repr(C)]
    pub struct AbsSetup {
        pub code: u16,
        pub _pad: u16,
        pub value: i32,
        pub minimum: i32,
        pub maximum: i32,
        pub fuzz: i32,
        pub flat: i32,
        pub resolution: i32,
    }
    nix::ioctl_none!(dev_create, b'U', 1);
    nix::ioctl_none!(dev_destroy, b'U', 2);
    nix::ioctl_write_ptr!(dev_setup, b'U', 3, Setup);
    nix::ioctl_write_ptr!(abs_setup, b'U', 4, AbsSetup);
    nix::ioctl_read_buf!(sysname, b'U', 44, u8);
    nix::ioctl_write_int!(set_evbit, b'U', 100);
    nix::ioctl_write_int!(set_keybit, b'U', 101);
    nix::ioctl_write_int!(set_relbit, b'U', 102);
    nix::ioctl_write_int!(set_absbit, b'U', 103);
    nix::ioctl_write_int!(set_propbit, b'U', 110);
}

/// What the virtual device can send.
#[derive(Debug, Clone, Default)]
pub struct Spec {
    pub name: String,
    pub keys: Vec<u16>,
    pub rel: Vec<u16>,
    /// Axes with their range (min, max).
    pub abs: Vec<(u16, i32, i32)>,
    /// `INPUT_PROP_*` bits.
    pub props: Vec<u16>,
}

impl Spec {
    /// A full keyboard: every key from ESC (1) to 248, which covers the
    /// 105-key layouts and the multimedia keys.
    pub fn keyboard(name: &str) -> Spec {
        Spec {
            name: name.into(),
            keys: (1..=248).collect(),
            ..Spec::default()
        }
    }

    /// A five-button mouse with both wheels.
    pub fn mouse(name: &str) -> Spec {
        Spec {
            name: name.into(),
            keys: vec![BTN_LEFT, BTN_RIGHT, BTN_MIDDLE, BTN_SIDE, BTN_EXTRA],
            rel: vec![REL_X, REL_Y, REL_WHEEL, REL_HWHEEL],
            ..Spec::default()
        }
    }

    /// A touchscreen of `slots` fingers over `size` units (one per monitor
    /// pixel when it is the monitor's size), with the single-touch axes
    /// that touchscreen drivers also report for their first finger.
    pub fn touchscreen(name: &str, size: (u32, u32), slots: i32) -> Spec {
        let (w, h) = (size.0 as i32 - 1, size.1 as i32 - 1);
        Spec {
            name: name.into(),
            keys: vec![BTN_TOUCH],
            abs: vec![
                (ABS_X, 0, w),
                (ABS_Y, 0, h),
                (ABS_MT_SLOT, 0, slots - 1),
                (ABS_MT_POSITION_X, 0, w),
                (ABS_MT_POSITION_Y, 0, h),
                (ABS_MT_TRACKING_ID, 0, 65535),
            ],
            props: vec![INPUT_PROP_DIRECT],
            ..Spec::default()
        }
    }
}

/// A device created through `/dev/uinput`; destroyed on drop.
pub struct VirtualDevice {
    file: std::fs::File,
    /// Its evdev node, `/dev/input/eventN`.
    pub node: PathBuf,
}

impl VirtualDevice {
    pub fn create(spec: &Spec) -> anyhow::Result<VirtualDevice> {
        let file = OpenOptions::new()
            .write(true)
            .open("/dev/uinput")
            .context("opening /dev/uinput (modprobe uinput)")?;
        let fd = file.as_raw_fd();
        let mut setup = ioctl::Setup {
            bustype: 0x06, // BUS_VIRTUAL
            vendor: 0x1234,
            product: 0x5678,
            version: 1,
            name: [0; 80],
            ff_effects_max: 0,
        };
        let name = spec.name.as_bytes();
        setup.name[..name.len().min(79)].copy_from_slice(&name[..name.len().min(79)]);
        // SAFETY: uinput ioctls on our open /dev/uinput fd; the setup structs
        // are `repr(C)` twins of the kernel's and live across each call.
        unsafe {
            let bit = nix::sys::ioctl::ioctl_param_type::from;
            if !spec.keys.is_empty() {
                ioctl::set_evbit(fd, bit(EV_KEY))?;
                for &k in &spec.keys {
                    ioctl::set_keybit(fd, bit(k))?;
                }
            }
            if !spec.rel.is_empty() {
                ioctl::set_evbit(fd, bit(EV_REL))?;
                for &r in &spec.rel {
                    ioctl::set_relbit(fd, bit(r))?;
                }
            }
            if !spec.abs.is_empty() {
                ioctl::set_evbit(fd, bit(EV_ABS))?;
                for &(code, minimum, maximum) in &spec.abs {
                    ioctl::set_absbit(fd, bit(code))?;
                    let abs = ioctl::AbsSetup {
                        code,
                        _pad: 0,
                        value: minimum,
                        minimum,
                        maximum,
                        fuzz: 0,
                        flat: 0,
                        resolution: 0,
                    };
                    ioctl::abs_setup(fd, &abs)?;
                }
            }
            for &p in &spec.props {
                ioctl::set_propbit(fd, bit(p))?;
            }
            ioctl::dev_setup(fd, &setup)?;
            ioctl::dev_create(fd)?;
        }
        let mut sysname = [0u8; 64];
        // SAFETY: writes at most 64 bytes into `sysname`.
        unsafe { ioctl::sysname(fd, &mut sysname) }?;
        let end = sysname.iter().position(|&b| b == 0).unwrap_or(0);
        let sysname = String::from_utf8_lossy(&sysname[..end]).into_owned();
        let mut device = VirtualDevice {
            file,
            node: PathBuf::new(),
        };
        device.node = find_node(&sysname)?;
        Ok(device)
    }

    /// Writes events (type, code, value) as they are.
    pub fn emit(&mut self, events: &[(u16, u16, i32)]) -> anyhow::Result<()> {
        let mut bytes = Vec::with_capacity(events.len() * 24);
        for &(kind, code, value) in events {
            bytes.extend_from_slice(&[0u8; 16]);
            bytes.extend_from_slice(&kind.to_ne_bytes());
            bytes.extend_from_slice(&code.to_ne_bytes());
            bytes.extend_from_slice(&value.to_ne_bytes());
        }
        self.file.write_all(&bytes)?;
        Ok(())
    }

    /// Events, then a `SYN_REPORT`: one frame.
    pub fn frame(&mut self, events: &[(u16, u16, i32)]) -> anyhow::Result<()> {
        let mut all = events.to_vec();
        all.push((EV_SYN, 0, 0));
        self.emit(&all)
    }

    /// A key (or button) pressed and released, each in a frame of its own.
    pub fn tap(&mut self, code: u16) -> anyhow::Result<()> {
        self.frame(&[(EV_KEY, code, 1)])?;
        self.frame(&[(EV_KEY, code, 0)])
    }
}

impl Drop for VirtualDevice {
    fn drop(&mut self) {
        // SAFETY: UI_DEV_DESTROY on our own uinput fd.
        let _ = unsafe { ioctl::dev_destroy(self.file.as_raw_fd()) };
    }
}

/// The `/dev/input/eventN` of uinput device `sysname` (`inputM`), once
/// its node exists.
fn find_node(sysname: &str) -> anyhow::Result<PathBuf> {
    let dir = PathBuf::from("/sys/devices/virtual/input").join(sysname);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let event = std::fs::read_dir(&dir).ok().and_then(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .find(|n| n.starts_with("event"))
        });
        if let Some(event) = event {
            let node = PathBuf::from("/dev/input").join(event);
            if node.exists() {
                return Ok(node);
            }
        }
        if Instant::now() > deadline {
            bail!("no event node for {} after 5 s", dir.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
