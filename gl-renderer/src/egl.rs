//! EGL: loading libEGL, choosing a device, the display and a configless GLES
//! 3 context made current without surfaces.
//!
//! Device choice matters more than it seems: with a DRM device that has no
//! GPU behind it (vgem, vkms, virtio-gpu without 3D), Mesa picks kms_swrast,
//! whose imported DMA-BUFs read as zeros or crash llvmpipe when sampled.
//! Mesa's software device (`EGL_MESA_device_software`) renders with llvmpipe
//! on plain memory and imports exactly. So `auto` takes a device only if its
//! renderer is real hardware, and otherwise the software device.
//!
//! Asking Mesa for a device can itself kill the process: with
//! `LIBGL_ALWAYS_SOFTWARE` set, Mesa refuses a hardware device ("Not allowed
//! to force software rendering when API explicitly selects a hardware
//! device") and then crashes in `driCreateNewScreen3`. So that variable
//! sends `auto` straight to the software device, and `auto` asks EGL only
//! for devices whose kernel driver can render at all.

use std::ffi::{c_char, c_void, CStr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use khronos_egl as khr;

use crate::{egl_err, RenderError};

pub(crate) type Egl = khr::DynamicInstance<khr::EGL1_5>;

pub(crate) const PLATFORM_DEVICE_EXT: khr::Enum = 0x313F;
pub(crate) const PLATFORM_SURFACELESS_MESA: khr::Enum = 0x31DD;
const DRM_DEVICE_FILE_EXT: khr::Int = 0x3233;
const DRM_RENDER_NODE_FILE_EXT: khr::Int = 0x3377;

type EglDevice = *mut c_void;
type QueryDevicesExt = unsafe extern "system" fn(
    max: khr::Int,
    devices: *mut EglDevice,
    count: *mut khr::Int,
) -> khr::Boolean;
type QueryDeviceStringExt =
    unsafe extern "system" fn(device: EglDevice, name: khr::Int) -> *const c_char;

/// Which EGL device renders: `auto`, `software`, `surfaceless`, or a DRM
/// node path (`/dev/dri/renderD128`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum RenderDevice {
    /// A real GPU's device when there is one, else Mesa's software device.
    #[default]
    Auto,
    /// Mesa's software device (llvmpipe), imports DMA-BUFs exactly.
    Software,
    /// `EGL_PLATFORM_SURFACELESS_MESA` (what Mesa picks there is its own choice).
    Surfaceless,
    /// The EGL device whose DRM node (primary or render) is this path.
    Node(PathBuf),
}

impl FromStr for RenderDevice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "auto" => RenderDevice::Auto,
            "software" => RenderDevice::Software,
            "surfaceless" => RenderDevice::Surfaceless,
            path if path.starts_with('/') => RenderDevice::Node(PathBuf::from(path)),
            other => {
                return Err(format!(
                    "{other:?}: expected auto, software, surfaceless or a /dev/dri path"
                ))
            }
        })
    }
}

/// The device a renderer ended up on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// The DRM node of the device (`None` for the software device and surfaceless).
    pub node: Option<PathBuf>,
    /// Rendering happens in software (llvmpipe, softpipe, swrast).
    pub software: bool,
    /// `GL_RENDERER`.
    pub renderer: String,
}

pub(crate) fn has_extension(list: &str, name: &str) -> bool {
    list.split_ascii_whitespace().any(|e| e == name)
}

/// Looks up an EGL or GL extension function as its real type `F`.
///
/// # Safety
/// `F` must be the function pointer type of `name`'s C prototype.
pub(crate) unsafe fn proc_address<F: Copy>(egl: &Egl, name: &str) -> Result<F, RenderError> {
    const { assert!(std::mem::size_of::<F>() == std::mem::size_of::<extern "system" fn()>()) };
    let f = egl
        .get_proc_address(name)
        .ok_or_else(|| RenderError::Unsupported(format!("{name} is not available")))?;
    // SAFETY: same size (checked above); the caller vouches for the type.
    Ok(unsafe { std::mem::transmute_copy::<extern "system" fn(), F>(&f) })
}

pub(crate) fn load() -> Result<Arc<Egl>, RenderError> {
    // SAFETY: loads libEGL.so.1, trusted like any system library.
    let egl = unsafe { khr::DynamicInstance::<khr::EGL1_5>::load_required() }
        .map_err(|e| RenderError::Load(format!("libEGL.so.1 with EGL 1.5: {e}")))?;
    Ok(Arc::new(egl))
}

/// One EGL device from `eglQueryDevicesEXT`.
struct Device {
    handle: EglDevice,
    extensions: String,
    node: Option<PathBuf>,
    render_node: Option<PathBuf>,
}

