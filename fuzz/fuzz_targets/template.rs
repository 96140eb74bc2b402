//! Email templates: any input compiles or is reported as a problem; rendering ends
//! within the fuel and the output cap, with a result or an error, never a panic.
//! `scripts/fuzz` runs it.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use nurture_core::project::Template;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let template = Template {
        name: "t".into(),
        subject: Some("Hi {{ contact.first_name | default(\"there\") }}".into()),
        preheader: None,
        from: None,
        html: Some(text.to_string()),
        text: None,
        html_line: 1,
        text_line: 1,
    };
    let templates = BTreeMap::from([("t".to_string(), template)]);
    let (renderer, problems) = nurture_core::template::Renderer::new(&templates);
    if !problems.is_empty() {
        return;
    }
    let ctx = serde_json::json!({
        "contact": {"first_name": "Ada", "email": "a@example.com", "tags": ["vip"], "score": 3},
        "owner": {"email": "o@example.com"},
        "event": null,
        "unsubscribe_url": "https://example.test/u/x",
    });
    if let Ok(r) = renderer.render("t", &ctx, None) {
        let cap = nurture_core::template::MAX_RENDERED_BYTES;
        assert!(r.html.as_ref().map_or(0, String::len) <= cap);
    }
});
