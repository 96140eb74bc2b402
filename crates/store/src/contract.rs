//! The `Store` contract as checks that any implementation must pass, written once: each
//! check takes a fresh, empty store (`&dyn Store`) and panics with a message saying what
//! the store got wrong. Each implementation's tests run every check of [`CHECKS`] on a
//! store of its own (`tests/all/store.rs` does, for SQLite and Postgres, one test per
//! check and backend). Later this module lives in the store contract crate behind a
//! `contract` feature.
//!
//! The fixtures ([`t`], [`contact`], [`event`], [`run`], [`outbox`]) build the rows the
//! checks write; tests of one implementation may use them too.

use chrono::{Duration, TimeZone, Utc};
use serde_json::json;

use super::{
    retention, ConflictKind, Contact, Expected, Inserted, JournalEntry, JournalKind, LatestVersion,
    NewEvent, OpenRunCount, OpenRunRef, OutboxEntry, OutboxOutcome, Run, RunStatus, Store,
    StoreError, Timer, UnitOfWork, Wait, WorkflowVersion,
};

/// The names of the checks of this module, in order (what a backend's tests must cover).
pub const CHECKS: &[&str] = &[
    "events_are_idempotent_by_id_and_queued_once",
    "a_stale_commit_is_rejected_and_changes_nothing",
    "outbox_entries_are_delivered_at_most_once_per_key",
    "a_commit_claims_the_due_entries_it_adds_for_its_worker_alone",
    "timers_fire_in_due_order_and_counters_are_fenced",
    "a_wave_of_completions_keeps_the_good_ones_when_one_is_stale",
    "a_wave_of_mixed_outcomes_records_each_its_own_way",
    "units_load_the_open_or_latest_run_of_each_workflow",
    "a_deploy_is_fenced_by_the_expected_latest_versions_and_all_or_nothing",
    "a_version_deployed_again_is_kept_unless_its_content_differs",
    "versions_list_by_workflow_then_version_and_the_latest_of_each",
    "open_runs_count_per_version_and_step_ignoring_ended_runs",
    "open_runs_below_a_version_page_by_run_id",
    "queues_count_events_due_timers_and_open_sends_by_state",
    "compaction_sums_up_runs_ended_before_the_cutoff_and_nothing_else",
    "a_merge_into_a_contact_not_stored_moves_nothing",
    "a_commit_keeping_a_contact_gone_since_conflicts_and_writes_nothing",
];

/// 1 March 2026 at `h` o'clock, UTC.
pub fn t(h: u32) -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, h, 0, 0)
        .single()
        .expect("a valid hour")
}

/// A contact `id` with the address `id@example.com`, not stored yet.
pub fn contact(id: &str) -> Contact {
    Contact {
        id: id.into(),
        email: Some(format!("{id}@example.com")),
        ..Default::default()
    }
}

/// A `page.visited` event `id` of `contact` at [`t`]`(h)`.
pub fn event(id: &str, contact: &str, h: u32) -> NewEvent {
    NewEvent {
        id: id.into(),
        contact: contact.into(),
        kind: "page.visited".into(),
        at: t(h),
        data: json!({"url": "/"}),
    }
}

/// A run `id` of `contact` in workflow `w`, waiting for a timer, not stored yet.
pub fn run(id: &str, contact: &str) -> Run {
    Run {
        id: id.into(),
        workflow: "w".into(),
        workflow_version: 1,
        contact: contact.into(),
        status: RunStatus::Waiting,
        step: Some("pause".into()),
        wait: Some(Wait::Timer),
        trigger_event: None,
        event: None,
        outcome: None,
        started_at: t(1),
        updated_at: t(1),
        ended_at: None,
        exit_reason: None,
        variants: Default::default(),
        rev: 0,
    }
}

/// Version `version` of workflow `workflow`, content hash `hash`, deployed at
/// [`t`]`(1)`, not stored yet.
pub fn version(workflow: &str, version: u32, hash: &str) -> WorkflowVersion {
    WorkflowVersion {
        workflow: workflow.into(),
        version,
        hash: hash.into(),
        source: format!("workflow: {workflow}\nversion: {version}\n"),
        path: format!("workflows/{workflow}.yaml"),
        deployed_at: t(1),
        deployed_by: "nurture deploy (test@host)".into(),
    }
}

/// A deploy's expectation: `workflow`'s latest version is `version`.
pub fn expect(workflow: &str, version: Option<u32>) -> Expected {
    Expected {
        workflow: workflow.into(),
        version,
    }
}

/// An `email` outbox entry `key` of run `r1` of contact `c1`, due at [`t`]`(1)`.
pub fn outbox(key: &str) -> OutboxEntry {
    OutboxEntry {
        key: key.into(),
        run_id: Some("r1".into()),
        contact: "c1".into(),
        workflow: Some("w".into()),
        step: Some("s".into()),
        kind: "email".into(),
        payload: json!({"template": "t"}),
        created_at: t(1),
        due_at: t(1),
        attempts: 0,
    }
}

