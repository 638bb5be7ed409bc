//! The name an otpd child MD gives itself upstream (CONTROL_SET_CON_NAME): its daemon name and
//! an incarnation, a random number drawn once per process, so the root can tell the same child
//! re-registering on a new link from a different child. Any other name is a plain participant.

/// Marks a child MD's CONTROL_SET_CON_NAME text: `{name} [otpd-md {incarnation:016x}]`.
const MARK: &str = " [otpd-md ";

/// The CONTROL_SET_CON_NAME text of child MD `name` in process `incarnation`.
pub fn child_md_name(name: &str, incarnation: u64) -> String {
    format!("{name}{MARK}{incarnation:016x}]")
}

/// Reads a child MD's name back: `(daemon name, incarnation)`, or None for any other name.
pub fn parse_child_md_name(text: &str) -> Option<(&str, u64)> {
    let body = text.strip_suffix(']')?;
    let at = body.rfind(MARK)?;
    let hex = &body[at + MARK.len()..];
    if hex.len() != 16 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Some((&body[..at], u64::from_str_radix(hex, 16).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_other_names_are_not_child_mds() {
        let n = child_md_name("ca-host [east]", 0x0123_4567_89ab_cdef);
        assert_eq!(n, "ca-host [east] [otpd-md 0123456789abcdef]");
        assert_eq!(
            parse_child_md_name(&n),
            Some(("ca-host [east]", 0x0123_4567_89ab_cdef))
        );
        for other in [
            "AI (district 1)",
            "x [otpd-md 123]",
            "x [otpd-md 0123456789abcdeg]",
            "x [otpd-md 0123456789abcdef",
            "",
        ] {
            assert_eq!(parse_child_md_name(other), None, "{other}");
        }
    }
}
