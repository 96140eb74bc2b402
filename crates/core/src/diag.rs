//! Diagnostics: what is wrong in a campaign project, where, and how to fix it.
//!
//! Every diagnostic has a stable code (`N0xxx`) explained in `docs/errors.md`, the file,
//! 1-based line and column, a one-line message and usually a hint. They render for people
//! (with the offending source line underlined) or as JSON for scripts and editors.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::yaml::Span;

/// Stable error codes. Never renumber one; add new ones at the end of their group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
pub enum Code {
    /// N0001: the file is not valid YAML/TOML or cannot be read.
    Syntax,
    /// N0002: a key that this place does not know (usually a typo).
    UnknownKey,
    /// N0003: a required key is missing.
    MissingKey,
    /// N0004: a value has the wrong type or shape.
    InvalidValue,
    /// N0005: a step declares no kind, or more than one.
    StepKind,
    /// N0010: a duration such as `7d` that does not parse.
    BadDuration,
    /// N0011: a CEL expression that does not compile.
    BadExpression,
    /// N0012: an expression reads a variable or calls a function that does not exist.
    UnknownName,
    /// N0013: a time of day, weekday, time zone or cron schedule that does not parse.
    BadTime,
    /// N0014: an event type that ingestion refuses, so the trigger, goal, `wait_for` or
    /// scoring rule naming it can never fire.
    BadEventType,
    /// N0020: two steps share an id.
    DuplicateStep,
    /// N0021: `next`/`on_timeout`/branch target names no step.
    UnknownStep,
    /// N0022: the steps form a cycle.
    Cycle,
    /// N0023: a step that no path from the entry reaches.
    Unreachable,
    /// N0024: a branch without an `else` arm.
    BranchWithoutElse,
    /// N0025: a split with a weight that is not positive.
    BadSplit,
    /// N0026: a step kind that cannot stand inside `actions`.
    NotAnAction,
    /// N0030: a template that does not exist in `templates/`.
    UnknownTemplate,
    /// N0031: a segment that `segments.yaml` does not define.
    UnknownSegment,
    /// N0032: a plugin or plugin step that is not installed.
    UnknownPlugin,
    /// N0033: two workflows (or segments) share an id.
    DuplicateId,
    /// N0034: an id that is not `[a-z0-9-]+`.
    BadId,
    /// N0035: a plugin step's `with:` does not match the plugin's manifest.
    BadPluginConfig,
    /// N0036: a sales team that `nurture.toml` does not define.
    UnknownTeam,
    /// N0037: an email template that does not compile or uses an unknown variable.
    BadTemplate,
    /// N0038 (warning): a contact field that some contacts lack, printed without a
    /// fallback in a template or a `${...}` (see [`crate::lint`]).
    MaybeMissing,
}

impl Code {
    /// The stable code as printed, e.g. `N0021`.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Syntax => "N0001",
            Code::UnknownKey => "N0002",
            Code::MissingKey => "N0003",
            Code::InvalidValue => "N0004",
            Code::StepKind => "N0005",
            Code::BadDuration => "N0010",
            Code::BadExpression => "N0011",
            Code::UnknownName => "N0012",
            Code::BadTime => "N0013",
            Code::BadEventType => "N0014",
            Code::DuplicateStep => "N0020",
            Code::UnknownStep => "N0021",
            Code::Cycle => "N0022",
            Code::Unreachable => "N0023",
            Code::BranchWithoutElse => "N0024",
            Code::BadSplit => "N0025",
            Code::NotAnAction => "N0026",
            Code::UnknownTemplate => "N0030",
            Code::UnknownSegment => "N0031",
            Code::UnknownPlugin => "N0032",
            Code::DuplicateId => "N0033",
            Code::BadId => "N0034",
            Code::BadPluginConfig => "N0035",
            Code::UnknownTeam => "N0036",
            Code::BadTemplate => "N0037",
            Code::MaybeMissing => "N0038",
        }
    }
}

/// How bad a diagnostic is: errors stop the project from loading, warnings do not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The project cannot load until it is fixed.
    Error,
    /// Worth a look; the project loads anyway.
    Warning,
}

/// One problem in a project file: what, where, and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The stable code, explained in `docs/errors.md`.
    pub code: Code,
    /// Error or warning.
    pub severity: Severity,
    /// The file it is in, as given to the loader.
    pub file: PathBuf,
    /// Where in the file: 1-based line and column, and the length to underline.
    pub span: Span,
    /// One line saying what is wrong.
    pub message: String,
    /// How to fix it, when there is something useful to say.
    pub hint: Option<String>,
}

