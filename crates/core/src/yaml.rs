//! A YAML tree that remembers where every node was written.
//!
//! Campaign files are parsed into [`Node`]s (each with a 1-based line and column) so that
//! every diagnostic can point at the exact key or value that is wrong. The tree converts to
//! `serde_json::Value` (YAML 1.2 core schema) for typed deserialization, and a serde error
//! path can be mapped back to the node it talks about with [`Node::locate`].

use serde_json::{Map, Number, Value};
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// Where a node starts in its file (1-based line and column) and how long its first line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub col: usize,
    /// Length in characters of the underline, at least 1.
    pub len: usize,
}

/// What a node holds.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeKind {
    /// A scalar, kept as written.
    Scalar {
        /// The text, without quotes.
        text: String,
        /// Whether it was quoted (then it is always a string).
        quoted: bool,
    },
    /// A sequence, its items in order.
    Seq(Vec<Node>),
    /// A mapping, its key and value nodes in file order.
    Map(Vec<(Node, Node)>),
}

/// A YAML node and where it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Where it starts.
    pub span: Span,
    /// Its content.
    pub kind: NodeKind,
}

/// A YAML syntax error with its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    /// Where the parser stopped.
    pub span: Span,
    /// What the parser says is wrong.
    pub message: String,
    /// How to fix it, when the parser knows better than "check the indentation".
    pub hint: Option<String>,
}

/// The most alias uses (`*name`) one document may hold.
pub const MAX_ALIASES: usize = 1_000;
/// The most nodes that aliases may add to one document, all uses together.
pub const MAX_ALIAS_NODES: usize = 100_000;
/// The most bytes of scalar text that aliases may add to one document.
pub const MAX_ALIAS_BYTES: usize = 1 << 20;
/// The deepest nesting of sequences and mappings accepted.
pub const MAX_DEPTH: usize = 128;

const ALIAS_HINT: &str = "anchors and aliases may repeat at most 100000 nodes and 1 MiB of text \
     in a file (1000 aliases); write the repeated part out, or reuse it less";

impl Node {
    /// The entries, if this is a mapping.
    pub fn as_map(&self) -> Option<&[(Node, Node)]> {
        match &self.kind {
            NodeKind::Map(m) => Some(m),
            _ => None,
        }
    }

    /// The items, if this is a sequence.
    pub fn as_seq(&self) -> Option<&[Node]> {
        match &self.kind {
            NodeKind::Seq(s) => Some(s),
            _ => None,
        }
    }

    /// The text, if this is a scalar (quoted or not).
    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            NodeKind::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    /// The value stored under `key` in a mapping node.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entry(key).map(|(_, v)| v)
    }

    /// The key node and value node stored under `key` in a mapping node.
    pub fn entry(&self, key: &str) -> Option<(&Node, &Node)> {
        self.as_map()?
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(k, v)| (k, v))
    }

    /// Follows a path of map keys and sequence indexes. Returns the deepest node reached.
    pub fn locate<I, S>(&self, path: I) -> &Node
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut node = self;
        for seg in path {
            let seg = seg.as_ref();
            let next = match &node.kind {
                NodeKind::Map(_) => node.get(seg),
                NodeKind::Seq(items) => seg.parse::<usize>().ok().and_then(|i| items.get(i)),
                NodeKind::Scalar { .. } => None,
            };
            match next {
                Some(n) => node = n,
                None => break,
            }
        }
        node
    }

    /// The JSON value of this node under the YAML 1.2 core schema: plain scalars may be
    /// null, booleans or numbers; quoted scalars are always strings.
    pub fn to_json(&self) -> Value {
        match &self.kind {
            NodeKind::Scalar { text, quoted } => {
                if *quoted {
                    Value::String(text.clone())
                } else {
                    plain_scalar(text)
                }
            }
            NodeKind::Seq(items) => Value::Array(items.iter().map(Node::to_json).collect()),
            NodeKind::Map(entries) => {
                let mut m = Map::new();
                for (k, v) in entries {
                    let key = match k.to_json() {
                        Value::String(s) => s,
                        other => other.to_string(),
                    };
                    m.insert(key, v.to_json());
                }
                Value::Object(m)
            }
        }
    }
}

