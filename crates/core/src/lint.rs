//! Checks that find what is valid but cannot work for every contact or event:
//! event names that ingestion refuses (an error, N0014) and contact fields that some
//! contacts lack, used where a missing value fails the send (a warning, N0038).
//!
//! **Which fields "may be missing".** The contact view always has `id`, `email`, `tags`,
//! `score`, `grade`, `lifecycle`, `owner`, `consent`, `timezone`, `segments` and
//! `unsubscribed` ([`ALWAYS_PRESENT`]; some may be empty). Any other field
//! (`first_name`, `company`, `phone`...) comes from an import or a `set:` step, and a
//! contact created by an event (an unknown `email`) has none of them. Such a field is
//! reported where it is printed without a fallback:
//! - in a template (`{{ ... }}`, minijinja): unless the expression applies `default`
//!   (`{{ contact.first_name | default("there") }}`) or it sits inside an
//!   `{% if %}`/`{% elif %}` whose condition names the same field;
//! - in a workflow's `${...}` (CEL: plugin `with`, webhook `url`/`body`, `set`, subject
//!   overrides): unless the same expression tests it with `has(contact.FIELD...)`.
//!
//! Only the first field after `contact.` counts: `contact.company.name` is guarded by a
//! test of `contact.company`. Conditions (`if:`, `exit_if`, segments) are not checked: a
//! condition that fails on a missing field counts as false.

use std::path::Path;

use crate::diag::{Code, Diagnostic};
use crate::yaml::Span;

/// The fields every contact view has (`nurture_engine::eval::contact_view`).
pub const ALWAYS_PRESENT: &[&str] = &[
    "id",
    "email",
    "tags",
    "score",
    "grade",
    "lifecycle",
    "owner",
    "consent",
    "timezone",
    "segments",
    "unsubscribed",
];

/// A use of a field that may be missing: where (1-based line and column in the text,
/// column in characters) and which field (`first_name`), with its full path
/// (`contact.first_name`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldUse {
    /// 1-based line in the text.
    pub line: usize,
    /// 1-based column, in characters.
    pub col: usize,
    /// Byte offset in the text.
    pub offset: usize,
    /// The field after `contact.`, e.g. `first_name`.
    pub field: String,
    /// The whole path as written, e.g. `contact.first_name`.
    pub path: String,
}

/// N0014 when `name` (an event type of a trigger, goal, `wait_for` or scoring rule) is
/// one that ingestion refuses ([`crate::events::check_event_type`]).
pub fn event_type(file: &Path, span: Span, name: &str) -> Option<Diagnostic> {
    crate::events::check_event_type(name).err()?;
    let example = crate::events::suggest_event_type(name)
        .map(|s| format!(", e.g. `{s}`"))
        .unwrap_or_default();
    Some(
        Diagnostic::error(
            Code::BadEventType,
            file,
            span,
            format!(
                "event type `{}` can never arrive: ingestion accepts only dotted lowercase names",
                shown(name)
            ),
        )
        .with_hint(format!(
            "rename it here and in what sends the event{example}: two or more parts of a-z, 0-9, _ and -, \
             separated by dots, the first starting with a letter (such as `form.submitted`)"
        )),
    )
}

fn shown(s: &str) -> String {
    let short: String = s.chars().take(60).collect();
    if short.len() < s.len() {
        format!("{short}...")
    } else {
        short
    }
}

/// The hint of a field that may be missing in a template.
pub fn template_hint(field: &str) -> String {
    format!(
        "contacts created by an event have only an id and an email: write \
         `{{{{ contact.{field} | default(\"...\") }}}}`, or print it inside \
         `{{% if contact.{field} %}}`"
    )
}

/// The hint of a field that may be missing in a `${...}` expression.
pub fn expression_hint(field: &str) -> String {
    format!(
        "contacts created by an event have only an id and an email: give a fallback, \
         `${{has(contact.{field}) ? contact.{field} : \"...\"}}` (CEL's form of `| default(...)`)"
    )
}

/// The message of a field that may be missing.
pub fn message(path: &str, place: &str) -> String {
    format!("`{path}` may be missing for some contacts, and {place} then fails to render")
}

/// `(start, end)` byte ranges of the string literals (`'...'`, `"..."`) in `src`.
fn literals(src: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let bytes = src.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let q = bytes[i];
        if q == b'"' || q == b'\'' {
            let start = i;
            i += 1;
            while i < bytes.len() && bytes[i] != q {
                if bytes[i] == b'\\' {
                    i += 1;
                }
                i += 1;
            }
            out.push((start, i.min(bytes.len())));
        }
        i += 1;
    }
    out
}

/// Every `contact.FIELD` outside string literals in `src`: (byte offset, field, path).
fn contact_paths(src: &str) -> Vec<(usize, String, String)> {
    let lits = literals(src);
    let bytes = src.as_bytes();
    let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut out = Vec::new();
    for (i, _) in src.match_indices("contact.") {
        if i > 0 && (ident(bytes[i - 1]) || bytes[i - 1] == b'.') {
            continue;
        }
        if lits.iter().any(|(s, e)| i > *s && i < *e) {
            continue;
        }
        let rest = &src[i + "contact.".len()..];
        let field: String = rest
            .bytes()
            .take_while(|b| ident(*b))
            .map(char::from)
            .collect();
        if field.is_empty() {
            continue;
        }
        let path_len: usize = rest.bytes().take_while(|b| ident(*b) || *b == b'.').count();
        let path = format!("contact.{}", rest[..path_len].trim_end_matches('.'));
        out.push((i, field, path));
    }
    out
}