#[derive(Serialize)]
struct JsonDiagnostic<'a> {
    code: &'static str,
    severity: Severity,
    file: String,
    line: usize,
    column: usize,
    message: &'a str,
    hint: Option<&'a str>,
}

impl Diagnostic {
    /// An error without a hint.
    pub fn error(code: Code, file: &Path, span: Span, message: impl Into<String>) -> Self {
        Diagnostic {
            code,
            severity: Severity::Error,
            file: file.to_path_buf(),
            span,
            message: message.into(),
            hint: None,
        }
    }

    /// A warning without a hint.
    pub fn warning(code: Code, file: &Path, span: Span, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(code, file, span, message)
        }
    }

    /// The same diagnostic with this hint.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// The same diagnostic with this hint, or none.
    pub fn with_opt_hint(mut self, hint: Option<String>) -> Self {
        self.hint = hint;
        self
    }

    /// `file:line:col`, as editors and terminals link it.
    pub fn location(&self) -> String {
        format!(
            "{}:{}:{}",
            self.file.display(),
            self.span.line,
            self.span.col
        )
    }

    /// The JSON form for scripts and editors: code, severity, file, line, column, message, hint.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(JsonDiagnostic {
            code: self.code.as_str(),
            severity: self.severity,
            file: self.file.display().to_string(),
            line: self.span.line,
            column: self.span.col,
            message: &self.message,
            hint: self.hint.as_deref(),
        })
        .expect("diagnostic serializes")
    }

    /// Renders like a compiler error, with the source line underlined when `source` is
    /// the text of `self.file`.
    pub fn render(&self, source: Option<&str>) -> String {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        let mut out = String::new();
        let _ = writeln!(out, "{sev}[{}]: {}", self.code.as_str(), self.message);
        let line_no = self.span.line.to_string();
        let pad = " ".repeat(line_no.len());
        let _ = writeln!(out, "{pad}--> {}", self.location());
        if let Some(line) = source.and_then(|s| s.lines().nth(self.span.line.saturating_sub(1))) {
            let (text, first) = window(line, self.span.col.saturating_sub(1));
            let _ = writeln!(out, "{pad} |");
            let _ = writeln!(out, "{line_no} | {text}");
            let width = text.chars().count();
            let col = (self.span.col.saturating_sub(1).saturating_sub(first)).min(width);
            let len = self.span.len.max(1).min(width.saturating_sub(col).max(1));
            let _ = writeln!(out, "{pad} | {}{}", " ".repeat(col), "^".repeat(len));
        }
        if let Some(h) = &self.hint {
            let _ = writeln!(out, "{pad} = help: {h}");
        }
        out
    }
}

/// The longest source line shown in full under a diagnostic, in characters.
const MAX_SHOWN: usize = 160;

/// A line cut to at most [`MAX_SHOWN`] characters around character `col`: the text and
/// the index of its first character in the line.
fn window(line: &str, col: usize) -> (String, usize) {
    let width = line.chars().count();
    if width <= MAX_SHOWN {
        return (line.to_string(), 0);
    }
    let first = col.saturating_sub(MAX_SHOWN / 2).min(width - MAX_SHOWN);
    (line.chars().skip(first).take(MAX_SHOWN).collect(), first)
}

/// Sorts diagnostics by file and position so output is stable.
pub fn sort(diags: &mut [Diagnostic]) {
    diags.sort_by(|a, b| {
        (&a.file, a.span.line, a.span.col, a.code, &a.message).cmp(&(
            &b.file,
            b.span.line,
            b.span.col,
            b.code,
            &b.message,
        ))
    });
}

/// "did you mean `x`?" for the closest candidate, when one is close enough.
pub fn did_you_mean<'a, I>(word: &str, candidates: I) -> Option<&'a str>
where
    I: IntoIterator<Item = &'a str>,
{
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn did_you_mean_finds_close_typos_only() {
        let keys = ["wait", "wait_for", "wait_until", "send_email"];
        assert_eq!(did_you_mean("wiat_for", keys), Some("wait_for"));
        assert_eq!(did_you_mean("send_emial", keys), Some("send_email"));
        assert_eq!(did_you_mean("zebra", keys), None);
    }

    #[test]
    fn render_underlines_the_span() {
        let d = Diagnostic::error(
            Code::UnknownStep,
            Path::new("w.yaml"),
            Span {
                line: 2,
                col: 7,
                len: 3,
            },
            "no step `foo`",
        )
        .with_hint("use an existing step id");
        let r = d.render(Some("a: 1\nnext: foo\n"));
        assert!(r.contains("--> w.yaml:2:7"), "{r}");
        assert!(r.contains("2 | next: foo"), "{r}");
        assert!(r.contains("  |       ^^^"), "{r}");
    }
}
