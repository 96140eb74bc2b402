//! Rendering templates with minijinja.
//!
//! Every template of `templates/` is registered under its file name (`NAME.html`,
//! `NAME.txt`), so `{% extends "_layout.html" %}` and `{% include "_footer.html" %}` work;
//! the front matter's subject and preheader are templates too. HTML is auto-escaped.
//! Undefined values are errors (`contact.first_name | default("there")` is the way to
//! allow a missing field), so a missing variable never renders as an empty string.

use std::collections::{BTreeMap, BTreeSet};

use minijinja::{Environment, UndefinedBehavior};
use serde_json::Value;

use crate::project::Template;

/// The variables a template may use at its root.
pub const ROOT_VARIABLES: &[&str] = &[
    "contact",
    "owner",
    "event",
    "unsubscribe_url",
    "confirm_url",
    "subject",
    "preheader",
];

/// A rendered email.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    /// The subject line, trimmed.
    pub subject: String,
    /// The preview text, trimmed; also hidden at the top of the HTML body.
    pub preheader: Option<String>,
    /// The From address of the template's front matter, if it sets one.
    pub from: Option<String>,
    /// The HTML part, if the template has one.
    pub html: Option<String>,
    /// The text part: the `.txt` template, or else derived from the HTML.
    pub text: String,
}

/// A problem in one template source (syntax or an unknown variable).
#[derive(Debug, Clone, PartialEq)]
pub struct TemplateProblem {
    /// `NAME.html`, `NAME.txt`, `NAME.subject`, `NAME.preheader`.
    pub source: String,
    /// 1-based line within that source, when known.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

/// Why a template did not render.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// No template of that name.
    #[error("no template `{0}`")]
    Unknown(String),
    /// The template (or its subject or preheader) failed.
    #[error("template `{template}`: {source}")]
    Render {
        /// The template's name.
        template: String,
        /// Why the text failed.
        source: TextError,
    },
}

/// Why a text (a template, a subject) did not render.
#[derive(Debug, thiserror::Error)]
pub enum TextError {
    /// The output passed [`MAX_RENDERED_BYTES`].
    #[error(
        "the rendered text would be larger than {MAX_RENDERED_BYTES} bytes; check the template's loops"
    )]
    TooLarge,
    /// Rendering failed; `place` says where (` (NAME, line N)`) when known.
    #[error("{}{place}", describe(.source))]
    Failed {
        /// minijinja's error.
        source: minijinja::Error,
        /// ` (NAME, line N)`, or empty when unknown.
        place: String,
    },
    /// A text does not compile as a template.
    #[error(transparent)]
    Syntax(minijinja::Error),
    /// The rendered bytes are not UTF-8.
    #[error("the rendered text is not UTF-8")]
    NotUtf8(#[from] std::string::FromUtf8Error),
}

impl RenderError {
    /// Rendering again with the same data fails the same way.
    pub fn is_retryable(&self) -> bool {
        false
    }
}

/// The compiled templates of a project.
pub struct Renderer {
    env: Environment<'static>,
    templates: BTreeMap<String, Template>,
}

/// The fuel of one render (minijinja counts about one unit per instruction): a loop that
/// runs too long, or for ever, stops with an error instead of burning a core.
pub const TEMPLATE_FUEL: u64 = 1_000_000;

/// The most bytes one rendered part (subject, preheader, HTML, text) may have.
pub const MAX_RENDERED_BYTES: usize = 1 << 20;

/// An output buffer that refuses to grow beyond [`MAX_RENDERED_BYTES`].
#[derive(Default)]
struct Capped {
    buf: Vec<u8>,
    over: bool,
}

