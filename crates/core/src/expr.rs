//! CEL conditions and `${...}` interpolation: compile-time checks.
//!
//! Conditions read `contact`, `event` and `now`, and may call `activity(TYPE, WINDOW)`.
//! Compilation happens when a project is loaded so that a typo is a validation error with
//! a position, never a surprise in production.

use cel::Program;

/// The variables a condition may read (`outcome` and `response`: after a step that
/// awaits its outcome, see `nurture_engine::outcome`; `null` before).
pub const VARIABLES: &[&str] = &["contact", "event", "now", "outcome", "response"];

/// Functions nurture adds to CEL's standard library.
pub const FUNCTIONS: &[&str] = &["activity"];

/// Why an expression was rejected, with the 1-based line and 0-based column inside it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ExprError {
    /// What is wrong, in one line.
    pub message: String,
    /// 1-based line inside the expression.
    pub line: usize,
    /// 0-based column inside that line.
    pub col: usize,
    /// Whether it is an unknown name (vs. a syntax error).
    pub unknown_name: bool,
    /// A suggestion, e.g. the closest known variable.
    pub hint: Option<String>,
}

/// The longest expression accepted, in bytes.
pub const MAX_EXPR_BYTES: usize = 4096;
/// The deepest nesting of `(`, `[` and `{` accepted.
pub const MAX_EXPR_DEPTH: usize = 32;
/// The most operators (`+`, `&&`, `.`, `in`, ...) an expression may hold. Each one is
/// a level of the parser's and the evaluator's recursion, so this bounds their stack.
pub const MAX_EXPR_OPERATORS: usize = 256;

const LIMIT_HINT: &str =
    "split the condition (several `branch` arms, a segment, or a scoring rule); \
     an expression holds at most 4096 bytes, 256 operators and 32 levels of brackets";

