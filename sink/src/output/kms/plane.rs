//! Planes and what they scan out: the `IN_FORMATS` blob (formats ×
//! modifiers) when the driver takes modifiers, else the plane's format list
//! with the implicit modifier.

use std::collections::HashSet;
use std::mem::{offset_of, size_of};

use drm::buffer::{DrmFourcc, DrmModifier};
use drm::control::{plane, Device as ControlDevice, PlaneType};
use drm_ffi::{drm_format_modifier, drm_format_modifier_blob};

use super::device::{Card, PropMap};
use super::error::KmsError;

/// `FORMAT_BLOB_CURRENT` in drm_plane.c: the only version there is.
const BLOB_VERSION: u32 = 1;

fn u32_at(blob: &[u8], at: usize) -> Option<u32> {
    let bytes = blob.get(at..at.checked_add(4)?)?;
    Some(u32::from_ne_bytes(bytes.try_into().ok()?))
}

fn u64_at(blob: &[u8], at: usize) -> Option<u64> {
    let bytes = blob.get(at..at.checked_add(8)?)?;
    Some(u64::from_ne_bytes(bytes.try_into().ok()?))
}

/// Parses an `IN_FORMATS` blob (`struct drm_format_modifier_blob`, then
/// the format array and the modifier array) into (fourcc, modifier) pairs.
/// Every field is read unaligned and bounds-checked: a short or
/// inconsistent blob is an error, not a wild read.
pub fn parse_in_formats(blob: &[u8]) -> Result<Vec<(u32, u64)>, String> {
    type Header = drm_format_modifier_blob;
    type Entry = drm_format_modifier;
    let field = |at: usize, name: &str| {
        u32_at(blob, at).ok_or_else(|| format!("{} bytes: no room for {name}", blob.len()))
    };
    let version = field(offset_of!(Header, version), "the header")?;
    if version != BLOB_VERSION {
        return Err(format!("version {version}, not {BLOB_VERSION}"));
    }
    let count_formats = field(offset_of!(Header, count_formats), "the header")? as usize;
    let formats_offset = field(offset_of!(Header, formats_offset), "the header")? as usize;
    let count_modifiers = field(offset_of!(Header, count_modifiers), "the header")? as usize;
    let modifiers_offset = field(offset_of!(Header, modifiers_offset), "the header")? as usize;
    if blob.len() < size_of::<Header>() {
        return Err(format!("{} bytes: shorter than its header", blob.len()));
    }

    let formats = (0..count_formats)
        .map(|i| {
            u32_at(blob, formats_offset + 4 * i)
                .ok_or_else(|| format!("format {i} of {count_formats} is past the end"))
        })
        .collect::<Result<Vec<u32>, String>>()?;

    let mut pairs = Vec::new();
    for i in 0..count_modifiers {
        let entry = modifiers_offset + i * size_of::<Entry>();
        let past = || format!("modifier {i} of {count_modifiers} is past the end");
        let mask = u64_at(blob, entry + offset_of!(Entry, formats)).ok_or_else(past)?;
        let first = u32_at(blob, entry + offset_of!(Entry, offset)).ok_or_else(past)? as usize;
        let modifier = u64_at(blob, entry + offset_of!(Entry, modifier)).ok_or_else(past)?;
        for bit in (0..64).filter(|bit| mask & (1u64 << bit) != 0) {
            let fourcc = formats.get(first + bit).ok_or_else(|| {
                format!(
                    "modifier {modifier:#x} names format {} of {count_formats}",
                    first + bit
                )
            })?;
            pairs.push((*fourcc, modifier));
        }
    }
    Ok(pairs)
}

/// The (format, modifier) pairs a plane scans out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FormatSet {
    /// The plane's formats (any layout the driver takes implicitly).
    formats: Vec<u32>,
    /// From `IN_FORMATS`; `None` when the driver takes no modifiers.
    modifiers: Option<HashSet<(u32, u64)>>,
}

impl FormatSet {
    /// A plane whose driver takes no explicit modifiers: `formats`, each
    /// with its implicit layout.
    pub fn implicit(formats: &[u32]) -> FormatSet {
        FormatSet {
            formats: formats.to_vec(),
            modifiers: None,
        }
    }

