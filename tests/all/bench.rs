//! `nurture bench` runs and prints its table (figures are for people; no timing is
//! asserted here: speed is measured by the benchmark, never by tests).

use crate::util::nurture;

/// The benchmark lives in the binary (it is not library API); its exactly-once check is
/// compiled in here to prove it can fail.
#[allow(dead_code, unreachable_pub)]
#[path = "../../crates/cli/src/bench.rs"]
mod bench_impl;

/// Runs `nurture bench ARGS --json FILE`: its table and its JSON.
fn bench(args: &[&str]) -> (String, serde_json::Value) {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");
    let mut all = vec!["bench"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--json", json.to_str().unwrap()]);
    let out = nurture(&all);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
    (String::from_utf8_lossy(&out.stdout).into_owned(), v)
}

#[test]
fn bench_command_prints_its_table_and_json() {
    let (table, v) = bench(&[
        "--contacts",
        "30",
        "--http-events",
        "400",
        "--latency-rate",
        "50",
        "--latency-seconds",
        "1",
        "--latency-runs",
        "2",
        "--pending-waits",
        "2000",
        "--pending-due",
        "0",
        "--pending-seconds",
        "2",
        "--plugin",
        "none",
        "--report-runs",
        "4000",
        "--storage-contacts",
        "0",
    ]);
    assert!(table.starts_with("machine: "), "{table}");
    // (g) read reports on a store of 4,000 runs, 200 of them waiting.
    assert_eq!(v["reports"][0]["runs"], 4000);
    assert_eq!(v["reports"][0]["open_runs"], 200);
    assert!(table.contains("report latency"), "{table}");
    // Every dashboard page answered 200 on it (the bench fails otherwise) and was timed.
    let pages: Vec<&str> = v["reports"][0]["pages_ms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[0].as_str().unwrap())
        .collect();
    assert_eq!(
        pages,
        ["campaigns", "campaign", "run", "contact", "funnel", "ops"]
    );
    assert!(
        table.contains("dashboard pages, server-side: campaigns"),
        "{table}"
    );
    assert!(table.contains("1-row commits/s"), "{table}");
    assert!(table.contains("HTTP ingestion"), "{table}");
    assert_eq!(v["stores"][0]["store"], "sqlite");
    // 30 contacts x 6 steps, each executed once.
    assert_eq!(v["stores"][0]["steps"], 180);
    // Every event of the latency run reached its effect (a webhook) and was timed: the
    // second's measured ones, and apart from them the warm-up second's.
    let runs = v["latency"][0]["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2, "{}", v["latency"]);
    for run in runs {
        assert_eq!(run["events"], 50);
        assert_eq!(run["warmup_events"], 50);
        assert_eq!(run["missing"], 0);
        assert_eq!(run["rejected"], 0);
        assert!(run["effects_per_sec"].as_f64().unwrap() > 0.0);
        let (p99, p999) = (
            run["p99_ms"].as_f64().unwrap(),
            run["p999_ms"].as_f64().unwrap(),
        );
        assert!(p99 > 0.0 && p99 <= p999 && p999 <= run["max_ms"].as_f64().unwrap());
    }
    assert!(table.contains(" of 2 runs"), "{table}");
    assert!(table.contains("50 events after 50 of warm-up"), "{table}");
    assert!(table.contains("event -> effect latency"), "{table}");
    // The pending-waits store really holds that many waits.
    assert_eq!(v["pending"][0]["store"], "sqlite");
    assert_eq!(v["pending"][0]["pending_waits"], 2000);
    assert!(v["pending"][0]["worker_idle_peak_rss_mb"].as_f64().unwrap() > 0.0);
    assert!(
        v["stores"][0]["ceiling_single_commits_per_sec"]
            .as_f64()
            .unwrap()
            > 0.0
    );
}

#[test]
fn bench_only_runs_the_parts_asked_for() {
    let (table, v) = bench(&["--only", "steps", "--contacts", "10"]);
    assert!(table.contains("1-row commits/s"), "{table}");
    assert!(!table.contains("HTTP ingestion"), "{table}");
    assert_eq!(v["stores"][0]["steps"], 60);
    assert!(v["plugin"].is_null());
    assert_eq!(v["latency"], serde_json::json!([]));
    assert_eq!(v["pending"], serde_json::json!([]));
}

/// (c) on Postgres: each measured event's time is split into stages read from the run's
/// rows (stored, applied by the engine, webhook received); the slowest event's stages
/// add up to its latency, which is the run's max.
#[test]
fn latency_on_postgres_splits_each_event_into_stages() {
    let Some(url) = crate::util::fresh_postgres() else {
        return;
    };
    let (table, v) = bench(&[
        "--only",
        "latency",
        "--postgres",
        &url,
        "--latency-rate",
        "50",
        "--latency-seconds",
        "1",
        "--latency-runs",
        "1",
    ]);
    assert!(table.contains("where the time went"), "{table}");
    let run = &v["latency"][0]["runs"][0];
    assert_eq!(run["store"], "postgres");
    let stages = &run["stages"];
    assert_eq!(stages["events"], 50, "{run}");
    let t = &stages["slowest_1pct"];
    let sum: f64 = ["api", "stored", "effect"]
        .iter()
        .map(|k| t[k].as_f64().unwrap())
        .sum();
    let max = run["max_ms"].as_f64().unwrap();
    assert!((sum - max).abs() < 0.05, "{sum} vs {max}: {run}");
    assert!(t["api"].as_f64().unwrap() > 0.0, "{run}");
}

/// (d) Waiting contacts seeded on SQLite and Postgres (1,000 made by the engine, the
/// rest copied in SQL), some made due at once: a worker fires every one of them (each
/// then waits again, at `w2`), and the store's size is measured.
#[test]
fn pending_part_seeds_waiting_contacts_and_a_worker_fires_the_due_ones() {
    let pg = crate::util::fresh_postgres();
    let mut args = vec!["--only", "pending", "--pending-waits", "3000"];
    args.extend(["--pending-due", "500", "--pending-seconds", "120"]);
    if let Some(url) = &pg {
        args.extend(["--postgres", url.as_str()]);
    }
    let (table, v) = bench(&args);
    assert!(
        table.contains("waiting contacts under one worker"),
        "{table}"
    );
    let stores = v["pending"].as_array().unwrap();
    assert_eq!(stores.len(), 1 + usize::from(pg.is_some()));
    for (s, name) in stores.iter().zip(["sqlite", "postgres"]) {
        assert_eq!(s["store"], name);
        assert_eq!(s["pending_waits"], 3000, "{s}");
        assert_eq!(s["due"], 500, "{s}");
        assert_eq!(s["fired_waits"], 500, "{s}");
        assert_eq!(s["fired_steps"], 1000, "{s}");
        assert!(s["store_bytes"].as_u64().unwrap() > 3000 * 100, "{s}");
    }
}

/// (i) The journal of the example project's campaign, measured on SQLite and Postgres
/// (the same runs, rows and steps on both), before and after every ended run is
/// compacted: fewer rows after, and a smaller SQLite journal and file.
#[test]
fn storage_part_measures_the_journal_before_and_after_compaction() {
    let pg = crate::util::fresh_postgres();
    let mut args = vec!["--only", "storage", "--storage-contacts", "100"];
    if let Some(url) = &pg {
        args.extend(["--postgres", url.as_str()]);
    }
    let (table, v) = bench(&args);
    assert!(table.contains("journal storage (workflows"), "{table}");
    let stores = v["storage"].as_array().unwrap();
    assert_eq!(stores.len(), 1 + usize::from(pg.is_some()));
    let s = &stores[0];
    assert_eq!(s["store"], "sqlite");
    let steps = s["before"]["steps"].as_i64().unwrap();
    assert!(steps > 100, "{s}");
    assert!(s["ended_runs"].as_u64().unwrap() > 0, "{s}");
    // A summary line keeps the steps of its run: the count is the same after.
    assert_eq!(s["after"]["steps"], steps, "{s}");
    assert!(
        s["after"]["rows"].as_i64() < s["before"]["rows"].as_i64(),
        "{s}"
    );
    assert!(
        s["after"]["bytes"].as_i64() < s["before"]["bytes"].as_i64(),
        "{s}"
    );
    let file = s["file_bytes"].as_array().unwrap();
    assert!(file[1].as_u64() < file[0].as_u64(), "{s}");
    if let Some(p) = stores.get(1) {
        assert_eq!(p["store"], "postgres");
        for k in ["runs", "ended_runs"] {
            assert_eq!(p[k], s[k], "{k}");
        }
        for k in ["rows", "lines", "steps"] {
            assert_eq!(p["before"][k], s["before"][k], "{k}");
            assert_eq!(p["after"][k], s["after"][k], "{k}");
        }
        assert!(p["wal_bytes"].as_i64().unwrap() > 0, "{p}");
    }
}

/// (e) on Postgres: a round of 2 real `nurture worker` processes, after which the round's
/// check that nothing ran twice passes on what they left; a score that says a step ran
/// twice, and a run too many, each make that check fail.
#[test]
fn workers_round_checks_that_every_step_ran_exactly_once() {
    let Some(url) = crate::util::fresh_postgres() else {
        return;
    };
    let (table, v) = bench(&[
        "--only",
        "workers",
        "--postgres",
        &url,
        "--workers",
        "2",
        "--worker-contacts",
        "200",
        "--worker-repeats",
        "1",
    ]);
    assert!(table.contains("2 worker(s): 1200 steps"), "{table}");
    assert_eq!(v["workers"][0]["steps"], 1200);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let pool = sqlx::PgPool::connect(&url).await.unwrap();
        // The round's own check again, on the tables the last round left.
        bench_impl::exactly_once(&pool, "nurture", 200).await.unwrap();
        sqlx::query(
            "UPDATE nurture.contacts SET doc = (doc::jsonb || '{\"score\": 3}')::json \
             WHERE id = (SELECT min(id) FROM nurture.contacts)",
        )
        .execute(&pool)
        .await
        .unwrap();
        let e = bench_impl::exactly_once(&pool, "nurture", 200).await.unwrap_err();
        assert!(e.to_string().contains("1 contacts whose score is not 2"), "{e}");
        sqlx::query(
            "UPDATE nurture.contacts SET doc = (doc::jsonb || '{\"score\": 2}')::json",
        )
        .execute(&pool)
        .await
        .unwrap();
        bench_impl::exactly_once(&pool, "nurture", 200).await.unwrap();
        sqlx::query(
            "INSERT INTO nurture.runs (id, workflow, workflow_version, contact, status, doc, started_at, rev) \
             SELECT id || '-again', workflow, workflow_version, contact, status, doc, started_at, rev \
             FROM nurture.runs WHERE id = (SELECT min(id) FROM nurture.runs)",
        )
        .execute(&pool)
        .await
        .unwrap();
        let e = bench_impl::exactly_once(&pool, "nurture", 200).await.unwrap_err();
        assert!(e.to_string().contains("201 runs"), "{e}");
    });
}
