//! A short, deterministic mutation run over the parser and compiler: no input makes them
//! panic. The coverage-guided version is `fuzz/` (cargo fuzz, needs nightly).

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
                let p = PIECES[rng.below(PIECES.len())];
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
    let loaded = nurture::project::load(&repo().join("workflows"));
    let project = loaded.project.expect("example project is valid");
    let ctx = nurture::plan::Context {
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
            let (plan, diags) = nurture::project::check_source(&ctx, Path::new("m.yaml"), &m);
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
