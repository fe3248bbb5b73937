//! A libvirt domain's D-Bus display (`--domain`): the domain looked up
//! through libvirt's C API, its live XML read for `<graphics type='dbus'>`,
//! and then either the private bus libvirt started for it (`address=` in
//! the live XML) or, with `p2p='yes'`, a socket to QEMU itself handed out
//! by `virDomainOpenGraphicsFD`.
//!
//! libvirt is loaded at run time (`libvirt.so.0`, as the seat's libseat):
//! the sink builds and runs on machines without it, and only `--domain`
//! needs it. Eleven functions of libvirt's stable C ABI are used, no
//! binding crate (the `virt` crate links libvirt at build time).

use std::ffi::{c_char, c_int, c_uint, c_void, CStr, CString};
use std::os::fd::{FromRawFd, OwnedFd};

/// Where a running domain's display is.
#[derive(Debug)]
pub enum DomainDisplay {
    /// libvirt's per-domain bus; QEMU owns `org.qemu` there.
    Bus { address: String },
    /// A socket to QEMU's display itself (`p2p='yes'`).
    P2p(OwnedFd),
}

/// A domain as `list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainInfo {
    pub name: String,
    pub uuid: String,
    pub active: bool,
    /// `bus`, `p2p` or `none` (no `<graphics type='dbus'>`).
    pub display: &'static str,
}

#[derive(Debug, thiserror::Error)]
pub enum LibvirtError {
    #[error("--domain needs libvirt's client library (libvirt.so.0, Debian's libvirt0): {0}")]
    NoLibrary(String),
    #[error("connecting to libvirt ({uri}): {message}")]
    Connect { uri: String, message: String },
    #[error("libvirt has no domain {0:?} (virsh list --all shows them)")]
    NoDomain(String),
    #[error("domain {0} is not running (virsh start {0})")]
    NotRunning(String),
    #[error(
        "domain {0} has no D-Bus display: add <graphics type='dbus'/> (or with p2p='yes') to \
         its <devices> (virsh edit {0})"
    )]
    NoDbusDisplay(String),
    #[error(
        "domain {domain}: its live XML names no bus address for its D-Bus display (libvirt \
         too old?)"
    )]
    NoAddress { domain: String },
    #[error(
        "domain {domain}: virDomainOpenGraphicsFD: {message} (a p2p display needs a read-write \
         libvirt connection: root, or a member of the group libvirt's socket allows)"
    )]
    OpenGraphics { domain: String, message: String },
    #[error("domain {domain}: {call}: {message}")]
    Call {
        domain: String,
        call: &'static str,
        message: String,
    },
}

type Ptr = *mut c_void;

/// The functions used, with the types of their declarations in libvirt's
/// headers (libvirt-host.h, libvirt-domain.h, virterror.h).
struct Lib {
    connect_open: unsafe extern "C" fn(*const c_char) -> Ptr,
    connect_close: unsafe extern "C" fn(Ptr) -> c_int,
    lookup_by_name: unsafe extern "C" fn(Ptr, *const c_char) -> Ptr,
    lookup_by_uuid_string: unsafe extern "C" fn(Ptr, *const c_char) -> Ptr,
    is_active: unsafe extern "C" fn(Ptr) -> c_int,
    get_xml_desc: unsafe extern "C" fn(Ptr, c_uint) -> *mut c_char,
    open_graphics_fd: unsafe extern "C" fn(Ptr, c_uint, c_uint) -> c_int,
    domain_free: unsafe extern "C" fn(Ptr) -> c_int,
    get_name: unsafe extern "C" fn(Ptr) -> *const c_char,
    get_uuid_string: unsafe extern "C" fn(Ptr, *mut c_char) -> c_int,
    list_all_domains: unsafe extern "C" fn(Ptr, *mut *mut Ptr, c_uint) -> c_int,
    last_error_message: unsafe extern "C" fn() -> *const c_char,
    set_error_func: unsafe extern "C" fn(*mut c_void, Option<ErrorFunc>),
    _library: libloading::Library,
}

type ErrorFunc = unsafe extern "C" fn(*mut c_void, *mut c_void);

/// libvirt prints every error to stderr unless told otherwise; the sink
/// reports them itself.
unsafe extern "C" fn quiet(_data: *mut c_void, _error: *mut c_void) {}

/// `VIR_UUID_STRING_BUFLEN`.
const UUID_STRING_LEN: usize = 37;