    /// `formats` plus the `IN_FORMATS` pairs.
    pub fn with_modifiers(formats: &[u32], pairs: impl IntoIterator<Item = (u32, u64)>) -> Self {
        FormatSet {
            formats: formats.to_vec(),
            modifiers: Some(pairs.into_iter().collect()),
        }
    }

    /// Can the plane scan out `fourcc` laid out as `modifier`?
    /// `DrmModifier::Invalid` means implicit (the driver's own layout);
    /// LINEAR without `IN_FORMATS` is taken as implicit.
    pub fn supports(&self, fourcc: DrmFourcc, modifier: DrmModifier) -> bool {
        let format = fourcc as u32;
        match (modifier, &self.modifiers) {
            (DrmModifier::Invalid, _) | (DrmModifier::Linear, None) => {
                self.formats.contains(&format)
            }
            (_, None) => false,
            (modifier, Some(pairs)) => pairs.contains(&(format, u64::from(modifier))),
        }
    }

    /// The formats (those drm-fourcc knows).
    pub fn formats(&self) -> impl Iterator<Item = DrmFourcc> + '_ {
        self.formats
            .iter()
            .filter_map(|&f| DrmFourcc::try_from(f).ok())
    }

    /// The explicit modifiers of `fourcc` (none without `IN_FORMATS`).
    pub fn modifiers(&self, fourcc: DrmFourcc) -> Vec<DrmModifier> {
        let mut out: Vec<DrmModifier> = self
            .modifiers
            .iter()
            .flatten()
            .filter(|&&(f, _)| f == fourcc as u32)
            .map(|&(_, m)| DrmModifier::from(m))
            .collect();
        out.sort_by_key(|&m| u64::from(m));
        out
    }
}

/// A plane with its type, cached properties and formats.
#[derive(Debug, Clone)]
pub struct Plane {
    pub handle: plane::Handle,
    pub kind: PlaneType,
    pub props: PropMap,
    pub formats: FormatSet,
}

impl Plane {
    /// Reads `handle`'s type, properties and formats (`IN_FORMATS` when
    /// the card takes modifiers).
    pub fn read(card: &Card, handle: plane::Handle) -> Result<Plane, KmsError> {
        let info = card
            .get_plane(handle)
            .map_err(card.err("DRM_IOCTL_MODE_GETPLANE"))?;
        let props = PropMap::read(card, handle)?;
        let kind = match props.value("type") {
            Some(t) if t == PlaneType::Primary as u64 => PlaneType::Primary,
            Some(t) if t == PlaneType::Cursor as u64 => PlaneType::Cursor,
            _ => PlaneType::Overlay,
        };
        let blob = props
            .value("IN_FORMATS")
            .filter(|&id| id != 0 && card.caps().addfb2_modifiers);
        let formats = match blob {
            Some(id) => {
                let bytes = card
                    .get_property_blob(id)
                    .map_err(card.err("DRM_IOCTL_MODE_GETPROPBLOB"))?;
                let pairs = parse_in_formats(&bytes).map_err(|why| KmsError::BadBlob {
                    device: card.path().to_owned(),
                    what: "IN_FORMATS",
                    why: format!("{handle:?}: {why}"),
                })?;
                FormatSet::with_modifiers(info.formats(), pairs)
            }
            None => FormatSet::implicit(info.formats()),
        };
        Ok(Plane {
            handle,
            kind,
            props,
            formats,
        })
    }

