//! Reads an astrond YAML configuration file (`astrond.yml`) into otpd's [`ClusterConfig`].
//!
//! Validation is as strict as astrond's: every section and key is declared, anything else is
//! an error naming the key and its line; values must have the right type (numbers as astrond's
//! YAML library reads them, booleans as its constraint allows); channels and doids may not be
//! invalid (0) or reserved; addresses must be well-formed and must resolve.
//!
//! The YAML is parsed into a small tree that keeps every node's position, then walked by hand,
//! so errors can say exactly where they are.
//!
//! What the file says that otpd's model cannot express is refused with a message saying so
//! (a MongoDB or MySQL backend, TLS client-certificate checks, roles missing a channel that
//! astrond would let default to 0). See the module's tests for each case.

pub use super::addr;

use super::{
    ChannelRange, ClientAgentConfig, ClientLimits, ClusterConfig, ConfigError, DatabaseBackend,
    DoidRange, MessageDirectorConfig, RoleConfig, TlsConfig, UberDog,
};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// Default ports astrond uses when an address leaves its port out.
pub const MD_DEFAULT_PORT: u16 = 7199;
pub const CA_DEFAULT_PORT: u16 = 7198;
pub const EVENTLOGGER_DEFAULT_PORT: u16 = 7197;

/// Reads and checks the astrond configuration at `path`. Relative paths inside it (DC files,
/// the database directory, the event log, TLS files) are taken from the file's folder, as
/// astrond does by changing into that folder.
pub fn load(path: &Path) -> Result<ClusterConfig, ConfigError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new(&name, format!("cannot read: {e}")))?;
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let base = std::fs::canonicalize(parent).unwrap_or_else(|_| parent.to_path_buf());
    parse(&name, &text, &base)
}

/// Converts the text of an astrond configuration; `base` is the folder relative paths are
/// taken from. `file` only names the source in errors.
pub fn parse(file: &str, text: &str, base: &Path) -> Result<ClusterConfig, ConfigError> {
    let root = parse_yaml(file, text)?;
    let cx = Cx { file, base };
    let config = convert(&cx, &root)?;
    config.validate().map_err(|m| ConfigError::new(file, m))?;
    Ok(config)
}

// ---------------------------------------------------------------------------------------------
// YAML tree with positions

#[derive(Debug, Clone)]
struct Node {
    kind: Kind,
    line: usize,
    /// 1-based.
    col: usize,
}

#[derive(Debug, Clone)]
enum Kind {
    /// An empty value, `~` or `null` (unquoted).
    Null,
    Scalar(String),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

impl Node {
    fn describe(&self) -> &'static str {
        match self.kind {
            Kind::Null => "an empty value",
            Kind::Scalar(_) => "a single value",
            Kind::Seq(_) => "a list",
            Kind::Map(_) => "a map",
        }
    }
}

enum Frame {
    Seq {
        node: Node,
        items: Vec<Node>,
        anchor: usize,
    },
    Map {
        node: Node,
        entries: Vec<(Node, Node)>,
        key: Option<Node>,
        anchor: usize,
    },
}

#[derive(Default)]
struct TreeBuilder {
    stack: Vec<Frame>,
    anchors: HashMap<usize, Node>,
    root: Option<Node>,
    documents: usize,
    error: Option<(String, usize, usize)>,
}

impl TreeBuilder {
    fn fail(&mut self, msg: String, line: usize, col: usize) {
        if self.error.is_none() {
            self.error = Some((msg, line, col));
        }
    }

    fn finish(&mut self, node: Node, anchor: usize) {
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
        let mut problem = None;
        match self.stack.last_mut() {
            None => {
                if self.root.is_none() {
                    self.root = Some(node);
                }
            }
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map { entries, key, .. }) => match key.take() {
                None => {
                    let text = match &node.kind {
                        Kind::Scalar(s) => Some(s.clone()),
                        Kind::Null => Some(String::new()),
                        _ => None,
                    };
                    match text {
                        None => {
                            problem = Some(
                                "a map key must be a single value, not a list or map".to_string(),
                            )
                        }
                        Some(k) if entries.iter().any(|(e, _)| key_text(e) == k) => {
                            problem = Some(format!("key '{k}' appears twice in the same map"));
                        }
                        Some(_) => {}
                    }
                    let (l, c) = (node.line, node.col);
                    *key = Some(node);
                    if let Some(p) = problem.take() {
                        self.fail(p, l, c);
                    }
                }
                Some(k) => entries.push((k, node)),
            },
        }
    }
}

fn key_text(n: &Node) -> String {
    match &n.kind {
        Kind::Scalar(s) => s.clone(),
        _ => String::new(),
    }
}

impl MarkedEventReceiver for TreeBuilder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let (line, col) = (mark.line(), mark.col() + 1);
        let at = |kind| Node { kind, line, col };
        match ev {
            Event::DocumentStart => self.documents += 1,
            Event::Scalar(value, style, anchor, _tag) => {
                let null = style == TScalarStyle::Plain
                    && matches!(value.as_str(), "" | "~" | "null" | "Null" | "NULL");
                let kind = if null {
                    Kind::Null
                } else {
                    Kind::Scalar(value)
                };
                self.finish(at(kind), anchor);
            }
            Event::Alias(id) => match self.anchors.get(&id) {
                Some(n) => {
                    let mut n = n.clone();
                    n.line = line;
                    n.col = col;
                    self.finish(n, 0);
                }
                None => self.fail("alias to an unknown anchor".into(), line, col),
            },
            Event::SequenceStart(anchor, _) => self.stack.push(Frame::Seq {
                node: at(Kind::Null),
                items: Vec::new(),
                anchor,
            }),
            Event::MappingStart(anchor, _) => self.stack.push(Frame::Map {
                node: at(Kind::Null),
                entries: Vec::new(),
                key: None,
                anchor,
            }),
            Event::SequenceEnd | Event::MappingEnd => match self.stack.pop() {
                Some(Frame::Seq {
                    mut node,
                    items,
                    anchor,
                }) => {
                    node.kind = Kind::Seq(items);
                    self.finish(node, anchor);
                }
                Some(Frame::Map {
                    mut node,
                    entries,
                    anchor,
                    ..
                }) => {
                    // A block map's start mark is at its first ':'; its first key reads better.
                    if let Some((k, _)) = entries.first() {
                        node.line = k.line;
                        node.col = k.col;
                    }
                    node.kind = Kind::Map(entries);
                    self.finish(node, anchor);
                }
                None => {}
            },
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => {}
        }
    }
}

fn parse_yaml(file: &str, text: &str) -> Result<Node, ConfigError> {
    let mut builder = TreeBuilder::default();
    let mut parser = Parser::new_from_str(text);
    // Like astrond, only the first document counts.
    parser.load(&mut builder, false).map_err(|e| {
        ConfigError::new(file, format!("YAML syntax error: {}", e.info()))
            .at(e.marker().line(), e.marker().col() + 1)
    })?;
    if let Some((msg, l, c)) = builder.error {
        return Err(ConfigError::new(file, msg).at(l, c));
    }
    match builder.root {
        Some(n) if !matches!(n.kind, Kind::Null) => Ok(n),
        _ => Err(ConfigError::new(file, "the configuration file is empty")),
    }
}

// ---------------------------------------------------------------------------------------------
// Typed access

struct Cx<'a> {
    file: &'a str,
    base: &'a Path,
}

type Res<T> = Result<T, ConfigError>;

