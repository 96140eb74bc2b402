//! `nurture simulate` on the example project. Expected effects are written by hand from
//! `shared/DOMAIN.md` and the workflow files, one compact line per effect:
//! `AT CONTACT WORKFLOW/STEP EFFECT {extra}` (`-` for none).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{json, Value};

use crate::util::rt;
use crate::util::{nurture, repo};

fn project() -> Arc<nurture_core::project::Project> {
    let loaded = nurture_core::project::load(&repo().join("workflows"));
    Arc::new(loaded.project.expect("valid example project"))
}

fn time(s: &str) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(s)
        .unwrap()
        .with_timezone(&chrono::Utc)
}

/// Runs the engine on a virtual clock; returns the effects as JSON.
pub(crate) fn simulate(contacts: &[Value], events: &[Value], until: Option<&str>) -> Vec<Value> {
    simulate_project(project(), contacts, events, until)
}

/// [`simulate`] on a given project.
fn simulate_project(
    project: Arc<nurture_core::project::Project>,
    contacts: &[Value],
    events: &[Value],
    until: Option<&str>,
) -> Vec<Value> {
    let (out, summary) = simulate_with_summary(project, contacts, events, until);
    assert!(
        summary.rejected_events.is_empty(),
        "{:?}",
        summary.rejected_events
    );
    out
}

/// Runs the engine on a virtual clock; returns the effects as JSON and the summary
/// (whatever it rejected).
pub(crate) fn simulate_with_summary(
    project: Arc<nurture_core::project::Project>,
    contacts: &[Value],
    events: &[Value],
    until: Option<&str>,
) -> (Vec<Value>, nurture_engine::simulate::Summary) {
    let rows: Vec<_> = contacts
        .iter()
        .enumerate()
        .map(|(i, c)| nurture_engine::input::parse_contact(i + 1, c).unwrap())
        .collect();
    let evs: Vec<_> = events
        .iter()
        .enumerate()
        .map(|(i, e)| nurture_engine::input::parse_event(i + 1, e).unwrap())
        .collect();
    let mut out = Vec::new();
    let summary = rt()
        .block_on(nurture_engine::simulate::run(
            project,
            &rows,
            evs,
            None,
            until.map(time),
            |e| out.push(serde_json::from_str(&nurture_engine::simulate::effect_line(e)).unwrap()),
        ))
        .unwrap();
    (out, summary)
}

/// `AT CONTACT WORKFLOW/STEP EFFECT {extra}`.
fn compact(e: &Value) -> String {
    let s = |k: &str| e[k].as_str().unwrap_or("-").to_string();
    let extra: serde_json::Map<String, Value> = e
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| !["at", "contact", "workflow", "step", "effect"].contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut line = format!(
        "{} {} {}/{} {}",
        s("at"),
        s("contact"),
        s("workflow"),
        s("step"),
        s("effect")
    );
    if !extra.is_empty() {
        line.push(' ');
        line.push_str(&Value::Object(extra).to_string());
    }
    line
}

fn lines(effects: &[Value], filter: impl Fn(&Value) -> bool) -> Vec<String> {
    effects.iter().filter(|e| filter(e)).map(compact).collect()
}

fn of_workflow(wf: &'static str) -> impl Fn(&Value) -> bool {
    move |e: &Value| e["workflow"] == wf
}

fn assert_lines(actual: Vec<String>, expected: &[&str]) {
    let expected: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
    assert!(
        actual == expected,
        "effects differ\n--- expected\n{}\n--- actual\n{}",
        expected.join("\n"),
        actual.join("\n")
    );
}

fn ana() -> Value {
    json!({"id": "ana", "email": "ana@example.com", "first_name": "Ana", "timezone": "Europe/Sofia", "consent": "opted_in"})
}

fn ebook_form(contact: &str, at: &str) -> Value {
    json!({"type": "form.submitted", "contact": contact, "at": at, "data": {"form": "ebook"}})
}