/// Whether `LIBGL_ALWAYS_SOFTWARE` asks for software rendering, read as
/// Mesa reads it (unset, empty or an unknown word: no).
pub(crate) fn software_forced() -> bool {
    std::env::var("LIBGL_ALWAYS_SOFTWARE").is_ok_and(|v| {
        ["1", "true", "t", "yes", "y"]
            .iter()
            .any(|yes| v.eq_ignore_ascii_case(yes))
    })
}

/// Why a render node's device cannot render in hardware, asked of the
/// kernel (never of Mesa): `None` when it may.
fn display_only(render_node: &Path) -> Option<String> {
    struct Card(std::fs::File);
    impl std::os::fd::AsFd for Card {
        fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
            self.0.as_fd()
        }
    }
    impl drm::Device for Card {}
    let card = match std::fs::File::options()
        .read(true)
        .write(true)
        .open(render_node)
    {
        Ok(file) => Card(file),
        Err(err) => return Some(format!("cannot open it: {err}")),
    };
    let driver = match drm::Device::get_driver(&card) {
        Ok(driver) => driver.name().to_string_lossy().into_owned(),
        Err(err) => return Some(format!("DRM_IOCTL_VERSION: {err}")),
    };
    match driver.as_str() {
        // Memory and modesetting only: Mesa would take kms_swrast.
        "vgem" | "vkms" => Some(format!("{driver} cannot render")),
        "virtio_gpu" if !virtio_gpu_has_3d(&card.0) => {
            Some("virtio_gpu without 3D (no virgl) cannot render".into())
        }
        _ => None,
    }
}

/// `VIRTGPU_PARAM_3D_FEATURES`: whether the host gave this virtio-gpu virgl.
fn virtio_gpu_has_3d(file: &std::fs::File) -> bool {
    use std::os::fd::AsRawFd;
    #[repr(C)]
    struct GetParam {
        param: u64,
        value: u64,
    }
    // DRM_IOCTL_VIRTGPU_GETPARAM: DRM_COMMAND_BASE (0x40) + 0x03.
    nix::ioctl_readwrite!(virtgpu_getparam, b'd', 0x43, GetParam);
    let mut value: i32 = 0;
    let mut request = GetParam {
        param: 1, // VIRTGPU_PARAM_3D_FEATURES
        value: &mut value as *mut i32 as u64,
    };
    // SAFETY: the kernel writes one int through `value`, which lives until
    // the call returns; `request` is the ioctl's exact layout.
    let result = unsafe { virtgpu_getparam(file.as_raw_fd(), &mut request) };
    result.is_ok() && value != 0
}

impl Device {
    fn software(&self) -> bool {
        has_extension(&self.extensions, "EGL_MESA_device_software")
    }
}

fn devices(egl: &Egl) -> Result<Vec<Device>, RenderError> {
    let client = egl
        .query_string(None, khr::EXTENSIONS)
        .map_err(egl_err("eglQueryString(EGL_NO_DISPLAY)"))?
        .to_string_lossy()
        .into_owned();
    for needed in ["EGL_EXT_device_enumeration", "EGL_EXT_platform_device"] {
        if !has_extension(&client, needed) {
            return Err(RenderError::Unsupported(format!("EGL lacks {needed}")));
        }
    }
    // SAFETY: the prototypes of EGL_EXT_device_enumeration and _query.
    let query_devices: QueryDevicesExt = unsafe { proc_address(egl, "eglQueryDevicesEXT")? };
    let query_string: QueryDeviceStringExt =
        unsafe { proc_address(egl, "eglQueryDeviceStringEXT")? };
    let mut count: khr::Int = 0;
    // SAFETY: with max 0 and no array only the count is written.
    if unsafe { query_devices(0, std::ptr::null_mut(), &mut count) } != khr::TRUE {
        return Err(RenderError::Unsupported("eglQueryDevicesEXT failed".into()));
    }
    let mut handles = vec![std::ptr::null_mut(); count.max(0) as usize];
    // SAFETY: `handles` has room for `count` devices.
    if unsafe { query_devices(count, handles.as_mut_ptr(), &mut count) } != khr::TRUE {
        return Err(RenderError::Unsupported("eglQueryDevicesEXT failed".into()));
    }
    handles.truncate(count.max(0) as usize);
    let string = |device: EglDevice, name: khr::Int| {
        // SAFETY: a device from eglQueryDevicesEXT; the result is NULL or a
        // NUL-terminated string owned by EGL for the device's lifetime.
        let s = unsafe { query_string(device, name) };
        // SAFETY: see above.
        (!s.is_null()).then(|| unsafe { CStr::from_ptr(s) }.to_string_lossy().into_owned())
    };
    Ok(handles
        .into_iter()
        .map(|handle| {
            let extensions = string(handle, khr::EXTENSIONS).unwrap_or_default();
            let render_node = string(handle, DRM_RENDER_NODE_FILE_EXT).map(PathBuf::from);
            let node = render_node
                .clone()
                .or_else(|| string(handle, DRM_DEVICE_FILE_EXT).map(PathBuf::from));
            Device {
                handle,
                extensions,
                node,
                render_node,
            }
        })
        .collect())
}

