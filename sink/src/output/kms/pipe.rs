//! What an output drives: a connector (by name, as `--connector` gives it,
//! or the first connected one), a mode (`WxH`, `WxH@Hz` or the preferred
//! one), a CRTC the connector's encoders can drive, and that CRTC's primary
//! and cursor planes, with their properties cached by name.

use std::fmt;
use std::str::FromStr;

use drm::control::{
    connector, crtc, Device as ControlDevice, Mode, ModeFlags, ModeTypeFlags, PlaneType,
    ResourceHandles,
};

use super::device::{Card, PropMap};
use super::error::KmsError;
use super::plane::Plane;

/// A mode as a user writes it: `1024x768` or `1024x768@60` (Hz rounded to
/// the nearest integer, as the kernel reports `vrefresh`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModeSpec {
    pub width: u16,
    pub height: u16,
    pub refresh: Option<u32>,
}

impl FromStr for ModeSpec {
    type Err = KmsError;

    fn from_str(s: &str) -> Result<ModeSpec, KmsError> {
        let bad = || KmsError::BadModeSpec(s.to_owned());
        let (size, refresh) = match s.split_once('@') {
            Some((size, hz)) => {
                let hz: f64 = hz.trim().parse().map_err(|_| bad())?;
                if !(0.5..1000.0).contains(&hz) {
                    return Err(bad());
                }
                (size, Some(hz.round() as u32))
            }
            None => (s, None),
        };
        let (w, h) = size.trim().split_once(['x', 'X']).ok_or_else(bad)?;
        let width: u16 = w.parse().map_err(|_| bad())?;
        let height: u16 = h.parse().map_err(|_| bad())?;
        if width == 0 || height == 0 {
            return Err(bad());
        }
        Ok(ModeSpec {
            width,
            height,
            refresh,
        })
    }
}

impl fmt::Display for ModeSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x{}", self.width, self.height)?;
        match self.refresh {
            Some(hz) => write!(f, "@{hz}"),
            None => Ok(()),
        }
    }
}

impl ModeSpec {
    fn matches(&self, mode: &Mode) -> bool {
        mode.size() == (self.width, self.height)
            && self.refresh.is_none_or(|hz| mode.vrefresh() == hz)
    }
}

/// `WxH@Hz` of a mode, for messages.
pub fn describe(mode: &Mode) -> String {
    let (w, h) = mode.size();
    format!("{w}x{h}@{}", mode.vrefresh())
}

/// Picks a mode: the one `spec` names (progressive first, then preferred,
/// then the highest refresh), or without a spec the preferred one, or a
/// progressive one of its size when it is interlaced or double-scanned
/// (else the first progressive one, else the first listed).
pub(super) fn pick_mode(modes: &[Mode], spec: Option<&ModeSpec>) -> Option<Mode> {
    let preferred = |m: &Mode| m.mode_type().contains(ModeTypeFlags::PREFERRED);
    // Interlaced and double-scanned modes are last choices: a guest's
    // frames shown on them are not what it drew, line for line.
    let plain = |m: &Mode| {
        !m.flags()
            .intersects(ModeFlags::INTERLACE | ModeFlags::DBLSCAN)
    };
    match spec {
        Some(spec) => modes
            .iter()
            .filter(|m| spec.matches(m))
            .max_by_key(|m| (plain(m), preferred(m), m.vrefresh()))
            .copied(),
        None => {
            let first_preferred = modes.iter().find(|m| preferred(m));
            // The panel's own size (its preferred mode's), progressive.
            let native = first_preferred.and_then(|p| {
                modes
                    .iter()
                    .filter(|m| plain(m) && m.size() == p.size())
                    .max_by_key(|m| (preferred(m), m.vrefresh()))
            });
            native
                .or_else(|| modes.iter().find(|m| plain(m)))
                .or(first_preferred)
                .or(modes.first())
                .copied()
        }
    }
}

/// One display pipe: connector → CRTC → planes, and the mode to drive.
#[derive(Debug, Clone)]
pub struct Pipe {
    pub connector: connector::Handle,
    /// The kernel's name, e.g. `Virtual-2`, `HDMI-A-1`.
    pub name: String,
    pub crtc: crtc::Handle,
    pub mode: Mode,
    /// The panel's physical size in mm (from its EDID), if it says.
    pub size_mm: Option<(u32, u32)>,
    pub primary: Plane,
    pub cursor: Option<Plane>,
    pub connector_props: PropMap,
    pub crtc_props: PropMap,
}

impl Pipe {
    /// Selects the connector `connector` (its name, e.g. `Virtual-2`) or
    /// the first connected one, its mode (`mode`, or the preferred one), a
    /// CRTC for it (the one driving it now if any, else a free one) and
    /// the CRTC's planes. Force-probes the connectors (once, at start).
    pub fn select(
        card: &Card,
        connector: Option<&str>,
        mode: Option<&ModeSpec>,
    ) -> Result<Pipe, KmsError> {
        Pipe::select_avoiding(card, connector, mode, &[])
    }