impl std::io::Write for Capped {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if self.buf.len() + bytes.len() > MAX_RENDERED_BYTES {
            self.over = true;
            return Err(std::io::Error::other("rendered output is too large"));
        }
        self.buf.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Renders `tmpl` within [`TEMPLATE_FUEL`] and [`MAX_RENDERED_BYTES`].
fn render_bounded(
    tmpl: &minijinja::Template<'_, '_>,
    ctx: minijinja::Value,
    first_line: usize,
) -> Result<String, TextError> {
    let mut out = Capped::default();
    let result = tmpl.render_captured_to(ctx, &mut out);
    if out.over {
        return Err(TextError::TooLarge);
    }
    result.map_err(|source| {
        let place = match source.line() {
            Some(l) => format!(
                " ({}, line {})",
                source.name().unwrap_or(tmpl.name()),
                l + first_line - 1
            ),
            None => String::new(),
        };
        TextError::Failed { source, place }
    })?;
    Ok(String::from_utf8(out.buf)?)
}

fn describe(e: &minijinja::Error) -> String {
    if e.kind() == minijinja::ErrorKind::OutOfFuel {
        return format!(
            "rendering stopped after {TEMPLATE_FUEL} steps (fuel): a loop runs too long or \
             never ends; loop over data, not over a long literal"
        );
    }
    if e.kind() == minijinja::ErrorKind::UndefinedError {
        let what = e.detail().map(|d| format!(": {d}")).unwrap_or_default();
        return format!(
            "a value used by the template is missing{what}; use `| default(...)` where a field may be absent"
        );
    }
    e.detail()
        .map_or_else(|| e.kind().to_string(), str::to_string)
}

/// The render context: JSON data, with `unsubscribe_url` and `confirm_url` (a hosted
/// form's double opt-in link) marked safe (not HTML-escaped).
fn context(ctx: &Value) -> minijinja::Value {
    let mut map: BTreeMap<String, minijinja::Value> = BTreeMap::new();
    if let Value::Object(m) = ctx {
        for (k, v) in m {
            let value = match (k.as_str(), v) {
                ("unsubscribe_url" | "confirm_url", Value::String(u)) => {
                    minijinja::Value::from_safe_string(u.clone())
                }
                _ => minijinja::Value::from_serialize(v),
            };
            map.insert(k.clone(), value);
        }
    }
    minijinja::Value::from(map)
}

impl Renderer {
    /// Compiles every template; returns the renderer and the problems found (syntax
    /// errors and variables outside [`ROOT_VARIABLES`]).
    pub fn new(templates: &BTreeMap<String, Template>) -> (Renderer, Vec<TemplateProblem>) {
        let mut env = Environment::new();
        // Chainable: `contact.company.name | default("?")` works when `company` is absent;
        // but printing an undefined value is an error (the formatter below), so a missing
        // field never renders as an empty string by accident.
        env.set_undefined_behavior(UndefinedBehavior::Chainable);
        env.set_formatter(|out, state, value| {
            if value.is_undefined() {
                return Err(minijinja::Error::new(
                    minijinja::ErrorKind::UndefinedError,
                    "printed value is undefined",
                ));
            }
            minijinja::escape_formatter(out, state, value)
        });
        env.set_keep_trailing_newline(true);
        env.set_fuel(Some(TEMPLATE_FUEL));
        let mut problems = Vec::new();
        let mut sources = Vec::new();
        for t in templates.values() {
            let parts = [
                ("html", t.html.clone()),
                ("txt", t.text.clone()),
                ("subject", t.subject.clone()),
                ("preheader", t.preheader.clone()),
            ];
            for (ext, body) in parts {
                if let Some(body) = body {
                    sources.push(format!("{}.{ext}", t.name));
                    if let Err(e) = env.add_template_owned(format!("{}.{ext}", t.name), body) {
                        problems.push(TemplateProblem {
                            source: format!("{}.{ext}", t.name),
                            line: e.line(),
                            message: describe(&e),
                        });
                    }
                }
            }
        }
        for name in sources {
            let Ok(tmpl) = env.get_template(&name) else {
                continue;
            };
            let used: BTreeSet<String> = tmpl.undeclared_variables(false).into_iter().collect();
            for var in used {
                if !ROOT_VARIABLES.contains(&var.as_str()) {
                    let line = tmpl
                        .source()
                        .lines()
                        .position(|l| l.contains(&var))
                        .map(|i| i + 1);
                    problems.push(TemplateProblem {
                        source: name.clone(),
                        line,
                        message: format!(
                            "unknown variable `{var}`; templates can use {}",
                            ROOT_VARIABLES.join(", ")
                        ),
                    });
                }
            }
        }
        (
            Renderer {
                env,
                templates: templates.clone(),
            },
            problems,
        )
    }