/// DOMAIN.md 7: "send a product email; if it is opened, one week later send a webinar
/// invitation". The open scores +10 (scoring.yaml), 10 < 50 so the contact goes to the
/// monthly newsletter, and the run ends.
#[test]
fn ebook_opened_gets_the_webinar_a_week_after_the_open() {
    let effects = simulate(
        &[ana()],
        &[
            ebook_form("ana", "2026-03-02T09:00:00Z"),
            json!({"type": "email.opened", "contact": "ana", "at": "2026-03-03T08:00:00Z",
                   "data": {"workflow": "ebook-nurture", "step": "deliver"}}),
        ],
        None,
    );
    assert_lines(
        lines(&effects, |e| {
            e["workflow"] == "ebook-nurture" || e["effect"] == "score"
        }),
        &[
            r#"2026-03-02T09:00:00Z ana ebook-nurture/- enter {"trigger":{"event":"form.submitted"}}"#,
            r#"2026-03-02T09:00:00Z ana ebook-nurture/deliver email {"template":"ebook-delivery"}"#,
            r#"2026-03-02T09:00:00Z ana ebook-nurture/wait-open wait {"until":"2026-03-09T09:00:00Z","for":"email.opened"}"#,
            r#"2026-03-03T08:00:00Z ana -/- score {"delta":10,"score":10,"reason":"email.opened"}"#,
            r#"2026-03-03T08:00:00Z ana ebook-nurture/week-later wait {"until":"2026-03-10T08:00:00Z"}"#,
            r#"2026-03-10T08:00:00Z ana ebook-nurture/webinar email {"template":"webinar-invite"}"#,
            r#"2026-03-10T08:00:00Z ana ebook-nurture/newsletter tag {"tags":["nurture-monthly"]}"#,
            r#"2026-03-10T08:00:00Z ana ebook-nurture/- exit {"reason":"end"}"#,
        ],
    );
}

/// "if it is ignored, wait a few weeks and send a free e-book instead": 7 days of waiting
/// for the open, then 14 more, then the free e-book.
#[test]
fn ebook_ignored_gets_the_free_ebook_three_weeks_later() {
    let effects = simulate(&[ana()], &[ebook_form("ana", "2026-03-02T09:00:00Z")], None);
    assert_lines(
        lines(&effects, of_workflow("ebook-nurture")),
        &[
            r#"2026-03-02T09:00:00Z ana ebook-nurture/- enter {"trigger":{"event":"form.submitted"}}"#,
            r#"2026-03-02T09:00:00Z ana ebook-nurture/deliver email {"template":"ebook-delivery"}"#,
            r#"2026-03-02T09:00:00Z ana ebook-nurture/wait-open wait {"until":"2026-03-09T09:00:00Z","for":"email.opened"}"#,
            r#"2026-03-09T09:00:00Z ana ebook-nurture/nudge wait {"until":"2026-03-23T09:00:00Z"}"#,
            r#"2026-03-23T09:00:00Z ana ebook-nurture/free-ebook email {"template":"free-ebook"}"#,
            r#"2026-03-23T09:00:00Z ana ebook-nurture/newsletter tag {"tags":["nurture-monthly"]}"#,
            r#"2026-03-23T09:00:00Z ana ebook-nurture/- exit {"reason":"end"}"#,
        ],
    );
}

/// Scoring: a whitepaper download (+40) and the open (+10) make 50, so at `qualify` the
/// contact is handed to sales: MQL, the first rep of the round-robin, an alert to her.
#[test]
fn ebook_hot_contact_is_handed_to_sales() {
    let effects = simulate(
        &[ana()],
        &[
            json!({"type": "asset.downloaded", "contact": "ana", "at": "2026-03-01T12:00:00Z", "data": {"asset": "whitepaper"}}),
            ebook_form("ana", "2026-03-02T09:00:00Z"),
            json!({"type": "email.opened", "contact": "ana", "at": "2026-03-03T08:00:00Z", "data": {"step": "deliver"}}),
        ],
        None,
    );
    let tail: Vec<String> = lines(&effects, of_workflow("ebook-nurture"))
        .into_iter()
        .skip(4)
        .collect();
    assert_lines(
        tail,
        &[
            r#"2026-03-10T08:00:00Z ana ebook-nurture/webinar email {"template":"webinar-invite"}"#,
            r#"2026-03-10T08:00:00Z ana ebook-nurture/handoff set {"fields":{"lifecycle":"mql"}}"#,
            r#"2026-03-10T08:00:00Z ana ebook-nurture/handoff assign_owner {"team":"sales","owner":"ana.petrova@acme.test"}"#,
            r#"2026-03-10T08:00:00Z ana ebook-nurture/handoff notify {"to":"ana.petrova@acme.test","template":"hot-lead-alert"}"#,
            r#"2026-03-10T08:00:00Z ana ebook-nurture/- exit {"reason":"end"}"#,
        ],
    );
}