impl Lib {
    fn load() -> Result<Lib, LibvirtError> {
        let no = |e: libloading::Error| LibvirtError::NoLibrary(e.to_string());
        // SAFETY: loading libvirt runs its initialisers (thread-safe, no
        // connection made); each symbol gets its C declaration's type.
        unsafe {
            let library = libloading::Library::new("libvirt.so.0").map_err(no)?;
            macro_rules! sym {
                ($name:literal) => {
                    *library.get($name).map_err(no)?
                };
            }
            let lib = Lib {
                connect_open: sym!(b"virConnectOpen\0"),
                connect_close: sym!(b"virConnectClose\0"),
                lookup_by_name: sym!(b"virDomainLookupByName\0"),
                lookup_by_uuid_string: sym!(b"virDomainLookupByUUIDString\0"),
                is_active: sym!(b"virDomainIsActive\0"),
                get_xml_desc: sym!(b"virDomainGetXMLDesc\0"),
                open_graphics_fd: sym!(b"virDomainOpenGraphicsFD\0"),
                domain_free: sym!(b"virDomainFree\0"),
                get_name: sym!(b"virDomainGetName\0"),
                get_uuid_string: sym!(b"virDomainGetUUIDString\0"),
                list_all_domains: sym!(b"virConnectListAllDomains\0"),
                last_error_message: sym!(b"virGetLastErrorMessage\0"),
                set_error_func: sym!(b"virSetErrorFunc\0"),
                _library: library,
            };
            (lib.set_error_func)(std::ptr::null_mut(), Some(quiet));
            Ok(lib)
        }
    }

    /// The calling thread's last libvirt error.
    fn last_error(&self) -> String {
        // SAFETY: returns a thread-local string libvirt owns (never NULL:
        // "no error" when there is none); copied at once.
        unsafe {
            let p = (self.last_error_message)();
            if p.is_null() {
                "unknown error".into()
            } else {
                CStr::from_ptr(p).to_string_lossy().into_owned()
            }
        }
    }
}

/// A connection to libvirt (closed on drop).
pub struct Libvirt {
    lib: Lib,
    conn: Ptr,
    uri: String,
}

// SAFETY: libvirt's connection objects may be used from any thread (the
// library locks them itself); this one is used by one thread at a time.
unsafe impl Send for Libvirt {}

/// A domain handle (freed on drop).
struct Domain<'a> {
    libvirt: &'a Libvirt,
    ptr: Ptr,
}

impl Drop for Domain<'_> {
    fn drop(&mut self) {
        // SAFETY: a handle from a lookup or the list, freed once.
        unsafe { (self.libvirt.lib.domain_free)(self.ptr) };
    }
}

impl Domain<'_> {
    fn name(&self) -> String {
        // SAFETY: a live handle; the name is owned by it, copied at once.
        unsafe {
            let p = (self.libvirt.lib.get_name)(self.ptr);
            if p.is_null() {
                String::new()
            } else {
                CStr::from_ptr(p).to_string_lossy().into_owned()
            }
        }
    }

    fn uuid(&self) -> String {
        let mut buf = [0 as c_char; UUID_STRING_LEN];
        // SAFETY: a live handle and a buffer of VIR_UUID_STRING_BUFLEN.
        let ok = unsafe { (self.libvirt.lib.get_uuid_string)(self.ptr, buf.as_mut_ptr()) } == 0;
        if !ok {
            return String::new();
        }
        // SAFETY: libvirt wrote a NUL-terminated string into `buf`.
        unsafe { CStr::from_ptr(buf.as_ptr()) }
            .to_string_lossy()
            .into_owned()
    }

    fn is_active(&self) -> bool {
        // SAFETY: a live handle.
        unsafe { (self.libvirt.lib.is_active)(self.ptr) == 1 }
    }

    /// The live XML (the inactive one when it is off).
    fn xml(&self) -> Result<String, LibvirtError> {
        // SAFETY: a live handle; the string is ours, freed with free().
        unsafe {
            let p = (self.libvirt.lib.get_xml_desc)(self.ptr, 0);
            if p.is_null() {
                return Err(self.libvirt.call_error(&self.name(), "virDomainGetXMLDesc"));
            }
            let xml = CStr::from_ptr(p).to_string_lossy().into_owned();
            libc::free(p.cast());
            Ok(xml)
        }
    }
}

impl Drop for Libvirt {
    fn drop(&mut self) {
        // SAFETY: the connection opened in `connect`, closed once.
        unsafe { (self.lib.connect_close)(self.conn) };
    }
}