    /// The template of that name, as loaded.
    pub fn template(&self, name: &str) -> Option<&Template> {
        self.templates.get(name)
    }

    /// Renders a one-line text such as a step's subject override with `ctx`, under the
    /// same fuel and size limits as templates (not HTML-escaped, as subjects are not).
    fn render_text(&self, text: &str, ctx: &Value) -> Result<String, TextError> {
        let tmpl = self
            .env
            .template_from_str(text)
            .map_err(TextError::Syntax)?;
        render_bounded(&tmpl, context(ctx), 1)
    }

    /// Renders a template with `ctx` (an object with `contact`, `owner`, `event`,
    /// `unsubscribe_url`). `subject` overrides the front matter's subject.
    pub fn render(
        &self,
        name: &str,
        ctx: &Value,
        subject: Option<&str>,
    ) -> Result<Rendered, RenderError> {
        self.render_parts(name, ctx, subject, true)
    }

    /// Whether template `name` renders for `ctx`: [`Renderer::render`] with the same
    /// errors, without deriving a text part from the HTML (it cannot fail, and it was
    /// most of the cost of a render). For the simulator, which sends nothing.
    pub fn check(&self, name: &str, ctx: &Value, subject: Option<&str>) -> Result<(), RenderError> {
        self.render_parts(name, ctx, subject, false).map(|_| ())
    }