/// Quiet hours 21:00-08:00 Sofia, across the spring DST change (Sofia goes from UTC+2 to
/// UTC+3 at 03:00 on Sunday 2026-03-29). A form at 22:30 local on Saturday (20:30 UTC) is
/// answered at 08:00 local on Sunday, which is 05:00 UTC (not 06:00).
#[test]
fn quiet_hours_defer_email_across_the_dst_change() {
    let effects = simulate(
        &[ana()],
        &[ebook_form("ana", "2026-03-28T20:30:00Z")],
        Some("2026-03-29T12:00:00Z"),
    );
    assert_lines(
        lines(&effects, of_workflow("ebook-nurture")),
        &[
            r#"2026-03-28T20:30:00Z ana ebook-nurture/- enter {"trigger":{"event":"form.submitted"}}"#,
            r#"2026-03-28T20:30:00Z ana ebook-nurture/deliver wait {"until":"2026-03-29T05:00:00Z","reason":"quiet_hours","timezone":"Europe/Sofia"}"#,
            r#"2026-03-29T05:00:00Z ana ebook-nurture/deliver email {"template":"ebook-delivery"}"#,
            r#"2026-03-29T05:00:00Z ana ebook-nurture/wait-open wait {"until":"2026-04-05T05:00:00Z","for":"email.opened"}"#,
        ],
    );
}

/// The contact's own time zone wins over the workflow's: 22:30 UTC is 17:30 in New York,
/// outside quiet hours there, so the email goes at once.
#[test]
fn contact_timezone_wins_for_quiet_hours() {
    let mut c = ana();
    c["timezone"] = json!("America/New_York");
    let effects = simulate(
        &[c],
        &[ebook_form("ana", "2026-03-02T22:30:00Z")],
        Some("2026-03-03T00:00:00Z"),
    );
    assert_eq!(effects[1]["effect"], "email", "{effects:?}");
}

#[test]
fn goal_ends_the_run_as_converted() {
    let effects = simulate(
        &[ana()],
        &[
            ebook_form("ana", "2026-03-02T09:00:00Z"),
            json!({"type": "demo.requested", "contact": "ana", "at": "2026-03-04T10:00:00Z"}),
        ],
        Some("2026-03-05T00:00:00Z"),
    );
    let ebook = lines(&effects, of_workflow("ebook-nurture"));
    assert_eq!(
        ebook.last().unwrap(),
        r#"2026-03-04T10:00:00Z ana ebook-nurture/- exit {"reason":"goal"}"#
    );
    // The demo request itself starts the demo-request sequence.
    assert!(lines(&effects, of_workflow("demo-request"))[0].contains(" enter "));
}

#[test]
fn exit_if_is_checked_before_every_step() {
    let mut c = ana();
    c["lifecycle"] = json!("customer");
    let effects = simulate(&[c], &[ebook_form("ana", "2026-03-02T09:00:00Z")], None);
    assert_lines(
        lines(&effects, of_workflow("ebook-nurture")),
        &[
            r#"2026-03-02T09:00:00Z ana ebook-nurture/- enter {"trigger":{"event":"form.submitted"}}"#,
            r#"2026-03-02T09:00:00Z ana ebook-nurture/- exit {"reason":"exit_if"}"#,
        ],
    );
}

/// `reentry: never`: a second e-book form, even after the first run ended, enrols no one.
#[test]
fn reentry_never_enrols_once() {
    let effects = simulate(
        &[ana()],
        &[
            ebook_form("ana", "2026-03-02T09:00:00Z"),
            ebook_form("ana", "2026-05-02T09:00:00Z"),
        ],
        None,
    );
    let enters = lines(&effects, |e| {
        e["workflow"] == "ebook-nurture" && e["effect"] == "enter"
    });
    assert_eq!(enters.len(), 1, "{enters:?}");
}