impl Libvirt {
    /// Connects to `uri` (libvirt's default when `None`: `LIBVIRT_DEFAULT_URI`,
    /// then qemu:///system for root).
    pub fn connect(uri: Option<&str>) -> Result<Libvirt, LibvirtError> {
        let lib = Lib::load()?;
        let shown = uri.unwrap_or("libvirt's default URI").to_owned();
        let c_uri = uri
            .map(CString::new)
            .transpose()
            .map_err(|_| LibvirtError::Connect {
                uri: shown.clone(),
                message: "the URI has a NUL byte".into(),
            })?;
        // SAFETY: a NUL-terminated URI or NULL (the default).
        let conn =
            unsafe { (lib.connect_open)(c_uri.as_ref().map_or(std::ptr::null(), |u| u.as_ptr())) };
        if conn.is_null() {
            let mut message = lib.last_error();
            // SAFETY: getuid cannot fail.
            if unsafe { libc::getuid() } != 0 && shown.contains("/system") {
                message.push_str(
                    " (a system URI needs root, or a user libvirt's polkit rules let in: \
                     on Debian, a member of the group libvirt)",
                );
            }
            return Err(LibvirtError::Connect {
                uri: shown,
                message,
            });
        }
        Ok(Libvirt {
            lib,
            conn,
            uri: shown,
        })
    }

    fn call_error(&self, domain: &str, call: &'static str) -> LibvirtError {
        LibvirtError::Call {
            domain: domain.to_owned(),
            call,
            message: self.lib.last_error(),
        }
    }

    /// The domain named `wanted`, or with that UUID.
    fn lookup(&self, wanted: &str) -> Result<Domain<'_>, LibvirtError> {
        let name = CString::new(wanted).map_err(|_| LibvirtError::NoDomain(wanted.into()))?;
        // SAFETY: a live connection and a NUL-terminated name.
        let mut ptr = unsafe { (self.lib.lookup_by_name)(self.conn, name.as_ptr()) };
        if ptr.is_null() && looks_like_uuid(wanted) {
            // SAFETY: as above.
            ptr = unsafe { (self.lib.lookup_by_uuid_string)(self.conn, name.as_ptr()) };
        }
        if ptr.is_null() {
            tracing::debug!("libvirt: looking up {wanted:?}: {}", self.lib.last_error());
            return Err(LibvirtError::NoDomain(wanted.into()));
        }
        Ok(Domain { libvirt: self, ptr })
    }

    /// Where the running domain `wanted`'s D-Bus display is: its bus, or
    /// a p2p socket to QEMU (one client at a time: QEMU drops the one
    /// before).
    pub fn display(&self, wanted: &str) -> Result<DomainDisplay, LibvirtError> {
        let domain = self.lookup(wanted)?;
        let name = domain.name();
        // The inactive XML has the <graphics> too: the domain's setup is
        // judged first, then whether it runs.
        let graphics =
            dbus_graphics(&domain.xml()?).ok_or(LibvirtError::NoDbusDisplay(name.clone()))?;
        if !domain.is_active() {
            return Err(LibvirtError::NotRunning(name));
        }
        if graphics.p2p {
            // SAFETY: a live handle; the fd returned is ours to close.
            let fd = unsafe { (self.lib.open_graphics_fd)(domain.ptr, graphics.index, 0) };
            if fd < 0 {
                return Err(LibvirtError::OpenGraphics {
                    domain: name,
                    message: self.lib.last_error(),
                });
            }
            // SAFETY: a fresh fd from libvirt, owned by nothing else.
            return Ok(DomainDisplay::P2p(unsafe { OwnedFd::from_raw_fd(fd) }));
        }
        match graphics.address {
            Some(address) => Ok(DomainDisplay::Bus { address }),
            None => Err(LibvirtError::NoAddress { domain: name }),
        }
    }

    /// Every domain libvirt knows, running or not, with its display kind.
    pub fn domains(&self) -> Result<Vec<DomainInfo>, LibvirtError> {
        let mut list: *mut Ptr = std::ptr::null_mut();
        // SAFETY: a live connection; libvirt allocates the array.
        let n = unsafe { (self.lib.list_all_domains)(self.conn, &mut list, 0) };
        if n < 0 {
            return Err(LibvirtError::Connect {
                uri: self.uri.clone(),
                message: self.lib.last_error(),
            });
        }
        // SAFETY: `n` handles, each ours to free (by `Domain`'s drop).
        let domains: Vec<Domain<'_>> = (0..n as usize)
            .map(|i| Domain {
                libvirt: self,
                ptr: unsafe { *list.add(i) },
            })
            .collect();
        // SAFETY: the array itself, allocated by libvirt, freed once.
        unsafe { libc::free(list.cast()) };
        let mut infos: Vec<DomainInfo> = domains
            .iter()
            .map(|d| DomainInfo {
                name: d.name(),
                uuid: d.uuid(),
                active: d.is_active(),
                display: match d.xml().ok().as_deref().and_then(dbus_graphics) {
                    Some(g) if g.p2p => "p2p",
                    Some(_) => "bus",
                    None => "none",
                },
            })
            .collect();
        infos.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(infos)
    }
}

