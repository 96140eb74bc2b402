//! The YAML layer: any input parses to a tree or a syntax error (aliases, depth and size
//! bounded), never a panic, a stack overflow or unbounded memory. `scripts/fuzz` runs it.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match nurture_core::yaml::parse(text) {
        Ok(node) => {
            let _ = node.to_json();
        }
        Err(e) => assert!(e.span.line >= 1 && !e.message.is_empty()),
    }
});
