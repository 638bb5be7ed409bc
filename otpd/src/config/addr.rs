//! Network addresses written the way astrond's configuration writes them.
//!
//! Accepted forms (the port may always be left out, then `default_port` applies):
//! * IPv4 dotted quad: `127.0.0.1`, `127.0.0.1:7199`
//! * IPv6: bare `::1` or `0:0:0:0:0:0:0:1` (a bare IPv6 address never carries a port, since
//!   its last group would be ambiguous), bracketed `[::1]`, or bracketed with a port
//!   `[::1]:7199`
//! * a hostname (RFC 1123 characters: letters, digits, `.` and `-`; no empty label, no `..`,
//!   `-.` or `.-`, no leading `-`/`.`, no trailing `-`), resolved with the system resolver.
//!
//! The split between host and port follows astrond: the port is whatever follows the last
//! colon, unless the text has several colons and that last colon does not close a bracket
//! (then the whole text is a bare IPv6 address). Unlike astrond, the port must be a plain
//! decimal number in 0..=65535, and a name made only of digits and dots that is not a full
//! dotted quad (`99.1`) is refused rather than handed to the resolver's legacy shorthand.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6, ToSocketAddrs};

/// The host part of an address, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// A literal IP address (with its IPv6 scope id, if one was given numerically).
    Ip(IpAddr, u32),
    /// A literal IPv6 address with a named scope (`fe80::1%eth0`): left to the resolver.
    ScopedV6(String),
    /// A name that needs resolving.
    Name(String),
}

/// An address split into host and port and checked for syntax (not resolved).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    pub host: Host,
    pub port: u16,
}

impl HostPort {
    /// The canonical `host:port` text: IPv6 hosts in brackets, names as written.
    pub fn to_host_port_string(&self) -> String {
        match &self.host {
            Host::Ip(IpAddr::V4(a), _) => format!("{a}:{}", self.port),
            Host::Ip(IpAddr::V6(a), 0) => format!("[{a}]:{}", self.port),
            Host::Ip(IpAddr::V6(a), scope) => format!("[{a}%{scope}]:{}", self.port),
            Host::ScopedV6(s) => format!("[{s}]:{}", self.port),
            Host::Name(n) => format!("{n}:{}", self.port),
        }
    }
}

/// Splits and checks `s` without resolving names.
pub fn split_address(s: &str, default_port: u16) -> Result<HostPort, String> {
    if s.is_empty() {
        return Err("empty address".into());
    }
    if s.chars().any(char::is_whitespace) {
        return Err(format!(
            "'{s}' is not a valid address (it contains whitespace)"
        ));
    }
    let (host, port) = split_port(s, default_port)?;
    let host = parse_host(s, host)?;
    Ok(HostPort { host, port })
}

/// Splits, checks and resolves `s`: every socket address it stands for (one for a literal
/// IP; for a name, what the resolver returns for TCP, in its order, without duplicates).
pub fn parse_address(s: &str, default_port: u16) -> Result<Vec<SocketAddr>, String> {
    let hp = split_address(s, default_port)?;
    match &hp.host {
        Host::Ip(IpAddr::V4(a), _) => Ok(vec![SocketAddr::new(IpAddr::V4(*a), hp.port)]),
        Host::Ip(IpAddr::V6(a), scope) => Ok(vec![SocketAddr::V6(SocketAddrV6::new(
            *a, hp.port, 0, *scope,
        ))]),
        Host::ScopedV6(name) | Host::Name(name) => resolve(s, name, hp.port),
    }
}

/// The address as `host:port` text, kept as written: an address that has a port is returned
/// unchanged; one without gets `default_port` appended (a bare IPv6 address is put in
/// brackets first). Names are checked but not resolved.
pub fn normalize_address(s: &str, default_port: u16) -> Result<String, String> {
    let hp = split_address(s, default_port)?;
    let (host, _) = split_port(s, default_port)?;
    if host.len() != s.len() {
        return Ok(s.to_string());
    }
    Ok(match hp.host {
        Host::Ip(IpAddr::V6(_), _) | Host::ScopedV6(_) if !s.starts_with('[') => {
            format!("[{s}]:{default_port}")
        }
        _ => format!("{s}:{default_port}"),
    })
}