fn plain_scalar(text: &str) -> Value {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        _ => {}
    }
    let digits = text.strip_prefix(['+', '-']).unwrap_or(text);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        let unsigned = text.strip_prefix('+').unwrap_or(text);
        if let Ok(i) = unsigned.parse::<i64>() {
            return Value::Number(Number::from(i));
        }
    }
    let looks_float = !digits.is_empty()
        && digits.bytes().any(|b| b.is_ascii_digit())
        && digits
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'))
        && digits.starts_with(|c: char| c.is_ascii_digit() || c == '.');
    if looks_float {
        if let Ok(f) = text.parse::<f64>() {
            if let Some(n) = Number::from_f64(f) {
                return Value::Number(n);
            }
        }
    }
    Value::String(text.to_string())
}

enum Frame {
    Seq(Span, usize, Vec<Node>),
    Map(Span, usize, Vec<(Node, Node)>, Option<Node>),
}

struct Builder<'s> {
    source: &'s str,
    line_starts: Vec<usize>,
    stack: Vec<Frame>,
    /// Anchored nodes with their size (nodes, scalar bytes).
    anchors: Vec<(usize, Node, Size)>,
    root: Option<Node>,
    error: Option<SyntaxError>,
    /// Aliases used so far, and what they added.
    aliases: usize,
    expanded: Size,
}

/// How much a node holds: nodes (itself included), bytes of scalar text, and how deep
/// it nests (a scalar is 0 deep, a list of scalars 1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Size {
    nodes: usize,
    bytes: usize,
    depth: usize,
}

impl Size {
    fn of(node: &Node) -> Size {
        let mut size = Size::default();
        match &node.kind {
            NodeKind::Scalar { text, .. } => size.bytes = text.len(),
            NodeKind::Seq(items) => items.iter().for_each(|n| size.add(Size::of(n))),
            NodeKind::Map(entries) => entries.iter().for_each(|(k, v)| {
                size.add(Size::of(k));
                size.add(Size::of(v));
            }),
        }
        if !matches!(node.kind, NodeKind::Scalar { .. }) {
            size.depth += 1;
        }
        size.nodes += 1;
        size
    }

    /// Adds a child's size (or another alias use's): sums, and the deeper depth.
    fn add(&mut self, other: Size) {
        self.nodes = self.nodes.saturating_add(other.nodes);
        self.bytes = self.bytes.saturating_add(other.bytes);
        self.depth = self.depth.max(other.depth);
    }
}

impl Builder<'_> {
    fn span_at(&self, mark: &Marker, len: usize) -> Span {
        // yaml-rust2 reports `line` 1-based and `col` 0-based in characters.
        Span {
            line: mark.line().max(1),
            col: mark.col() + 1,
            len: len.max(1),
        }
    }

    fn scalar_len(&self, mark: &Marker, text: &str, style: TScalarStyle) -> usize {
        let quoted = matches!(
            style,
            TScalarStyle::SingleQuoted | TScalarStyle::DoubleQuoted
        );
        // Underline what was written on the first line, quotes included.
        let line_idx = mark.line().saturating_sub(1);
        if let Some(&start) = self.line_starts.get(line_idx) {
            let end = self.source[start..]
                .find('\n')
                .map_or(self.source.len(), |e| start + e);
            let written: String = self.source[start..end].chars().skip(mark.col()).collect();
            let first = text.lines().next().unwrap_or("");
            let want = first.chars().count() + if quoted { 2 } else { 0 };
            return want.min(written.trim_end().chars().count()).max(1);
        }
        text.chars().count().max(1)
    }

    fn push(&mut self, node: Node, anchor: usize) {
        if anchor > 0 {
            let size = Size::of(&node);
            self.anchors.push((anchor, node.clone(), size));
        }
        match self.stack.last_mut() {
            None => {
                if self.root.is_none() {
                    self.root = Some(node);
                }
            }
            Some(Frame::Seq(_, _, items)) => items.push(node),
            Some(Frame::Map(_, _, entries, key)) => match key.take() {
                None => *key = Some(node),
                Some(k) => entries.push((k, node)),
            },
        }
    }
}

