//! `nurture outbox list`, the outbox states `nurture runs show` prints beside effects,
//! and `nurture contacts show`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;
use nurture_store::{OutboxFilter, OutboxRow, OutboxState, Store};

/// A contact given as an id or an email address: its id, or (an address nobody has) the
/// exit status 1 after saying so on stderr.
pub(crate) async fn contact_id(store: &dyn Store, given: &str) -> Result<Result<String, ExitCode>> {
    if !given.contains('@') {
        return Ok(Ok(given.to_string()));
    }
    Ok(
        match nurture_engine::story::find_contact(store, given).await? {
            Some(c) => Ok(c.id),
            None => {
                eprintln!("error: no contact with the address {given}");
                Err(ExitCode::from(1))
            }
        },
    )
}

/// `nurture outbox list`.
pub(crate) async fn list(
    dir: &Path,
    store_flag: Option<String>,
    mut filter: OutboxFilter,
    json_out: bool,
) -> Result<ExitCode> {
    let store = crate::commands::open_read(dir, store_flag).await?;
    if let Some(c) = filter.contact.take() {
        match contact_id(&*store, &c).await? {
            Ok(id) => filter.contact = Some(id),
            Err(code) => return Ok(code),
        }
    }
    let rows = store.list_outbox(&filter).await?;
    if json_out {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        println!("no outbox entries");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<26} {:<8} {:<10} {:<26} {:<20} {:<24} REASON",
        "KEY", "KIND", "STATE", "CONTACT", "WORKFLOW/STEP", "DUE"
    );
    for r in &rows {
        let at = format!(
            "{}/{}",
            r.workflow.as_deref().unwrap_or("-"),
            r.step.as_deref().unwrap_or("-")
        );
        println!(
            "{:<26} {:<8} {:<10} {:<26} {:<20} {:<24} {}",
            r.key,
            r.kind.as_str(),
            r.state.as_str(),
            r.contact,
            at,
            nurture_store::ts_out(r.due_at),
            r.reason.as_deref().unwrap_or("")
        );
    }
    if rows.iter().any(|r| r.state == OutboxState::Ambiguous) {
        println!(
            "(check an ambiguous entry with the mail server, then `nurture outbox retry KEY`)"
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// What became of an outbox entry, for a `runs show` line: `[sent]`,
/// `[deferred until T: why]`, `[failed: why]`...
pub(crate) fn state_note(r: &OutboxRow) -> String {
    let why = r.reason.as_deref().unwrap_or("");
    match r.state {
        OutboxState::Sent | OutboxState::Queued => format!("[{}]", r.state.as_str()),
        OutboxState::Deferred | OutboxState::Retrying => format!(
            "[{} until {}: {why}]",
            r.state.as_str(),
            nurture_store::ts_out(r.due_at)
        ),
        OutboxState::Skipped => format!("[skipped: {why}]"),
        OutboxState::Failed | OutboxState::Ambiguous => {
            format!("[{}: {why}; key {}]", r.state.as_str(), r.key)
        }
    }
}

/// `nurture contacts show`: a contact (by id or address) and its runs.
pub(crate) async fn show_contact(
    dir: &Path,
    store_flag: Option<String>,
    given: &str,
    timeline: bool,
    json_out: bool,
) -> Result<ExitCode> {
    let store = crate::commands::open_read(dir, store_flag).await?;
    let now = chrono::Utc::now();
    let Some(story) = nurture_engine::story::contact_story(&*store, given, now).await? else {
        eprintln!("no contact {given}; `nurture runs list` shows the contacts of runs");
        return Ok(ExitCode::from(1));
    };
    if json_out {
        println!("{}", serde_json::to_string_pretty(&story)?);
        return Ok(ExitCode::SUCCESS);
    }
    if timeline {
        for m in &story.timeline {
            println!("{}  {:<9} {}", nurture_store::ts_out(m.at), m.what, m.text);
        }
        if story.timeline.is_empty() {
            println!("nothing recorded");
        }
        return Ok(ExitCode::SUCCESS);
    }
    print_profile(&story.contact)?;
    print_histories(&story);
    println!();
    for r in &story.runs {
        println!(
            "{:<28} {:<22} v{:<4} {:<10} {}",
            r.id,
            r.workflow,
            r.workflow_version,
            r.status.as_str(),
            r.step
                .as_deref()
                .or(r.exit_reason.as_deref())
                .unwrap_or("-")
        );
    }
    if story.runs.is_empty() {
        println!("no runs");
    }
    Ok(ExitCode::SUCCESS)
}

fn print_profile(c: &nurture_store::Contact) -> Result<()> {
    let p = nurture_engine::explain::printable;
    let opt = |v: &Option<String>| p(v.as_deref().unwrap_or("-"));
    let list = |v: &std::collections::BTreeSet<String>| {
        let all: Vec<&str> = v.iter().map(String::as_str).collect();
        if all.is_empty() {
            "-".to_string()
        } else {
            p(&all.join(", "))
        }
    };
    println!("contact    {}", p(&c.id));
    println!("email      {}", opt(&c.email));
    // Points that age (`decay`, `expires`) as they are worth now.
    let score = nurture_core::aging::score_json(c.score_at(chrono::Utc::now()));
    println!("score      {score}");
    println!("lifecycle  {}", opt(&c.lifecycle));
    println!("owner      {}", opt(&c.owner));
    println!(
        "consent    {}",
        serde_json::to_value(c.consent)?.as_str().unwrap_or("-")
    );
    println!("tags       {}", list(&c.tags));
    println!(
        "fields     {}",
        p(&serde_json::Value::Object(c.fields.clone()).to_string())
    );
    if c.unsubscribed || c.suppressed {
        println!(
            "mail       unsubscribed: {}, suppressed: {}",
            c.unsubscribed, c.suppressed
        );
    }
    Ok(())
}

/// Segments with since when, the score's changes, lifecycle and consent changes.
fn print_histories(s: &nurture_engine::story::ContactStory) {
    let p = nurture_engine::explain::printable;
    let when = |t: Option<nurture_store::Ts>| t.map_or("-".into(), nurture_store::ts_out);
    println!("segments");
    for m in &s.segments {
        println!("  {:<28} since {}", p(&m.segment), when(m.since));
    }
    println!("score history");
    for c in &s.score_history {
        println!(
            "  {}  {:>+5} = {:<5} {}",
            nurture_store::ts_out(c.at),
            c.delta,
            c.score,
            p(&c.reason)
        );
    }
    for (name, list) in [
        ("lifecycle", &s.lifecycle_history),
        ("consent", &s.consent_history),
    ] {
        println!("{name} history");
        for c in list {
            let from = c.from.as_ref().map_or("-".into(), |v| v.to_string());
            println!(
                "  {}  {} -> {} ({})",
                nurture_store::ts_out(c.at),
                p(&from),
                p(&c.to.to_string()),
                p(&c.cause)
            );
        }
    }
}