/// DOMAIN.md 7, sales automation: set up the meeting; if the lead did not download the
/// competitor comparison, send it. Here she booked (SMS reminder through the plugin) and
/// had not downloaded it.
#[test]
fn demo_request_sends_the_comparison_only_when_missing() {
    let c = json!({"id": "lee", "email": "lee@example.com", "first_name": "Lee", "phone": "+359888123456", "consent": "opted_in", "consent_sms": "opted_in"});
    let effects = simulate(
        std::slice::from_ref(&c),
        &[
            json!({"type": "demo.requested", "contact": "lee", "at": "2026-03-02T09:00:00Z"}),
            json!({"type": "meeting.booked", "contact": "lee", "at": "2026-03-02T15:00:00Z"}),
        ],
        None,
    );
    assert_lines(
        lines(&effects, of_workflow("demo-request")),
        &[
            r#"2026-03-02T09:00:00Z lee demo-request/- enter {"trigger":{"event":"demo.requested"}}"#,
            r#"2026-03-02T09:00:00Z lee demo-request/mark-sal set {"fields":{"lifecycle":"sal"}}"#,
            r#"2026-03-02T09:00:00Z lee demo-request/mark-sal tag {"tags":["demo-requested"]}"#,
            r#"2026-03-02T09:00:00Z lee demo-request/mark-sal score {"delta":30,"score":60,"reason":"demo-request/mark-sal"}"#,
            // The three plugins are recorded, not called, by simulate.
            r#"2026-03-02T09:00:00Z lee demo-request/mark-sal plugin {"plugin":"ticketing/create-task","with":{"priority":"normal","queue":"sales-engineering","title":"Prepare a demo for Lee (lee@example.com)"}}"#,
            r#"2026-03-02T09:00:00Z lee demo-request/mark-sal plugin {"plugin":"ads/add-to-audience","with":{"audience":"demo-requested"}}"#,
            r#"2026-03-02T09:00:00Z lee demo-request/book-meeting email {"template":"meeting-setup"}"#,
            r#"2026-03-02T09:00:00Z lee demo-request/wait-booked wait {"until":"2026-03-04T09:00:00Z","for":"meeting.booked"}"#,
            r#"2026-03-02T15:00:00Z lee demo-request/sms-reminder plugin {"plugin":"sms/send","with":{"body":"Hi Lee, see you at the demo tomorrow. Reply STOP to opt out.","to":"+359888123456"}}"#,
            r#"2026-03-02T15:00:00Z lee demo-request/send-comparison email {"template":"competitor-comparison"}"#,
            r#"2026-03-02T15:00:00Z lee demo-request/follow-up wait {"until":"2026-03-05T15:00:00Z"}"#,
            r#"2026-03-05T15:00:00Z lee demo-request/crm-sync webhook {"url":"https://crm.acme.test/hooks/demo","method":"POST"}"#,
            r#"2026-03-05T15:00:00Z lee demo-request/- exit {"reason":"end"}"#,
        ],
    );
    // Downloaded before: no comparison email, and without booking, a reminder instead.
    let effects = simulate(
        &[c],
        &[
            json!({"type": "asset.downloaded", "contact": "lee", "at": "2026-02-20T09:00:00Z", "data": {"asset": "competitor-comparison"}}),
            json!({"type": "demo.requested", "contact": "lee", "at": "2026-03-02T09:00:00Z"}),
        ],
        None,
    );
    let demo = lines(&effects, of_workflow("demo-request"));
    assert!(
        demo.iter().any(|l| l.contains("book-reminder email")),
        "{demo:#?}"
    );
    assert!(
        !demo.iter().any(|l| l.contains("competitor-comparison")),
        "{demo:#?}"
    );
}

/// DOMAIN.md 7: follow-up within 15 minutes of the enterprise-offer click (trial offer,
/// ads audience), then content by persona: a CMO gets the ROI piece on Monday 09:00 local.
#[test]
fn enterprise_follow_up_in_15_minutes_then_by_persona() {
    let c = json!({"id": "kim", "email": "kim@example.com", "title": "CMO", "timezone": "Europe/Sofia", "consent": "opted_in"});
    // Wednesday 2026-03-04, 10:00 UTC = 12:00 Sofia.
    let effects = simulate(
        &[c],
        &[
            json!({"type": "page.visited", "contact": "kim", "at": "2026-03-04T10:00:00Z",
                 "data": {"url": "/enterprise", "clicked": "enterprise-offer"}}),
        ],
        Some("2026-03-10T00:00:00Z"),
    );
    assert_lines(
        lines(&effects, of_workflow("enterprise-followup")),
        &[
            r#"2026-03-04T10:00:00Z kim enterprise-followup/- enter {"trigger":{"event":"page.visited"}}"#,
            r#"2026-03-04T10:00:00Z kim enterprise-followup/within-15-minutes wait {"until":"2026-03-04T10:15:00Z"}"#,
            r#"2026-03-04T10:15:00Z kim enterprise-followup/trial-offer email {"template":"enterprise-trial-offer"}"#,
            r#"2026-03-04T10:15:00Z kim enterprise-followup/retarget plugin {"plugin":"ads/add-to-audience","with":{"audience":"enterprise-prospects"}}"#,
            r#"2026-03-04T10:15:00Z kim enterprise-followup/cmo-week-1 wait {"until":"2026-03-09T07:00:00Z"}"#,
            r#"2026-03-09T07:00:00Z kim enterprise-followup/cmo-roi email {"template":"persona-cmo-roi"}"#,
            r#"2026-03-09T07:00:00Z kim enterprise-followup/week-2 wait {"until":"2026-03-16T07:00:00Z"}"#,
        ],
    );
}