    fn render_parts(
        &self,
        name: &str,
        ctx: &Value,
        subject: Option<&str>,
        derive_text: bool,
    ) -> Result<Rendered, RenderError> {
        let t = self
            .templates
            .get(name)
            .ok_or_else(|| RenderError::Unknown(name.to_string()))?;
        let err = |source: TextError| RenderError::Render {
            template: name.to_string(),
            source,
        };
        let one = |source: String, ctx: &Value| -> Result<Option<String>, RenderError> {
            match self.env.get_template(&source) {
                Ok(tmpl) => render_bounded(&tmpl, context(ctx), first_line(t, &source))
                    .map(Some)
                    .map_err(err),
                Err(_) => Ok(None),
            }
        };
        let mut ctx = ctx.clone();
        let subject = match subject {
            Some(s) => self.render_text(s, &ctx).map_err(err)?,
            None => one(format!("{name}.subject"), &ctx)?.unwrap_or_default(),
        };
        let preheader = one(format!("{name}.preheader"), &ctx)?;
        if let Value::Object(m) = &mut ctx {
            m.insert("subject".into(), Value::from(subject.clone()));
            m.insert(
                "preheader".into(),
                preheader.clone().map_or(Value::Null, Value::from),
            );
        }
        let html = one(format!("{name}.html"), &ctx)?;
        let text = match one(format!("{name}.txt"), &ctx)? {
            Some(t) => t,
            None if !derive_text => String::new(),
            None => html.as_deref().map(html_to_text).unwrap_or_default(),
        };
        let preheader = preheader
            .map(|p| p.trim().to_string())
            .filter(|p| !p.is_empty());
        // The text part is derived above, before the layout and the hidden preheader.
        let html = html.map(|h| with_layout(&h, subject.trim()));
        let html = match (html, &preheader) {
            (Some(h), Some(p)) => Some(with_preheader(&h, p)),
            (h, _) => h,
        };
        Ok(Rendered {
            subject: subject.trim().to_string(),
            preheader,
            from: t.from.clone(),
            html,
            text,
        })
    }
}

/// The contact fields that may be missing, printed without a fallback in the templates'
/// parts ([`crate::lint::template_fields`]): warnings, as [`TemplateProblem`]s whose
/// message names the field first.
pub fn maybe_missing(templates: &BTreeMap<String, Template>) -> Vec<TemplateProblem> {
    let mut out = Vec::new();
    for t in templates.values() {
        let parts = [
            ("html", &t.html),
            ("txt", &t.text),
            ("subject", &t.subject),
            ("preheader", &t.preheader),
        ];
        for (ext, body) in parts {
            let Some(body) = body else { continue };
            for f in crate::lint::template_fields(body) {
                out.push(TemplateProblem {
                    source: format!("{}.{ext}", t.name),
                    line: Some(f.line),
                    message: crate::lint::message(&f.path, "the email"),
                });
            }
        }
    }
    out
}

/// The file line a part of `t` starts on: `part` is `html`, `txt` or a source name
/// ending so (`NAME.html`); 1 for the subject and preheader (their own texts).
fn first_line(t: &Template, part: &str) -> usize {
    if part.ends_with("html") {
        t.html_line.max(1)
    } else if part.ends_with("txt") {
        t.text_line.max(1)
    } else {
        1
    }
}

/// The hidden preheader element: inbox previews show its text next to the subject, the
/// opened message does not (the usual pattern: `display:none`, no height, no overflow,
/// `mso-hide:all` for Outlook).
const PREHEADER_STYLE: &str = "display:none;max-height:0;\
max-width:0;opacity:0;overflow:hidden;mso-hide:all";

/// `html` with the preheader `text` (HTML-escaped) as the first element of its body:
/// right after the `<body ...>` tag, or at the very start when there is none.
pub fn with_preheader(html: &str, text: &str) -> String {
    let element = format!(
        "<div style=\"{PREHEADER_STYLE}\">{}</div>",
        escape_html(text)
    );
    let lower = html.to_ascii_lowercase();
    let body_end = lower
        .match_indices("<body")
        .find(|(i, _)| {
            lower[i + 5..]
                .chars()
                .next()
                .is_some_and(|c| c == '>' || c.is_ascii_whitespace())
        })
        .and_then(|(i, _)| lower[i..].find('>').map(|e| i + e + 1));
    match body_end {
        Some(at) => format!("{}{element}{}", &html[..at], &html[at..]),
        None => format!("{element}{html}"),
    }
}

/// Escapes text for HTML element content and attribute values.
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The widest line of a derived text part before it wraps: wide enough that sentences
/// and their links stay on one line (mail clients wrap text themselves).
const TEXT_WIDTH: usize = 1000;

/// A readable text part from HTML, through `html2text`: paragraphs and headings become
/// blocks, lists `* item`, layout tables their cells in order, links `text (url)`
/// (`mailto:` and `#anchor` links just their text), images their alt text; `<head>`,
/// styles and scripts are dropped.
pub fn html_to_text(html: &str) -> String {
    let rendered = html2text::config::with_decorator(LinkDecorator::default())
        .raw_mode(true)
        .no_link_wrapping()
        .allow_width_overflow()
        .link_footnotes(false)
        .string_from_read(html.as_bytes(), TEXT_WIDTH)
        .unwrap_or_default();
    let mut lines: Vec<&str> = Vec::new();
    for l in rendered.lines().map(str::trim_end) {
        if l.is_empty() && lines.last().is_none_or(|p| p.is_empty()) {
            continue;
        }
        lines.push(l);
    }
    while lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    let mut s = lines.join("\n");
    s.push('\n');
    s
}

/// Plain text with links as `text (url)`: what a reader of the text part can follow.
#[derive(Clone, Debug, Default)]
struct LinkDecorator {
    /// The suffixes of the links being rendered, innermost last.
    open: Vec<String>,
}

impl html2text::render::TextDecorator for LinkDecorator {
    type Annotation = ();

