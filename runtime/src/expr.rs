//! CEL conditions and `${...}` interpolation: compile-time checks.
//!
//! Conditions read `contact`, `event` and `now`, and may call `activity(TYPE, WINDOW)`.
//! Compilation happens when a project is loaded so that a typo is a validation error with
//! a position, never a surprise in production.

use cel::Program;

/// The variables a condition may read.
pub const VARIABLES: &[&str] = &["contact", "event", "now"];

/// Functions nurture adds to CEL's standard library.
pub const FUNCTIONS: &[&str] = &["activity"];

/// Why an expression was rejected, with the 1-based line and 0-based column inside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExprError {
    pub message: String,
    pub line: usize,
    pub col: usize,
    /// Whether it is an unknown name (vs. a syntax error).
    pub unknown_name: bool,
    pub hint: Option<String>,
}

/// Compiles `source` and checks that it only reads the known variables.
pub fn compile(source: &str) -> Result<Program, ExprError> {
    let program = Program::compile(source).map_err(|errs| {
        let first = errs.errors.first();
        let (line, col) = first
            // CEL reports 1-based columns.
            .map(|e| (e.pos.0.max(1) as usize, (e.pos.1 - 1).max(0) as usize))
            .unwrap_or((1, 0));
        let msg = first
            .map(|e| {
                // Drop the parser's long token list: "... expecting {'[', '{', ...}".
                let m = e.msg.split(" expecting {").next().unwrap_or(&e.msg);
                m.trim_start_matches("Syntax error: ").to_string()
            })
            .unwrap_or_else(|| "syntax error".into());
        ExprError {
            message: format!("expression does not compile: {msg}"),
            line,
            col,
            unknown_name: false,
            hint: Some(
                "conditions are CEL, e.g. `contact.score >= 50 && \"vip\" in contact.tags`".into(),
            ),
        }
    })?;
    let refs = program.references();
    let mut vars = refs.variables();
    vars.sort_unstable();
    for v in vars {
        if VARIABLES.contains(&v) || is_comprehension_var(source, v) {
            continue;
        }
        let col = find_word(source, v).unwrap_or(0);
        let hint = match crate::diag::did_you_mean(v, VARIABLES.iter().copied()) {
            Some(s) => format!("did you mean `{s}`? Conditions can read contact, event and now"),
            None => {
                "conditions can read `contact`, `event` and `now`; quote text as \"...\"".into()
            }
        };
        return Err(ExprError {
            message: format!("unknown variable `{v}` in expression"),
            line: 1,
            col,
            unknown_name: true,
            hint: Some(hint),
        });
    }
    Ok(program)
}

/// Whether `name` is bound by a macro such as `tags.exists(t, t == "x")`.
fn is_comprehension_var(source: &str, name: &str) -> bool {
    ["exists", "all", "exists_one", "map", "filter"]
        .iter()
        .any(|m| {
            source.match_indices(&format!("{m}(")).any(|(i, _)| {
                let rest = &source[i + m.len() + 1..];
                rest.trim_start().starts_with(name)
                    && rest.trim_start()[name.len()..]
                        .trim_start()
                        .starts_with(',')
            })
        })
}

fn find_word(source: &str, word: &str) -> Option<usize> {
    source.match_indices(word).map(|(i, _)| i).find(|&i| {
        let before = source[..i].chars().next_back();
        let after = source[i + word.len()..].chars().next();
        let ident = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
        !ident(before) && !ident(after) && before != Some('.')
    })
}

/// The `${...}` expressions in a string, with their byte offsets.
pub fn interpolations(s: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut rest = 0;
    while let Some(start) = s[rest..].find("${") {
        let open = rest + start + 2;
        match s[open..].find('}') {
            Some(end) => {
                out.push((open, &s[open..open + end]));
                rest = open + end + 1;
            }
            None => {
                out.push((open, &s[open..]));
                break;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_format_examples() {
        for src in [
            r#"event.data.form == "ebook""#,
            "contact.score >= 50",
            r#"activity("page.visited", "30d") >= 10"#,
            r#"event.data.url.startsWith("/pricing")"#,
            r#"contact.title.matches("(?i)\\b(VP|vice president|chief)")"#,
            r#"contact.tags.exists(t, t == "vip")"#,
            r#"contact.grade == "hot" && contact.company.employees < 100"#,
        ] {
            compile(src).unwrap_or_else(|e| panic!("{src}: {e:?}"));
        }
    }

    #[test]
    fn rejects_syntax_errors_with_position() {
        let e = compile("contact.score >= ").unwrap_err();
        assert!(!e.unknown_name);
        assert!(
            e.message.starts_with("expression does not compile"),
            "{e:?}"
        );
    }

    #[test]
    fn rejects_unknown_variables_with_suggestion() {
        let e = compile("contcat.score > 5").unwrap_err();
        assert!(e.unknown_name);
        assert_eq!(e.col, 0);
        assert!(e.hint.unwrap().contains("`contact`"));
    }

    #[test]
    fn finds_interpolations() {
        let v = interpolations("Call ${contact.first_name} at ${contact.company.name}");
        assert_eq!(
            v.iter().map(|(_, e)| *e).collect::<Vec<_>>(),
            ["contact.first_name", "contact.company.name"]
        );
    }
}