impl Cx<'_> {
    fn err(&self, n: &Node, msg: impl Into<String>) -> ConfigError {
        ConfigError::new(self.file, msg).at(n.line, n.col)
    }

    fn resolve_path(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_relative() {
            self.base.join(p)
        } else {
            p.to_path_buf()
        }
    }
}

/// A map section: its entries and its dotted path for messages.
struct Section<'n> {
    path: String,
    node: &'n Node,
    entries: &'n [(Node, Node)],
}

impl<'n> Section<'n> {
    fn new(cx: &Cx, node: &'n Node, path: &str) -> Res<Section<'n>> {
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
    fn only(&self, cx: &Cx, allowed: &[&str]) -> Res<()> {
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

    fn get(&self, key: &str) -> Option<&'n Node> {
        self.entries
            .iter()
            .find(|(k, _)| matches!(&k.kind, Kind::Scalar(s) if s == key))
            .map(|(_, v)| v)
    }

    fn key(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    fn sub(&self, cx: &Cx, key: &str) -> Res<Option<Section<'n>>> {
        match self.get(key) {
            None => Ok(None),
            Some(n) => Section::new(cx, n, &self.key(key)).map(Some),
        }
    }

    fn string(&self, cx: &Cx, key: &str) -> Res<Option<String>> {
        self.get(key)
            .map(|n| string(cx, n, &self.key(key)))
            .transpose()
    }

    fn uint(&self, cx: &Cx, key: &str, max: u64) -> Res<Option<u64>> {
        self.get(key)
            .map(|n| uint(cx, n, &self.key(key), max))
            .transpose()
    }

    fn channel(&self, cx: &Cx, key: &str) -> Res<Option<u64>> {
        self.get(key)
            .map(|n| channel(cx, n, &self.key(key)))
            .transpose()
    }

    fn doid(&self, cx: &Cx, key: &str) -> Res<Option<u32>> {
        self.get(key)
            .map(|n| doid(cx, n, &self.key(key)))
            .transpose()
    }

    /// A boolean astrond checks with its BooleanValueConstraint: true/false in any of the
    /// case forms its YAML library reads (true, True, TRUE).
    fn strict_bool(&self, cx: &Cx, key: &str) -> Res<Option<bool>> {
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
    fn loose_bool(&self, cx: &Cx, key: &str) -> Res<Option<bool>> {
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
    fn address(&self, cx: &Cx, key: &str, default_port: u16) -> Res<Option<String>> {
        self.get(key)
            .map(|n| address(cx, n, &self.key(key), default_port))
            .transpose()
    }

    fn require<T>(&self, cx: &Cx, key: &str, v: Option<T>, why: &str) -> Res<T> {
        v.ok_or_else(|| cx.err(self.node, format!("'{}' needs '{key}': {why}", self.path)))
    }
}

fn scalar(n: &Node) -> Option<&str> {
    match &n.kind {
        Kind::Scalar(s) => Some(s),
        _ => None,
    }
}

fn string(cx: &Cx, n: &Node, what: &str) -> Res<String> {
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
fn parse_yaml_cpp_uint(s: &str) -> Option<u64> {
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

fn uint(cx: &Cx, n: &Node, what: &str, max: u64) -> Res<u64> {
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

fn channel(cx: &Cx, n: &Node, what: &str) -> Res<u64> {
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

fn doid(cx: &Cx, n: &Node, what: &str) -> Res<u32> {
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
fn yaml_cpp_bool(s: &str) -> Option<(bool, &'static str)> {
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

fn address(cx: &Cx, n: &Node, what: &str, default_port: u16) -> Res<String> {
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

fn items<'n>(cx: &Cx, n: &'n Node, what: &str) -> Res<&'n [Node]> {
    match &n.kind {
        Kind::Seq(v) => Ok(v),
        _ => Err(cx.err(n, format!("'{what}' must be a list, not {}", n.describe()))),
    }
}

// ---------------------------------------------------------------------------------------------
// Conversion

fn convert(cx: &Cx, root: &Node) -> Res<ClusterConfig> {
    let top = Section::new(cx, root, "")?;
    top.only(
        cx,
        &["daemon", "general", "uberdogs", "messagedirector", "roles"],
    )?;
    let mut config = ClusterConfig::default();

    if let Some(daemon) = top.sub(cx, "daemon")? {
        daemon.only(cx, &["name", "url"])?;
        if let Some(n) = daemon.get("name").filter(|n| !matches!(n.kind, Kind::Null)) {
            config.name = string(cx, n, "daemon.name")?;
        }
        // daemon.url is informational in astrond too.
        if let Some(n) = daemon.get("url").filter(|n| !matches!(n.kind, Kind::Null)) {
            string(cx, n, "daemon.url")?;
        }
    }

    if let Some(general) = top.sub(cx, "general")? {
        general.only(
            cx,
            &[
                "eventlogger",
                "dc_files",
                "dc_multiple_inheritance",
                "dc_virtual_inheritance",
                "dc_sort_inheritance_by_file",
            ],
        )?;
        config.eventlogger = general.address(cx, "eventlogger", EVENTLOGGER_DEFAULT_PORT)?;
        // otpd's own keys: Panda3D's dc-* settings (the 2003 rule: all three false).
        let d = &mut config.dc_settings;
        if let Some(v) = general.loose_bool(cx, "dc_multiple_inheritance")? {
            d.multiple_inheritance = v;
        }
        if let Some(v) = general.loose_bool(cx, "dc_virtual_inheritance")? {
            d.virtual_inheritance = v;
        }
        if let Some(v) = general.loose_bool(cx, "dc_sort_inheritance_by_file")? {
            d.sort_inheritance_by_file = v;
        }
        if let Some(n) = general.get("dc_files") {
            for f in items(cx, n, "general.dc_files")? {
                let name = string(cx, f, "an entry of general.dc_files")?;
                config.dc_files.push(cx.resolve_path(&name));
            }
        }
    }

    if let Some(n) = top.get("uberdogs") {
        for (i, item) in items(cx, n, "uberdogs")?.iter().enumerate() {
            let ud = Section::new(cx, item, &format!("uberdogs[{i}]"))?;
            ud.only(cx, &["id", "class", "anonymous"])?;
            let id = ud.doid(cx, "id")?;
            let class = ud.string(cx, "class")?;
            let anonymous = ud.strict_bool(cx, "anonymous")?.unwrap_or(false);
            let id = ud.require(cx, "id", id, "the UberDOG's doid")?;
            let class = ud.require(cx, "class", class, "the UberDOG's DC class")?;
            config.uberdogs.push(UberDog {
                id,
                class,
                anonymous,
            });
        }
    }

    config.messagedirector = MessageDirectorConfig {
        bind: None,
        connect: None,
        ..MessageDirectorConfig::default()
    };
    if let Some(md) = top.sub(cx, "messagedirector")? {
        md.only(cx, &["bind", "connect", "threaded"])?;
        config.messagedirector.bind = md_address(cx, &md, "bind")?;
        config.messagedirector.connect = md_address(cx, &md, "connect")?;
        if let Some(threaded) = md.loose_bool(cx, "threaded")? {
            log::info!(
                "{}: messagedirector.threaded = {threaded} is accepted and ignored: otpd routes on its own core threads (see `cores`)",
                cx.file
            );
        }
    }

    if let Some(n) = top.get("roles") {
        for (i, item) in items(cx, n, "roles")?.iter().enumerate() {
            config.roles.push(role(cx, item, i)?);
        }
    }
    Ok(config)
}

/// astrond treats the literal "unspecified" (its default) as "not set".
fn md_address(cx: &Cx, md: &Section, key: &str) -> Res<Option<String>> {
    if md.get(key).and_then(scalar) == Some("unspecified") {
        return Ok(None);
    }
    md.address(cx, key, MD_DEFAULT_PORT)
}

const ROLE_TYPES: [&str; 5] = [
    "clientagent",
    "stateserver",
    "dbss",
    "database",
    "eventlogger",
];

fn role(cx: &Cx, item: &Node, i: usize) -> Res<RoleConfig> {
    let path = format!("roles[{i}]");
    let sec = Section::new(cx, item, &path)?;
    let Some(type_node) = sec.get("type") else {
        return Err(cx.err(
            item,
            format!("{path} has no 'type' (one of: {})", ROLE_TYPES.join(", ")),
        ));
    };
    let kind = string(cx, type_node, &format!("{path}.type"))?;
    let sec = Section {
        path: format!("{path} ({kind})"),
        ..sec
    };
    match kind.as_str() {
        "stateserver" => {
            sec.only(cx, &["type", "control"])?;
            let control = sec.channel(cx, "control")?;
            // astrond lets a state server run without a control channel (it then subscribes
            // nothing); otpd's model needs one.
            let control = sec.require(
                cx,
                "control",
                control,
                "otpd needs the state server's control channel",
            )?;
            Ok(RoleConfig::StateServer { control })
        }
        "dbss" => {
            sec.only(cx, &["type", "database", "ranges"])?;
            let database = sec.channel(cx, "database")?;
            let mut ranges = Vec::new();
            if let Some(n) = sec.get("ranges") {
                let what = sec.key("ranges");
                for (j, r) in items(cx, n, &what)?.iter().enumerate() {
                    let rs = Section::new(cx, r, &format!("{what}[{j}]"))?;
                    rs.only(cx, &["min", "max"])?;
                    let min = rs.doid(cx, "min")?;
                    let max = rs.doid(cx, "max")?.unwrap_or(u32::MAX);
                    let min = rs.require(cx, "min", min, "the first doid of the range")?;
                    if min > max {
                        return Err(cx.err(r, format!("{what}[{j}]: min {min} is above max {max}")));
                    }
                    ranges.push(DoidRange { min, max });
                }
            }
            let database = sec.require(
                cx,
                "database",
                database,
                "the channel of the database server",
            )?;
            Ok(RoleConfig::Dbss {
                database,
                ranges,
                limits: Default::default(),
            })
        }
        "database" => database(cx, &sec),
        "clientagent" => clientagent(cx, &sec),
        "eventlogger" => {
            sec.only(
                cx,
                &[
                    "type",
                    "bind",
                    "output",
                    "rotate_interval",
                    // otpd's own (astrond refuses them): see RoleConfig::EventLogger.
                    "max_file_bytes",
                    "max_events_per_second",
                    "max_bytes_per_second",
                    "max_files",
                    "max_age",
                    "allow_from",
                ],
            )?;
            let bind = sec
                .address(cx, "bind", EVENTLOGGER_DEFAULT_PORT)?
                .unwrap_or_else(|| format!("0.0.0.0:{EVENTLOGGER_DEFAULT_PORT}"));
            let output = sec
                .string(cx, "output")?
                .unwrap_or_else(|| "events-%Y%m%d-%H%M%S.log".into());
            let output = cx.resolve_path(&output).to_string_lossy().into_owned();
            let rotate_interval = match sec.get("rotate_interval") {
                Some(n) if !matches!(n.kind, Kind::Null) => {
                    string(cx, n, &sec.key("rotate_interval"))?
                }
                _ => "0".into(),
            };
            let max_age = match sec.get("max_age") {
                Some(n) if !matches!(n.kind, Kind::Null) => string(cx, n, &sec.key("max_age"))?,
                _ => super::el_max_age(),
            };
            let mut allow_from = Vec::new();
            if let Some(n) = sec.get("allow_from") {
                let what = sec.key("allow_from");
                for a in items(cx, n, &what)? {
                    let text = string(cx, a, &format!("an entry of {what}"))?;
                    super::eventlogger::Network::parse(&text)
                        .map_err(|e| cx.err(a, format!("{what}: {e}")))?;
                    allow_from.push(text);
                }
            }
            Ok(RoleConfig::EventLogger {
                bind,
                output,
                rotate_interval,
                max_file_bytes: sec
                    .uint(cx, "max_file_bytes", u64::MAX)?
                    .unwrap_or_else(super::el_max_file_bytes),
                max_events_per_second: sec
                    .uint(cx, "max_events_per_second", u32::MAX as u64)?
                    .map_or_else(super::el_max_events_per_second, |v| v as u32),
                max_bytes_per_second: sec
                    .uint(cx, "max_bytes_per_second", u64::MAX)?
                    .unwrap_or_else(super::el_max_bytes_per_second),
                max_files: sec
                    .uint(cx, "max_files", u32::MAX as u64)?
                    .map_or_else(super::el_max_files, |v| v as usize),
                max_age,
                allow_from,
            })
        }
        other => Err(cx.err(
            type_node,
            format!(
                "{path}.type: '{other}' is not a role type (one of: {})",
                ROLE_TYPES.join(", ")
            ),
        )),
    }
}

fn database(cx: &Cx, sec: &Section) -> Res<RoleConfig> {
    sec.only(cx, &["type", "control", "broadcast", "generate", "backend"])?;
    let control = sec.channel(cx, "control")?;
    let broadcast = sec.strict_bool(cx, "broadcast")?.unwrap_or(true);
    let mut min = None;
    let mut max = u32::MAX;
    if let Some(g) = sec.sub(cx, "generate")? {
        g.only(cx, &["min", "max"])?;
        min = g.doid(cx, "min")?;
        max = g.doid(cx, "max")?.unwrap_or(u32::MAX);
    }
    let control = sec.require(
        cx,
        "control",
        control,
        "the database server's control channel",
    )?;
    let Some(min) = min else {
        let at = sec.get("generate").unwrap_or(sec.node);
        return Err(cx.err(
            at,
            format!(
                "'{}' needs 'generate.min': the first doid it may allocate",
                sec.path
            ),
        ));
    };
    if min > max {
        let at = sec.get("generate").unwrap_or(sec.node);
        return Err(cx.err(
            at,
            format!("{}.generate: min {min} is above max {max}", sec.path),
        ));
    }
    let generate = DoidRange { min, max };

    let backend = match sec.get("backend") {
        None => DatabaseBackend::Sqlite {
            directory: cx.resolve_path("yaml_db"),
        },
        Some(n) => {
            let b = Section::new(cx, n, &sec.key("backend"))?;
            let kind = b.string(cx, "type")?.unwrap_or_else(|| "yaml".into());
            match kind.as_str() {
                "yaml" => {
                    b.only(cx, &["type", "directory"])?;
                    let dir = b
                        .string(cx, "directory")?
                        .unwrap_or_else(|| "yaml_db".into());
                    DatabaseBackend::Sqlite {
                        directory: cx.resolve_path(&dir),
                    }
                }
                "soci" => {
                    // `server` is not a key of astrond's soci backend, but Astron's own
                    // PostgreSQL configuration test writes the address under it: otpd
                    // takes it as another name for `address`.
                    b.only(
                        cx,
                        &[
                            "type", "driver", "database", "address", "server", "username",
                            "password",
                        ],
                    )?;
                    let driver = b.string(cx, "driver")?.unwrap_or_else(|| "mysql".into());
                    let database = b.string(cx, "database")?.unwrap_or_default();
                    let username = b.string(cx, "username")?.unwrap_or_default();
                    let password = b.string(cx, "password")?.unwrap_or_default();
                    let address = match (b.string(cx, "address")?, b.string(cx, "server")?) {
                        (Some(_), Some(_)) => {
                            return Err(cx.err(
                                b.get("server").unwrap_or(n),
                                format!(
                                    "'{}' has both 'address' and 'server' (the same setting)",
                                    b.path
                                ),
                            ))
                        }
                        (a, s) => a.or(s).unwrap_or_default(),
                    };
                    match driver.as_str() {
                        "postgresql" | "postgres" => DatabaseBackend::Postgres {
                            address,
                            database,
                            username,
                            password,
                        },
                        other => {
                            let at = b.get("driver").unwrap_or(n);
                            return Err(cx.err(
                                at,
                                format!(
                                    "{}.driver: '{other}' is not supported by otpd; its SQL backend is PostgreSQL \
                                     (driver: postgresql){}",
                                    b.path,
                                    if b.get("driver").is_none() { " (astrond's default driver is mysql)" } else { "" }
                                ),
                            ));
                        }
                    }
                }
                "mongodb" => {
                    b.only(cx, &["type", "server", "workers"])?;
                    if let Some(s) = b.get("server") {
                        string(cx, s, &b.key("server"))?;
                    }
                    if let Some(w) = b.get("workers") {
                        uint(cx, w, &b.key("workers"), i32::MAX as u64)?;
                    }
                    let at = b.get("type").unwrap_or(n);
                    return Err(cx.err(
                        at,
                        format!(
                            "{}.type: otpd does not support the MongoDB backend; use type: soci with \
                             driver: postgresql, or type: yaml (stored in SQLite)",
                            b.path
                        ),
                    ));
                }
                other => {
                    let at = b.get("type").unwrap_or(n);
                    return Err(cx.err(
                        at,
                        format!("{}.type: '{other}' is not a database backend (one of: yaml, soci, mongodb)", b.path),
                    ));
                }
            }
        }
    };
    if let DatabaseBackend::Sqlite { directory } = &backend {
        log::info!(
            "{}: database backend 'yaml' (astrond's development store) is served by otpd's embedded SQLite store under {}",
            cx.file,
            directory.display()
        );
    }
    Ok(RoleConfig::Database {
        control,
        broadcast,
        generate,
        backend,
        max_batch: super::db_max_batch(),
        max_queued: super::db_max_queued(),
    })
}

fn clientagent(cx: &Cx, sec: &Section) -> Res<RoleConfig> {
    sec.only(
        cx,
        &[
            "type",
            "bind",
            "version",
            "haproxy",
            "manual_dc_hash",
            "channels",
            "client",
            "tuning",
            "tls",
        ],
    )?;
    let bind = sec
        .address(cx, "bind", CA_DEFAULT_PORT)?
        .unwrap_or_else(|| format!("0.0.0.0:{CA_DEFAULT_PORT}"));
    let version = sec.string(cx, "version")?.unwrap_or_else(|| "dev".into());
    let haproxy = sec.loose_bool(cx, "haproxy")?.unwrap_or(false);
    let manual_dc_hash = sec
        .uint(cx, "manual_dc_hash", u32::MAX as u64)?
        .map(|h| h as u32)
        .filter(|&h| h != 0);

    let mut min = None;
    let mut max = None;
    if let Some(ch) = sec.sub(cx, "channels")? {
        ch.only(cx, &["min", "max"])?;
        min = ch.channel(cx, "min")?;
        max = ch.channel(cx, "max")?;
    }

    let mut ca = ClientAgentConfig {
        bind,
        version,
        manual_dc_hash,
        haproxy,
        channels: ChannelRange { min: 0, max: 0 },
        relocate: false,
        add_interest: "visible".into(),
        send_hash: true,
        send_version: true,
        write_buffer_size: 262_144,
        write_timeout_ms: 5_000,
        flush_delay_ms: 0,
        heartbeat_timeout_ms: 0,
        interest_timeout_ms: 500,
        tls: None,
        limits: ClientLimits::default(),
        dialect: Default::default(),
        toontown: Default::default(),
    };

    if let Some(client) = sec.sub(cx, "client")? {
        if let Some(t) = client.get("type") {
            let t_s = string(cx, t, &client.key("type"))?;
            if t_s != "libastron" {
                return Err(cx.err(
                    t,
                    format!(
                        "{}: '{t_s}' is not a client type (only 'libastron')",
                        client.key("type")
                    ),
                ));
            }
        }
        client.only(
            cx,
            &[
                "type",
                "relocate",
                "add_interest",
                "send_hash",
                "send_version",
                "write_buffer_size",
                "write_timeout_ms",
                "heartbeat_timeout",
                // otpd's own (astrond refuses it): see ClientAgentConfig::flush_delay_ms.
                "flush_delay_ms",
            ],
        )?;
        if let Some(v) = client.strict_bool(cx, "relocate")? {
            ca.relocate = v;
        }
        if let Some(n) = client.get("add_interest") {
            let v = string(cx, n, &client.key("add_interest"))?;
            if !matches!(v.as_str(), "visible" | "enabled" | "disabled") {
                return Err(cx.err(
                    n,
                    format!(
                        "{}: '{v}' is not one of visible, enabled, disabled",
                        client.key("add_interest")
                    ),
                ));
            }
            ca.add_interest = v;
        }
        if let Some(v) = client.loose_bool(cx, "send_hash")? {
            ca.send_hash = v;
        }
        if let Some(v) = client.loose_bool(cx, "send_version")? {
            ca.send_version = v;
        }
        if let Some(v) = client.uint(cx, "write_buffer_size", u64::MAX)? {
            ca.write_buffer_size = v;
        }
        if let Some(v) = client.uint(cx, "write_timeout_ms", u32::MAX as u64)? {
            ca.write_timeout_ms = v;
        }
        if let Some(v) = client.uint(cx, "heartbeat_timeout", i64::MAX as u64)? {
            ca.heartbeat_timeout_ms = v;
        }
        if let Some(v) = client.uint(cx, "flush_delay_ms", 60_000)? {
            ca.flush_delay_ms = v;
        }
    }

    if let Some(tuning) = sec.sub(cx, "tuning")? {
        tuning.only(cx, &["interest_timeout"])?;
        if let Some(v) = tuning.uint(cx, "interest_timeout", u64::MAX)? {
            ca.interest_timeout_ms = v;
        }
    }

    if let Some(tls) = sec.sub(cx, "tls")? {
        ca.tls = tls_section(cx, &tls)?;
    }

    let min = sec.require(
        cx,
        "channels.min",
        min,
        "the first channel handed to clients",
    )?;
    let max = sec.require(
        cx,
        "channels.max",
        max,
        "the last channel handed to clients",
    )?;
    if min > max {
        let at = sec.get("channels").unwrap_or(sec.node);
        return Err(cx.err(
            at,
            format!("{}.channels: min {min} is above max {max}", sec.path),
        ));
    }
    ca.channels = ChannelRange { min, max };
    Ok(RoleConfig::ClientAgent(ca))
}

/// The `tls` section of Astron's TLS-era client agent (removed from astrond in 2018):
/// certificate + key_file make a TLS listener; options otpd cannot honour are refused rather
/// than silently dropped.
fn tls_section(cx: &Cx, tls: &Section) -> Res<Option<TlsConfig>> {
    tls.only(
        cx,
        &[
            "certificate",
            "key_file",
            "key",
            "chain_file",
            "cert_authority",
            "max_verify_depth",
            "sslv2",
            "sslv3",
            "tlsv1",
            "handshake_timeout",
        ],
    )?;
    let file = |key: &str| -> Res<Option<(PathBuf, &Node)>> {
        match tls.get(key) {
            None => Ok(None),
            Some(n) => {
                let s = string(cx, n, &tls.key(key))?;
                let p = cx.resolve_path(&s);
                if let Err(e) = std::fs::File::open(&p) {
                    return Err(cx.err(
                        n,
                        format!("{}: cannot open {}: {e}", tls.key(key), p.display()),
                    ));
                }
                if s.is_empty() || !p.is_file() {
                    return Err(cx.err(
                        n,
                        format!("{}: {} is not a file", tls.key(key), p.display()),
                    ));
                }
                Ok(Some((p, n)))
            }
        }
    };
    let certificate = file("certificate")?;
    if tls.get("key").is_some() && tls.get("key_file").is_some() {
        return Err(cx.err(
            tls.get("key").unwrap(),
            format!(
                "'{}' has both 'key' and 'key_file' (the same setting)",
                tls.path
            ),
        ));
    }
    let key = match file("key_file")? {
        Some(k) => Some(k),
        None => file("key")?,
    };
    for refused in ["chain_file", "cert_authority"] {
        if let Some((_, n)) = file(refused)? {
            return Err(cx.err(
                n,
                format!(
                    "{}: otpd's TLS does not support this option",
                    tls.key(refused)
                ),
            ));
        }
    }
    for old in ["sslv2", "sslv3"] {
        if tls.strict_bool(cx, old)? == Some(true) {
            let n = tls.get(old).unwrap();
            return Err(cx.err(
                n,
                format!("{}: otpd never enables SSLv2/SSLv3", tls.key(old)),
            ));
        }
    }
    if let Some(v) = tls.strict_bool(cx, "tlsv1")? {
        log::info!(
            "{}: {} = {v} is accepted and ignored: otpd offers TLS 1.2 and later",
            cx.file,
            tls.key("tlsv1")
        );
    }
    if tls.uint(cx, "max_verify_depth", u32::MAX as u64)?.is_some() {
        log::info!(
            "{}: {} is accepted and ignored (no client certificates are verified)",
            cx.file,
            tls.key("max_verify_depth")
        );
    }
    if tls.get("handshake_timeout").is_some() {
        let n = tls.get("handshake_timeout").unwrap();
        let s = string(cx, n, &tls.key("handshake_timeout"))?;
        if s.trim_end().parse::<i64>().is_err() && parse_yaml_cpp_uint(&s).is_none() {
            return Err(cx.err(
                n,
                format!(
                    "{} must be a whole number of milliseconds",
                    tls.key("handshake_timeout")
                ),
            ));
        }
        log::info!(
            "{}: {} is accepted and ignored",
            cx.file,
            tls.key("handshake_timeout")
        );
    }
    match (certificate, key) {
        (None, None) => Ok(None),
        (Some((certificate, _)), Some((key, _))) => Ok(Some(TlsConfig { certificate, key })),
        (Some(_), None) | (None, Some(_)) => Err(cx.err(
            tls.node,
            format!(
                "'{}' needs both 'certificate' and 'key_file' to enable TLS",
                tls.path
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> PathBuf {
        PathBuf::from("/cfg")
    }

    fn parse_ok(text: &str) -> ClusterConfig {
        parse("t.yml", text, &base()).unwrap_or_else(|e| panic!("rejected: {e}\n{text}"))
    }

    fn parse_err(text: &str) -> ConfigError {
        match parse("t.yml", text, &base()) {
            Ok(c) => panic!("accepted: {c:?}\n{text}"),
            Err(e) => e,
        }
    }

    const MD: &str = "messagedirector:\n  bind: 127.0.0.1:57123\n";

    #[test]
    fn minimal_md_only() {
        let c = parse_ok(MD);
        assert_eq!(c.messagedirector.bind.as_deref(), Some("127.0.0.1:57123"));
        assert_eq!(c.messagedirector.connect, None);
        assert!(c.roles.is_empty() && c.uberdogs.is_empty() && c.dc_files.is_empty());
        assert_eq!(c.eventlogger, None);
    }

    #[test]
    fn md_default_port_and_unspecified() {
        let c = parse_ok(
            "messagedirector:\n  bind: 127.0.0.1\n  connect: \"::1\"\n  threaded: false\n",
        );
        assert_eq!(c.messagedirector.bind.as_deref(), Some("127.0.0.1:7199"));
        assert_eq!(c.messagedirector.connect.as_deref(), Some("[::1]:7199"));
        let c = parse_ok("messagedirector:\n  bind: unspecified\n");
        assert_eq!(c.messagedirector.bind, None);
        let c = parse_ok("daemon:\n  name: x\n");
        assert_eq!(c.messagedirector.bind, None);
        assert_eq!(c.name, "x");
    }

    #[test]
    fn unknown_keys_name_key_and_line() {
        let e = parse_err("messagedirector:\n  bind: 127.0.0.1:57123\n  bnd: 1.2.3.4\n");
        assert_eq!((e.line, e.column), (Some(3), Some(3)), "{e}");
        assert!(
            e.message.contains("bnd") && e.message.contains("messagedirector"),
            "{e}"
        );
        let e = parse_err("messagedirector:\n  bind: 127.0.0.1:57123\nweb:\n  bind: 1.2.3.4\n");
        assert_eq!(e.line, Some(3));
        assert!(e.message.contains("'web'"), "{e}");
        let e = parse_err(&format!(
            "{MD}roles:\n  - type: stateserver\n    queque: pu-pu\n"
        ));
        assert_eq!(e.line, Some(5), "{e}");
        assert!(e.to_string().starts_with("t.yml:5:5: "), "{e}");
    }

    #[test]
    fn structural_errors() {
        assert!(parse_err("").message.contains("empty"));
        assert!(parse_err("- a\n- b\n").message.contains("top level"));
        let e = parse_err(&format!("{MD}general:\n  - eventlogger: 127.0.0.1:9090\n"));
        assert!(e.message.contains("'general' must be a map"), "{e}");
        assert_eq!(e.line, Some(4));
        let e = parse_err(&format!("{MD}uberdogs:\n  id: 1234\n  class: UberDog1\n"));
        assert!(e.message.contains("'uberdogs' must be a list"), "{e}");
        let e = parse_err(&format!("{MD}roles:\n  - qux: bar\n"));
        assert!(e.message.contains("no 'type'"), "{e}");
        let e = parse_err(&format!("{MD}roles:\n  - type: foo\n"));
        assert!(e.message.contains("'foo' is not a role type"), "{e}");
        assert_eq!(e.line, Some(4));
        let e = parse_err(&format!("{MD}roles:\n  - just a string\n"));
        assert!(e.message.contains("roles[0]"), "{e}");
        let e = parse_err("messagedirector: [\n");
        assert!(e.message.contains("YAML syntax"), "{e}");
        assert!(e.line.is_some());
        let e = parse_err("messagedirector:\n  bind: 127.0.0.1:1\n  bind: 127.0.0.1:2\n");
        assert!(e.message.contains("twice"), "{e}");
        assert_eq!(e.line, Some(3));
    }

    #[test]
    fn uberdogs() {
        let c = parse_ok(&format!(
            "{MD}uberdogs:\n  - id: 1234\n    class: UberDog1\n    anonymous: TRUE\n  - id: 1235\n    class: UberDog2\n"
        ));
        assert_eq!(
            c.uberdogs,
            vec![
                UberDog {
                    id: 1234,
                    class: "UberDog1".into(),
                    anonymous: true
                },
                UberDog {
                    id: 1235,
                    class: "UberDog2".into(),
                    anonymous: false
                }
            ]
        );
        for (id, want) in [
            ("0", "INVALID_DO_ID"),
            ("165", "reserved"),
            ("-5", "non-negative"),
            ("4294967296", "too large"),
        ] {
            let e = parse_err(&format!(
                "{MD}uberdogs:\n  - id: {id}\n    class: UberDog1\n"
            ));
            assert!(
                e.message.contains(want) && e.message.contains("uberdogs[0].id"),
                "{e}"
            );
            assert_eq!(e.line, Some(4));
        }
        let e = parse_err(&format!(
            "{MD}uberdogs:\n  - id: 1234\n    class: UberDog1\n    anonymous: yes\n"
        ));
        assert!(e.message.contains("true or false"), "{e}");
        let e = parse_err(&format!("{MD}uberdogs:\n  - id: 1234\n"));
        assert!(e.message.contains("'class'"), "{e}");
    }

    #[test]
    fn general_paths_and_eventlogger() {
        let c = parse_ok(&format!(
            "{MD}general:\n  eventlogger: 127.0.0.1\n  dc_files:\n    - game.dc\n    - /abs/core.dc\n"
        ));
        assert_eq!(c.eventlogger.as_deref(), Some("127.0.0.1:7197"));
        assert_eq!(
            c.dc_files,
            vec![PathBuf::from("/cfg/game.dc"), PathBuf::from("/abs/core.dc")]
        );
        let e = parse_err(&format!("{MD}general:\n  eventlogger: \"\"\n"));
        assert!(e.message.contains("general.eventlogger"), "{e}");
        let e = parse_err(&format!("{MD}general:\n  dc_files: game.dc\n"));
        assert!(e.message.contains("must be a list"), "{e}");
    }

    #[test]
    fn general_dc_settings() {
        let c = parse_ok(&format!("{MD}general:\n  eventlogger: 127.0.0.1\n"));
        assert_eq!(c.dc_settings, crate::config::DcSettings::default());
        let c = parse_ok(&format!(
            "{MD}general:\n  dc_multiple_inheritance: false\n  dc_virtual_inheritance: no\n  \
             dc_sort_inheritance_by_file: false\n"
        ));
        assert_eq!(c.dc_settings, crate::config::DcSettings::LEGACY_2003);
        let e = parse_err(&format!("{MD}general:\n  dc_multiple_inheritance: maybe\n"));
        assert!(e.message.contains("dc_multiple_inheritance"), "{e}");
    }

    #[test]
    fn numbers_like_yaml_cpp() {
        assert_eq!(parse_yaml_cpp_uint("100100"), Some(100100));
        assert_eq!(parse_yaml_cpp_uint("+7"), Some(7));
        assert_eq!(parse_yaml_cpp_uint("0x10"), Some(16));
        assert_eq!(parse_yaml_cpp_uint("010"), Some(8));
        assert_eq!(parse_yaml_cpp_uint("0"), Some(0));
        assert_eq!(parse_yaml_cpp_uint("12 "), Some(12));
        for bad in ["", "-1", "08", "1.5", "1e3", "pizza", "0x", " 1"] {
            assert_eq!(parse_yaml_cpp_uint(bad), None, "{bad}");
        }
    }

    #[test]
    fn booleans_like_astron() {
        for (s, v) in [
            ("true", true),
            ("True", true),
            ("TRUE", true),
            ("false", false),
            ("FALSE", false),
        ] {
            let c = parse_ok(&format!("{MD}roles:\n  - type: database\n    control: 75757\n    broadcast: {s}\n    generate:\n      min: 1000000\n"));
            match &c.roles[0] {
                RoleConfig::Database { broadcast, .. } => assert_eq!(*broadcast, v, "{s}"),
                r => panic!("{r:?}"),
            }
        }
        for s in ["pizza", "15012", "yes", "tRUE", "on"] {
            let e = parse_err(&format!("{MD}roles:\n  - type: database\n    control: 75757\n    broadcast: {s}\n    generate:\n      min: 1000000\n"));
            assert!(e.message.contains("broadcast"), "{e}");
        }
        // Unconstrained booleans take the YAML library's wider set.
        let c = parse_ok("messagedirector:\n  threaded: off\nroles:\n  - type: clientagent\n    haproxy: Yes\n    channels: {min: 3100, max: 3999}\n");
        match &c.roles[0] {
            RoleConfig::ClientAgent(ca) => assert!(ca.haproxy),
            r => panic!("{r:?}"),
        }
    }

    #[test]
    fn clientagent_defaults_and_keys() {
        let c = parse_ok(&format!(
            "{MD}roles:\n  - type: clientagent\n    channels:\n      min: 3100\n      max: 3999\n"
        ));
        let RoleConfig::ClientAgent(ca) = &c.roles[0] else {
            panic!()
        };
        assert_eq!(ca.bind, "0.0.0.0:7198");
        assert_eq!(ca.version, "dev");
        assert_eq!(ca.manual_dc_hash, None);
        assert_eq!(
            ca.channels,
            ChannelRange {
                min: 3100,
                max: 3999
            }
        );
        assert_eq!(
            (
                ca.write_buffer_size,
                ca.write_timeout_ms,
                ca.interest_timeout_ms
            ),
            (262_144, 5_000, 500)
        );
        assert!(ca.send_hash && ca.send_version && !ca.relocate && !ca.haproxy);
        assert_eq!(ca.add_interest, "visible");

        let c = parse_ok(&format!(
            "{MD}roles:\n  - type: clientagent\n    bind: 127.0.0.1\n    version: 1.0\n    manual_dc_hash: 0xDEADBEEF\n    haproxy: true\n    channels: {{min: 3100, max: 3999}}\n    client:\n      type: libastron\n      relocate: true\n      add_interest: enabled\n      send_hash: false\n      send_version: no\n      write_buffer_size: 0\n      write_timeout_ms: 20\n      heartbeat_timeout: 10000\n      flush_delay_ms: 15\n    tuning:\n      interest_timeout: 250\n"
        ));
        let RoleConfig::ClientAgent(ca) = &c.roles[0] else {
            panic!()
        };
        assert_eq!(ca.bind, "127.0.0.1:7198");
        assert_eq!(ca.version, "1.0");
        assert_eq!(ca.manual_dc_hash, Some(0xDEADBEEF));
        assert!(ca.haproxy && ca.relocate && !ca.send_hash && !ca.send_version);
        assert_eq!(ca.add_interest, "enabled");
        assert_eq!(
            (
                ca.write_buffer_size,
                ca.write_timeout_ms,
                ca.heartbeat_timeout_ms,
                ca.interest_timeout_ms,
                ca.flush_delay_ms
            ),
            (0, 20, 10_000, 250, 15)
        );

        let ca_with = |extra: &str| {
            format!("{MD}roles:\n  - type: clientagent\n    channels: {{min: 3100, max: 3999}}\n{extra}")
        };
        assert!(parse_err(&ca_with("    client:\n      type: astron\n"))
            .message
            .contains("client type"));
        assert!(
            parse_err(&ca_with("    client:\n      add_interest: sometimes\n"))
                .message
                .contains("add_interest")
        );
        assert!(parse_err(&ca_with("    weeuuweeeuu: sirens!\n"))
            .message
            .contains("weeuuweeeuu"));
        assert!(parse_err(&ca_with("    tuning:\n      interest: 5\n"))
            .message
            .contains("interest"));
        assert!(
            parse_err(&ca_with("    client:\n      heartbeat_timeout: -1\n"))
                .message
                .contains("heartbeat_timeout")
        );
        let e = parse_err(&format!(
            "{MD}roles:\n  - type: clientagent\n    version: x\n"
        ));
        assert!(e.message.contains("channels.min"), "{e}");
    }

    #[test]
    fn clientagent_channels() {
        for (min, max, want) in [
            ("0", "3999", "INVALID"),
            ("3100", "0", "INVALID"),
            ("100", "3999", "reserved"),
            ("3100", "999", "reserved"),
            ("3100", "4294967296", "reserved"),
            ("3100", "4290672328704", "reserved"),
        ] {
            let e = parse_err(&format!(
                "{MD}roles:\n  - type: clientagent\n    channels:\n      min: {min}\n      max: {max}\n"
            ));
            assert!(e.message.contains(want), "{min} {max}: {e}");
        }
        let e = parse_err(&format!(
            "{MD}roles:\n  - type: clientagent\n    channels:\n      min: 5000\n      max: 4000\n"
        ));
        assert!(e.message.contains("above max") && e.line == Some(6), "{e}");
        // Just above 999<<32 is fine.
        parse_ok(&format!(
            "{MD}roles:\n  - type: clientagent\n    channels:\n      min: 3100\n      max: {}\n",
            (999u64 << 32) + 1
        ));
    }

    #[test]
    fn tls_section() {
        let dir = std::env::temp_dir().join(format!("otpd-astron-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("c.crt"), "x").unwrap();
        std::fs::write(dir.join("k.key"), "x").unwrap();
        let text = |tls: &str| {
            format!("{MD}roles:\n  - type: clientagent\n    channels: {{min: 3100, max: 3999}}\n    tls:\n{tls}")
        };
        let c = parse(
            "t.yml",
            &text("      certificate: c.crt\n      key_file: k.key\n      tlsv1: true\n      sslv3: false\n"),
            &dir,
        )
        .unwrap();
        let RoleConfig::ClientAgent(ca) = &c.roles[0] else {
            panic!()
        };
        assert_eq!(
            ca.tls,
            Some(TlsConfig {
                certificate: dir.join("c.crt"),
                key: dir.join("k.key")
            })
        );
        let c = parse(
            "t.yml",
            &text("      certificate: c.crt\n      key: k.key\n"),
            &dir,
        )
        .unwrap();
        let RoleConfig::ClientAgent(ca) = &c.roles[0] else {
            panic!()
        };
        assert!(ca.tls.is_some());
        for (tls, want) in [
            ("      certificate: c.crt\n", "needs both"),
            (
                "      certificate: missing.crt\n      key_file: k.key\n",
                "cannot open",
            ),
            (
                "      certificate: c.crt\n      key_file: k.key\n      cert_authority: c.crt\n",
                "cert_authority",
            ),
            (
                "      certificate: c.crt\n      key_file: k.key\n      sslv2: true\n",
                "SSLv2",
            ),
            (
                "      certificate: c.crt\n      key_file: k.key\n      ciphers: ALL\n",
                "ciphers",
            ),
            (
                "      certificate: c.crt\n      key_file: \"\"\n",
                "not a file",
            ),
        ] {
            let e = parse("t.yml", &text(tls), &dir).unwrap_err();
            assert!(e.message.contains(want), "{tls}: {e}");
        }
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn stateserver_and_dbss() {
        let c = parse_ok(&format!(
            "{MD}roles:\n  - type: stateserver\n    control: 100100\n"
        ));
        assert_eq!(c.roles, vec![RoleConfig::StateServer { control: 100100 }]);
        assert!(parse_err(&format!(
            "{MD}roles:\n  - type: stateserver\n    control: 100\n"
        ))
        .message
        .contains("reserved"));
        assert!(parse_err(&format!("{MD}roles:\n  - type: stateserver\n"))
            .message
            .contains("control"));
        let c = parse_ok(&format!(
            "{MD}roles:\n  - type: dbss\n    database: 1200\n    ranges:\n      - min: 9000\n        max: 9999\n      - min: 100000000\n"
        ));
        assert_eq!(
            c.roles,
            vec![RoleConfig::Dbss {
                database: 1200,
                ranges: vec![
                    DoidRange {
                        min: 9000,
                        max: 9999
                    },
                    DoidRange {
                        min: 100_000_000,
                        max: u32::MAX
                    }
                ],
                limits: Default::default(),
            }]
        );
        for r in [
            "min: 0\n        max: 9999",
            "min: 9000\n        max: 0",
            "min: 201\n        max: 9999",
            "min: 9000\n        max: 206",
        ] {
            let e = parse_err(&format!(
                "{MD}roles:\n  - type: dbss\n    database: 1200\n    ranges:\n      - {r}\n"
            ));
            assert!(e.message.contains("ranges[0]"), "{e}");
        }
        assert!(
            parse_err(&format!("{MD}roles:\n  - type: dbss\n    database: 200\n"))
                .message
                .contains("reserved")
        );
    }

    #[test]
    fn database_backends() {
        let db = |backend: &str| {
            format!("{MD}roles:\n  - type: database\n    control: 75757\n    generate:\n      min: 1000000\n      max: 1000010\n{backend}")
        };
        let c = parse_ok(&db("    backend:\n      type: yaml\n      directory: db\n"));
        assert_eq!(
            c.roles,
            vec![RoleConfig::Database {
                control: 75757,
                broadcast: true,
                generate: DoidRange {
                    min: 1_000_000,
                    max: 1_000_010
                },
                backend: DatabaseBackend::Sqlite {
                    directory: "/cfg/db".into()
                },
                max_batch: crate::config::db_max_batch(),
                max_queued: crate::config::db_max_queued(),
            }]
        );
        let c = parse_ok(&db(""));
        let RoleConfig::Database { backend, .. } = &c.roles[0] else {
            panic!()
        };
        assert_eq!(
            backend,
            &DatabaseBackend::Sqlite {
                directory: "/cfg/yaml_db".into()
            }
        );
        let c = parse_ok(&db("    backend:\n      directory: /var/db\n"));
        let RoleConfig::Database { backend, .. } = &c.roles[0] else {
            panic!()
        };
        assert_eq!(
            backend,
            &DatabaseBackend::Sqlite {
                directory: "/var/db".into()
            }
        );

        let c = parse_ok(&db("    backend:\n      type: soci\n      driver: postgresql\n      address: 127.0.0.1:5432\n      database: astron\n      username: u\n      password: p\n"));
        let RoleConfig::Database { backend, .. } = &c.roles[0] else {
            panic!()
        };
        assert_eq!(
            backend,
            &DatabaseBackend::Postgres {
                address: "127.0.0.1:5432".into(),
                database: "astron".into(),
                username: "u".into(),
                password: "p".into()
            }
        );
        let c =
            parse_ok(&db("    backend:\n      type: soci\n      driver: postgresql\n      server: 127.0.0.1:57023\n"));
        let RoleConfig::Database { backend, .. } = &c.roles[0] else {
            panic!()
        };
        assert!(
            matches!(backend, DatabaseBackend::Postgres { address, .. } if address == "127.0.0.1:57023")
        );

        for (backend, want) in [
            (
                "    backend:\n      type: soci\n      driver: mysql\n",
                "'mysql' is not supported",
            ),
            (
                "    backend:\n      type: soci\n",
                "default driver is mysql",
            ),
            (
                "    backend:\n      type: mongodb\n      server: mongodb://127.0.0.1:57023/test\n",
                "MongoDB",
            ),
            (
                "    backend:\n      type: mongodb\n      servr: x\n",
                "servr",
            ),
            (
                "    backend:\n      type: yam\n",
                "'yam' is not a database backend",
            ),
            (
                "    backend:\n      type: yaml\n      filename: x\n",
                "filename",
            ),
            (
                "    backend:\n      type: soci\n      host: 127.0.0.1\n",
                "host",
            ),
        ] {
            let e = parse_err(&db(backend));
            assert!(e.message.contains(want), "{backend}: {e}");
        }
        let gen = |g: &str| {
            format!("{MD}roles:\n  - type: database\n    control: 75757\n    generate:\n{g}")
        };
        assert!(parse_err(&gen("      min: 0\n"))
            .message
            .contains("INVALID_DO_ID"));
        assert!(parse_err(&gen("      min: 444\n"))
            .message
            .contains("reserved"));
        assert!(parse_err(&gen("      min: 1000000\n      max: 555\n"))
            .message
            .contains("reserved"));
        assert!(parse_err(&gen("      max: 1000000\n"))
            .message
            .contains("generate.min"));
        assert!(parse_err(&gen("      min: 1000001\n      max: 1000000\n"))
            .message
            .contains("above max"));
        let c = parse_ok(&gen("      min: 1000000\n"));
        let RoleConfig::Database { generate, .. } = &c.roles[0] else {
            panic!()
        };
        assert_eq!(generate.max, u32::MAX);
        assert!(parse_err(&format!(
            "{MD}roles:\n  - type: database\n    control: 777\n    generate:\n      min: 1000000\n"
        ))
        .message
        .contains("reserved"));
    }

    #[test]
    fn eventlogger_role() {
        let c = parse_ok(&format!("{MD}roles:\n  - type: eventlogger\n    bind: 0.0.0.0:9090\n    output: logs/el-%Y.log\n    rotate_interval: 1d\n"));
        assert_eq!(
            c.roles,
            vec![RoleConfig::EventLogger {
                bind: "0.0.0.0:9090".into(),
                output: "/cfg/logs/el-%Y.log".into(),
                rotate_interval: "1d".into(),
                max_file_bytes: crate::config::el_max_file_bytes(),
                max_events_per_second: crate::config::el_max_events_per_second(),
                max_bytes_per_second: crate::config::el_max_bytes_per_second(),
                max_files: crate::config::el_max_files(),
                max_age: crate::config::el_max_age(),
                allow_from: Vec::new(),
            }]
        );
        let c = parse_ok(&format!("{MD}roles:\n  - type: eventlogger\n"));
        assert_eq!(
            c.roles,
            vec![RoleConfig::EventLogger {
                bind: "0.0.0.0:7197".into(),
                output: "/cfg/events-%Y%m%d-%H%M%S.log".into(),
                rotate_interval: "0".into(),
                max_file_bytes: crate::config::el_max_file_bytes(),
                max_events_per_second: crate::config::el_max_events_per_second(),
                max_bytes_per_second: crate::config::el_max_bytes_per_second(),
                max_files: crate::config::el_max_files(),
                max_age: crate::config::el_max_age(),
                allow_from: Vec::new(),
            }]
        );
        // otpd's own limits.
        let c = parse_ok(&format!(
            "{MD}roles:\n  - type: eventlogger\n    max_file_bytes: 65536\n    max_events_per_second: 50\n    \
             max_bytes_per_second: 8192\n    max_files: 4\n    max_age: 7d\n    allow_from: [10.0.0.0/8, \"::1\"]\n"
        ));
        let RoleConfig::EventLogger {
            max_file_bytes,
            max_events_per_second,
            max_bytes_per_second,
            max_files,
            max_age,
            allow_from,
            ..
        } = &c.roles[0]
        else {
            panic!()
        };
        assert_eq!(
            (
                *max_file_bytes,
                *max_events_per_second,
                *max_bytes_per_second,
                *max_files
            ),
            (65536, 50, 8192, 4)
        );
        assert_eq!(
            (max_age.as_str(), &allow_from[..]),
            ("7d", &["10.0.0.0/8".to_string(), "::1".into()][..])
        );
        let e = parse_err(&format!(
            "{MD}roles:\n  - type: eventlogger\n    allow_from: [10.0.0.0/8, nowhere]\n"
        ));
        assert!(
            e.message.contains("allow_from") && e.message.contains("nowhere"),
            "{e}"
        );
        assert_eq!(e.line, Some(5));
        let e = parse_err(&format!(
            "{MD}roles:\n  - type: eventlogger\n    max_age: 3w\n"
        ));
        assert!(e.message.contains("max_age"), "{e}");
        let e = parse_err(&format!(
            "{MD}roles:\n  - type: eventlogger\n    max_bytes_per_second: 10\n"
        ));
        assert!(e.message.contains("max_bytes_per_second"), "{e}");
        let e = parse_err(&format!(
            "{MD}roles:\n  - type: eventlogger\n    bind: \"bad~name:1\"\n"
        ));
        assert!(e.message.contains("roles[0] (eventlogger).bind"), "{e}");
        assert_eq!(e.line, Some(5));
    }

    #[test]
    fn positions_and_documents() {
        let e = parse_err(&format!("{MD}roles:\n  - qux: bar\n"));
        assert_eq!((e.line, e.column), (Some(4), Some(5)), "{e}");
        // Only the first document counts, as in astrond.
        let c = parse_ok(&format!("{MD}---\nroles: 5\n"));
        assert!(c.roles.is_empty());
    }

    #[test]
    fn anchors_and_flow_style() {
        let c = parse_ok("messagedirector: {bind: \"127.0.0.1:57123\"}\nroles:\n  - &ss {type: stateserver, control: 100100}\n  - *ss\n");
        assert_eq!(c.roles.len(), 2);
        assert_eq!(c.roles[0], c.roles[1]);
    }

    #[test]
    fn type_errors() {
        let e = parse_err(&format!(
            "{MD}roles:\n  - type: stateserver\n    control: [1, 2]\n"
        ));
        assert!(
            e.message.contains("control") && e.message.contains("list"),
            "{e}"
        );
        let e = parse_err(&format!(
            "{MD}roles:\n  - type: stateserver\n    control: pizza\n"
        ));
        assert!(e.message.contains("whole number"), "{e}");
        let e = parse_err("messagedirector:\n  bind:\n    host: x\n");
        assert!(e.message.contains("messagedirector.bind"), "{e}");
        let e = parse_err("daemon:\n  name: [a]\n");
        assert!(e.message.contains("daemon.name"), "{e}");
    }
}
