//! Typed access to the positioned tree: sections whose keys are all declared, and scalars read
//! as astrond's YAML library reads them (numbers, booleans, channels, doids, addresses), each
//! error naming the key and its line.

use super::yaml::{key_text, Kind, Node};
use super::ConfigError;
use crate::config::addr;
use std::path::{Path, PathBuf};

pub(super) struct Cx<'a> {
    pub(super) file: &'a str,
    pub(super) base: &'a Path,
}

pub(super) type Res<T> = Result<T, ConfigError>;

impl Cx<'_> {
    pub(super) fn err(&self, n: &Node, msg: impl Into<String>) -> ConfigError {
        ConfigError::new(self.file, msg).at(n.line, n.col)
    }

    pub(super) fn resolve_path(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_relative() {
            self.base.join(p)
        } else {
            p.to_path_buf()
        }
    }
}

/// A map section: its entries and its dotted path for messages.
pub(super) struct Section<'n> {
    pub(super) path: String,
    pub(super) node: &'n Node,
    pub(super) entries: &'n [(Node, Node)],
}

impl<'n> Section<'n> {
    pub(super) fn new(cx: &Cx, node: &'n Node, path: &str) -> Res<Section<'n>> {
        match &node.kind {
            Kind::Map(entries) => Ok(Section {
                path: path.to_string(),
                node,
                entries,
            }),
            _ => {
                let what = if path.is_empty() {
                    "the top level of the file".to_string()
                } else {
                    format!("'{path}'")
                };
                Err(cx.err(
                    node,
                    format!(
                        "{what} must be a map of keys to values, not {}",
                        node.describe()
                    ),
                ))
            }
        }
    }

    /// Errors on the first key (in file order) that is not in `allowed`.
    pub(super) fn only(&self, cx: &Cx, allowed: &[&str]) -> Res<()> {
        for (k, _) in self.entries {
            let name = key_text(k);
            if !allowed.contains(&name.as_str()) {
                let msg = if self.path.is_empty() {
                    format!(
                        "'{name}' is not a valid section (expected one of: {})",
                        allowed.join(", ")
                    )
                } else {
                    format!(
                        "'{}' has no key named '{name}' (expected one of: {})",
                        self.path,
                        allowed.join(", ")
                    )
                };
                return Err(cx.err(k, msg));
            }
        }
        Ok(())
    }

    pub(super) fn get(&self, key: &str) -> Option<&'n Node> {
        self.entries
            .iter()
            .find(|(k, _)| matches!(&k.kind, Kind::Scalar(s) if s == key))
            .map(|(_, v)| v)
    }

    pub(super) fn key(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    pub(super) fn sub(&self, cx: &Cx, key: &str) -> Res<Option<Section<'n>>> {
        match self.get(key) {
            None => Ok(None),
            Some(n) => Section::new(cx, n, &self.key(key)).map(Some),
        }
    }

    pub(super) fn string(&self, cx: &Cx, key: &str) -> Res<Option<String>> {
        self.get(key)
            .map(|n| string(cx, n, &self.key(key)))
            .transpose()
    }

    pub(super) fn uint(&self, cx: &Cx, key: &str, max: u64) -> Res<Option<u64>> {
        self.get(key)
            .map(|n| uint(cx, n, &self.key(key), max))
            .transpose()
    }

    pub(super) fn channel(&self, cx: &Cx, key: &str) -> Res<Option<u64>> {
        self.get(key)
            .map(|n| channel(cx, n, &self.key(key)))
            .transpose()
    }

    pub(super) fn doid(&self, cx: &Cx, key: &str) -> Res<Option<u32>> {
        self.get(key)
            .map(|n| doid(cx, n, &self.key(key)))
            .transpose()
    }

    /// A boolean astrond checks with its BooleanValueConstraint: true/false in any of the
    /// case forms its YAML library reads (true, True, TRUE).
    pub(super) fn strict_bool(&self, cx: &Cx, key: &str) -> Res<Option<bool>> {
        self.get(key)
            .map(|n| {
                let what = self.key(key);
                match scalar(n).and_then(yaml_cpp_bool) {
                    Some((b, "true" | "false")) => Ok(b),
                    _ => Err(cx.err(n, format!("{what} must be true or false"))),
                }
            })
            .transpose()
    }

    /// A boolean astrond reads without a constraint: everything its YAML library takes
    /// (true/false, yes/no, on/off, y/n).
    pub(super) fn loose_bool(&self, cx: &Cx, key: &str) -> Res<Option<bool>> {
        self.get(key)
            .map(|n| match scalar(n).and_then(yaml_cpp_bool) {
                Some((b, _)) => Ok(b),
                None => Err(cx.err(
                    n,
                    format!("{} must be a boolean (true or false)", self.key(key)),
                )),
            })
            .transpose()
    }

    /// An address, checked and resolved; returned as canonical "host:port".
    pub(super) fn address(&self, cx: &Cx, key: &str, default_port: u16) -> Res<Option<String>> {
        self.get(key)
            .map(|n| address(cx, n, &self.key(key), default_port))
            .transpose()
    }