fn too_deep(span: Span) -> SyntaxError {
    SyntaxError {
        span,
        message: format!("lists and maps nested deeper than {MAX_DEPTH} levels"),
        hint: Some("flatten the structure; campaign files need a few levels".into()),
    }
}

impl Builder<'_> {
    /// Refuses nesting deeper than [`MAX_DEPTH`].
    fn check_depth(&mut self, span: Span) {
        if self.stack.len() > MAX_DEPTH {
            self.error = Some(too_deep(span));
        }
    }

    /// Inserts a copy of the anchored node, within the limits of alias expansion.
    fn alias(&mut self, id: usize, span: Span) {
        let Some((_, node, size)) = self.anchors.iter().rev().find(|(a, ..)| *a == id) else {
            self.error = Some(SyntaxError {
                span,
                message: "alias refers to an unknown anchor".into(),
                hint: None,
            });
            return;
        };
        if self.stack.len() + size.depth > MAX_DEPTH {
            self.error = Some(too_deep(span));
            return;
        }
        self.aliases += 1;
        self.expanded.add(*size);
        if self.aliases > MAX_ALIASES
            || self.expanded.nodes > MAX_ALIAS_NODES
            || self.expanded.bytes > MAX_ALIAS_BYTES
        {
            self.error = Some(SyntaxError {
                span,
                message: format!(
                    "aliases expand too much ({} uses, {} nodes, {} bytes so far): \
                     an alias bomb is refused",
                    self.aliases, self.expanded.nodes, self.expanded.bytes
                ),
                hint: Some(ALIAS_HINT.into()),
            });
            return;
        }
        let mut n = node.clone();
        n.span = span;
        self.push(n, 0);
    }
}

impl MarkedEventReceiver for Builder<'_> {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.error.is_some() {
            return;
        }
        match ev {
            Event::Scalar(text, style, anchor, _tag) => {
                let len = self.scalar_len(&mark, &text, style);
                let span = self.span_at(&mark, len);
                let quoted = !matches!(style, TScalarStyle::Plain);
                self.push(
                    Node {
                        span,
                        kind: NodeKind::Scalar { text, quoted },
                    },
                    anchor,
                );
            }
            Event::SequenceStart(anchor, _) => {
                let span = self.span_at(&mark, 1);
                self.stack.push(Frame::Seq(span, anchor, Vec::new()));
                self.check_depth(span);
            }
            Event::MappingStart(anchor, _) => {
                let span = self.span_at(&mark, 1);
                self.stack.push(Frame::Map(span, anchor, Vec::new(), None));
                self.check_depth(span);
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let (node, anchor) = match self.stack.pop() {
                    Some(Frame::Seq(span, anchor, items)) => (
                        Node {
                            span,
                            kind: NodeKind::Seq(items),
                        },
                        anchor,
                    ),
                    Some(Frame::Map(span, anchor, entries, _)) => (
                        Node {
                            span,
                            kind: NodeKind::Map(entries),
                        },
                        anchor,
                    ),
                    None => return,
                };
                self.push(node, anchor);
            }
            Event::Alias(id) => self.alias(id, self.span_at(&mark, 1)),
            Event::DocumentStart if self.root.is_some() => {
                self.error = Some(SyntaxError {
                    span: self.span_at(&mark, 3),
                    message: "a campaign file holds one YAML document; remove the second `---`"
                        .into(),
                    hint: None,
                });
            }
            _ => {}
        }
    }
}