    fn decorate_link_start(&mut self, url: &str) -> (String, ()) {
        let shown = url.starts_with("http://") || url.starts_with("https://");
        self.open.push(if shown {
            format!(" ({url})")
        } else {
            String::new()
        });
        (String::new(), ())
    }
    fn decorate_link_end(&mut self) -> String {
        self.open.pop().unwrap_or_default()
    }
    fn decorate_em_start(&self) -> (String, ()) {
        (String::new(), ())
    }
    fn decorate_em_end(&self) -> String {
        String::new()
    }
    fn decorate_strong_start(&self) -> (String, ()) {
        (String::new(), ())
    }
    fn decorate_strong_end(&self) -> String {
        String::new()
    }
    fn decorate_strikeout_start(&self) -> (String, ()) {
        (String::new(), ())
    }
    fn decorate_strikeout_end(&self) -> String {
        String::new()
    }
    fn decorate_code_start(&self) -> (String, ()) {
        (String::new(), ())
    }
    fn decorate_code_end(&self) -> String {
        String::new()
    }
    fn decorate_preformat_first(&self) {}
    fn decorate_preformat_cont(&self) {}
    fn decorate_image(&mut self, _src: &str, title: &str) -> (String, ()) {
        (title.to_string(), ())
    }
    fn header_prefix(&self, _level: usize) -> String {
        String::new()
    }
    fn quote_prefix(&self) -> String {
        "> ".into()
    }
    fn unordered_item_prefix(&self) -> String {
        "- ".into()
    }
    fn ordered_item_prefix(&self, i: i64) -> String {
        format!("{i}. ")
    }
    fn make_subblock_decorator(&self) -> Self {
        LinkDecorator::default()
    }
    fn finalise(&mut self, _urls: Vec<String>) -> Vec<html2text::render::TaggedLine<()>> {
        Vec::new()
    }
}

/// Whether `html` is a whole document (it has an `<html>` element) rather than a
/// fragment to put into the default layout.
pub fn is_document(html: &str) -> bool {
    let lower = html.to_ascii_lowercase();
    lower.match_indices("<html").any(|(i, _)| {
        lower[i + 5..]
            .chars()
            .next()
            .is_none_or(|c| c == '>' || c == '/' || c.is_ascii_whitespace())
    })
}

/// The default layout of an HTML fragment: a complete document (doctype, `lang`,
/// UTF-8 charset, mobile viewport, the subject as title) with the content in a centred
/// column of at most 600px, built from tables with inline styles as mail clients
/// (Outlook included) need. A template with its own `<html>` is left as it is.
pub fn with_layout(html: &str, title: &str) -> String {
    if is_document(html) {
        return html.to_string();
    }
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\" xmlns=\"http://www.w3.org/1999/xhtml\">\n<head>\n\
<meta charset=\"utf-8\">\n\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
<meta name=\"x-apple-disable-message-reformatting\">\n\
<title>{title}</title>\n</head>\n\
<body style=\"margin:0;padding:0;background-color:#f4f4f5\">\n\
<table role=\"presentation\" width=\"100%\" cellspacing=\"0\" cellpadding=\"0\" border=\"0\" style=\"background-color:#f4f4f5\">\n\
<tr><td align=\"center\" style=\"padding:24px 12px\">\n\
<table role=\"presentation\" width=\"100%\" cellspacing=\"0\" cellpadding=\"0\" border=\"0\" style=\"max-width:600px;margin:0 auto;background-color:#ffffff\">\n\
<tr><td style=\"padding:24px;font-family:Helvetica,Arial,sans-serif;font-size:16px;line-height:1.5;color:#1f2937\">\n\
{html}\n\
</td></tr>\n</table>\n</td></tr>\n</table>\n</body>\n</html>\n",
        title = escape_html(title)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_part_keeps_links_and_paragraphs() {
        let t = html_to_text(
            "<p>Hi Ana,</p><p>Here is <a href=\"https://x.test/a?b=1&amp;c=2\">your copy</a>.</p><ul><li>one</li><li>two</li></ul>",
        );
        assert_eq!(
            t,
            "Hi Ana,\n\nHere is your copy (https://x.test/a?b=1&c=2).\n- one\n- two\n"
        );
    }

    #[test]
    fn text_part_of_a_layout_document_has_no_head_styles_or_table_borders() {
        let html = with_layout(
            "<style>p{color:red}</style><h1>News</h1><table><tr><td>left</td><td>right</td></tr></table>\
             <p>Mail <a href=\"mailto:a@x.test\">us</a>, see <a href=\"#top\">top</a> or \
             <a href='https://x.test/b'>this</a>.<img src=\"https://x.test/i.png\" alt=\"\"></p>",
            "The <title>",
        );
        let t = html_to_text(&html);
        assert_eq!(
            t, "News\n\nleft\nright\n\nMail us, see top or this (https://x.test/b).\n",
            "{html}"
        );
    }

    #[test]
    fn fragments_get_the_responsive_layout_and_documents_are_kept() {
        let html = with_layout("<p>Hi</p>", "Tips & <tricks>");
        assert!(
            html.starts_with("<!DOCTYPE html>\n<html lang=\"en\""),
            "{html}"
        );
        for part in [
            "<meta charset=\"utf-8\">",
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
            "<title>Tips &amp; &lt;tricks&gt;</title>",
            "max-width:600px",
            "\n<p>Hi</p>\n",
        ] {
            assert!(html.contains(part), "{part} in {html}");
        }
        for doc in [
            "<HTML lang=\"bg\"><body>x</body></HTML>",
            "<!doctype html>\n<html>x</html>",
        ] {
            assert_eq!(with_layout(doc, "t"), doc);
        }
        // An `<html` that is not the element does not count.
        assert!(!is_document("<p>&lt;html&gt; <htmlx></p>"));
        assert!(with_layout("<p><htmlx></p>", "t").starts_with("<!DOCTYPE html>"));
    }
}

#[cfg(test)]
mod render_tests {
    use super::*;