/// Hot-lead hand-off (DOMAIN.md 8) when the score crosses 100: two downloads (+40 each)
/// and two opens (+10 each). Two hot leads get the reps in round-robin order.
#[test]
fn hot_lead_handoff_round_robin_and_reminder() {
    let lead = |id: &str| json!({"id": id, "email": format!("{id}@example.com"), "first_name": id, "company": {"name": "Acme"}, "consent": "opted_in"});
    let heat = |id: &str, day: u32| -> Vec<Value> {
        let at = |h: u32| format!("2026-03-{day:02}T{h:02}:00:00Z");
        vec![
            json!({"type": "asset.downloaded", "contact": id, "at": at(9)}),
            json!({"type": "asset.downloaded", "contact": id, "at": at(10)}),
            json!({"type": "email.opened", "contact": id, "at": at(11)}),
            json!({"type": "email.opened", "contact": id, "at": at(12)}),
        ]
    };
    let mut events = heat("p1", 2);
    events.extend(heat("p2", 3));
    let effects = simulate(&[lead("p1"), lead("p2")], &events, None);
    assert_lines(
        lines(&effects, |e| {
            e["workflow"] == "hot-lead-handoff" && e["contact"] == "p1"
        }),
        &[
            r#"2026-03-02T12:00:00Z p1 hot-lead-handoff/- enter {"trigger":{"score":100}}"#,
            r#"2026-03-02T12:00:00Z p1 hot-lead-handoff/handoff set {"fields":{"lifecycle":"mql"}}"#,
            r#"2026-03-02T12:00:00Z p1 hot-lead-handoff/handoff assign_owner {"team":"sales","owner":"ana.petrova@acme.test"}"#,
            r#"2026-03-02T12:00:00Z p1 hot-lead-handoff/handoff notify {"to":"ana.petrova@acme.test","template":"hot-lead-alert"}"#,
            r#"2026-03-02T12:00:00Z p1 hot-lead-handoff/handoff plugin {"plugin":"ticketing/create-task","with":{"priority":"high","queue":"sales","title":"Call p1 at Acme"}}"#,
            r#"2026-03-02T12:00:00Z p1 hot-lead-handoff/handoff webhook {"url":"https://crm.acme.test/hooks/mql","method":"POST"}"#,
            r#"2026-03-02T12:00:00Z p1 hot-lead-handoff/follow-up-window wait {"until":"2026-03-09T12:00:00Z"}"#,
            r#"2026-03-09T12:00:00Z p1 hot-lead-handoff/remind-owner notify {"to":"ana.petrova@acme.test","template":"hot-lead-reminder"}"#,
            r#"2026-03-09T12:00:00Z p1 hot-lead-handoff/- exit {"reason":"end"}"#,
        ],
    );
    let p2_owner: Vec<String> = lines(&effects, |e| {
        e["contact"] == "p2" && e["effect"] == "assign_owner"
    });
    assert_eq!(
        p2_owner,
        [
            r#"2026-03-03T12:00:00Z p2 hot-lead-handoff/handoff assign_owner {"team":"sales","owner":"somchai.k@acme.test"}"#
        ]
    );
}

/// DOMAIN.md 6, the trigger model without scoring: a registered member who visited 10+
/// times in the past month enters the `engaged-members` segment, which hands her over.
#[test]
fn segment_trigger_fires_when_a_member_reaches_ten_visits() {
    let c =
        json!({"id": "mo", "email": "mo@example.com", "tags": ["member"], "consent": "opted_in"});
    let events: Vec<Value> = (1..=10)
        .map(|d| json!({"type": "page.visited", "contact": "mo", "at": format!("2026-03-{d:02}T09:00:00Z"), "data": {"url": "/blog"}}))
        .collect();
    let effects = simulate(&[c], &events, Some("2026-03-10T10:00:00Z"));
    let enters = lines(&effects, |e| {
        e["effect"] == "enter" && e["workflow"] == "hot-lead-handoff"
    });
    assert_eq!(
        enters,
        [
            r#"2026-03-10T09:00:00Z mo hot-lead-handoff/- enter {"trigger":{"segment":"engaged-members"}}"#
        ]
    );
}