fn looks_like_uuid(s: &str) -> bool {
    s.len() == 36 && s.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
}

/// A `<graphics type='dbus'>` element of a domain's XML.
#[derive(Debug, Clone, PartialEq, Eq)]
struct DbusGraphics {
    /// Its place among the domain's `<graphics>` elements (the index
    /// `virDomainOpenGraphicsFD` takes).
    index: c_uint,
    p2p: bool,
    address: Option<String>,
}

/// The first D-Bus `<graphics>` element of `xml`, read from its start tag.
/// (libvirt writes its XML itself: attributes quoted, entities escaped.)
fn dbus_graphics(xml: &str) -> Option<DbusGraphics> {
    let mut index = 0;
    let mut rest = xml;
    while let Some(at) = rest.find("<graphics") {
        let tag = &rest[at + "<graphics".len()..];
        let end = tag.find('>')?;
        let (attrs, after) = (&tag[..end], &tag[end..]);
        rest = after;
        // `<graphicsfoo` is another element.
        if !attrs.starts_with(|c: char| c.is_ascii_whitespace() || c == '/') {
            continue;
        }
        let attrs = attributes(attrs);
        let get = |name: &str| {
            attrs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        if get("type").as_deref() == Some("dbus") {
            return Some(DbusGraphics {
                index,
                p2p: get("p2p").as_deref() == Some("yes"),
                address: get("address"),
            });
        }
        index += 1;
    }
    None
}

/// `name='value'` / `name="value"` pairs of a start tag, values unescaped.
fn attributes(tag: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = tag;
    while let Some(eq) = rest.find('=') {
        let name = rest[..eq].trim().trim_start_matches('/').trim().to_owned();
        let value_part = rest[eq + 1..].trim_start();
        let Some(quote) = value_part.chars().next().filter(|&c| c == '\'' || c == '"') else {
            break;
        };
        let Some(close) = value_part[1..].find(quote) else {
            break;
        };
        out.push((name, unescape(&value_part[1..1 + close])));
        rest = &value_part[close + 2..];
    }
    out
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The live XML libvirt 11.3 writes for a running domain with each
    /// kind of D-Bus display (as read off a real libvirtd).
    #[test]
    fn finds_the_dbus_display_in_live_xml() {
        let bus = "<domain type='qemu' id='1'>\n  <devices>\n    <input type='mouse' bus='ps2'/>\n    \
                   <graphics type='dbus' address='unix:path=/run/libvirt/qemu/dbus/1-qs-bus-dbus.sock'/>\n    \
                   <audio id='1' type='none'/>\n  </devices>\n</domain>";
        assert_eq!(
            dbus_graphics(bus),
            Some(DbusGraphics {
                index: 0,
                p2p: false,
                address: Some("unix:path=/run/libvirt/qemu/dbus/1-qs-bus-dbus.sock".into()),
            })
        );
        let p2p = "<devices><graphics type='dbus' p2p='yes'/></devices>";
        assert_eq!(
            dbus_graphics(p2p),
            Some(DbusGraphics {
                index: 0,
                p2p: true,
                address: None
            })
        );
        // The index counts every <graphics>, whatever its type; other
        // elements whose names start alike are not graphics.
        let second = "<graphicsx type='dbus'/><graphics type=\"vnc\" port=\"5900\">\
                      <listen type='address'/></graphics>\
                      <graphics type=\"dbus\" address=\"unix:path=/a&amp;b\"/>";
        assert_eq!(
            dbus_graphics(second),
            Some(DbusGraphics {
                index: 1,
                p2p: false,
                address: Some("unix:path=/a&b".into()),
            })
        );
        assert_eq!(dbus_graphics("<domain><devices/></domain>"), None);
        assert_eq!(dbus_graphics("<graphics type='dbus"), None);
    }

    #[test]
    fn tells_uuids_from_names() {
        assert!(looks_like_uuid("00000000-0000-4000-8000-00000000bead"));
        assert!(!looks_like_uuid("myvm"));
    }
}