    /// See [`FormatSet::supports`].
    pub fn supports(&self, fourcc: DrmFourcc, modifier: DrmModifier) -> bool {
        self.formats.supports(fourcc, modifier)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const XR24: u32 = DrmFourcc::Xrgb8888 as u32;
    const AR24: u32 = DrmFourcc::Argb8888 as u32;
    const RG16: u32 = DrmFourcc::Rgb565 as u32;
    const TILED: u64 = 0x0100_0000_0000_0001; // I915_FORMAT_MOD_X_TILED

    /// A blob laid out as the kernel does (drm_plane.c
    /// `create_in_format_blob`): header, formats, then 8-aligned modifiers.
    fn blob(formats: &[u32], modifiers: &[(u64, u32, u64)], misalign: bool) -> Vec<u8> {
        let mut out = Vec::new();
        let formats_offset = 24u32;
        let modifiers_offset = (formats_offset + 4 * formats.len() as u32).next_multiple_of(8);
        for v in [
            1,
            0,
            formats.len() as u32,
            formats_offset,
            modifiers.len() as u32,
            modifiers_offset,
        ] {
            out.extend_from_slice(&v.to_ne_bytes());
        }
        for f in formats {
            out.extend_from_slice(&f.to_ne_bytes());
        }
        out.resize(modifiers_offset as usize, 0);
        for &(mask, offset, modifier) in modifiers {
            out.extend_from_slice(&mask.to_ne_bytes());
            out.extend_from_slice(&offset.to_ne_bytes());
            out.extend_from_slice(&0u32.to_ne_bytes());
            out.extend_from_slice(&modifier.to_ne_bytes());
        }
        if misalign {
            // The same bytes one past an 8-byte boundary: reads are unaligned.
            out.insert(0, 0xee);
        }
        out
    }

    #[test]
    fn parses_a_vkms_like_blob() {
        // Every format LINEAR, as the core publishes for vkms.
        let bytes = blob(&[AR24, XR24, RG16], &[(0b111, 0, 0)], true);
        let pairs = parse_in_formats(&bytes[1..]).unwrap();
        assert_eq!(pairs, vec![(AR24, 0), (XR24, 0), (RG16, 0)]);
    }

    #[test]
    fn parses_modifier_offsets_and_masks() {
        // X-tiled for the second and third format only, through a non-zero
        // offset into the format array.
        let bytes = blob(
            &[AR24, XR24, RG16],
            &[(0b011, 0, 0), (0b11, 1, TILED)],
            false,
        );
        let pairs = parse_in_formats(&bytes).unwrap();
        assert_eq!(
            pairs,
            vec![(AR24, 0), (XR24, 0), (XR24, TILED), (RG16, TILED)]
        );
        let set = FormatSet::with_modifiers(&[AR24, XR24, RG16], pairs);
        assert!(set.supports(DrmFourcc::Xrgb8888, DrmModifier::Linear));
        assert!(set.supports(DrmFourcc::Rgb565, DrmModifier::from(TILED)));
        assert!(!set.supports(DrmFourcc::Rgb565, DrmModifier::Linear));
        assert!(!set.supports(DrmFourcc::Argb8888, DrmModifier::from(TILED)));
        assert!(!set.supports(DrmFourcc::Xbgr8888, DrmModifier::Linear));
        // Implicit: any listed format.
        assert!(set.supports(DrmFourcc::Rgb565, DrmModifier::Invalid));
        assert!(!set.supports(DrmFourcc::Xbgr8888, DrmModifier::Invalid));
        assert_eq!(
            set.modifiers(DrmFourcc::Xrgb8888),
            vec![DrmModifier::Linear, DrmModifier::from(TILED)]
        );
    }

    #[test]
    fn rejects_malformed_blobs() {
        let good = blob(&[AR24, XR24], &[(0b11, 0, 0)], false);
        for cut in [0, 10, 24, 30, good.len() - 1] {
            assert!(parse_in_formats(&good[..cut]).is_err(), "cut at {cut}");
        }
        // A mask bit past the format array.
        let bad = blob(&[AR24, XR24], &[(0b100, 0, 0)], false);
        assert!(parse_in_formats(&bad)
            .unwrap_err()
            .contains("format 2 of 2"));
        let mut v2 = good.clone();
        v2[0..4].copy_from_slice(&2u32.to_ne_bytes());
        assert!(parse_in_formats(&v2).unwrap_err().contains("version 2"));
    }

    #[test]
    fn without_in_formats_linear_is_implicit() {
        let set = FormatSet::implicit(&[XR24]);
        assert!(set.supports(DrmFourcc::Xrgb8888, DrmModifier::Invalid));
        assert!(set.supports(DrmFourcc::Xrgb8888, DrmModifier::Linear));
        assert!(!set.supports(DrmFourcc::Xrgb8888, DrmModifier::from(TILED)));
        assert!(!set.supports(DrmFourcc::Argb8888, DrmModifier::Invalid));
        assert_eq!(set.formats().collect::<Vec<_>>(), vec![DrmFourcc::Xrgb8888]);
    }
}