/// Events are stored once per id and queued once; a contact's queue is handed out oldest
/// first, and applying a queued event twice is a conflict.
pub async fn events_are_idempotent_by_id_and_queued_once(s: &dyn Store) {
    let r = s
        .insert_events(
            &[contact("c1")],
            &[event("e1", "c1", 9), event("e2", "c1", 8)],
        )
        .await
        .unwrap();
    assert_eq!(r, [Inserted::New, Inserted::New]);
    let r = s.insert_events(&[], &[event("e1", "c1", 9)]).await.unwrap();
    assert_eq!(r, [Inserted::Duplicate]);
    let pending = s.pending_events(10).await.unwrap();
    let ids: Vec<&str> = pending.iter().map(|e| e.id.as_str()).collect();
    // A contact's queue is handed out oldest first (by event time, not arrival),
    // to be applied in that order in one unit of work.
    assert_eq!(ids, ["e2", "e1"], "oldest first");
    // Processing removes from the queue, in the same commit as the work.
    s.commit(&UnitOfWork {
        events_done: pending.iter().map(|e| e.seq).collect(),
        ..Default::default()
    })
    .await
    .unwrap();
    assert!(s.pending_events(10).await.unwrap().is_empty());
    // Processing the same event twice is a conflict: nothing runs twice.
    let again = s
        .commit(&UnitOfWork {
            events_done: vec![pending[0].seq],
            ..Default::default()
        })
        .await;
    assert!(
        matches!(again, Err(StoreError::Conflict { .. })),
        "{again:?}"
    );
    // History keeps both.
    assert_eq!(s.contact_events("c1", t(0)).await.unwrap().len(), 2, "-");
    assert_eq!(
        s.contact_by_email("c1@example.com")
            .await
            .unwrap()
            .unwrap()
            .id,
        "c1"
    );
}

