//! EventLogger events from roles: a flat MessagePack map of string keys to strings and
//! integers, the shape Astron's EventLogger writes out (`type` first, then the details).

/// One value of an event.
pub enum Ev<'a> {
    Str(&'a str),
    U64(u64),
}

/// Encodes `{"type": kind, key: value, ...}`.
pub fn encode(kind: &str, pairs: &[(&str, Ev<'_>)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    // Writing into a Vec cannot fail.
    let _ = rmp::encode::write_map_len(&mut out, 1 + pairs.len() as u32);
    let _ = rmp::encode::write_str(&mut out, "type");
    let _ = rmp::encode::write_str(&mut out, kind);
    for (k, v) in pairs {
        let _ = rmp::encode::write_str(&mut out, k);
        match v {
            Ev::Str(s) => {
                let _ = rmp::encode::write_str(&mut out, s);
            }
            Ev::U64(n) => {
                let _ = rmp::encode::write_uint(&mut out, *n);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_a_flat_map() {
        let b = encode("x", &[("doid", Ev::U64(5)), ("field", Ev::Str("f"))]);
        // fixmap(3), "type", "x", "doid", 5, "field", "f"
        assert_eq!(
            b,
            [
                0x83, 0xa4, b't', b'y', b'p', b'e', 0xa1, b'x', 0xa4, b'd', b'o', b'i', b'd', 5,
                0xa5, b'f', b'i', b'e', b'l', b'd', 0xa1, b'f'
            ]
        );
    }
}