/// Compiles `source` and checks that it only reads the known variables.
///
/// The text is first checked against [`MAX_EXPR_BYTES`], [`MAX_EXPR_DEPTH`] and
/// [`MAX_EXPR_OPERATORS`] without parsing it, so no input can exhaust the stack of the
/// parser here or of the evaluator later.
pub fn compile(source: &str) -> Result<Program, ExprError> {
    check_bounds(source)?;
    let parsed = std::panic::catch_unwind(|| Program::compile(source)).map_err(|_| ExprError {
        message: "expression does not compile: the CEL parser failed on it".into(),
        line: 1,
        col: 0,
        unknown_name: false,
        hint: Some(LIMIT_HINT.into()),
    })?;
    let program = parsed.map_err(|errs| {
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

/// Refuses, before any parsing, an expression longer than [`MAX_EXPR_BYTES`], nested
/// deeper than [`MAX_EXPR_DEPTH`] or with more than [`MAX_EXPR_OPERATORS`] operators.
/// String literals are skipped; the error points at where the limit was passed.
pub fn check_bounds(source: &str) -> Result<(), ExprError> {
    let fail = |at: usize, what: String| {
        let (line, col) = line_col(source, at);
        Err(ExprError {
            message: format!("expression is too large: {what}"),
            line,
            col,
            unknown_name: false,
            hint: Some(LIMIT_HINT.into()),
        })
    };
    if source.len() > MAX_EXPR_BYTES {
        let at = (0..=MAX_EXPR_BYTES)
            .rev()
            .find(|&i| source.is_char_boundary(i))
            .unwrap_or(0);
        return fail(
            at,
            format!("{} bytes, more than {MAX_EXPR_BYTES}", source.len()),
        );
    }
    let mut scan = Scan::default();
    for (i, token) in Tokens::new(source) {
        scan.token(token);
        if scan.depth > MAX_EXPR_DEPTH {
            return fail(i, format!("brackets nested deeper than {MAX_EXPR_DEPTH}"));
        }
        if scan.operators > MAX_EXPR_OPERATORS {
            return fail(i, format!("more than {MAX_EXPR_OPERATORS} operators"));
        }
    }
    Ok(())
}

/// What [`check_bounds`] counts.
#[derive(Default)]
struct Scan {
    depth: usize,
    operators: usize,
}

impl Scan {
    fn token(&mut self, token: Token) {
        match token {
            Token::Open => self.depth += 1,
            Token::Close => self.depth = self.depth.saturating_sub(1),
            Token::Operator(n) => self.operators += n,
            Token::Other => {}
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    Open,
    Close,
    /// An operator, or several in a row (`!!`, `- -`): each is a level of nesting.
    Operator(usize),
    Other,
}

/// A rough CEL tokenizer, enough to count brackets and operators: a run of operator
/// characters is one operator (but each unary `!` or `-` after its first character
/// counts), `in` is one, string literals are one `Other`.
struct Tokens<'s> {
    src: &'s [u8],
    at: usize,
}

impl<'s> Tokens<'s> {
    fn new(source: &'s str) -> Self {
        Tokens {
            src: source.as_bytes(),
            at: 0,
        }
    }

    /// The end of the string literal opening at `self.at` (quote `q`, maybe tripled).
    fn string_end(&self, q: u8) -> usize {
        let s = self.src;
        let triple = s.get(self.at..self.at + 3) == Some(&[q, q, q][..]);
        let mut i = self.at + if triple { 3 } else { 1 };
        while i < s.len() {
            match s[i] {
                b'\\' => i += 2,
                c if c == q && !triple => return i + 1,
                c if c == q && s.get(i..i + 3) == Some(&[q, q, q][..]) => return i + 3,
                b'\n' if !triple => return i,
                _ => i += 1,
            }
        }
        s.len()
    }
}

impl Iterator for Tokens<'_> {
    type Item = (usize, Token);

    fn next(&mut self) -> Option<(usize, Token)> {
        let s = self.src;
        while self.at < s.len() && s[self.at].is_ascii_whitespace() {
            self.at += 1;
        }
        let start = self.at;
        let c = *s.get(start)?;
        let is_op = |c: u8| b"+-*/%!<>=&|?:.".contains(&c);
        let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80;
        let token = match c {
            b'(' | b'[' | b'{' => {
                self.at += 1;
                Token::Open
            }
            b')' | b']' | b'}' => {
                self.at += 1;
                Token::Close
            }
            b'"' | b'\'' => {
                self.at = self.string_end(c);
                Token::Other
            }
            c if is_op(c) => {
                // `1.5` is a number, not a member access.
                let number = c == b'.' && s.get(start + 1).is_some_and(u8::is_ascii_digit);
                while self.at < s.len() && is_op(s[self.at]) && !number {
                    self.at += 1;
                }
                if number {
                    self.at += 1;
                    Token::Other
                } else {
                    let unary = s[start + 1..self.at]
                        .iter()
                        .filter(|b| matches!(b, b'!' | b'-'))
                        .count();
                    Token::Operator(1 + unary)
                }
            }
            c if word(c) => {
                while self.at < s.len() && word(s[self.at]) {
                    self.at += 1;
                }
                match &s[start..self.at] {
                    b"in" => Token::Operator(1),
                    // `r"..."`, `b'...'`: the literal follows its prefix.
                    p if p.len() <= 2
                        && p.iter().all(|b| b"rRbB".contains(b))
                        && matches!(s.get(self.at), Some(b'"' | b'\'')) =>
                    {
                        self.at = self.string_end(s[self.at]);
                        Token::Other
                    }
                    _ => Token::Other,
                }
            }
            _ => {
                self.at += 1;
                Token::Other
            }
        };
        Some((start, token))
    }
}

/// The 1-based line and 0-based character column of byte `at` in `source`.
fn line_col(source: &str, at: usize) -> (usize, usize) {
    let before = &source[..at];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count());
    (line, col)
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
    fn long_chains_are_refused_before_parsing() {
        let sum = vec!["1"; 100_000].join("+");
        let e = compile(&sum).unwrap_err();
        assert!(e.message.contains("bytes, more than 4096"), "{e:?}");
        let sum = vec!["1"; MAX_EXPR_OPERATORS + 2].join("+");
        let e = compile(&sum).unwrap_err();
        assert!(e.message.contains("more than 256 operators"), "{e:?}");
        assert_eq!((e.line, e.col), (1, 2 * MAX_EXPR_OPERATORS + 1));
        let not = format!("{}true", "!".repeat(300));
        assert!(compile(&not).is_err());
        let deep = format!("{}1{}", "(".repeat(40), ")".repeat(40));
        assert!(compile(&deep)
            .unwrap_err()
            .message
            .contains("nested deeper"));
    }

    #[test]
    fn strings_and_numbers_do_not_count_as_operators() {
        let s = format!(
            "contact.email == \"{}\" && contact.score > 1.5",
            "+(".repeat(1000)
        );
        compile(&s).unwrap();
        let raw = format!("contact.title.matches(r'{}')", "((".repeat(100));
        assert!(check_bounds(&raw).is_ok());
    }

    /// The largest expression allowed evaluates on a small stack (a tokio worker has
    /// 2 MiB), in the debug build of the tests too.
    #[test]
    fn the_largest_expression_allowed_evaluates_on_a_small_stack() {
        let ops = MAX_EXPR_OPERATORS / 2;
        let sum = format!("{} == {}", vec!["1"; ops].join("+"), ops);
        let nested = format!(
            "{}contact.score{} > 0",
            "(".repeat(MAX_EXPR_DEPTH),
            ")".repeat(MAX_EXPR_DEPTH)
        );
        let unary = format!("{}true", "!".repeat(MAX_EXPR_OPERATORS));
        for src in [sum, nested, unary] {
            std::thread::Builder::new()
                .stack_size(1 << 20)
                .spawn(move || {
                    let p = compile(&src).unwrap_or_else(|e| panic!("{src}: {e:?}"));
                    let mut ctx = cel::Context::default();
                    ctx.add_variable("contact", serde_json::json!({"score": 1}))
                        .unwrap();
                    p.execute(&ctx).unwrap();
                })
                .unwrap()
                .join()
                .unwrap();
        }
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