/// `src` without blanks, to look for `has(contact.x` and `|default` however spaced.
fn squeezed(src: &str) -> String {
    src.chars().filter(|c| !c.is_whitespace()).collect()
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

fn may_be_missing(field: &str) -> bool {
    !ALWAYS_PRESENT.contains(&field)
}

/// The fields that may be missing in one CEL expression (the inside of `${...}`), with
/// their byte offsets in `src`.
pub fn expression_fields(src: &str) -> Vec<FieldUse> {
    let tested = squeezed(src);
    contact_paths(src)
        .into_iter()
        .filter(|(_, field, _)| may_be_missing(field))
        .filter(|(_, field, _)| {
            let guard = format!("has(contact.{field}");
            !tested.contains(&guard)
        })
        .map(|(offset, field, path)| {
            let (line, col) = line_col(src, offset);
            FieldUse {
                line,
                col,
                offset,
                field,
                path,
            }
        })
        .collect()
}

/// Whether a minijinja expression applies the `default` filter (`| default(...)`,
/// `| default`, or its short name `| d(...)`).
fn has_default(expr: &str) -> bool {
    let s = squeezed(expr);
    let lits = literals(&s);
    s.match_indices('|').any(|(i, _)| {
        if lits.iter().any(|(a, b)| i > *a && i < *b) {
            return false;
        }
        let after = &s[i + 1..];
        let name: String = after
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        name == "default" || name == "d"
    })
}

/// The fields that may be missing in a template's text (minijinja), printed in
/// `{{ ... }}` without `default` and outside an `{% if %}` that tests them.
pub fn template_fields(src: &str) -> Vec<FieldUse> {
    let mut out = Vec::new();
    // The conditions of the enclosing `if` blocks (with their `elif`s).
    let mut guards: Vec<String> = Vec::new();
    let mut pos = 0;
    while let Some(start) = src[pos..].find('{').map(|i| pos + i) {
        let kind = src[start + 1..].chars().next();
        let close = match kind {
            Some('{') => "}}",
            Some('%') => "%}",
            Some('#') => "#}",
            _ => {
                pos = start + 1;
                continue;
            }
        };
        let inner_start = start + 2;
        let Some(end) = src[inner_start..].find(close).map(|i| inner_start + i) else {
            break;
        };
        let inner = &src[inner_start..end];
        pos = end + 2;
        match kind {
            Some('%') => {
                let tag = inner.trim_matches(|c: char| c == '-' || c == '+' || c.is_whitespace());
                let word: String = tag
                    .chars()
                    .take_while(|c| c.is_ascii_alphabetic())
                    .collect();
                match word.as_str() {
                    "if" => guards.push(squeezed(tag)),
                    "elif" => {
                        if let Some(g) = guards.last_mut() {
                            g.push_str(&squeezed(tag));
                        }
                    }
                    "endif" => {
                        guards.pop();
                    }
                    _ => {}
                }
            }
            Some('{') => {
                if has_default(inner) {
                    continue;
                }
                for (offset, field, path) in contact_paths(inner) {
                    if !may_be_missing(&field) {
                        continue;
                    }
                    let tested = format!("contact.{field}");
                    let guarded = guards.iter().any(|g| {
                        g.match_indices(&tested).any(|(i, _)| {
                            !g[i + tested.len()..]
                                .starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
                        })
                    });
                    if guarded {
                        continue;
                    }
                    let at = inner_start + offset;
                    let (line, col) = line_col(src, at);
                    out.push(FieldUse {
                        line,
                        col,
                        offset: at,
                        field,
                        path,
                    });
                }
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(v: Vec<FieldUse>) -> Vec<String> {
        v.into_iter().map(|f| f.path).collect()
    }

    #[test]
    fn templates_flag_unguarded_contact_fields_only() {
        let src = "<p>Hi {{ contact.first_name }}</p>\n\
            <p>{{ contact.first_name | default(\"there\") }} {{ contact.email }} {{ contact.score }}</p>\n\
            {% if contact.company %}<p>{{ contact.company.name }}</p>{% endif %}\n\
            {% if contact.title %}x{% endif %}<p>{{ contact.company.name }}</p>\n\
            {# {{ contact.phone }} #}{{ \"contact.x\" }}{{ contact.phone|d('-') }}";
        let found = template_fields(src);
        assert_eq!(
            fields(found.clone()),
            ["contact.first_name", "contact.company.name"]
        );
        assert_eq!((found[0].line, found[0].col), (1, 10));
        assert_eq!((found[1].line, found[1].col), (4, 41));
    }

    #[test]
    fn expressions_flag_fields_not_tested_with_has() {
        assert_eq!(
            fields(expression_fields("contact.first_name")),
            ["contact.first_name"]
        );
        assert!(
            expression_fields("has(contact.first_name) ? contact.first_name : 'you'").is_empty()
        );
        assert!(expression_fields("contact.email + contact.id + string(contact.score)").is_empty());
        assert_eq!(
            fields(expression_fields(
                "has(contact.company) ? contact.company.name : contact.phone"
            )),
            ["contact.phone"]
        );
        assert!(expression_fields("'contact.first_name'").is_empty());
    }

    #[test]
    fn event_types_use_the_ingestion_rule() {
        let span = Span::default();
        assert!(event_type(Path::new("w.yaml"), span, "form.submitted").is_none());
        let d = event_type(Path::new("w.yaml"), span, "go").unwrap();
        assert_eq!(d.code, Code::BadEventType);
        assert!(d.hint.unwrap().contains("e.g. `custom.go`"));
        let d = event_type(Path::new("w.yaml"), span, "Page Visited").unwrap();
        assert!(
            d.hint.unwrap().contains("e.g. `custom.page_visited`"),
            "single part"
        );
        let d = event_type(Path::new("w.yaml"), span, "Form.Submitted").unwrap();
        assert!(d.hint.unwrap().contains("e.g. `form.submitted`"));
    }
}