/// Lease fencing: a worker that read a run before another worker advanced it cannot
/// commit its stale completion.
pub async fn a_stale_commit_is_rejected_and_changes_nothing(s: &dyn Store) {
    s.commit(&UnitOfWork {
        contacts: vec![contact("c1")],
        runs: vec![run("r1", "c1")],
        timers_set: vec![Timer {
            run_id: "r1".into(),
            contact: "c1".into(),
            due_at: t(5),
        }],
        ..Default::default()
    })
    .await
    .unwrap();
    let read_by_a = s.run("r1").await.unwrap().unwrap();
    let read_by_b = read_by_a.clone();
    // Worker B completes first.
    let mut b = read_by_b;
    b.status = RunStatus::Completed;
    s.commit(&UnitOfWork {
        runs: vec![b],
        timers_clear: vec!["r1".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    // Worker A's late completion, with an outbox entry, is refused as a whole.
    let mut a = read_by_a;
    a.status = RunStatus::Completed;
    let late = s
        .commit(&UnitOfWork {
            runs: vec![a],
            outbox: vec![outbox("k-late")],
            ..Default::default()
        })
        .await;
    assert!(matches!(late, Err(StoreError::Conflict { .. })), "{late:?}");
    assert!(
        s.outbox_state("k-late").await.unwrap().is_none(),
        "partial commit"
    );
    assert_eq!(s.run("r1").await.unwrap().unwrap().rev, 2);
    // Same for contacts.
    let mut stale = s.contact("c1").await.unwrap().unwrap();
    stale.version -= 1;
    let r = s
        .commit(&UnitOfWork {
            contacts: vec![stale],
            ..Default::default()
        })
        .await;
    assert!(matches!(r, Err(StoreError::Conflict { .. })));
}

/// Outbox entries are stored once per key, claimed for a lease, and completed once: a
/// second completion is a conflict; retries move the due time.
pub async fn outbox_entries_are_delivered_at_most_once_per_key(s: &dyn Store) {
    let uow = UnitOfWork {
        outbox: vec![outbox("k1"), outbox("k2")],
        ..Default::default()
    };
    s.commit(&uow).await.unwrap();
    // Re-committing the same keys (a repeated step) adds nothing.
    s.commit(&uow).await.unwrap();
    assert_eq!(s.pending_outbox(t(2), 10).await.unwrap().len(), 2);
    // Claimed for a lease: a second worker does not get them too.
    assert!(s.pending_outbox(t(2), 10).await.unwrap().is_empty(), "-");
    let done = OutboxOutcome::Delivered {
        record: json!({"ok": true}),
    };
    s.complete_outbox("k1", &done, t(2)).await.unwrap();
    let twice = s.complete_outbox("k1", &done, t(3)).await;
    assert!(matches!(twice, Err(StoreError::Conflict { .. })));
    assert_eq!(s.deliveries().await.unwrap().len(), 1);
    // A retry moves the entry's due time; it is not due before.
    let retry = OutboxOutcome::Retry {
        reason: "503".into(),
        retry_at: t(5),
    };
    s.complete_outbox("k2", &retry, t(2)).await.unwrap();
    assert!(s.pending_outbox(t(4), 10).await.unwrap().is_empty(), "-");
    let due = s.pending_outbox(t(5), 10).await.unwrap();
    assert_eq!((due.len(), due[0].attempts), (1, 1));
    s.complete_outbox(
        "k2",
        &OutboxOutcome::Failed {
            reason: "400".into(),
        },
        t(5),
    )
    .await
    .unwrap();
    assert_eq!(
        s.outbox_state("k2").await.unwrap().as_deref(),
        Some("failed")
    );
    assert_eq!(s.next_outbox().await.unwrap(), None);
}

/// A claiming commit leases the new due entries it adds to its own worker (less emails to
/// suppressed addresses), and they come back to the others when the lease runs out.
pub async fn a_commit_claims_the_due_entries_it_adds_for_its_worker_alone(s: &dyn Store) {
    // Queued by an earlier commit: not this commit's to claim.
    s.commit(&UnitOfWork {
        outbox: vec![outbox("old")],
        ..Default::default()
    })
    .await
    .unwrap();
    s.suppress("gone@example.com", "unsubscribed", t(1))
        .await
        .unwrap();
    let later = OutboxEntry {
        due_at: t(6),
        ..outbox("later")
    };
    let suppressed = OutboxEntry {
        payload: json!({"to": "Gone@example.com", "template": "t"}),
        ..outbox("suppressed")
    };
    let hook = OutboxEntry {
        kind: "webhook".into(),
        ..outbox("hook")
    };
    let uow = UnitOfWork {
        outbox: vec![outbox("old"), outbox("now"), later, suppressed, hook],
        ..Default::default()
    };
    // (Shorter than the lease `pending_outbox` takes, so that "old" claimed below is
    // still leased when this lease has run out.)
    let until = t(2) + Duration::seconds(30);
    let mut claimed = s.commit_claiming(&uow, t(2), until).await.unwrap();
    claimed.sort();
    // New and due, less the email to a suppressed address.
    assert_eq!(claimed, ["hook", "now"]);
    assert_eq!(
        s.outbox_state("suppressed").await.unwrap().as_deref(),
        Some("skipped"),
        "-"
    );
    let skipped = s.journal("r1").await.unwrap();
    assert!(
        skipped
            .iter()
            .any(|j| j.data["effect"] == "email_skipped" && j.data["key"] == "suppressed"),
        "{skipped:?}"
    );
    // Another worker's claim gets only what was queued before: the claimed ones
    // are leased until `until`, the later one is not due.
    let others: Vec<String> = s
        .pending_outbox(t(2), 10)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.key)
        .collect();
    assert_eq!(others, ["old"]);
    // The claiming worker records its delivery as after any claim.
    let done = OutboxOutcome::Delivered {
        record: json!({"ok": true}),
    };
    s.complete_outbox("now", &done, t(2)).await.unwrap();
    assert_eq!(
        s.outbox_state("now").await.unwrap().as_deref(),
        Some("delivered"),
        "-"
    );
    // A worker that died with a claim leaves it to the others once the lease
    // runs out.
    let after: Vec<String> = s
        .pending_outbox(until + Duration::seconds(1), 10)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.key)
        .collect();
    assert_eq!(after, ["hook"]);
    // Without a claim nothing is leased: a plain commit's entries are claimable.
    let plain = s
        .commit_claiming(
            &UnitOfWork {
                outbox: vec![outbox("late")],
                ..Default::default()
            },
            t(0),
            until,
        )
        .await
        .unwrap();
    assert!(plain.is_empty(), "due after `now`, so not claimed");
}

/// Timers come due in order and are claimed for a lease; counters are fenced by their
/// expected value.
pub async fn timers_fire_in_due_order_and_counters_are_fenced(s: &dyn Store) {
    s.commit(&UnitOfWork {
        timers_set: vec![
            Timer {
                run_id: "late".into(),
                contact: "nobody".into(),
                due_at: t(9),
            },
            Timer {
                run_id: "early".into(),
                contact: "nobody".into(),
                due_at: t(3),
            },
        ],
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(s.next_timer().await.unwrap(), Some(t(3)));
    assert!(s.due_timers(t(2), 10).await.unwrap().is_empty());
    // Re-setting a run's timer moves it (one timer per run).
    s.commit(&UnitOfWork {
        timers_set: vec![Timer {
            run_id: "early".into(),
            contact: "nobody".into(),
            due_at: t(4),
        }],
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(s.next_timer().await.unwrap(), Some(t(4)));
    let due: Vec<String> = s
        .due_timers(t(10), 10)
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.run_id)
        .collect();
    assert_eq!(due, ["early", "late"]);
    // Claimed: another worker asking now gets nothing; after the lease, they are back.
    assert!(s.due_timers(t(10), 10).await.unwrap().is_empty());
    let back = s
        .due_timers(t(10) + Duration::seconds(61), 10)
        .await
        .unwrap();
    assert_eq!(back.len(), 2, "a crashed worker's timers come back");
    // The commit of the unit that fired it clears it.
    s.commit(&UnitOfWork {
        timers_clear: vec!["early".into(), "late".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(s.next_timer().await.unwrap(), None);

    let c = |expected, new| UnitOfWork {
        counters: vec![("owner:sales".into(), expected, new)],
        ..Default::default()
    };
    s.commit(&c(0, 1)).await.unwrap();
    assert!(
        matches!(s.commit(&c(0, 1)).await, Err(StoreError::Conflict { .. })),
        "-"
    );
    s.commit(&c(1, 2)).await.unwrap();
    assert_eq!(s.counter("owner:sales").await.unwrap(), 2);
}

/// A wave of outcomes recorded together: a stale one (already completed) is reported as
/// a conflict and the others are still recorded, once each.
pub async fn a_wave_of_completions_keeps_the_good_ones_when_one_is_stale(s: &dyn Store) {
    s.commit(&UnitOfWork {
        outbox: vec![outbox("w1"), outbox("w2"), outbox("w3")],
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(s.pending_outbox(t(2), 10).await.unwrap().len(), 3);
    let done = || OutboxOutcome::Delivered {
        record: json!({"ok": true}),
    };
    s.complete_outbox("w2", &done(), t(2)).await.unwrap();
    let items: Vec<(String, OutboxOutcome)> = ["w1", "w2", "w3"]
        .iter()
        .map(|k| (k.to_string(), done()))
        .collect();
    let results = s.complete_outbox_many(&items, t(3)).await.unwrap();
    assert!(results[0].is_ok() && results[2].is_ok(), "{results:?}");
    assert!(
        matches!(results[1], Err(StoreError::Conflict { .. })),
        "{results:?}"
    );
    let mut keys: Vec<String> = s
        .deliveries()
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.key)
        .collect();
    keys.sort();
    assert_eq!(keys, ["w1", "w2", "w3"], "each delivered once");
    assert_eq!(s.next_outbox().await.unwrap(), None);
}

/// One wave with every kind of outcome (recorded in a few set-based statements on
/// Postgres): each entry ends in the state its own outcome says.
pub async fn a_wave_of_mixed_outcomes_records_each_its_own_way(s: &dyn Store) {
    let keys = ["m1", "m2", "m3", "m4", "m5"];
    s.commit(&UnitOfWork {
        outbox: keys.iter().map(|k| outbox(k)).collect(),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(s.pending_outbox(t(2), 10).await.unwrap().len(), 5);
    let items = one_of_each_outcome();
    let results = s.complete_outbox_many(&items, t(3)).await.unwrap();
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let states: Vec<Option<String>> = {
        let mut v = Vec::new();
        for k in keys {
            v.push(s.outbox_state(k).await.unwrap());
        }
        v
    };
    let states: Vec<&str> = states.iter().map(|x| x.as_deref().unwrap_or("-")).collect();
    assert_eq!(
        states[..1]
            .iter()
            .chain(&states[2..3])
            .chain(&states[4..])
            .copied()
            .collect::<Vec<_>>(),
        ["delivered", "failed", "ambiguous"],
        "-"
    );
    let d = s.deliveries().await.unwrap();
    assert_eq!(d.len(), 1);
    assert_eq!(
        (d[0].key.as_str(), &d[0].record),
        ("m1", &json!({"id": 1})),
        "-"
    );
    // The retry is due at t(5) as attempt 1; the deferral at t(7), no attempt counted.
    assert!(s.pending_outbox(t(4), 10).await.unwrap().is_empty(), "-");
    let due = s.pending_outbox(t(5), 10).await.unwrap();
    assert_eq!(
        due.iter()
            .map(|e| (e.key.as_str(), e.attempts))
            .collect::<Vec<_>>(),
        [("m2", 1)],
        "-"
    );
    // (By t(7) the lease on m2, claimed just above, has run out too.)
    let due = s.pending_outbox(t(7), 10).await.unwrap();
    assert_eq!(
        due.iter()
            .map(|e| (e.key.as_str(), e.attempts))
            .collect::<Vec<_>>(),
        [("m2", 1), ("m4", 0)],
        "-"
    );
}

/// A contact that re-entered workflows many times: a unit of work loads, per workflow,
/// its latest run (the open one, if any), not the whole completed history.
pub async fn units_load_the_open_or_latest_run_of_each_workflow(s: &dyn Store) {
    let mk = |id: &str, wf: &str, status: RunStatus, h: u32| Run {
        workflow: wf.into(),
        status,
        started_at: t(h),
        ..run(id, "c1")
    };
    s.commit(&UnitOfWork {
        contacts: vec![contact("c1")],
        runs: vec![
            mk("a0", "w", RunStatus::Completed, 1),
            mk("a1", "w", RunStatus::Completed, 2),
            // Same instant: the id breaks the tie (the engine never stamps two
            // runs of a workflow alike; see the engine's re-entry test).
            mk("a2", "w", RunStatus::Waiting, 2),
            mk("b1", "x", RunStatus::Completed, 1),
            mk("b2", "x", RunStatus::Converted, 3),
        ],
        ..Default::default()
    })
    .await
    .unwrap();
    s.insert_events(&[], &[event("e1", "c1", 1), event("e2", "c1", 4)])
        .await
        .unwrap();
    let units = s
        .load_units(&["c1".into()], Some(&t(2).into()))
        .await
        .unwrap();
    let ids: Vec<&str> = units[0].runs.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["a2", "b2"]);
    let evs: Vec<&str> = units[0].events.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(evs, ["e2"], "events since the time asked for");
    // No history asked for (nothing in the project reads it): none loaded.
    let units = s.load_units(&["c1".into()], None).await.unwrap();
    assert_eq!(units[0].runs.len(), 2);
    assert!(units[0].events.is_empty());
}

/// The latest versions as (workflow, version, hash).
async fn latest(s: &dyn Store) -> Vec<(String, u32, String)> {
    s.latest_versions()
        .await
        .unwrap()
        .into_iter()
        .map(
            |LatestVersion {
                 workflow,
                 version,
                 hash,
             }| (workflow, version, hash),
        )
        .collect()
}

/// Whether `r` is the conflict of a deploy on `workflow`.
fn version_conflict_on(r: &Result<(), StoreError>, workflow: &str) -> bool {
    matches!(r, Err(StoreError::Conflict { what: ConflictKind::WorkflowVersion, detail, .. })
        if detail == workflow)
}

/// A deploy names the latest version of each workflow it planned against; when one of
/// them moved on (or was stored since it was planned as none), the deploy is a
/// `WorkflowVersion` conflict and stores nothing, not even the versions of the workflows
/// whose expectation held. A source over the bound is refused, typed, before any write.
pub async fn a_deploy_is_fenced_by_the_expected_latest_versions_and_all_or_nothing(s: &dyn Store) {
    s.deploy(
        &[version("a", 1, "a1"), version("b", 1, "b1")],
        &[expect("a", None), expect("b", None)],
    )
    .await
    .unwrap();
    let before = vec![
        ("a".to_string(), 1, "a1".to_string()),
        ("b".to_string(), 1, "b1".to_string()),
    ];
    assert_eq!(latest(s).await, before);
    // The second workflow's expectation is stale (b has v1 now): neither is stored.
    let r = s
        .deploy(
            &[version("a", 2, "a2"), version("b", 2, "b2")],
            &[expect("a", Some(1)), expect("b", None)],
        )
        .await;
    assert!(version_conflict_on(&r, "b"), "{r:?}");
    assert!(
        r.as_ref().unwrap_err().is_retryable(),
        "a conflict: plan again"
    );
    assert_eq!(
        s.workflow_version("a", 2).await.unwrap(),
        None,
        "all or nothing"
    );
    assert_eq!(latest(s).await, before);
    // Planned against an older latest version than the stored one.
    let r = s
        .deploy(&[version("a", 3, "a3")], &[expect("a", Some(0))])
        .await;
    assert!(version_conflict_on(&r, "a"), "{r:?}");
    // Planned against the current latest: stored.
    s.deploy(
        &[version("a", 2, "a2"), version("b", 2, "b2")],
        &[expect("a", Some(1)), expect("b", Some(1))],
    )
    .await
    .unwrap();
    assert_eq!(
        latest(s).await,
        [
            ("a".to_string(), 2, "a2".to_string()),
            ("b".to_string(), 2, "b2".to_string())
        ]
    );
    // Too large a source: typed, not retryable, nothing stored.
    let big = WorkflowVersion {
        source: "#".repeat(crate::versions::MAX_SOURCE + 1),
        ..version("a", 3, "a3")
    };
    let r = s.deploy(&[big], &[expect("a", Some(2))]).await;
    assert!(matches!(r, Err(StoreError::TooLarge { .. })), "{r:?}");
    assert!(!r.unwrap_err().is_retryable());
    assert_eq!(s.workflow_version("a", 3).await.unwrap(), None);
}

/// Deploying a version again with the same content changes nothing (its first deploy is
/// kept); with other content it is a `WorkflowVersion` conflict: the file must bump its
/// version.
pub async fn a_version_deployed_again_is_kept_unless_its_content_differs(s: &dyn Store) {
    s.deploy(&[version("a", 1, "h1")], &[expect("a", None)])
        .await
        .unwrap();
    let again = WorkflowVersion {
        deployed_at: t(5),
        deployed_by: "nurture run (host pid 42)".into(),
        ..version("a", 1, "h1")
    };
    s.deploy(&[again], &[expect("a", Some(1))]).await.unwrap();
    assert_eq!(
        s.workflow_versions(Some("a")).await.unwrap(),
        [version("a", 1, "h1")],
        "the first deploy is kept"
    );
    let other = s
        .deploy(&[version("a", 1, "h2")], &[expect("a", Some(1))])
        .await;
    assert!(version_conflict_on(&other, "a"), "{other:?}");
    // Without an expectation too, and with a new version beside it: nothing stored.
    let other = s
        .deploy(&[version("a", 2, "h3"), version("a", 1, "h2")], &[])
        .await;
    assert!(version_conflict_on(&other, "a"), "{other:?}");
    assert_eq!(
        latest(s).await,
        [("a".to_string(), 1, "h1".to_string())],
        "-"
    );
    // One version given twice in a deploy: stored once; with two hashes, a conflict.
    let twice = s
        .deploy(&[version("b", 1, "x"), version("b", 1, "y")], &[])
        .await;
    assert!(version_conflict_on(&twice, "b"), "{twice:?}");
    s.deploy(&[version("b", 1, "x"), version("b", 1, "x")], &[])
        .await
        .unwrap();
    assert_eq!(s.workflow_versions(Some("b")).await.unwrap().len(), 1);
    // The same version unchanged beside a new one: the new one is stored.
    s.deploy(
        &[version("a", 1, "h1"), version("a", 2, "h3")],
        &[expect("a", Some(1))],
    )
    .await
    .unwrap();
    assert_eq!(
        latest(s).await,
        [
            ("a".to_string(), 2, "h3".to_string()),
            ("b".to_string(), 1, "x".to_string())
        ],
        "-"
    );
}

/// Versions are listed by workflow, then by version as a number (10 after 9), with all
/// they were stored with; the latest of each workflow is its highest version.
pub async fn versions_list_by_workflow_then_version_and_the_latest_of_each(s: &dyn Store) {
    assert!(s.latest_versions().await.unwrap().is_empty());
    s.deploy(
        &[
            version("zeta", 1, "z1"),
            version("alpha", 10, "a10"),
            version("alpha", 9, "a9"),
            version("alpha", 2, "a2"),
        ],
        &[],
    )
    .await
    .unwrap();
    let all: Vec<(String, u32)> = s
        .workflow_versions(None)
        .await
        .unwrap()
        .into_iter()
        .map(|v| (v.workflow, v.version))
        .collect();
    assert_eq!(
        all,
        [
            ("alpha".to_string(), 2),
            ("alpha".to_string(), 9),
            ("alpha".to_string(), 10),
            ("zeta".to_string(), 1)
        ]
    );
    let zeta = s.workflow_versions(Some("zeta")).await.unwrap();
    assert_eq!(zeta, [version("zeta", 1, "z1")]);
    assert_eq!(
        latest(s).await,
        [
            ("alpha".to_string(), 10, "a10".to_string()),
            ("zeta".to_string(), 1, "z1".to_string())
        ]
    );
    let v9 = WorkflowVersion {
        source: "workflow: alpha\nsteps: [] # é, \"quoted\"\n".into(),
        deployed_at: t(7) + Duration::milliseconds(250),
        ..version("alpha", 11, "a11")
    };
    s.deploy(std::slice::from_ref(&v9), &[expect("alpha", Some(10))])
        .await
        .unwrap();
    assert_eq!(s.workflow_version("alpha", 11).await.unwrap(), Some(v9));
    assert_eq!(s.workflow_version("alpha", 3).await.unwrap(), None);
    assert_eq!(s.workflow_version("beta", 1).await.unwrap(), None);
}

/// Open runs of a workflow (active or waiting), counted per version and step, by version
/// then step (a run at no step first); ended runs and other workflows' runs are not
/// counted.
pub async fn open_runs_count_per_version_and_step_ignoring_ended_runs(s: &dyn Store) {
    let mk = |id: &str, wf: &str, v: u32, status: RunStatus, step: Option<&str>| Run {
        workflow: wf.into(),
        workflow_version: v,
        status,
        step: step.map(Into::into),
        ..run(id, &format!("c-{id}"))
    };
    s.commit(&UnitOfWork {
        runs: vec![
            mk("r1", "w", 1, RunStatus::Waiting, Some("pause")),
            mk("r2", "w", 1, RunStatus::Waiting, Some("pause")),
            mk("r3", "w", 1, RunStatus::Active, Some("first")),
            mk("r4", "w", 2, RunStatus::Waiting, Some("pause")),
            mk("r5", "w", 2, RunStatus::Active, None),
            mk("r6", "w", 1, RunStatus::Completed, Some("pause")),
            mk("r7", "w", 1, RunStatus::Failed, Some("first")),
            mk("r8", "w", 3, RunStatus::Exited, Some("pause")),
            mk("r9", "w", 1, RunStatus::Converted, Some("second")),
            mk("x1", "x", 1, RunStatus::Waiting, Some("pause")),
        ],
        ..Default::default()
    })
    .await
    .unwrap();
    let count = |version: u32, step: Option<&str>, runs: i64| OpenRunCount {
        version,
        step: step.map(Into::into),
        runs,
    };
    assert_eq!(
        s.open_runs("w").await.unwrap(),
        [
            count(1, Some("first"), 1),
            count(1, Some("pause"), 2),
            count(2, None, 1),
            count(2, Some("pause"), 1),
        ]
    );
    // A run that ends is no longer counted.
    let mut r3 = s.run("r3").await.unwrap().unwrap();
    r3.status = RunStatus::Completed;
    s.commit(&UnitOfWork {
        runs: vec![r3],
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(
        s.open_runs("w").await.unwrap(),
        [
            count(1, Some("pause"), 2),
            count(2, None, 1),
            count(2, Some("pause"), 1),
        ]
    );
    assert!(s.open_runs("nope").await.unwrap().is_empty());
}

/// The open runs of a workflow pinned below a version, walked in pages by run id: each
/// page starts after the last id of the one before; ended runs, runs at or above the
/// version and other workflows' runs are not in any page.
pub async fn open_runs_below_a_version_page_by_run_id(s: &dyn Store) {
    let mk = |id: &str, wf: &str, v: u32, status: RunStatus| Run {
        workflow: wf.into(),
        workflow_version: v,
        status,
        ..run(id, &format!("c-{id}"))
    };
    s.commit(&UnitOfWork {
        runs: vec![
            mk("r05", "w", 1, RunStatus::Waiting),
            mk("r01", "w", 1, RunStatus::Waiting),
            mk("r03", "w", 2, RunStatus::Active),
            mk("r02", "w", 1, RunStatus::Completed),
            mk("r04", "w", 1, RunStatus::Active),
            mk("r06", "w", 3, RunStatus::Waiting),
            mk("r07", "w", 2, RunStatus::Exited),
            mk("r00", "x", 1, RunStatus::Waiting),
        ],
        ..Default::default()
    })
    .await
    .unwrap();
    let page = |after: Option<&'static str>, limit: i64| async move {
        s.open_runs_below("w", 3, after, limit)
            .await
            .unwrap()
            .into_iter()
            .map(|OpenRunRef { run, contact }| {
                assert_eq!(contact, format!("c-{run}"));
                run
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(page(None, 2).await, ["r01", "r03"]);
    assert_eq!(page(Some("r03"), 2).await, ["r04", "r05"]);
    assert!(page(Some("r05"), 2).await.is_empty());
    assert_eq!(page(None, 10).await, ["r01", "r03", "r04", "r05"]);
    let below_2: Vec<String> = s
        .open_runs_below("w", 2, None, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.run)
        .collect();
    assert_eq!(below_2, ["r01", "r04", "r05"]);
    assert!(s
        .open_runs_below("w", 1, None, 10)
        .await
        .unwrap()
        .is_empty());
}

/// The operations page's counts: queued events, due timers (the oldest's due time) and
/// later ones, and the outbox entries that still need something, by state.
pub async fn queues_count_events_due_timers_and_open_sends_by_state(s: &dyn Store) {
    let empty = s.queue_summary(t(4)).await.unwrap();
    assert_eq!(
        (empty.queued_events, empty.due_timers, empty.oldest_due),
        (0, 0, None)
    );
    s.insert_events(
        &[contact("c1")],
        &[event("e1", "c1", 1), event("e2", "c1", 2)],
    )
    .await
    .unwrap();
    let timer = |run: &str, h| Timer {
        run_id: run.into(),
        contact: "c1".into(),
        due_at: t(h),
    };
    let keys = ["m1", "m2", "m3", "m4", "m5"];
    s.commit(&UnitOfWork {
        timers_set: vec![timer("r1", 2), timer("r2", 3), timer("r3", 9)],
        outbox: keys.iter().map(|k| outbox(k)).collect(),
        ..Default::default()
    })
    .await
    .unwrap();
    s.pending_outbox(t(2), 10).await.unwrap();
    let outcomes = one_of_each_outcome();
    s.complete_outbox_many(&outcomes, t(3)).await.unwrap();
    s.commit(&UnitOfWork {
        outbox: vec![outbox("m6")],
        ..Default::default()
    })
    .await
    .unwrap();
    let q = s.queue_summary(t(4)).await.unwrap();
    assert_eq!(q.queued_events, 2);
    assert_eq!((q.due_timers, q.oldest_due), (2, Some(t(2))));
    // Nothing due yet: no oldest due time either.
    let early = s.queue_summary(t(1)).await.unwrap();
    assert_eq!((early.due_timers, early.oldest_due), (0, None));
    let by_state: Vec<(&str, i64)> = q.outbox.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    assert_eq!(
        by_state,
        [
            ("ambiguous", 1),
            ("deferred", 1),
            ("failed", 1),
            ("queued", 1),
            ("retrying", 1)
        ]
    );
}

/// Delivered (`m1`, record `{"id": 1}`), retry at t(5) (`m2`), failed (`m3`), deferred
/// to t(7) (`m4`) and ambiguous (`m5`).
fn one_of_each_outcome() -> Vec<(String, OutboxOutcome)> {
    vec![
        (
            "m1".into(),
            OutboxOutcome::Delivered {
                record: json!({"id": 1}),
            },
        ),
        (
            "m2".into(),
            OutboxOutcome::Retry {
                reason: "503".into(),
                retry_at: t(5),
            },
        ),
        (
            "m3".into(),
            OutboxOutcome::Failed {
                reason: "400".into(),
            },
        ),
        (
            "m4".into(),
            OutboxOutcome::Defer {
                reason: "cap".into(),
                until: t(7),
            },
        ),
        (
            "m5".into(),
            OutboxOutcome::Ambiguous {
                reason: "cut".into(),
            },
        ),
    ]
}

/// A journal line of run `run` (contact `c-RUN`) at [`t`]`(h)`.
fn line(run: &str, h: u32, kind: JournalKind, data: serde_json::Value) -> JournalEntry {
    JournalEntry {
        run_id: Some(run.into()),
        contact: format!("c-{run}"),
        at: t(h),
        kind,
        data,
    }
}

/// Compaction ([`retention::compact`]): the journal of a run ended before the cutoff
/// becomes one `summary` line with its steps and effects counted; an open run's journal
/// and one of a run ended later stay line for line; a dry run writes nothing; a second
/// compaction finds the run already compacted. A store that offers no compaction answers
/// `Unsupported` to each of its calls.
pub async fn compaction_sums_up_runs_ended_before_the_cutoff_and_nothing_else(s: &dyn Store) {
    if let Err(StoreError::Unsupported { .. }) = s.ended_runs("", 1).await {
        let unsupported =
            |r: Result<(), StoreError>| matches!(r, Err(StoreError::Unsupported { .. }));
        assert!(unsupported(s.reclaim_space().await));
        assert!(unsupported(s.replace_journals(&[]).await.map(|_| ())));
        return;
    }
    let ended = |id: &str, status: RunStatus, h: u32| Run {
        status,
        step: None,
        wait: None,
        ended_at: Some(t(h)),
        updated_at: t(h),
        ..run(id, &format!("c-{id}"))
    };
    let step = |r: &str, h: u32, id: &str| line(r, h, JournalKind::Step, json!({"step": id}));
    let effect = |r: &str, h: u32, e: &str| line(r, h, JournalKind::Effect, json!({"effect": e}));
    s.commit(&UnitOfWork {
        runs: vec![
            ended("r1", RunStatus::Completed, 3),
            run("r2", "c-r2"),
            ended("r3", RunStatus::Failed, 6),
        ],
        journal: vec![
            step("r1", 1, "a"),
            effect("r1", 1, "tag"),
            step("r1", 2, "b"),
            effect("r1", 2, "email"),
            effect("r1", 2, "tag"),
            line("r1", 3, JournalKind::Wake, json!({"step": "w"})),
            step("r2", 1, "a"),
            effect("r2", 1, "tag"),
            step("r3", 1, "a"),
        ],
        ..Default::default()
    })
    .await
    .unwrap();
    let before = |id: &str| {
        let id = id.to_string();
        async move { s.journal(&id).await.unwrap() }
    };
    let (r1, r2, r3) = (before("r1").await, before("r2").await, before("r3").await);
    assert_eq!(r1.len(), 6);
    let ids: Vec<String> = s
        .ended_runs("", 10)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(ids, ["r1", "r3"], "ended runs, by id, and no open one");
    let dry = retention::compact(s, t(4), true).await.unwrap();
    assert_eq!(
        (dry.runs, dry.lines, dry.kept, dry.rows_deleted),
        (1, 6, 1, 0)
    );
    let unchanged = |id: &'static str, before: Vec<JournalEntry>, why: &'static str| async move {
        assert_eq!(s.journal(id).await.unwrap(), before, "{id}: {why}");
    };
    unchanged("r1", r1, "a dry run writes nothing").await;
    let done = retention::compact(s, t(4), false).await.unwrap();
    assert_eq!((done.runs, done.lines, done.kept), (1, 6, 1));
    // Lines of one run at one instant share a row (SQLite and Postgres pack them).
    assert_eq!(done.rows_deleted, 3, "rows deleted: one per instant of r1");
    let summary = s.journal("r1").await.unwrap();
    assert_eq!(summary.len(), 1);
    assert_eq!(summary[0].kind, JournalKind::Summary);
    assert_eq!(summary[0].at, t(3));
    let d = &summary[0].data;
    assert_eq!(d["status"], "completed");
    assert_eq!(
        (d["lines"].clone(), d["steps"].clone()),
        (json!(6), json!(2))
    );
    assert_eq!(d["effects"], json!({"email": 1, "tag": 2}));
    assert_eq!(d["workflow"], "w");
    unchanged("r2", r2, "an open run is untouched").await;
    unchanged("r3", r3, "a run ended later is untouched").await;
    let again = retention::compact(s, t(4), false).await.unwrap();
    assert_eq!((again.runs, again.already, again.kept), (0, 1, 1));
    assert_eq!(s.journal("r1").await.unwrap(), summary);
}

/// A merge into a contact that is not stored (erased since the engine looked) is `None`
/// and changes nothing: the visitor keeps its events and is no alias; a merge into a
/// stored contact moves them.
pub async fn a_merge_into_a_contact_not_stored_moves_nothing(s: &dyn Store) {
    let visitor = "anon:v1";
    s.insert_events(&[contact(visitor)], &[event("e1", visitor, 9)])
        .await
        .unwrap();
    let merged = s
        .merge_contact(visitor, "gone", t(10), "form")
        .await
        .unwrap();
    assert_eq!(merged, None);
    assert_eq!(s.contact_events(visitor, t(0)).await.unwrap().len(), 1);
    assert!(s.contact(visitor).await.unwrap().is_some());
    assert!(s.merged_into(&[visitor.into()]).await.unwrap().is_empty());
    assert!(s.contact_lines("gone", 10).await.unwrap().is_empty());
    s.insert_events(&[contact("c1")], &[]).await.unwrap();
    let merged = s.merge_contact(visitor, "c1", t(10), "form").await.unwrap();
    assert_eq!(merged.map(|m| (m.moved, m.already)), Some((1, false)));
    assert_eq!(s.contact_events("c1", t(0)).await.unwrap().len(), 1);
}

/// A unit that read a contact as stored and names it without writing it (a run it
/// starts, a line) commits only while the contact is stored: gone (erased since it was
/// read), the commit is a `Conflict` (`contact`) and writes nothing.
pub async fn a_commit_keeping_a_contact_gone_since_conflicts_and_writes_nothing(s: &dyn Store) {
    s.insert_events(&[contact("c1")], &[]).await.unwrap();
    let kept = |contact: &str, run_id: &str| UnitOfWork {
        runs: vec![run(run_id, contact)],
        contacts_kept: vec![contact.to_string()],
        ..Default::default()
    };
    s.commit(&kept("c1", "r1")).await.unwrap();
    assert!(s.run("r1").await.unwrap().is_some());
    let gone = s.commit(&kept("c-gone", "r2")).await;
    assert!(
        matches!(
            gone,
            Err(StoreError::Conflict {
                what: ConflictKind::Contact,
                ..
            })
        ),
        "{gone:?}"
    );
    assert!(s.run("r2").await.unwrap().is_none());
}
