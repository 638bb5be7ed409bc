//! The HAProxy PROXY protocol header (v1 text, v2 binary) a listener with `haproxy: true`
//! expects before the first client datagram: the real client address, and v2's TLVs; and
//! which peers such a header is believed from (`proxy_from`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The peers whose PROXY headers a listener believes (`proxy_from`); empty = loopback only.
pub type TrustedProxies = crate::config::eventlogger::PeerAllowList;

/// The v2 signature.
const SIG_V2: [u8; 12] = [
    0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
];
/// Longest v1 line, CRLF included (the specification's figure).
const MAX_V1: usize = 107;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyHeader {
    /// Bytes of the stream the header took.
    pub consumed: usize,
    /// The client's address, or None for LOCAL / UNKNOWN / address families without ports
    /// (health checks and the like: the connection's own addresses stand).
    pub source: Option<SocketAddr>,
    pub destination: Option<SocketAddr>,
    /// v2 only: the raw TLV bytes after the addresses.
    pub tlvs: Vec<u8>,
    /// v2 LOCAL command (a proxy's own health check).
    pub local: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parse {
    /// More bytes are needed.
    Incomplete,
    Done(ProxyHeader),
    Invalid(String),
}

/// Parses the header at the start of `buf`. `max_v2` bounds the v2 header's length (its
/// addresses and TLVs), so a hostile peer cannot make the listener buffer 64 KiB.
pub fn parse(buf: &[u8], max_v2: usize) -> Parse {
    if buf.is_empty() {
        return Parse::Incomplete;
    }
    let n = buf.len().min(SIG_V2.len());
    if buf[..n] == SIG_V2[..n] {
        if buf.len() < 16 {
            return Parse::Incomplete;
        }
        return parse_v2(buf, max_v2);
    }
    let n = buf.len().min(6);
    if buf[..n] == b"PROXY "[..n] {
        return parse_v1(buf);
    }
    Parse::Invalid("the connection did not start with a PROXY protocol header".into())
}

fn parse_v1(buf: &[u8]) -> Parse {
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        if buf.len() >= MAX_V1 {
            return Parse::Invalid("PROXY v1 line longer than 107 bytes".into());
        }
        return Parse::Incomplete;
    };
    if end + 2 > MAX_V1 {
        return Parse::Invalid("PROXY v1 line longer than 107 bytes".into());
    }
    let Ok(line) = std::str::from_utf8(&buf[..end]) else {
        return Parse::Invalid("PROXY v1 line is not text".into());
    };
    let parts: Vec<&str> = line.split(' ').collect();
    let header = |source, destination| {
        Parse::Done(ProxyHeader {
            consumed: end + 2,
            source,
            destination,
            tlvs: Vec::new(),
            local: false,
        })
    };
    match parts.get(1).copied() {
        Some("UNKNOWN") => header(None, None),
        Some(fam @ ("TCP4" | "TCP6")) if parts.len() == 6 => {
            let v6 = fam == "TCP6";
            let ip = |s: &str| -> Option<IpAddr> {
                if v6 {
                    s.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
                } else {
                    s.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
                }
            };
            let port = |s: &str| -> Option<u16> {
                (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && s.len() <= 5)
                    .then(|| s.parse().ok())
                    .flatten()
            };
            match (ip(parts[2]), ip(parts[3]), port(parts[4]), port(parts[5])) {
                (Some(s), Some(d), Some(sp), Some(dp)) => {
                    header(Some(SocketAddr::new(s, sp)), Some(SocketAddr::new(d, dp)))
                }
                _ => Parse::Invalid(format!("malformed PROXY v1 line {line:?}")),
            }
        }
        _ => Parse::Invalid(format!("malformed PROXY v1 line {line:?}")),
    }
}