/// Whether every address `s` stands for is a loopback address (a name is resolved; text that
/// does not parse or resolve counts as not loopback): a listener bound there is reachable
/// only from this machine.
pub fn is_loopback_address(s: &str) -> bool {
    match parse_address(s, 0) {
        Ok(addrs) => !addrs.is_empty() && addrs.iter().all(|a| a.ip().to_canonical().is_loopback()),
        Err(_) => false,
    }
}

fn resolve(original: &str, name: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
    let found = (name, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve '{original}': {e}"))?;
    let mut out: Vec<SocketAddr> = Vec::new();
    for a in found {
        if !out.contains(&a) {
            out.push(a);
        }
    }
    if out.is_empty() {
        return Err(format!(
            "cannot resolve '{original}': the resolver returned no address"
        ));
    }
    Ok(out)
}

fn split_port(s: &str, default_port: u16) -> Result<(&str, u16), String> {
    let Some(last) = s.rfind(':') else {
        return Ok((s, default_port));
    };
    if s.matches(':').count() > 1 && !s[..last].ends_with(']') {
        // A bare IPv6 address: no port.
        return Ok((s, default_port));
    }
    let digits = &s[last + 1..];
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("'{s}': the port '{digits}' is not a number"));
    }
    let port: u16 = digits
        .parse()
        .map_err(|_| format!("'{s}': the port {digits} is out of range (0-65535)"))?;
    Ok((&s[..last], port))
}

fn parse_host(original: &str, host: &str) -> Result<Host, String> {
    let has_open = host.contains('[');
    let has_close = host.contains(']');
    if host.contains(':') || has_open || has_close {
        if has_open != has_close {
            return Err(format!(
                "'{original}' is not a valid address (unbalanced brackets)"
            ));
        }
        let inner = if has_open {
            match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
                Some(i) if !i.contains('[') && !i.contains(']') => i,
                _ => {
                    return Err(format!(
                        "'{original}' is not a valid address (misplaced brackets)"
                    ))
                }
            }
        } else {
            host
        };
        let bad = || format!("'{original}' is not a valid IPv6 address");
        let (addr, scope) = match inner.split_once('%') {
            Some((a, scope)) => (a, Some(scope)),
            None => (inner, None),
        };
        let ip: Ipv6Addr = addr.parse().map_err(|_| bad())?;
        return match scope {
            None => Ok(Host::Ip(IpAddr::V6(ip), 0)),
            Some(sc) if !sc.is_empty() && sc.bytes().all(|b| b.is_ascii_digit()) => {
                Ok(Host::Ip(IpAddr::V6(ip), sc.parse().map_err(|_| bad())?))
            }
            Some(sc)
                if !sc.is_empty()
                    && sc
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) =>
            {
                Ok(Host::ScopedV6(inner.to_string()))
            }
            Some(_) => Err(bad()),
        };
    }
    if let Ok(ip) = host.parse::<Ipv4Addr>() {
        return Ok(Host::Ip(IpAddr::V4(ip), 0));
    }
    validate_hostname(host).map_err(|why| {
        format!("'{original}' is not a valid IPv4/IPv6 address or hostname ({why})")
    })?;
    Ok(Host::Name(host.to_string()))
}

