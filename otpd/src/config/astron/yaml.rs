//! The YAML tree with positions: yaml-rust2's events built into nodes that keep their line and
//! column (anchors and aliases resolved), so every error can say where it is.

use super::ConfigError;
use std::collections::HashMap;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

#[derive(Debug, Clone)]
pub(super) struct Node {
    pub(super) kind: Kind,
    pub(super) line: usize,
    /// 1-based.
    pub(super) col: usize,
}

#[derive(Debug, Clone)]
pub(super) enum Kind {
    /// An empty value, `~` or `null` (unquoted).
    Null,
    Scalar(String),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

impl Node {
    pub(super) fn describe(&self) -> &'static str {
        match self.kind {
            Kind::Null => "an empty value",
            Kind::Scalar(_) => "a single value",
            Kind::Seq(_) => "a list",
            Kind::Map(_) => "a map",
        }
    }
}

pub(super) enum Frame {
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
pub(super) struct TreeBuilder {
    stack: Vec<Frame>,
    anchors: HashMap<usize, Node>,
    root: Option<Node>,
    documents: usize,
    error: Option<(String, usize, usize)>,
}

impl TreeBuilder {
    pub(super) fn fail(&mut self, msg: String, line: usize, col: usize) {
        if self.error.is_none() {
            self.error = Some((msg, line, col));
        }
    }

    pub(super) fn finish(&mut self, node: Node, anchor: usize) {
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

pub(super) fn key_text(n: &Node) -> String {
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

pub(super) fn parse_yaml(file: &str, text: &str) -> Result<Node, ConfigError> {
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