    fn one(html: &str) -> Renderer {
        let mut t = BTreeMap::new();
        t.insert(
            "t".to_string(),
            Template {
                html_line: 1,
                text_line: 1,
                name: "t".into(),
                subject: Some("Hi {{ contact.first_name | default(\"there\") }}".into()),
                preheader: None,
                from: None,
                html: Some(html.into()),
                text: None,
            },
        );
        let (r, problems) = Renderer::new(&t);
        assert!(problems.is_empty(), "{problems:?}");
        r
    }

    #[test]
    fn a_missing_field_is_an_error_unless_defaulted_even_when_nested() {
        let r = one("<p>{{ contact.company.name | default(\"your team\") }}</p>");
        let out = r
            .render("t", &serde_json::json!({"contact": {}}), None)
            .unwrap();
        assert_eq!(
            out.html.as_deref(),
            Some(with_layout("<p>your team</p>", "Hi there").as_str())
        );
        assert!(out.html.unwrap().contains("\n<p>your team</p>\n"));
        assert_eq!(out.subject, "Hi there");
        let r = one("<p>{{ contact.last_name }}</p>");
        let err = r
            .render("t", &serde_json::json!({"contact": {}}), None)
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("a value used by the template is missing"),
            "{err}"
        );
    }

    #[test]
    fn preheader_is_rendered_escaped_and_hidden_at_the_top_of_the_body() {
        let mut t = BTreeMap::new();
        t.insert(
            "t".to_string(),
            Template {
                html_line: 1,
                text_line: 1,
                name: "t".into(),
                subject: Some("x".into()),
                preheader: Some("For {{ contact.first_name | default('you') }} <b>& co</b>".into()),
                from: None,
                html: Some("<html><body style=\"a\">\n<p>Hi</p>\n</body></html>".into()),
                text: None,
            },
        );
        let (r, problems) = Renderer::new(&t);
        assert!(problems.is_empty(), "{problems:?}");
        let out = r
            .render(
                "t",
                &serde_json::json!({"contact": {"first_name": "Ana"}}),
                None,
            )
            .unwrap();
        assert_eq!(out.preheader.as_deref(), Some("For Ana <b>& co</b>"));
        let html = out.html.unwrap();
        assert!(
            html.starts_with(&format!(
                "<html><body style=\"a\"><div style=\"{PREHEADER_STYLE}\">For Ana &lt;b&gt;&amp; co&lt;/b&gt;</div>\n<p>Hi</p>"
            )),
            "{html}"
        );
        assert_eq!(out.text, "Hi\n", "the text part has no preheader");
        assert_eq!(
            with_preheader("<p>x</p>", "p"),
            format!("<div style=\"{PREHEADER_STYLE}\">p</div><p>x</p>")
        );
        assert!(with_preheader("<BODY>", "p").starts_with("<BODY><div"));
    }

    #[test]
    fn unknown_root_variables_are_reported() {
        let mut t = BTreeMap::new();
        t.insert(
            "t".to_string(),
            Template {
                html_line: 1,
                text_line: 1,
                name: "t".into(),
                subject: Some("x".into()),
                preheader: None,
                from: None,
                html: Some("<p>\n{{ custmer.name }}</p>".into()),
                text: None,
            },
        );
        let (_, problems) = Renderer::new(&t);
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].line, Some(2));
        assert!(problems[0]
            .message
            .starts_with("unknown variable `custmer`"));
    }
}