    /// [`Pipe::select`] among the objects (connectors, CRTCs, planes) not
    /// in `taken`: those other pipes of ours drive on the same card.
    pub fn select_avoiding(
        card: &Card,
        connector: Option<&str>,
        mode: Option<&ModeSpec>,
        taken: &[u32],
    ) -> Result<Pipe, KmsError> {
        let is_taken = |raw: u32| taken.contains(&raw);
        let resources = card
            .resource_handles()
            .map_err(card.err("DRM_IOCTL_MODE_GETRESOURCES"))?;
        let mut infos = Vec::new();
        for &handle in resources.connectors() {
            let info = card
                .get_connector(handle, true)
                .map_err(card.err("DRM_IOCTL_MODE_GETCONNECTOR"))?;
            if info.interface() != connector::Interface::Writeback {
                infos.push(info);
            }
        }
        let names = || {
            infos
                .iter()
                .map(|i| format!("{i} ({:?})", i.state()))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let info = match connector {
            Some(name) => infos
                .iter()
                .find(|i| i.to_string() == name)
                .ok_or_else(|| {
                    card.not_found(format!("no connector {name} (there are: {})", names()))
                })?,
            None => infos
                .iter()
                .find(|i| i.state() == connector::State::Connected && !is_taken(i.handle().into()))
                .ok_or_else(|| {
                    card.not_found(format!(
                        "no connected connector that no other head shows ({})",
                        names()
                    ))
                })?,
        };
        let name = info.to_string();
        if is_taken(info.handle().into()) {
            return Err(card.not_found(format!("{name} is shown by another head already")));
        }
        if info.state() != connector::State::Connected {
            return Err(card.not_found(format!("{name} is {:?}", info.state())));
        }
        let mode = pick_mode(info.modes(), mode).ok_or_else(|| {
            let modes: Vec<String> = info.modes().iter().map(describe).collect();
            card.not_found(format!(
                "{name} has no mode {} (modes: {})",
                mode.map_or("at all".into(), |m| m.to_string()),
                modes.join(", ")
            ))
        })?;
        let crtc = pick_crtc(card, &resources, info, taken)?.ok_or_else(|| {
            card.not_found(format!(
                "no CRTC that no other head drives can drive {name}"
            ))
        })?;
        let (primary, cursor) = planes_for(card, &resources, crtc, taken)?;
        let primary =
            primary.ok_or_else(|| card.not_found(format!("no primary plane for {crtc:?}")))?;
        let pipe = Pipe {
            connector: info.handle(),
            name,
            crtc,
            mode,
            size_mm: info.size().filter(|&(w, h)| w > 0 && h > 0),
            primary,
            cursor,
            connector_props: PropMap::read(card, info.handle())?,
            crtc_props: PropMap::read(card, crtc)?,
        };
        tracing::info!(
            "{}: {} {} on {:?}, primary {:?}, cursor {:?}",
            card.path().display(),
            pipe.name,
            describe(&pipe.mode),
            pipe.crtc,
            pipe.primary.handle,
            pipe.cursor.as_ref().map(|c| c.handle)
        );
        Ok(pipe)
    }

    /// The mode's size in pixels.
    pub fn size(&self) -> (u32, u32) {
        let (w, h) = self.mode.size();
        (u32::from(w), u32::from(h))
    }

    /// The KMS objects this pipe drives (for [`PipeClaims`]).
    pub fn objects(&self) -> Vec<u32> {
        let mut objects = vec![
            self.connector.into(),
            self.crtc.into(),
            self.primary.handle.into(),
        ];
        objects.extend(self.cursor.as_ref().map(|c| u32::from(c.handle)));
        objects
    }
}

/// Which KMS objects each pipe of ours drives on one card, so that two
/// heads on one card never pick the same connector, CRTC or plane.
#[derive(Debug, Default)]
pub struct PipeClaims {
    next: u64,
    claims: Vec<(u64, Vec<u32>)>,
}

impl PipeClaims {
    /// The objects driven by pipes other than `except`.
    pub fn taken(&self, except: Option<u64>) -> Vec<u32> {
        self.claims
            .iter()
            .filter(|(id, _)| Some(*id) != except)
            .flat_map(|(_, objects)| objects.iter().copied())
            .collect()
    }

    /// Records a new pipe's objects; its id, or the objects some other
    /// pipe drives already.
    pub fn claim(&mut self, objects: Vec<u32>) -> Result<u64, Vec<u32>> {
        let taken = self.taken(None);
        let clash: Vec<u32> = objects
            .iter()
            .copied()
            .filter(|o| taken.contains(o))
            .collect();
        if !clash.is_empty() {
            return Err(clash);
        }
        self.next += 1;
        self.claims.push((self.next, objects));
        Ok(self.next)
    }