fn parse_v2(buf: &[u8], max_v2: usize) -> Parse {
    let ver_cmd = buf[12];
    if ver_cmd >> 4 != 2 {
        return Parse::Invalid(format!("PROXY v2 header with version {}", ver_cmd >> 4));
    }
    let local = match ver_cmd & 0x0F {
        0 => true,
        1 => false,
        c => return Parse::Invalid(format!("PROXY v2 header with command {c}")),
    };
    let fam = buf[13];
    let len = u16::from_be_bytes([buf[14], buf[15]]) as usize;
    if len > max_v2 {
        return Parse::Invalid(format!(
            "PROXY v2 header of {len} bytes is over the limit of {max_v2}"
        ));
    }
    if buf.len() < 16 + len {
        return Parse::Incomplete;
    }
    let body = &buf[16..16 + len];
    let addr_len = match fam >> 4 {
        0 => 0,
        1 => 12,
        2 => 36,
        3 => 216,
        f => return Parse::Invalid(format!("PROXY v2 header with address family {f}")),
    };
    if !matches!(fam & 0x0F, 0..=2) {
        return Parse::Invalid(format!("PROXY v2 header with transport {}", fam & 0x0F));
    }
    if body.len() < addr_len {
        return Parse::Invalid("PROXY v2 header too short for its addresses".into());
    }
    let (source, destination) = if local {
        (None, None)
    } else {
        match fam >> 4 {
            1 => {
                let s = Ipv4Addr::new(body[0], body[1], body[2], body[3]);
                let d = Ipv4Addr::new(body[4], body[5], body[6], body[7]);
                let sp = u16::from_be_bytes([body[8], body[9]]);
                let dp = u16::from_be_bytes([body[10], body[11]]);
                (
                    Some(SocketAddr::new(IpAddr::V4(s), sp)),
                    Some(SocketAddr::new(IpAddr::V4(d), dp)),
                )
            }
            2 => {
                let s: [u8; 16] = body[0..16].try_into().expect("16 bytes");
                let d: [u8; 16] = body[16..32].try_into().expect("16 bytes");
                let sp = u16::from_be_bytes([body[32], body[33]]);
                let dp = u16::from_be_bytes([body[34], body[35]]);
                (
                    Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(s)), sp)),
                    Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(d)), dp)),
                )
            }
            _ => (None, None),
        }
    };
    Parse::Done(ProxyHeader {
        consumed: 16 + len,
        source,
        destination,
        tlvs: body[addr_len..].to_vec(),
        local,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trusted_proxies_default_to_loopback() {
        let none = TrustedProxies::parse("proxy_from", &[]).unwrap();
        assert!(none.allows("127.0.0.1".parse().unwrap()));
        assert!(none.allows("::1".parse().unwrap()));
        assert!(!none.allows("10.0.0.1".parse().unwrap()));
        let some = TrustedProxies::parse("proxy_from", &["10.0.0.0/8".into(), "192.0.2.7".into()])
            .unwrap();
        assert!(some.allows("10.1.2.3".parse().unwrap()));
        assert!(some.allows("192.0.2.7".parse().unwrap()));
        assert!(!some.allows("127.0.0.1".parse().unwrap()));
        assert!(!some.allows("192.0.2.8".parse().unwrap()));
        assert!(TrustedProxies::parse("proxy_from", &["nonsense".into()]).is_err());
    }

    fn v2(fam: u8, addrs: &[u8], tlvs: &[u8]) -> Vec<u8> {
        let mut b = SIG_V2.to_vec();
        b.push(0x21);
        b.push(fam);
        b.extend_from_slice(&((addrs.len() + tlvs.len()) as u16).to_be_bytes());
        b.extend_from_slice(addrs);
        b.extend_from_slice(tlvs);
        b
    }

    #[test]
    fn v1_tcp4_and_tcp6() {
        let Parse::Done(h) = parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 1000 2000\r\nrest", 512) else {
            panic!()
        };
        assert_eq!(h.consumed, 38);
        assert_eq!(h.source, Some("1.2.3.4:1000".parse().unwrap()));
        assert_eq!(h.destination, Some("5.6.7.8:2000".parse().unwrap()));
        let Parse::Done(h) = parse(b"PROXY TCP6 ::1 fe80::2 1 2\r\n", 512) else {
            panic!()
        };
        assert_eq!(h.source, Some("[::1]:1".parse().unwrap()));
        assert_eq!(parse(b"PROXY TCP4 1.2", 512), Parse::Incomplete);
        assert!(matches!(parse(b"PROXY UNKNOWN\r\n", 512), Parse::Done(h) if h.source.is_none()));
        assert!(matches!(
            parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 2\r\n", 512),
            Parse::Invalid(_)
        ));
        assert!(matches!(
            parse(b"GET / HTTP/1.0\r\n", 512),
            Parse::Invalid(_)
        ));
        assert!(matches!(parse(&[b'P'; 200], 512), Parse::Invalid(_)));
    }

    #[test]
    fn v2_with_tlvs() {
        let addrs = [10, 0, 0, 1, 10, 0, 0, 2, 0x1F, 0x90, 0, 80];
        let b = v2(0x11, &addrs, b"hello");
        for cut in 0..b.len() {
            assert_eq!(parse(&b[..cut], 512), Parse::Incomplete, "cut {cut}");
        }
        let Parse::Done(h) = parse(&b, 512) else {
            panic!()
        };
        assert_eq!(h.consumed, b.len());
        assert_eq!(h.source, Some("10.0.0.1:8080".parse().unwrap()));
        assert_eq!(h.tlvs, b"hello");
        assert!(matches!(parse(&b, 8), Parse::Invalid(_)));
        let mut short = v2(0x21, &addrs, b"");
        assert!(matches!(parse(&short, 512), Parse::Invalid(_)));
        short[12] = 0x20; // LOCAL
        assert!(matches!(parse(&short, 512), Parse::Invalid(_)));
    }
}