    pub(super) fn require<T>(&self, cx: &Cx, key: &str, v: Option<T>, why: &str) -> Res<T> {
        v.ok_or_else(|| cx.err(self.node, format!("'{}' needs '{key}': {why}", self.path)))
    }
}

pub(super) fn scalar(n: &Node) -> Option<&str> {
    match &n.kind {
        Kind::Scalar(s) => Some(s),
        _ => None,
    }
}

pub(super) fn string(cx: &Cx, n: &Node, what: &str) -> Res<String> {
    match &n.kind {
        Kind::Scalar(s) => Ok(s.clone()),
        Kind::Null => Err(cx.err(n, format!("{what} needs a value"))),
        _ => Err(cx.err(
            n,
            format!("{what} must be a single value, not {}", n.describe()),
        )),
    }
}

/// Reads an unsigned number as astrond's YAML library does: decimal, `0x` hexadecimal, or
/// (leading zero) octal; an optional `+`; no `-`; trailing spaces allowed.
pub(super) fn parse_yaml_cpp_uint(s: &str) -> Option<u64> {
    let t = s.trim_end();
    let t = t.strip_prefix('+').unwrap_or(t);
    let (digits, radix) = if let Some(h) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        (h, 16)
    } else if t.len() > 1 && t.starts_with('0') {
        (&t[1..], 8)
    } else {
        (t, 10)
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    u64::from_str_radix(digits, radix).ok()
}

pub(super) fn uint(cx: &Cx, n: &Node, what: &str, max: u64) -> Res<u64> {
    let s = string(cx, n, what)?;
    match parse_yaml_cpp_uint(&s) {
        Some(v) if v <= max => Ok(v),
        Some(v) => Err(cx.err(n, format!("{what} = {v} is too large (at most {max})"))),
        None => Err(cx.err(
            n,
            format!("{what} must be a non-negative whole number, not '{s}'"),
        )),
    }
}

pub(super) fn channel(cx: &Cx, n: &Node, what: &str) -> Res<u64> {
    let c = uint(cx, n, what, u64::MAX)?;
    if c == 0 {
        return Err(cx.err(n, format!("{what}: channel 0 is INVALID_CHANNEL")));
    }
    if otp_wire::channels::is_reserved_channel(c) {
        return Err(cx.err(
            n,
            format!(
                "{what} = {c} is a reserved channel (1-999 and (1<<32)-(999<<32) are reserved)"
            ),
        ));
    }
    Ok(c)
}

pub(super) fn doid(cx: &Cx, n: &Node, what: &str) -> Res<u32> {
    let d = uint(cx, n, what, u32::MAX as u64)? as u32;
    if d == 0 {
        return Err(cx.err(n, format!("{what}: doid 0 is INVALID_DO_ID")));
    }
    if otp_wire::channels::is_reserved_doid(d) {
        return Err(cx.err(
            n,
            format!("{what} = {d} is a reserved doid (1-999 are reserved)"),
        ));
    }
    Ok(d)
}

/// astrond's YAML library's booleans: y/n, yes/no, true/false, on/off, each in lower case,
/// Capitalised or UPPER case. Returns the value and its lower-case spelling.
pub(super) fn yaml_cpp_bool(s: &str) -> Option<(bool, &'static str)> {
    let mut chars = s.chars();
    let first = chars.next()?;
    let rest: String = chars.collect();
    let flexible = s == s.to_lowercase()
        || s == s.to_uppercase()
        || (first.is_uppercase() && rest == rest.to_lowercase());
    if !flexible {
        return None;
    }
    match s.to_lowercase().as_str() {
        "y" => Some((true, "y")),
        "yes" => Some((true, "yes")),
        "true" => Some((true, "true")),
        "on" => Some((true, "on")),
        "n" => Some((false, "n")),
        "no" => Some((false, "no")),
        "false" => Some((false, "false")),
        "off" => Some((false, "off")),
        _ => None,
    }
}

pub(super) fn address(cx: &Cx, n: &Node, what: &str, default_port: u16) -> Res<String> {
    let s = match &n.kind {
        Kind::Scalar(s) => s.clone(),
        _ => {
            return Err(cx.err(
                n,
                format!(
                    "{what} must be an address (\"host:port\"), not {}",
                    n.describe()
                ),
            ))
        }
    };
    addr::parse_address(&s, default_port).map_err(|e| cx.err(n, format!("{what}: {e}")))?;
    addr::normalize_address(&s, default_port).map_err(|e| cx.err(n, format!("{what}: {e}")))
}

pub(super) fn items<'n>(cx: &Cx, n: &'n Node, what: &str) -> Res<&'n [Node]> {
    match &n.kind {
        Kind::Seq(v) => Ok(v),
        _ => Err(cx.err(n, format!("'{what}' must be a list, not {}", n.describe()))),
    }
}