fn validate_hostname(h: &str) -> Result<(), &'static str> {
    if h.is_empty() {
        return Err("empty host");
    }
    if !h
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
    {
        return Err("a hostname may hold only letters, digits, '.' and '-'");
    }
    if h.contains("..") || h.contains("-.") || h.contains(".-") {
        return Err("empty label, or a label beginning or ending with '-'");
    }
    if h.starts_with('-') || h.starts_with('.') || h.ends_with('-') {
        return Err("a hostname may not begin with '-' or '.', nor end with '-'");
    }
    if h.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err("digits and dots only, but not a dotted-quad IPv4 address");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> Vec<SocketAddr> {
        parse_address(s, 7199).unwrap_or_else(|e| panic!("{s}: {e}"))
    }
    fn bad(s: &str) -> String {
        match parse_address(s, 7199) {
            Ok(a) => panic!("{s} accepted as {a:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn loopback_addresses() {
        for s in [
            "127.0.0.1:1",
            "127.8.9.10:1",
            "[::1]:1",
            "::1",
            "localhost:7198",
        ] {
            assert!(is_loopback_address(s), "{s}");
        }
        for s in [
            "0.0.0.0:5150",
            "[::]:1",
            "10.0.0.1:1",
            "",
            "no such host!:1",
        ] {
            assert!(!is_loopback_address(s), "{s}");
        }
    }

    #[test]
    fn ipv4_with_and_without_port() {
        assert_eq!(
            ok("127.0.0.1:57123"),
            vec!["127.0.0.1:57123".parse().unwrap()]
        );
        assert_eq!(ok("10.1.2.3"), vec!["10.1.2.3:7199".parse().unwrap()]);
        assert_eq!(
            normalize_address("10.1.2.3", 7199).unwrap(),
            "10.1.2.3:7199"
        );
        assert_eq!(normalize_address("0.0.0.0:0", 7199).unwrap(), "0.0.0.0:0");
    }

    #[test]
    fn ipv6_forms() {
        let lo: SocketAddr = "[::1]:7199".parse().unwrap();
        assert_eq!(ok("::1"), vec![lo]);
        assert_eq!(ok("0:0:0:0:0:0:0:1"), vec![lo]);
        assert_eq!(ok("[0:0::1]"), vec![lo]);
        assert_eq!(ok("[0:0::1]:57123"), vec!["[::1]:57123".parse().unwrap()]);
        assert_eq!(ok("[::1]:7199"), vec![lo]);
        assert_eq!(normalize_address("::1", 7199).unwrap(), "[::1]:7199");
        assert_eq!(normalize_address("[0:0::1]:5", 7199).unwrap(), "[0:0::1]:5");
        assert_eq!(
            normalize_address("[0:0::1]", 7199).unwrap(),
            "[0:0::1]:7199"
        );
        assert_eq!(
            normalize_address("0:0:0:0:0:0:0:1", 1).unwrap(),
            "[0:0:0:0:0:0:0:1]:1"
        );
        assert_eq!(
            split_address("[0:0::1]:5", 1)
                .unwrap()
                .to_host_port_string(),
            "[::1]:5"
        );
        match split_address("fe80::1%3", 1).unwrap().host {
            Host::Ip(IpAddr::V6(_), 3) => {}
            h => panic!("{h:?}"),
        }
    }

    #[test]
    fn invalid_forms_astron_rejects_before_resolving() {
        for s in [
            "127:0:0:1:57123",
            "[0:0::1:57123",
            "0:0::1]:57123",
            "0:0::1:57123",
            "bad~characters:57123",
            "more--bad.characters..-:57123",
            "-leading.dash",
            ".leading.dot",
            "trailing-",
            "",
            "[::1]:",
            "host:",
            "host:12ab",
            "host:70000",
            "[1.2.3.4]",
            "[[::1]]",
            "a b:1",
            "99.1:57123",
        ] {
            bad(s);
        }
    }

    #[test]
    fn names_are_resolved() {
        let a = ok("localhost:57123");
        assert!(!a.is_empty());
        assert!(
            a.iter().all(|a| a.ip().is_loopback() && a.port() == 57123),
            "{a:?}"
        );
        assert_eq!(
            normalize_address("localhost", 7198).unwrap(),
            "localhost:7198"
        );
        // Syntactically fine names that no resolver knows.
        for s in [
            "foobar.invalid:20",
            "nxdomain.doesntexist.invalid:57123",
            "10.0.blam.20.invalid",
        ] {
            assert!(bad(s).contains("cannot resolve"), "{s}");
        }
    }

    #[test]
    fn hostname_syntax_is_astrons() {
        // Double dashes inside a label are allowed; only dash next to a dot is refused.
        assert!(split_address("more--ok.example:1", 1).is_ok());
        assert!(split_address("10.0.0.0foobar", 1).is_ok());
        assert!(split_address("127-0-0-1:57123", 1).is_ok());
    }
}
