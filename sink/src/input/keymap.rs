//! Linux keycodes to QEMU's key numbers ("qnum": the XT scan code with the
//! 0xe0 prefix folded into the high bit), what `org.qemu.Display1.Keyboard`
//! takes. The table is generated from keycodemapdb's data by
//! `scripts/gen-keymap.py` (see `keymap_table.rs`).

#[rustfmt::skip]
mod table {
    include!("keymap_table.rs");
}

/// QEMU's key number of Linux keycode `code`, if the key has one.
pub fn qnum(code: u16) -> Option<u32> {
    table::LINUX_TO_QNUM
        .get(usize::from(code))
        .copied()
        .filter(|&q| q != 0)
        .map(u32::from)
}

#[cfg(test)]
mod tests {
    use super::qnum;

    /// Known pairs, key by key, from the PC's set 1 scan codes.
    #[test]
    fn known_keys_have_their_set_1_codes() {
        let pairs: &[(u16, u32, &str)] = &[
            (1, 0x01, "ESC"),
            (2, 0x02, "1"),
            (11, 0x0b, "0"),
            (14, 0x0e, "BACKSPACE"),
            (15, 0x0f, "TAB"),
            (16, 0x10, "Q"),
            (28, 0x1c, "ENTER"),
            (29, 0x1d, "LEFTCTRL"),
            (30, 0x1e, "A"),
            (42, 0x2a, "LEFTSHIFT"),
            (43, 0x2b, "BACKSLASH"),
            (44, 0x2c, "Z"),
            (54, 0x36, "RIGHTSHIFT"),
            (55, 0x37, "KPASTERISK"),
            (56, 0x38, "LEFTALT"),
            (57, 0x39, "SPACE"),
            (58, 0x3a, "CAPSLOCK"),
            (59, 0x3b, "F1"),
            (68, 0x44, "F10"),
            (69, 0x45, "NUMLOCK"),
            (70, 0x46, "SCROLLLOCK"),
            (71, 0x47, "KP7"),
            (83, 0x53, "KPDOT"),
            (86, 0x56, "102ND (the ISO key beside left shift)"),
            (87, 0x57, "F11"),
            (88, 0x58, "F12"),
            (96, 0x9c, "KPENTER"),
            (97, 0x9d, "RIGHTCTRL"),
            (98, 0xb5, "KPSLASH"),
            (99, 0x54, "SYSRQ"),
            (100, 0xb8, "RIGHTALT"),
            (102, 0xc7, "HOME"),
            (103, 0xc8, "UP"),
            (104, 0xc9, "PAGEUP"),
            (105, 0xcb, "LEFT"),
            (106, 0xcd, "RIGHT"),
            (107, 0xcf, "END"),
            (108, 0xd0, "DOWN"),
            (109, 0xd1, "PAGEDOWN"),
            (110, 0xd2, "INSERT"),
            (111, 0xd3, "DELETE"),
            (119, 0xc6, "PAUSE"),
            (122, 0x72, "HANGEUL"),
            (123, 0x71, "HANJA"),
            (125, 0xdb, "LEFTMETA"),
            (126, 0xdc, "RIGHTMETA"),
            (127, 0xdd, "COMPOSE (menu)"),
        ];
        for &(code, want, name) in pairs {
            assert_eq!(qnum(code), Some(want), "KEY_{name} ({code})");
        }
    }

    #[test]
    fn keys_without_a_scan_code_have_no_qnum() {
        assert_eq!(qnum(0), None, "KEY_RESERVED");
        assert_eq!(qnum(0x110), None, "BTN_LEFT is a button, not a key");
        assert_eq!(qnum(u16::MAX), None);
    }

    /// Every qnum is one byte and no two keys share one (a release of one
    /// key must not read as another's), except keycode 84, which Linux
    /// leaves unnamed and keycodemapdb gives SysRq's XT code 0x54 (the
    /// code an XT keyboard sends for Alt+PrintScreen), as KEY_SYSRQ (99).
    #[test]
    fn qnums_are_bytes_and_unique() {
        let mut seen = std::collections::HashMap::new();
        let mut shared = Vec::new();
        for code in 0..0x300u16 {
            if let Some(q) = qnum(code) {
                assert!(q <= 0xff, "{code}: {q:#x}");
                if let Some(other) = seen.insert(q, code) {
                    shared.push((other, code, q));
                }
            }
        }
        assert_eq!(shared, [(84, 99, 0x54)]);
        assert!(seen.len() > 200, "{} keys", seen.len());
    }
}