/// Weekly newsletter (cron, Monday 09:00 Sofia = 07:00 UTC in winter) to the opted-in
/// segment; `reentry: always` enrols every week; an unsubscribed contact is skipped.
#[test]
fn weekly_newsletter_by_cron_honours_consent_and_unsubscribe() {
    let a = json!({"id": "sub", "email": "sub@example.com", "tags": ["newsletter"], "consent": "opted_in"});
    let b = json!({"id": "unk", "email": "unk@example.com", "tags": ["newsletter"], "consent": "unknown"});
    let effects = simulate(
        &[a, b],
        &[
            json!({"type": "page.visited", "contact": "sub", "at": "2026-03-04T09:00:00Z", "data": {"url": "/"}}),
            json!({"type": "email.unsubscribed", "contact": "sub", "at": "2026-03-10T12:00:00Z"}),
        ],
        Some("2026-03-17T00:00:00Z"),
    );
    assert_lines(
        lines(&effects, of_workflow("weekly-newsletter")),
        &[
            r#"2026-03-09T07:00:00Z sub weekly-newsletter/- enter {"trigger":{"schedule":"newsletter-subscribers"}}"#,
            r#"2026-03-09T07:00:00Z sub weekly-newsletter/send email {"template":"newsletter"}"#,
            r#"2026-03-09T07:00:00Z sub weekly-newsletter/- exit {"reason":"end"}"#,
            r#"2026-03-16T07:00:00Z sub weekly-newsletter/- enter {"trigger":{"schedule":"newsletter-subscribers"}}"#,
            r#"2026-03-16T07:00:00Z sub weekly-newsletter/send email_skipped {"template":"newsletter","reason":"unsubscribed"}"#,
            r#"2026-03-16T07:00:00Z sub weekly-newsletter/- exit {"reason":"end"}"#,
        ],
    );
}

/// Re-engagement of contacts silent for 6+ months (DOMAIN.md 7): the first Tuesday
/// 10:00 Sofia once 180 days have passed without activity; `reentry: after 180d` keeps
/// the weekly schedule from enrolling her again a week later.
#[test]
fn re_engagement_after_six_silent_months() {
    let c = json!({"id": "old", "email": "old@example.com", "consent": "opted_in"});
    let effects = simulate(
        &[c],
        &[
            json!({"type": "page.visited", "contact": "old", "at": "2026-01-05T09:00:00Z", "data": {"url": "/"}}),
        ],
        Some("2026-08-01T00:00:00Z"),
    );
    let enters = lines(&effects, |e| {
        e["workflow"] == "re-engagement" && e["effect"] == "enter"
    });
    // Silent since 2026-01-05 09:00 UTC; 180 days later is 2026-07-04 09:00 UTC (a
    // Saturday); the next Tuesday 10:00 Sofia (UTC+3 in summer) is 2026-07-07 07:00 UTC.
    assert_eq!(
        enters,
        [
            r#"2026-07-07T07:00:00Z old re-engagement/- enter {"trigger":{"schedule":"silent-6-months"}}"#
        ]
    );
    let emails = lines(&effects, |e| {
        e["workflow"] == "re-engagement" && e["effect"] == "email"
    });
    assert_eq!(
        emails.len(),
        2,
        "we-miss-you, then last-chance: {emails:#?}"
    );
}

