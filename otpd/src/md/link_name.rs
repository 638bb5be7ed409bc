//! The name a child MD gives itself towards its upstream MD (CONTROL_SET_CON_NAME): the
//! daemon's configured name and the process's incarnation, so the root can tell the same child
//! re-registering after a reconnection from another child. One format, written and read here.

/// What marks a child MD's name: `{name} [otpd-md {incarnation:016x}]`.
const TAG: &str = " [otpd-md ";

/// The CONTROL_SET_CON_NAME text of a child MD: `{name} [otpd-md {incarnation:016x}]`, where
/// `incarnation` is a random number chosen once per process (the same on every reconnection).
pub fn child_md_name(name: &str, incarnation: u64) -> String {
    format!("{name}{TAG}{incarnation:016x}]")
}

/// Reads back what `child_md_name` wrote: (name, incarnation). None for any other text (an AI's
/// name, astrond's, a malformed one).
pub fn parse_child_md_name(text: &str) -> Option<(&str, u64)> {
    let body = text.strip_suffix(']')?;
    let at = body.rfind(TAG)?;
    let hex = &body[at + TAG.len()..];
    if hex.len() != 16 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let incarnation = u64::from_str_radix(hex, 16).ok()?;
    Some((&body[..at], incarnation))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for (name, inc) in [
            ("ca-host", 0x0123_4567_89ab_cdef_u64),
            ("", 0),
            ("odd ] [otpd-md name", u64::MAX),
        ] {
            let text = child_md_name(name, inc);
            assert_eq!(parse_child_md_name(&text), Some((name, inc)), "{text}");
        }
        assert_eq!(
            child_md_name("md-2", 0xab),
            "md-2 [otpd-md 00000000000000ab]"
        );
    }

    #[test]
    fn other_names_are_not_child_mds() {
        for text in [
            "AI district 1",
            "md [otpd-md 1234]",
            "md [otpd-md 0123456789abcdeg]",
            "md [otpd-md 0123456789abcdef",
            "md [otpd-md +123456789abcdef]",
            "",
        ] {
            assert_eq!(parse_child_md_name(text), None, "{text}");
        }
    }
}
