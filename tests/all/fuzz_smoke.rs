//! A short, deterministic mutation run over the parser and compiler, CEL conditions and
//! email templates: no input makes them panic or run away. The coverage-guided version is
//! `fuzz/`, run by `scripts/fuzz`.

use std::path::Path;

use crate::util::repo;

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const PIECES: &[&str] = &[
    ":",
    "- ",
    "{",
    "}",
    "[",
    "]",
    "\n",
    "  ",
    "\"",
    "'",
    "&a ",
    "*a",
    "next: end",
    "next: x",
    "${",
    "}",
    "wait: 0d",
    "if: (",
    "branch: []",
    "split: [{weight: -1, next: y}]",
    "\t",
    "#",
    "---\n",
    "on_timeout: a",
    "actions: [{wait: 1d}]",
    "id: end",
    "é",
    "\u{0}",
];

fn mutate(rng: &mut Rng, src: &str) -> String {
    mutate_with(rng, src, PIECES)
}

fn mutate_with(rng: &mut Rng, src: &str, pieces: &[&str]) -> String {
    let mut s: Vec<char> = src.chars().collect();
    for _ in 0..1 + rng.below(4) {
        match rng.below(4) {
            0 if !s.is_empty() => {
                let a = rng.below(s.len());
                let b = (a + 1 + rng.below(20)).min(s.len());
                s.drain(a..b);
            }
            1 => {
                let at = rng.below(s.len() + 1);
                let p = pieces[rng.below(pieces.len())];
                for (i, c) in p.chars().enumerate() {
                    s.insert(at + i, c);
                }
            }
            2 if s.len() > 2 => {
                let a = rng.below(s.len());
                let b = rng.below(s.len());
                s.swap(a, b);
            }
            _ => {
                let text: String = s.iter().collect();
                let lines: Vec<&str> = text.lines().collect();
                if !lines.is_empty() {
                    let l = lines[rng.below(lines.len())].to_string();
                    let at = rng.below(s.len() + 1);
                    for (i, c) in format!("{l}\n").chars().enumerate() {
                        s.insert(at + i, c);
                    }
                }
            }
        }
    }
    s.into_iter().collect()
}

#[test]
fn mutated_examples_never_panic_the_parser_or_compiler() {
    let loaded = nurture_core::project::load(&repo().join("workflows"));
    let project = loaded.project.expect("example project is valid");
    let ctx = nurture_core::plan::Context {
        settings: &project.settings,
        segments: &project.segments,
        templates: &project.templates,
        plugins: &project.plugins,
    };
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut rejected = 0;
    let mut total = 0;
    for plan in &project.plans {
        let src = std::fs::read_to_string(&plan.file).unwrap();
        for _ in 0..400 {
            let m = mutate(&mut rng, &src);
            let (plan, diags) = nurture_core::project::check_source(&ctx, Path::new("m.yaml"), &m);
            total += 1;
            if plan.is_none() {
                rejected += 1;
                assert!(!diags.is_empty(), "rejected without a diagnostic:\n{m}");
                for d in &diags {
                    assert!(d.span.line >= 1 && d.span.col >= 1, "{d:?}");
                    let _ = d.render(Some(&m));
                }
            }
        }
    }
    // The mutations must actually break things, or this test checks nothing.
    assert!(
        rejected > total / 4,
        "only {rejected} of {total} mutants were rejected"
    );
}

const CEL_PIECES: &[&str] = &[
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    "+",
    "-",
    "!",
    ".",
    "&&",
    "||",
    " in ",
    "?",
    ":",
    "\"",
    "'",
    "r'",
    "\\",
    "1",
    "1.5",
    "-9223372036854775808",
    "contact.score",
    "now",
    "activity(\"page.visited\", \"99999999d\")",
    "size(",
    ".exists(t, t",
    ",",
    "é",
    "timestamp(\"",
    "duration(\"",
    "int(",
    "/ 0",
    "% 0",
];

const CONDITIONS: &[&str] = &[
    r#"event.data.form == "ebook""#,
    "contact.score >= 50 && !(contact.score > 90)",
    r#"activity("page.visited", "30d") >= 10"#,
    r#"contact.tags.exists(t, t == "vip") || "x" in contact.tags"#,
    r#"contact.title.matches("(?i)\\b(VP|chief)") ? 1 + 2 * 3 : -4"#,
    "[1, 2, 3].map(x, x * 2)[1] == 4",
];

#[test]
fn mutated_conditions_never_panic_compile_or_evaluation() {
    use nurture_engine::eval::{eval, Scope, ABORTED};
    let contact = serde_json::json!({"score": 42, "tags": ["vip"], "title": "VP"});
    let event = serde_json::json!({"data": {"form": "ebook"}});
    let scope = Scope {
        contact: &contact,
        event: Some(&event),
        now: chrono::Utc::now(),
        history: Default::default(),
        outcome: None,
    };
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    let mut compiled = 0;
    for i in 0..3000 {
        let mut m = CONDITIONS[i % CONDITIONS.len()].to_string();
        for _ in 0..1 + rng.below(3) {
            m = mutate_with(&mut rng, &m, CEL_PIECES);
        }
        if let Ok(p) = nurture_core::expr::compile(&m) {
            compiled += 1;
            if let Err(e) = eval(&p, &scope) {
                assert!(!e.to_string().starts_with(ABORTED), "{m}: {e}");
            }
        }
    }
    assert!(compiled > 30, "only {compiled} mutants compiled");
}

const TEMPLATE_PIECES: &[&str] = &[
    "{{",
    "}}",
    "{%",
    "%}",
    " for x in \"abcdefghij\" * 50 %}",
    "{% endfor %}",
    "{{ \"z\" * 5000 }}",
    "range(100000)",
    "contact.",
    "|",
    "default(\"a\")",
    "{% if ",
    "{% endif %}",
    "{#",
    "#}",
    "loop.index",
    "~",
    "{% macro m() %}{{ m() }}{% endmacro %}",
    "{{ m() }}",
    "{% set s = \"q\" %}",
];

#[test]
fn mutated_templates_never_panic_or_run_away() {
    let loaded = nurture_core::project::load(&repo().join("workflows"));
    let project = loaded.project.expect("example project is valid");
    let ctx = serde_json::json!({
        "contact": {"first_name": "Ada", "email": "a@example.com"},
        "owner": {"email": "o@example.com"},
        "event": null,
        "unsubscribe_url": "https://example.test/u/x",
    });
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let start = std::time::Instant::now();
    for _ in 0..6 {
        for t in project.templates.values() {
            let mut t = t.clone();
            let body = t.html.take().unwrap_or_default();
            t.html = Some(mutate_with(&mut rng, &body, TEMPLATE_PIECES));
            let templates = std::collections::BTreeMap::from([(t.name.clone(), t.clone())]);
            let (renderer, _) = nurture_core::template::Renderer::new(&templates);
            if let Ok(r) = renderer.render(&t.name, &ctx, None) {
                let cap = nurture_core::template::MAX_RENDERED_BYTES;
                assert!(r.html.as_ref().map_or(0, String::len) <= cap);
            }
        }
    }
    assert!(start.elapsed() < std::time::Duration::from_secs(120));
}