/// A/B split: stable per contact, and close to its 50/50 weights over 10,000 contacts.
#[test]
fn ab_split_is_stable_and_close_to_its_weights() {
    let n = 10_000;
    let contacts: Vec<Value> = (0..n)
        .map(|i| json!({"id": format!("ab{i}"), "email": format!("ab{i}@example.com"), "first_name": "Sam", "consent": "opted_in"}))
        .collect();
    let events: Vec<Value> = (0..n)
        .map(|i| json!({"type": "form.submitted", "contact": format!("ab{i}"), "at": "2026-03-02T09:00:00Z", "data": {"form": "webinar-interest"}}))
        .collect();
    let effects = simulate(&contacts, &events, Some("2026-03-02T10:00:00Z"));
    let mut by_subject: BTreeMap<String, usize> = BTreeMap::new();
    for e in effects.iter().filter(|e| e["effect"] == "email") {
        *by_subject
            .entry(e["subject"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    let a = by_subject["Sam, are your leads going cold?"];
    let b = by_subject["How B2B teams double their sales-ready leads"];
    assert_eq!(a + b, n);
    // Binomial(10000, 0.5): sd = 50; 4.8k..5.2k is four standard deviations.
    assert!((4_800..=5_200).contains(&a), "variant a got {a} of {n}");
    // Stable: the same contact gets the same variant in a second simulation.
    let again = simulate(&contacts[..50], &events[..50], Some("2026-03-02T10:00:00Z"));
    let first: Vec<&Value> = effects
        .iter()
        .filter(|e| e["effect"] == "email")
        .take(50)
        .collect();
    let second: Vec<&Value> = again.iter().filter(|e| e["effect"] == "email").collect();
    for (x, y) in first.iter().zip(second) {
        assert_eq!(x["contact"], y["contact"]);
        assert_eq!(x["subject"], y["subject"]);
    }
}

#[test]
fn simulate_cli_output_is_byte_identical_for_the_same_input() {
    let dir = tempfile::tempdir().unwrap();
    let contacts = dir.path().join("contacts.jsonl");
    let events = dir.path().join("events.jsonl");
    std::fs::write(
        &contacts,
        format!(
            "{}\n{}\n",
            ana(),
            json!({"id": "bo", "email": "bo@example.com"})
        ),
    )
    .unwrap();
    std::fs::write(
        &events,
        format!(
            "{}\n{}\n{}\n",
            ebook_form("ana", "2026-03-02T09:00:00Z"),
            ebook_form("bo", "2026-03-02T09:00:00Z"),
            json!({"type": "email.opened", "contact": "bo", "at": "2026-03-03T09:00:00Z"})
        ),
    )
    .unwrap();
    let args = [
        "simulate",
        "workflows",
        "--contacts",
        contacts.to_str().unwrap(),
        "--events",
        events.to_str().unwrap(),
    ];
    let one = nurture(&args);
    let two = nurture(&args);
    assert!(
        one.status.success(),
        "{}",
        String::from_utf8_lossy(&one.stderr)
    );
    assert!(!one.stdout.is_empty());
    assert_eq!(one.stdout, two.stdout);
    let first: Value =
        serde_json::from_slice(one.stdout.split(|b| *b == b'\n').next().unwrap()).unwrap();
    assert_eq!(first["effect"], "enter");
    assert!(String::from_utf8_lossy(&one.stderr).contains("simulated 2 contacts and 3 events"));
}

#[test]
fn simulate_reports_bad_events_and_keeps_the_good_ones() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    std::fs::write(
        &events,
        "{\"type\": \"form.submitted\", \"email\": \"new@example.com\", \"at\": \"2026-03-02T09:00:00Z\", \"data\": {\"form\": \"ebook\"}}\nnot json\n{\"type\": \"form.submitted\"}\n",
    )
    .unwrap();
    let out = nurture(&[
        "simulate",
        "workflows",
        "--events",
        events.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(":2: not JSON"), "{stderr}");
    assert!(stderr.contains(":3: missing `contact`"), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("\"template\":\"ebook-delivery\""),
        "{stdout}"
    );
}

/// Regression: when two runs of one contact had timers due at the same instant, one batch
/// fired only the first; the second was claimed (leased) but not fired, so it fired a
/// lease (60 s) late. A contact's due timers now fire together, in one unit of work.
/// A project in a temporary folder with these workflow files (name, YAML).
fn temp_project(
    workflows: &[(String, String)],
) -> (tempfile::TempDir, Arc<nurture_core::project::Project>) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("workflows")).unwrap();
    std::fs::write(
        root.join("nurture.toml"),
        "[sender]\nfrom = \"Team <team@example.test>\"\n",
    )
    .unwrap();
    for (name, text) in workflows {
        std::fs::write(root.join("workflows").join(name), text).unwrap();
    }
    let loaded = nurture_core::project::load(root);
    let project = loaded.project.expect("valid project");
    (dir, Arc::new(project))
}

#[test]
fn two_waits_of_one_contact_due_together_both_fire_on_time() {
    let files: Vec<(String, String)> = [("first", "one"), ("second", "two"), ("third", "three")]
        .iter()
        .map(|(wf, tag)| {
            (
                format!("{wf}.yaml"),
                format!(
                    "workflow: {wf}\ntrigger: {{ event: signup.done }}\nsteps:\n  - id: pause\n    wait: 1d\n  - id: mark\n    tag: [{tag}]\n"
                ),
            )
        })
        .collect();
    let (_dir, project) = temp_project(&files);
    let effects = simulate_project(
        project,
        &[json!({"id": "ana", "email": "ana@example.com"})],
        &[json!({"type": "signup.done", "contact": "ana", "at": "2026-03-02T10:00:00Z"})],
        None,
    );
    // Same instant: the order among the three runs is their timers' order (by run id).
    let mut tags = lines(&effects, |e| e["effect"] == "tag");
    tags.sort();
    assert_lines(
        tags,
        &[
            "2026-03-03T10:00:00Z ana first/mark tag {\"tags\":[\"one\"]}",
            "2026-03-03T10:00:00Z ana second/mark tag {\"tags\":[\"two\"]}",
            "2026-03-03T10:00:00Z ana third/mark tag {\"tags\":[\"three\"]}",
        ],
    );
}

/// Units of work read a contact's events only as far back as the longest `activity()`
/// window of the project (the example's segments look 180 days back), and not at all when
/// nothing calls `activity()`; a window that is not a literal reads the full 400 days.
#[test]
fn history_is_read_only_as_far_back_as_the_longest_activity_window() {
    let window = |p: &nurture_core::project::Project| {
        nurture_engine::history_window(p).map(|d| d.num_days())
    };
    assert_eq!(window(&project()), Some(180));
    let plain =
        "workflow: plain\ntrigger: { event: signup.done }\nsteps:\n  - id: mark\n    tag: [x]\n";
    let (_d1, p) = temp_project(&[("plain.yaml".into(), plain.to_string())]);
    assert_eq!(window(&p), None);
    let branch = |cond: &str| {
        format!(
            "workflow: looks\ntrigger: {{ event: signup.done }}\nsteps:\n  - id: check\n    branch:\n      - if: '{cond}'\n        next: mark\n      - else: other\n  - id: mark\n    tag: [x]\n  - id: other\n    tag: [y]\n"
        )
    };
    let (_d2, p) = temp_project(&[(
        "looks.yaml".into(),
        branch(r#"activity("page.visited", "3w") > 2"#),
    )]);
    assert_eq!(window(&p), Some(21));
    let (_d3, p) = temp_project(&[
        ("plain.yaml".into(), plain.to_string()),
        (
            "looks.yaml".into(),
            branch(r#"activity("page.visited", contact.attributes.span) > 2"#),
        ),
    ]);
    assert_eq!(window(&p), Some(400));
}

/// Regression: a unit whose clock is behind (another worker's, or a long pass that keeps
/// the time it began with) starts a new run stamped *after* the contact's latest run of
/// the workflow, so the latest run is always the open one (all a unit of work loads).
#[test]
fn a_new_run_is_stamped_after_the_latest_even_when_the_clock_is_behind() {
    let wf = "workflow: again\ntrigger: { event: app.ping }\nreentry: always\nsteps:\n  - id: pause\n    wait: 1d\n  - id: mark\n    tag: [x]\n";
    let (_dir, project) = temp_project(&[("again.yaml".into(), wf.to_string())]);
    rt().block_on(async {
        let store = nurture_server::open_store("sqlite::memory:").await.unwrap();
        let engine = std::sync::Arc::new(nurture_engine::Engine::new(project, store.clone()));
        let ev = |id: &str, at: &str| {
            nurture_engine::input::parse_event(
                1,
                &json!({"id": id, "type": "app.ping", "contact": "ana", "at": at}),
            )
            .unwrap()
        };
        let later = time("2026-03-02T10:00:00Z");
        let earlier = time("2026-03-02T09:00:00Z");
        let ana = nurture_engine::input::parse_contact(1, &ana()).unwrap();
        engine
            .import_contacts(&[ana], earlier - chrono::Duration::days(1))
            .await
            .unwrap();
        // The first run starts at 10:00; two days on, its wait is over and it completed.
        engine
            .ingest(&[ev("e1", "2026-03-02T10:00:00Z")], later)
            .await
            .unwrap();
        engine.tick(later).await.unwrap();
        let first = store.runs_of_contact("ana").await.unwrap();
        assert_eq!(first.len(), 1);
        engine
            .tick(later + chrono::Duration::days(2))
            .await
            .unwrap();
        // A unit whose clock says 09:00 enrols the contact again.
        engine
            .ingest(&[ev("e2", "2026-03-02T09:00:00Z")], earlier)
            .await
            .unwrap();
        engine.tick(earlier).await.unwrap();
        let runs = store.runs_of_contact("ana").await.unwrap();
        assert_eq!(runs.len(), 2, "{runs:?}");
        let newer = runs.iter().find(|r| r.id != first[0].id).unwrap();
        assert!(newer.status.is_open(), "{newer:?}");
        assert!(
            newer.started_at > first[0].started_at,
            "{} is not after {}",
            newer.started_at,
            first[0].started_at
        );
        // And it is what a unit of work loads as the workflow's run.
        let units = store.load_units(&["ana".into()], None).await.unwrap();
        let loaded: Vec<&str> = units[0].runs.iter().map(|r| r.id.as_str()).collect();
        assert!(loaded.contains(&newer.id.as_str()), "{loaded:?}");
    });
}