    /// The pipe `id` drives `objects` from now on (a replug).
    pub fn replace(&mut self, id: u64, objects: Vec<u32>) {
        match self.claims.iter_mut().find(|(c, _)| *c == id) {
            Some((_, mine)) => *mine = objects,
            None => self.claims.push((id, objects)),
        }
    }

    pub fn release(&mut self, id: u64) {
        self.claims.retain(|(c, _)| *c != id);
    }
}

/// The CRTC driving `info` now, else the first possible one that no other
/// connector uses, else the first possible one; never one in `taken`.
fn pick_crtc(
    card: &Card,
    resources: &ResourceHandles,
    info: &connector::Info,
    taken: &[u32],
) -> Result<Option<crtc::Handle>, KmsError> {
    let free = |crtc: &crtc::Handle| !taken.contains(&u32::from(*crtc));
    let mut possible = Vec::new();
    for &handle in info.encoders() {
        let encoder = card
            .get_encoder(handle)
            .map_err(card.err("DRM_IOCTL_MODE_GETENCODER"))?;
        if info.current_encoder() == Some(handle) {
            if let Some(crtc) = encoder.crtc().filter(free) {
                return Ok(Some(crtc));
            }
        }
        for crtc in resources.filter_crtcs(encoder.possible_crtcs()) {
            if free(&crtc) && !possible.contains(&crtc) {
                possible.push(crtc);
            }
        }
    }
    let mut busy = Vec::new();
    for &handle in resources.encoders() {
        if let Ok(Some(crtc)) = card.get_encoder(handle).map(|e| e.crtc()) {
            busy.push(crtc);
        }
    }
    Ok(possible
        .iter()
        .find(|c| !busy.contains(c))
        .or(possible.first())
        .copied())
}

/// The primary and cursor planes that can sit on `crtc` (preferring the
/// ones on it now), none in `taken`.
fn planes_for(
    card: &Card,
    resources: &ResourceHandles,
    crtc: crtc::Handle,
    taken: &[u32],
) -> Result<(Option<Plane>, Option<Plane>), KmsError> {
    let mut found: [Option<(bool, Plane)>; 2] = [None, None];
    let handles = card
        .plane_handles()
        .map_err(card.err("DRM_IOCTL_MODE_GETPLANERESOURCES"))?;
    for handle in handles {
        if taken.contains(&u32::from(handle)) {
            continue;
        }
        let info = card
            .get_plane(handle)
            .map_err(card.err("DRM_IOCTL_MODE_GETPLANE"))?;
        if !resources
            .filter_crtcs(info.possible_crtcs())
            .contains(&crtc)
        {
            continue;
        }
        let plane = Plane::read(card, handle)?;
        let slot = match plane.kind {
            PlaneType::Primary => &mut found[0],
            PlaneType::Cursor => &mut found[1],
            PlaneType::Overlay => continue,
        };
        let on_crtc = info.crtc() == Some(crtc);
        if slot.as_ref().is_none_or(|(was_on, _)| on_crtc && !was_on) {
            *slot = Some((on_crtc, plane));
        }
    }
    let [primary, cursor] = found.map(|slot| slot.map(|(_, plane)| plane));
    Ok((primary, cursor))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two heads on one card: a second pipe never gets an object the
    /// first drives; a replug re-claims without clashing with itself; a
    /// pipe given back frees its objects.
    #[test]
    fn pipe_claims_keep_heads_apart() {
        let mut claims = PipeClaims::default();
        let first = claims.claim(vec![30, 40, 50, 51]).unwrap();
        assert_eq!(claims.claim(vec![31, 40, 52]), Err(vec![40]));
        let second = claims.claim(vec![31, 41, 52, 53]).unwrap();
        assert_ne!(first, second);
        assert_eq!(claims.taken(Some(second)), vec![30, 40, 50, 51]);
        // The first head replugged: the same connector, another CRTC.
        claims.replace(first, vec![30, 42, 54]);
        assert_eq!(claims.taken(Some(first)), vec![31, 41, 52, 53]);
        assert_eq!(claims.claim(vec![40]).map(|_| ()), Ok(()));
        claims.release(second);
        assert!(!claims.taken(None).contains(&41));
    }

    #[test]
    fn parses_mode_specs() {
        let spec = |s: &str| s.parse::<ModeSpec>();
        assert_eq!(
            spec("1024x768").unwrap(),
            ModeSpec {
                width: 1024,
                height: 768,
                refresh: None
            }
        );
        assert_eq!(spec("1920X1080@60").unwrap().refresh, Some(60));
        assert_eq!(spec("1920x1080@59.94").unwrap().refresh, Some(60));
        assert_eq!(spec("1280x800@75").unwrap().to_string(), "1280x800@75");
        for bad in [
            "",
            "1024",
            "x768",
            "1024x",
            "0x768",
            "1024x0",
            "1024x768@",
            "1024x768@0",
            "1024x768@abc",
            "1024x768@-60",
            "99999x1",
            "1024*768",
            "1024x768@60@60",
        ] {
            assert!(spec(bad).is_err(), "{bad:?} parsed");
        }
        assert_eq!(
            spec("axb").unwrap_err().to_string(),
            "mode \"axb\" is not WxH or WxH@Hz"
        );
    }

    fn mode(w: u16, h: u16, hz: u32, preferred: bool) -> Mode {
        Mode::from(drm_ffi::drm_mode_modeinfo {
            hdisplay: w,
            vdisplay: h,
            vrefresh: hz,
            type_: if preferred {
                drm_ffi::DRM_MODE_TYPE_PREFERRED
            } else {
                0
            },
            ..Default::default()
        })
    }

    #[test]
    fn picks_modes() {
        let modes = [
            mode(1920, 1080, 60, false),
            mode(1024, 768, 60, true),
            mode(1024, 768, 75, false),
            mode(1920, 1080, 75, false),
        ];
        let pick = |s: Option<&str>| {
            let spec = s.map(|s| s.parse::<ModeSpec>().unwrap());
            pick_mode(&modes, spec.as_ref()).map(|m| describe(&m))
        };
        assert_eq!(
            pick(None).as_deref(),
            Some("1024x768@60"),
            "the preferred one"
        );
        assert_eq!(pick(Some("1024x768")).as_deref(), Some("1024x768@60"));
        assert_eq!(pick(Some("1920x1080")).as_deref(), Some("1920x1080@75"));
        assert_eq!(pick(Some("1024x768@75")).as_deref(), Some("1024x768@75"));
        assert_eq!(pick(Some("1024x768@74.9")).as_deref(), Some("1024x768@75"));
        assert_eq!(pick(Some("800x600")), None);
        assert_eq!(pick(Some("1024x768@50")), None);
        assert_eq!(
            pick_mode(&modes[..1], None)
                .map(|m| describe(&m))
                .as_deref(),
            Some("1920x1080@60")
        );
        assert_eq!(pick_mode(&[], None), None);
    }

    fn odd(w: u16, h: u16, hz: u32, preferred: bool, flags: u32) -> Mode {
        let mut info: drm_ffi::drm_mode_modeinfo = mode(w, h, hz, preferred).into();
        info.flags = flags;
        Mode::from(info)
    }

    /// An interlaced or double-scanned mode is the last choice: never by
    /// default while a progressive one exists (a TV that prefers 1080i
    /// gets 1080p, else the first progressive mode), and for `WxH` only if
    /// no progressive mode of that size exists.
    #[test]
    fn picks_progressive_modes_over_interlaced_and_doublescan() {
        let interlaced = drm_ffi::DRM_MODE_FLAG_INTERLACE;
        let modes = [
            odd(1920, 1080, 60, true, interlaced),
            mode(1280, 720, 60, false),
            odd(1920, 1080, 50, false, interlaced),
            mode(1920, 1080, 30, false),
            odd(320, 200, 70, false, drm_ffi::DRM_MODE_FLAG_DBLSCAN),
        ];
        let pick = |s: Option<&str>| {
            let spec = s.map(|s| s.parse::<ModeSpec>().unwrap());
            pick_mode(&modes, spec.as_ref()).map(|m| (describe(&m), m.flags()))
        };
        let progressive = drm::control::ModeFlags::empty();
        // The panel's size, progressive, before any other size.
        assert_eq!(pick(None), Some(("1920x1080@30".into(), progressive)));
        assert_eq!(
            pick_mode(&[modes[0], modes[1], modes[2]], None)
                .map(|m| describe(&m))
                .as_deref(),
            Some("1280x720@60")
        );
        assert_eq!(
            pick(Some("1920x1080")),
            Some(("1920x1080@30".into(), progressive))
        );
        // Asked for by its rate: the interlaced one it is.
        assert_eq!(
            pick(Some("1920x1080@50")).map(|(d, _)| d).as_deref(),
            Some("1920x1080@50")
        );
        assert_eq!(
            pick(Some("320x200")).map(|(d, _)| d).as_deref(),
            Some("320x200@70")
        );
        // Nothing but odd modes: the preferred one still lights the monitor.
        assert_eq!(
            pick_mode(&modes[..1], None)
                .map(|m| describe(&m))
                .as_deref(),
            Some("1920x1080@60")
        );
    }
}