/// An initialised EGL display with a current configless GLES 3 context.
pub(crate) struct Context {
    pub egl: Arc<Egl>,
    pub display: khr::Display,
    pub context: khr::Context,
    pub extensions: String,
}

/// EGL displays are per process: every renderer on the same device gets the
/// same one, and one `eglTerminate` ends it for all. Count the users.
static DISPLAY_USERS: std::sync::Mutex<Vec<(usize, usize)>> = std::sync::Mutex::new(Vec::new());

fn initialize(egl: &Egl, display: khr::Display) -> Result<(), RenderError> {
    let mut users = DISPLAY_USERS.lock().unwrap_or_else(|p| p.into_inner());
    let key = display.as_ptr() as usize;
    match users.iter_mut().find(|(d, _)| *d == key) {
        Some((_, n)) => *n += 1,
        None => {
            egl.initialize(display).map_err(egl_err("eglInitialize"))?;
            users.push((key, 1));
        }
    }
    Ok(())
}

fn terminate(egl: &Egl, display: khr::Display) {
    let mut users = DISPLAY_USERS.lock().unwrap_or_else(|p| p.into_inner());
    let key = display.as_ptr() as usize;
    if let Some(i) = users.iter().position(|(d, _)| *d == key) {
        users[i].1 -= 1;
        if users[i].1 == 0 {
            users.swap_remove(i);
            let _ = egl.terminate(display);
        }
    }
}

impl Context {
    fn new(
        egl: &Arc<Egl>,
        platform: khr::Enum,
        native: *mut c_void,
    ) -> Result<Context, RenderError> {
        // SAFETY: `native` is what `platform` expects: an EGLDeviceEXT for
        // the device platform, EGL_DEFAULT_DISPLAY for surfaceless.
        let display = unsafe { egl.get_platform_display(platform, native, &[khr::ATTRIB_NONE]) }
            .map_err(egl_err("eglGetPlatformDisplay"))?;
        initialize(egl, display)?;
        let extensions = egl
            .query_string(Some(display), khr::EXTENSIONS)
            .map_err(egl_err("eglQueryString(EGL_EXTENSIONS)"))?
            .to_string_lossy()
            .into_owned();
        for needed in ["EGL_KHR_no_config_context", "EGL_KHR_surfaceless_context"] {
            if !has_extension(&extensions, needed) {
                terminate(egl, display);
                return Err(RenderError::Unsupported(format!(
                    "the EGL display lacks {needed}"
                )));
            }
        }
        egl.bind_api(khr::OPENGL_ES_API)
            .map_err(egl_err("eglBindAPI"))?;
        // SAFETY: EGL_NO_CONFIG_KHR (null) is valid with EGL_KHR_no_config_context.
        let no_config = unsafe { khr::Config::from_ptr(std::ptr::null_mut()) };
        let context = egl
            .create_context(
                display,
                no_config,
                None,
                &[khr::CONTEXT_MAJOR_VERSION, 3, khr::NONE],
            )
            .map_err(egl_err("eglCreateContext(GLES 3, configless)"));
        let context = match context {
            Ok(c) => c,
            Err(e) => {
                terminate(egl, display);
                return Err(e);
            }
        };
        let made_current = egl.make_current(display, None, None, Some(context));
        let context = Context {
            egl: egl.clone(),
            display,
            context,
            extensions,
        };
        made_current.map_err(egl_err("eglMakeCurrent(surfaceless)"))?;
        Ok(context)
    }

    /// A GL context for this (current) EGL context.
    pub fn gl(&self) -> glow::Context {
        // SAFETY: our context is current on this thread; the loader returns
        // its GLES entry points (or null for unknown names).
        unsafe {
            glow::Context::from_loader_function(|name| {
                self.egl
                    .get_proc_address(name)
                    .map_or(std::ptr::null(), |f| f as *const c_void)
            })
        }
    }

