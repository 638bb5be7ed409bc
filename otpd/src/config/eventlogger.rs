//! The EventLogger's settings as the configuration gives them: checked (`Settings::from_role`),
//! with the allow-list's networks, intervals and the output pattern parsed here, so that both
//! configuration readers and the EventLogger itself share one reading.

use super::RoleConfig;
use chrono::{DateTime, Local};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::Duration;

/// What the EventLogger is told by the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub bind: String,
    /// strftime pattern of the output file name.
    pub output: String,
    pub rotate_every: Option<Duration>,
    pub max_file_bytes: u64,
    pub max_events_per_second: u32,
    pub max_bytes_per_second: u64,
    /// Files kept, the current one included; 0 = all.
    pub max_files: usize,
    /// Files last written longer ago are deleted; None = never.
    pub max_age: Option<Duration>,
    /// Senders events are taken from; empty = anyone.
    pub allow_from: Vec<Network>,
}

impl Settings {
    /// The settings of an `EventLogger` role, checked (errors name the key). Panics on another
    /// role.
    pub fn from_role(role: &RoleConfig) -> Result<Settings, String> {
        let RoleConfig::EventLogger {
            bind,
            output,
            rotate_interval,
            max_file_bytes,
            max_events_per_second,
            max_bytes_per_second,
            max_files,
            max_age,
            allow_from,
        } = role
        else {
            panic!("Settings::from_role of a {} role", role.kind());
        };
        let rotate_every = parse_interval(rotate_interval)
            .map_err(|e| format!("eventlogger rotate_interval: {e}"))?;
        let max_age = parse_interval(max_age).map_err(|e| format!("eventlogger max_age: {e}"))?;
        strftime(output, Local::now()).map_err(|e| format!("eventlogger output: {e}"))?;
        if *max_file_bytes < 4096 || *max_events_per_second == 0 || *max_bytes_per_second < 4096 {
            return Err(
                "eventlogger: max_file_bytes and max_bytes_per_second must be at least 4096, and max_events_per_second at least 1"
                    .into(),
            );
        }
        let allow_from = allow_from
            .iter()
            .map(|a| Network::parse(a).map_err(|e| format!("eventlogger allow_from: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Settings {
            bind: bind.clone(),
            output: output.clone(),
            rotate_every,
            max_file_bytes: *max_file_bytes,
            max_events_per_second: *max_events_per_second,
            max_bytes_per_second: *max_bytes_per_second,
            max_files: *max_files,
            max_age,
            allow_from,
        })
    }
}

/// An address (`10.0.0.5`, `::1`) or a network (`10.0.0.0/8`, `fd00::/8`) of an allow-list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    addr: IpAddr,
    prefix: u8,
}

impl Network {
    pub fn parse(s: &str) -> Result<Network, String> {
        let (ip, prefix) = match s.split_once('/') {
            Some((ip, p)) => (ip, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = ip.trim().parse().map_err(|_| {
            format!("'{s}' is not an IP address or network (e.g. 10.0.0.5, 10.0.0.0/8, ::1)")
        })?;
        let addr = addr.to_canonical();
        let bits = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => bits,
            Some(p) => match p.trim().parse::<u8>() {
                Ok(n) if n <= bits => n,
                _ => return Err(format!("'{s}': the prefix length must be 0-{bits}")),
            },
        };
        Ok(Network { addr, prefix })
    }

    /// Does it hold every address of its family (`0.0.0.0/0`, `::/0`)?
    pub fn is_everyone(&self) -> bool {
        self.prefix == 0
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        let (a, b, bits) = match (self.addr, ip) {
            (IpAddr::V4(a), IpAddr::V4(b)) => (u32::from(a) as u128, u32::from(b) as u128, 32),
            (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b), 128),
            _ => return false,
        };
        let shift = bits - self.prefix as u32;
        shift >= bits || (a >> shift) == (b >> shift)
    }
}

/// The peers a listener takes (`proxy_from` of a ClientAgent, `allow` of the MessageDirector):
/// addresses and networks; an empty list means loopback only (127.0.0.0/8 and ::1).
#[derive(Debug, Clone, Default)]
pub struct PeerAllowList(Vec<Network>);

impl PeerAllowList {
    /// Parses the entries of `key` (the key names the error).
    pub fn parse(key: &str, list: &[String]) -> Result<PeerAllowList, String> {
        list.iter()
            .map(|s| Network::parse(s).map_err(|e| format!("{key}: {e}")))
            .collect::<Result<_, _>>()
            .map(PeerAllowList)
    }

    /// May `peer` (the TCP peer's address) connect?
    pub fn allows(&self, peer: IpAddr) -> bool {
        if self.0.is_empty() {
            return peer.to_canonical().is_loopback();
        }
        self.0.iter().any(|n| n.contains(peer))
    }
}

/// Parses `rotate_interval`: "0" or "" = never; else a number with an optional unit
/// (s, m, h, d; seconds without one).
pub fn parse_interval(s: &str) -> Result<Option<Duration>, String> {
    let s = s.trim();
    if s.is_empty() || s == "0" {
        return Ok(None);
    }
    let (num, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => (&s[..i], s[i..].trim()),
        None => (s, "s"),
    };
    let n: u64 = num.parse().map_err(|_| {
        format!("'{s}' is not an interval (e.g. 3600, 30m, 12h, 1d, or 0 for never)")
    })?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(format!("'{s}': unknown unit '{unit}' (s, m, h or d)")),
    };
    Ok((secs > 0).then(|| Duration::from_secs(secs)))
}

/// Formats `pattern` with strftime at `now`; an invalid pattern is an error, not a panic.
pub fn strftime(pattern: &str, now: DateTime<Local>) -> Result<String, String> {
    let mut s = String::new();
    write!(s, "{}", now.format(pattern))
        .map_err(|_| format!("'{pattern}' is not a valid strftime pattern"))?;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals() {
        assert_eq!(parse_interval("0").unwrap(), None);
        assert_eq!(parse_interval("").unwrap(), None);
        assert_eq!(parse_interval("90").unwrap(), Some(Duration::from_secs(90)));
        assert_eq!(
            parse_interval("30m").unwrap(),
            Some(Duration::from_secs(1800))
        );
        assert_eq!(
            parse_interval("1d").unwrap(),
            Some(Duration::from_secs(86_400))
        );
        assert!(parse_interval("1w").is_err() && parse_interval("x").is_err());
    }

    #[test]
    fn networks() {
        let n = Network::parse("192.168.0.0/24").unwrap();
        assert!(n.contains("192.168.0.77".parse().unwrap()));
        assert!(!n.contains("192.168.1.77".parse().unwrap()));
        assert!(!n.contains("::1".parse().unwrap()));
        assert!(Network::parse("0.0.0.0/0")
            .unwrap()
            .contains("8.8.8.8".parse().unwrap()));
        assert!(Network::parse("::/0")
            .unwrap()
            .contains("2001:db8::1".parse().unwrap()));
        for bad in ["", "10.0.0.0/33", "host.example", "10.0.0.0/x", "::/129"] {
            assert!(Network::parse(bad).is_err(), "{bad}");
        }
    }
}
