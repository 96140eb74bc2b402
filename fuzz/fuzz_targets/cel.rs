//! CEL conditions: any input compiles within the bounds of `nurture_core::expr` or is refused
//! with a position; what compiles evaluates to a value or an error, never a panic or a
//! stack overflow. `scripts/fuzz` runs it.
#![no_main]

use std::sync::Arc;

use chrono::TimeZone;
use libfuzzer_sys::fuzz_target;
use nurture_core::eval::{eval, Scope};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let program = match nurture_core::expr::compile(text) {
        Ok(p) => p,
        Err(e) => {
            assert!(e.line >= 1 && !e.message.is_empty());
            return;
        }
    };
    let contact = serde_json::json!({
        "email": "a@example.com", "score": 42, "tags": ["vip", "b"],
        "company": {"name": "Acme", "employees": 50}, "title": "VP Sales"
    });
    let event = serde_json::json!({"type": "page.visited", "data": {"url": "/pricing"}});
    let history = vec![nurture_core::event::StoredEvent {
        seq: 1,
        id: "e1".into(),
        contact: "c1".into(),
        kind: "page.visited".into(),
        at: chrono::Utc.with_ymd_and_hms(2026, 3, 1, 9, 0, 0).unwrap(),
        data: serde_json::json!({"url": "/pricing"}),
    }];
    let scope = Scope {
        contact: &contact,
        event: Some(&event),
        now: chrono::Utc.with_ymd_and_hms(2026, 3, 31, 12, 0, 0).unwrap(),
        history: Arc::new(history),
        outcome: None,
    };
    if let Err(e) = eval(&program, &scope) {
        assert!(!e.to_string().starts_with(nurture_core::eval::ABORTED), "{text:?}: {e}");
    }
});