/// Parses one YAML document. An empty document is an empty mapping.
pub fn parse(source: &str) -> Result<Node, SyntaxError> {
    let mut line_starts = vec![0];
    line_starts.extend(source.match_indices('\n').map(|(i, _)| i + 1));
    let mut builder = Builder {
        source,
        line_starts,
        stack: Vec::new(),
        anchors: Vec::new(),
        root: None,
        error: None,
        aliases: 0,
        expanded: Size::default(),
    };
    let mut parser = Parser::new_from_str(source);
    if let Err(e) = parser.load(&mut builder, true) {
        let m = e.marker();
        return Err(SyntaxError {
            span: Span {
                line: m.line().max(1),
                col: m.col() + 1,
                len: 1,
            },
            message: e.info().to_string(),
            hint: None,
        });
    }
    if let Some(err) = builder.error {
        return Err(err);
    }
    Ok(builder.root.unwrap_or(Node {
        span: Span {
            line: 1,
            col: 1,
            len: 1,
        },
        kind: NodeKind::Map(Vec::new()),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_are_one_based_and_point_at_values() {
        let n = parse("a: 1\nb:\n  - x: 'hi'\n").unwrap();
        let a = n.get("a").unwrap();
        assert_eq!((a.span.line, a.span.col), (1, 4));
        let x = n.locate(["b", "0", "x"]);
        assert_eq!((x.span.line, x.span.col, x.span.len), (3, 8, 4));
        assert_eq!(x.to_json(), Value::String("hi".into()));
    }

    #[test]
    fn core_schema_scalars() {
        let n = parse("a: +10\nb: -5\nc: '10'\nd: 1.5\ne: ~\nf: true\ng: 7d\n").unwrap();
        let v = n.to_json();
        assert_eq!(v["a"], 10);
        assert_eq!(v["b"], -5);
        assert_eq!(v["c"], "10");
        assert_eq!(v["d"], 1.5);
        assert!(v["e"].is_null());
        assert_eq!(v["f"], true);
        assert_eq!(v["g"], "7d");
    }

    #[test]
    fn syntax_error_has_position() {
        let e = parse("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(e.span.line >= 1, "{e:?}");
        assert!(!e.message.is_empty());
    }

    #[test]
    fn an_alias_bomb_is_refused_at_the_alias() {
        let mut s = String::from("a0: &a0 [lol]\n");
        for i in 1..=9 {
            let refs = vec![format!("*a{}", i - 1); 10].join(", ");
            s.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
        }
        let e = parse(&s).unwrap_err();
        assert!(e.message.starts_with("aliases expand too much"), "{e:?}");
        assert!(e.hint.is_some());
        assert!(e.span.line > 1 && e.span.line <= 10, "{e:?}");
    }

    #[test]
    fn too_many_aliases_and_too_deep_are_refused() {
        let many = format!("a: &a x\nb: [{}]\n", vec!["*a"; MAX_ALIASES + 1].join(", "));
        assert!(parse(&many).unwrap_err().message.contains("1001 uses"));
        let deep = format!(
            "{}1{}",
            "[".repeat(MAX_DEPTH + 1),
            "]".repeat(MAX_DEPTH + 1)
        );
        let e = parse(&deep).unwrap_err();
        assert!(e.message.contains("nested deeper"), "{e:?}");
        // Aliases cannot stack depth either.
        let inner = format!("{}1{}", "[".repeat(100), "]".repeat(100));
        let outer = ("[".repeat(30), "]".repeat(30));
        let stacked = format!("a: &a {inner}\nb: {}*a{}\n", outer.0, outer.1);
        let e = parse(&stacked).unwrap_err();
        assert!(e.message.contains("nested deeper"), "{e:?}");
    }

    #[test]
    fn anchors_and_aliases_resolve() {
        let n = parse("base: &b {x: 1}\nother: *b\n").unwrap();
        assert_eq!(n.to_json()["other"]["x"], 1);
    }
}
