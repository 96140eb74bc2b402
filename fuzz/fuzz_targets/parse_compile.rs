//! Coverage-guided fuzzing of the workflow parser and compiler:
//!   cargo install cargo-fuzz && cargo +nightly fuzz run parse_compile -- -max_total_time=60
//! Any input must produce a plan or diagnostics, never a panic.
#![no_main]

use std::collections::BTreeMap;
use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let settings = nurture_core::model::Settings::default();
    let templates = BTreeMap::new();
    let plugins = BTreeMap::new();
    let ctx = nurture_core::plan::Context {
        settings: &settings,
        segments: &[],
        templates: &templates,
        plugins: &plugins,
    };
    let (plan, diags) = nurture_core::project::check_source(&ctx, Path::new("fuzz.yaml"), text);
    assert!(plan.is_some() || !diags.is_empty());
    for d in &diags {
        let _ = d.render(Some(text));
    }
});