    /// Opens the display for `choice`, current on this thread.
    pub fn open(
        egl: &Arc<Egl>,
        choice: &RenderDevice,
    ) -> Result<(Context, DeviceInfo), RenderError> {
        let probe = |ctx: &Context| -> Result<String, RenderError> {
            use glow::HasContext;
            // SAFETY: a plain query on the current context.
            Ok(unsafe { ctx.gl().get_parameter_string(glow::RENDERER) })
        };
        let is_software = |renderer: &str| {
            let r = renderer.to_ascii_lowercase();
            ["llvmpipe", "softpipe", "swrast", "software"]
                .iter()
                .any(|s| r.contains(s))
        };
        match choice {
            RenderDevice::Surfaceless => {
                let ctx = Context::new(egl, PLATFORM_SURFACELESS_MESA, khr::DEFAULT_DISPLAY)?;
                let renderer = probe(&ctx)?;
                let software = is_software(&renderer);
                Ok((
                    ctx,
                    DeviceInfo {
                        node: None,
                        software,
                        renderer,
                    },
                ))
            }
            RenderDevice::Software => {
                let devices = devices(egl)?;
                let device = devices.iter().find(|d| d.software()).ok_or_else(|| {
                    RenderError::Unsupported("no EGL device has EGL_MESA_device_software".into())
                })?;
                let ctx = Context::new(egl, PLATFORM_DEVICE_EXT, device.handle)?;
                let renderer = probe(&ctx)?;
                Ok((
                    ctx,
                    DeviceInfo {
                        node: None,
                        software: true,
                        renderer,
                    },
                ))
            }
            RenderDevice::Node(path) if software_forced() => {
                Err(RenderError::Unsupported(format!(
                    "LIBGL_ALWAYS_SOFTWARE is set: Mesa refuses (and may crash on) the hardware \
                 device {}; unset it, or use --render-device software",
                    path.display()
                )))
            }
            RenderDevice::Node(path) => {
                let wanted = std::fs::canonicalize(path).unwrap_or_else(|_| path.clone());
                let devices = devices(egl)?;
                let device = devices
                    .iter()
                    .find(|d| d.node.as_deref().is_some_and(|n| same_node(n, &wanted)))
                    .ok_or_else(|| {
                        RenderError::Unsupported(format!("no EGL device for {}", path.display()))
                    })?;
                let ctx = Context::new(egl, PLATFORM_DEVICE_EXT, device.handle)?;
                let renderer = probe(&ctx)?;
                let software = is_software(&renderer);
                if software {
                    tracing::warn!(
                        "{} renders in software ({renderer}): DMA-BUF import may read zeros; \
                         --render-device software is the safe choice without a GPU",
                        path.display()
                    );
                }
                Ok((
                    ctx,
                    DeviceInfo {
                        node: device.node.clone(),
                        software,
                        renderer,
                    },
                ))
            }
            RenderDevice::Auto if software_forced() => {
                tracing::info!("LIBGL_ALWAYS_SOFTWARE is set: rendering on Mesa's software device");
                Context::open(egl, &RenderDevice::Software)
            }
            RenderDevice::Auto => {
                let devices = devices(egl)?;
                for device in devices.iter().filter(|d| !d.software()) {
                    let node = device.node.clone();
                    // Only a render node can be a GPU; what the kernel says
                    // cannot render is not offered to Mesa at all.
                    let Some(render_node) = &device.render_node else {
                        tracing::debug!("skipping {node:?}: no render node");
                        continue;
                    };
                    if let Some(why) = display_only(render_node) {
                        tracing::debug!("skipping {}: {why}", render_node.display());
                        continue;
                    }
                    match Context::new(egl, PLATFORM_DEVICE_EXT, device.handle) {
                        Ok(ctx) => {
                            let renderer = probe(&ctx)?;
                            if !is_software(&renderer) {
                                tracing::info!("rendering on {renderer} ({:?})", node);
                                return Ok((
                                    ctx,
                                    DeviceInfo {
                                        node,
                                        software: false,
                                        renderer,
                                    },
                                ));
                            }
                            // kms_swrast on a display-only device: the broken combination.
                            tracing::debug!("skipping {node:?}: renders in software ({renderer})");
                        }
                        Err(err) => tracing::debug!("skipping {node:?}: {err}"),
                    }
                }
                tracing::info!("no GPU found: rendering on Mesa's software device");
                Context::open(egl, &RenderDevice::Software)
            }
        }
    }
}

fn same_node(a: &Path, b: &Path) -> bool {
    a == b || std::fs::canonicalize(a).is_ok_and(|a| a == b)
}

impl Drop for Context {
    fn drop(&mut self) {
        let _ = self.egl.make_current(self.display, None, None, None);
        let _ = self.egl.destroy_context(self.display, self.context);
        terminate(&self.egl, self.display);
    }
}
