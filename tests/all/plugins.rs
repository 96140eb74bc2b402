//! The wasm plugin host: real components built from `plugins/` and `tests/plugins/`,
//! real local HTTP servers playing the providers. Each limit test proves one guarantee
//! with the purpose-built bad plugin `tests/plugins/misbehave`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nurture_channels::plugin::{
    CallOutcome, Limits, PluginConfig, PluginError, PluginHost, StepCall,
};
use serde_json::{json, Value};

use crate::util::{built_plugins, plugin_manifest, RecordingServer};

fn dir_of(name: &str) -> PathBuf {
    built_plugins()
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, d)| d.clone())
        .unwrap_or_else(|| panic!("no built plugin {name}"))
}

fn config(secrets: &[(&str, &str)], routes: &[(&str, &str)]) -> PluginConfig {
    PluginConfig {
        secrets: secrets
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        routes: routes
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    }
}

fn load(host: &mut PluginHost, name: &str, cfg: PluginConfig, cache: &Path) {
    let dir = dir_of(name);
    host.load(plugin_manifest(&dir), &dir, cfg, cache)
        .unwrap_or_else(|e| panic!("loading {name}: {e}"));
}

async fn call(host: &PluginHost, plugin: &str, step: &str, with: Value) -> CallOutcome {
    host.call(StepCall {
        plugin,
        step,
        config: &with,
        contact: &json!({"id": "ana", "email": "Ana@Example.com", "first_name": "Ana", "phone": "+359888000111"}),
        event: None,
        idempotency_key: &format!("key-{plugin}-{step}"),
        attempt: 1,
    })
    .await
}

fn failed_reason(outcome: &CallOutcome) -> &str {
    match outcome {
        CallOutcome::Failed { reason } | CallOutcome::Retry { reason, .. } => reason,
        CallOutcome::Ok { output } => panic!("expected a failure, got ok: {output}"),
    }
}

/// A host with the misbehaving plugin and the SMS plugin (against a local provider).
fn misbehave_host(limits: Limits, sms_provider: &RecordingServer, cache: &Path) -> PluginHost {
    let mut host = PluginHost::new(limits).unwrap();
    load(
        &mut host,
        "misbehave",
        config(&[("own_token", "mine")], &[]),
        cache,
    );
    load(
        &mut host,
        "sms",
        config(
            &[("account_sid", "AC1"), ("auth_token", "sms-secret")],
            &[("api.sms-provider.test", &sms_provider.base_url())],
        ),
        cache,
    );
    host
}

fn sms_provider() -> RecordingServer {
    RecordingServer::start(|_| (201, r#"{"sid":"SM42"}"#.into()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_party_plugins_call_their_providers_with_secret_auth_and_idempotency_key() {
    let cache = tempfile::tempdir().unwrap();
    let provider = RecordingServer::start(|r| {
        if r.path.contains("/tickets") {
            (201, r#"{"ticket":{"id":9001}}"#.into())
        } else if r.path.contains("/Messages.json") {
            (201, r#"{"sid":"SM42"}"#.into())
        } else {
            (200, r#"{"num_received":1}"#.into())
        }
    });
    let base = provider.base_url();
    let mut host = PluginHost::new(Limits::default()).unwrap();
    load(
        &mut host,
        "sms",
        config(
            &[("account_sid", "AC1"), ("auth_token", "sms-secret")],
            &[("api.sms-provider.test", &base)],
        ),
        cache.path(),
    );
    load(
        &mut host,
        "ads",
        config(
            &[("access_token", "ads-secret")],
            &[("graph.ads-provider.test", &base)],
        ),
        cache.path(),
    );
    load(
        &mut host,
        "ticketing",
        config(
            &[("api_token", "zd-secret")],
            &[("helpdesk.ticketing-provider.test", &base)],
        ),
        cache.path(),
    );

    let sms = call(
        &host,
        "sms",
        "send",
        json!({"to": "+359888000111", "body": "See you"}),
    )
    .await;
    assert_eq!(
        sms,
        CallOutcome::Ok {
            output: json!({"message_sid": "SM42", "to": "+359888000111"})
        }
    );
    let ads = call(
        &host,
        "ads",
        "add-to-audience",
        json!({"audience": "demo-requested"}),
    )
    .await;
    assert!(matches!(ads, CallOutcome::Ok { .. }), "{ads:?}");
    let ticket = call(
        &host,
        "ticketing",
        "create-task",
        json!({"queue": "sales", "title": "Call Ana", "priority": "high"}),
    )
    .await;
    assert_eq!(
        ticket,
        CallOutcome::Ok {
            output: json!({"ticket_id": 9001, "queue": "sales"})
        }
    );

    let seen = provider.requests();
    assert_eq!(seen.len(), 3, "{seen:#?}");
    let sms = &seen[0];
    assert_eq!(sms.method, "POST");
    assert_eq!(sms.path, "/2010-04-01/Accounts/AC1/Messages.json");
    // base64("AC1:sms-secret")
    assert_eq!(
        sms.header("authorization"),
        Some("Basic QUMxOnNtcy1zZWNyZXQ=")
    );
    assert_eq!(sms.header("idempotency-key"), Some("key-sms-send"));
    assert_eq!(sms.text(), "To=%2B359888000111&From=nurture&Body=See+you");

    let ads = &seen[1];
    assert_eq!(ads.path, "/v1/audiences/demo-requested/users");
    assert_eq!(ads.header("authorization"), Some("Bearer ads-secret"));
    assert_eq!(
        ads.header("idempotency-key"),
        Some("key-ads-add-to-audience")
    );
    assert_eq!(
        ads.json(),
        // sha256("ana@example.com"): normalised, then hashed; no clear-text email.
        json!({"schema": ["EMAIL_SHA256"], "data": [["8e43ca37701228e74983efdbd0cff5c16b3b1e5d4e29a7c05626d4d25a018e11"]]})
    );

    let t = &seen[2];
    assert_eq!(t.path, "/api/v2/tickets");
    assert_eq!(t.header("authorization"), Some("Bearer zd-secret"));
    let body = t.json();
    assert_eq!(body["ticket"]["subject"], "Call Ana");
    assert_eq!(body["ticket"]["external_id"], "key-ticketing-create-task");
    assert_eq!(body["ticket"]["requester"]["email"], "Ana@Example.com");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_throttling_becomes_a_retry_and_a_missing_secret_a_clear_failure() {
    let cache = tempfile::tempdir().unwrap();
    let provider = RecordingServer::start(|_| (429, r#"{"error":"slow down"}"#.into()));
    let mut host = PluginHost::new(Limits::default()).unwrap();
    load(
        &mut host,
        "sms",
        config(
            &[("account_sid", "AC1")], // auth_token not set
            &[("api.sms-provider.test", &provider.base_url())],
        ),
        cache.path(),
    );
    let out = call(&host, "sms", "send", json!({"to": "+1", "body": "x"})).await;
    assert!(
        failed_reason(&out).contains("secret `auth_token` of plugin `sms` is not set (environment variable NURTURE_SECRET_SMS_AUTH_TOKEN)"),
        "{out:?}"
    );
    assert!(matches!(out, CallOutcome::Failed { .. }));

    let mut host = PluginHost::new(Limits::default()).unwrap();
    load(
        &mut host,
        "sms",
        config(
            &[("account_sid", "AC1"), ("auth_token", "t")],
            &[("api.sms-provider.test", &provider.base_url())],
        ),
        cache.path(),
    );
    let out = call(&host, "sms", "send", json!({"to": "+1", "body": "x"})).await;
    assert!(
        matches!(&out, CallOutcome::Retry { after, reason } if *after == Duration::from_secs(30) && reason.contains("429")),
        "{out:?}"
    );
}

/// A plugin in an infinite loop is interrupted at its deadline, and, on a single-threaded
/// runtime, the SMS plugin's calls made meanwhile complete long before that deadline:
/// the looping call yields at every epoch tick.
#[tokio::test(flavor = "current_thread")]
async fn limit_infinite_loop_is_stopped_at_its_deadline_while_another_plugin_keeps_running() {
    let cache = tempfile::tempdir().unwrap();
    let provider = sms_provider();
    let limits = Limits {
        deadline: Duration::from_millis(1500),
        ..Limits::default()
    };
    let host = misbehave_host(limits, &provider, cache.path());
    let started = Instant::now();
    let spin = async {
        let out = call(&host, "misbehave", "spin", json!({})).await;
        (out, started.elapsed())
    };
    let others = async {
        let mut done = Vec::new();
        for i in 0..5 {
            let out = call(
                &host,
                "sms",
                "send",
                json!({"to": "+1", "body": format!("#{i}")}),
            )
            .await;
            assert!(matches!(out, CallOutcome::Ok { .. }), "{out:?}");
            done.push(started.elapsed());
        }
        done
    };
    let ((spin_out, spin_took), sms_done) = tokio::join!(spin, others);
    assert!(
        failed_reason(&spin_out).contains("exceeded its 1500 ms deadline"),
        "{spin_out:?}"
    );
    assert!(spin_took >= Duration::from_millis(1500), "{spin_took:?}");
    assert!(
        spin_took < Duration::from_secs(5),
        "stopped late: {spin_took:?}"
    );
    let last = *sms_done.last().unwrap();
    assert!(
        last < Duration::from_millis(1500),
        "the SMS calls waited for the looping plugin: last finished at {last:?}"
    );
    assert_eq!(provider.requests().len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_memory_bomb_fails_at_the_limit_and_the_host_survives() {
    let cache = tempfile::tempdir().unwrap();
    let provider = sms_provider();
    let limits = Limits {
        memory_bytes: 32 << 20,
        ..Limits::default()
    };
    let host = misbehave_host(limits, &provider, cache.path());
    let out = call(&host, "misbehave", "memory-bomb", json!({})).await;
    assert!(
        matches!(&out, CallOutcome::Failed { reason } if reason.contains("exceeded its memory limit of 32 MiB")),
        "{out:?}"
    );
    // The same plugin and another one still work.
    let echo = call(&host, "misbehave", "echo", json!({"still": "alive"})).await;
    assert_eq!(
        echo,
        CallOutcome::Ok {
            output: json!({"still": "alive"})
        }
    );
    let sms = call(&host, "sms", "send", json!({"to": "+1", "body": "x"})).await;
    assert!(matches!(sms, CallOutcome::Ok { .. }), "{sms:?}");
}

/// A fresh instance finds nothing of an earlier call: its counter at 1, its data as
/// initialised, no scribbles on the heap or in grown memory. One call slot, so every call
/// reuses the same pool slot (its memory reset in place or handed back), also after a
/// memory bomb dirtied the slot past what is kept resident and after a trap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_gets_a_fresh_instance_even_in_a_reused_pool_slot() {
    let cache = tempfile::tempdir().unwrap();
    let provider = sms_provider();
    let limits = Limits {
        max_concurrent: 1,
        memory_bytes: 32 << 20,
        ..Limits::default()
    };
    let host = misbehave_host(limits, &provider, cache.path());
    let first = call(&host, "misbehave", "remember", json!({})).await;
    let CallOutcome::Ok { output } = &first else {
        panic!("{first:?}")
    };
    assert_eq!(output["calls"], 1, "{output}");
    assert_eq!(output["mark"], "initial-contents", "{output}");
    assert_eq!(output["grown_nonzero_bytes"], 0, "{output}");
    assert_eq!(output["scribbles_found"], 0, "{output}");
    for between in [
        "remember",
        "remember",
        "memory-bomb",
        "trap",
        "panic",
        "echo",
    ] {
        call(&host, "misbehave", between, json!({})).await;
        let again = call(&host, "misbehave", "remember", json!({})).await;
        assert_eq!(again, first, "after `{between}`");
    }
    // Calls in flight at once each get their own instance too.
    let host = misbehave_host(Limits::default(), &provider, cache.path());
    let many =
        futures::future::join_all((0..8).map(|_| call(&host, "misbehave", "remember", json!({}))))
            .await;
    assert!(many.iter().all(|o| *o == first), "{many:?}");
}

/// With every call slot busy, the next call is not started: a retry that says why, not
/// a wait or a failure. Its slot comes back when the call ends.
#[tokio::test(flavor = "current_thread")]
async fn limit_calls_beyond_the_instance_pool_are_retried_and_slots_come_back() {
    let cache = tempfile::tempdir().unwrap();
    let provider = sms_provider();
    let limits = Limits {
        max_concurrent: 1,
        deadline: Duration::from_millis(1500),
        ..Limits::default()
    };
    let host = misbehave_host(limits, &provider, cache.path());
    let spin = call(&host, "misbehave", "spin", json!({}));
    let other = async {
        // The looping call takes the only slot first (it yields at every epoch tick).
        tokio::time::sleep(Duration::from_millis(100)).await;
        call(&host, "misbehave", "echo", json!({"n": 1})).await
    };
    let (spin, other) = tokio::join!(spin, other);
    assert!(
        failed_reason(&spin).contains("exceeded its 1500 ms deadline"),
        "{spin:?}"
    );
    match &other {
        CallOutcome::Retry { reason, after } => {
            assert_eq!(*after, Duration::ZERO);
            assert_eq!(
                reason,
                "plugin `misbehave` not started: all 1 call slots of the plugin host are busy (no free component instances); retried later"
            );
        }
        o => panic!("expected a retry, got {o:?}"),
    }
    for n in 0..20 {
        let out = call(&host, "misbehave", "echo", json!({ "n": n })).await;
        assert_eq!(
            out,
            CallOutcome::Ok {
                output: json!({ "n": n })
            }
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_a_host_not_in_the_manifest_is_refused_before_any_connection() {
    let cache = tempfile::tempdir().unwrap();
    let provider = sms_provider();
    let host = misbehave_host(Limits::default(), &provider, cache.path());
    let out = call(&host, "misbehave", "forbidden-host", json!({})).await;
    assert_eq!(
        failed_reason(&out),
        "denied: host `evil.example.test` is not in plugin `misbehave`'s manifest (allowed: allowed.provider.test)"
    );
    assert!(provider.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_reading_another_plugins_secret_is_refused() {
    let cache = tempfile::tempdir().unwrap();
    let provider = sms_provider();
    let host = misbehave_host(Limits::default(), &provider, cache.path());
    // `auth_token` is the SMS plugin's secret, and it is set.
    let out = call(&host, "misbehave", "foreign-secret", json!({})).await;
    assert_eq!(
        out,
        CallOutcome::Failed {
            reason: "secret `auth_token` is not declared in plugin `misbehave`'s manifest".into()
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_a_panic_or_a_trap_fails_only_that_step() {
    let cache = tempfile::tempdir().unwrap();
    let provider = sms_provider();
    let host = misbehave_host(Limits::default(), &provider, cache.path());
    let panic = call(&host, "misbehave", "panic", json!({})).await;
    assert!(
        matches!(&panic, CallOutcome::Failed { reason } if reason.starts_with("plugin `misbehave` panicked: misbehave panicked on purpose (at tests/plugins/misbehave/src/lib.rs:")),
        "{panic:?}"
    );
    let trap = call(&host, "misbehave", "trap", json!({})).await;
    assert!(
        matches!(&trap, CallOutcome::Failed { reason } if reason.starts_with("plugin `misbehave` trapped")),
        "{trap:?}"
    );
    let sms = call(&host, "sms", "send", json!({"to": "+1", "body": "x"})).await;
    assert!(matches!(sms, CallOutcome::Ok { .. }), "{sms:?}");
    let echo = call(&host, "misbehave", "echo", json!(1)).await;
    assert_eq!(echo, CallOutcome::Ok { output: json!(1) });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_no_environment_and_no_filesystem_inside_the_sandbox() {
    std::env::set_var("NURTURE_TEST_LEAK", "must-not-be-seen");
    let cache = tempfile::tempdir().unwrap();
    let provider = sms_provider();
    let host = misbehave_host(Limits::default(), &provider, cache.path());
    let out = call(&host, "misbehave", "peek", json!({})).await;
    let CallOutcome::Ok { output } = out else {
        panic!("{out:?}")
    };
    assert_eq!(output["env"], json!([]), "{output}");
    assert!(
        output["fs"].as_str().unwrap().starts_with("Err"),
        "{output}"
    );
    // The clock is real (no skew): within a minute of ours.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        (output["clock"].as_i64().unwrap() - now).abs() < 60,
        "{output}"
    );
}

#[test]
fn limit_a_plugin_built_for_an_unknown_interface_version_is_rejected_at_load() {
    let cache = tempfile::tempdir().unwrap();
    let dir = dir_of("future-version");
    let mut host = PluginHost::new(Limits::default()).unwrap();
    let err = host
        .load(
            plugin_manifest(&dir),
            &dir,
            PluginConfig::default(),
            cache.path(),
        )
        .unwrap_err();
    assert!(
        matches!(err, PluginError::UnsupportedInterface { .. }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "plugin `future-version` was built for plugin interface 9.0.0, but this nurture supports 1.0.0; rebuild it against a nurture-plugin-sdk for interface 1.0.0"
    );
}

#[test]
fn a_component_that_disagrees_with_its_plugin_toml_is_refused_as_stale() {
    let cache = tempfile::tempdir().unwrap();
    let dir = dir_of("misbehave");
    let mut manifest = plugin_manifest(&dir);
    manifest.steps.remove("spin");
    let mut host = PluginHost::new(Limits::default()).unwrap();
    let err = host
        .load(manifest, &dir, PluginConfig::default(), cache.path())
        .unwrap_err();
    assert!(matches!(err, PluginError::Stale { .. }), "{err}");
    assert!(err.to_string().contains("rebuild the component"), "{err}");
}

#[test]
fn compiled_components_are_cached_on_disk_and_reused() {
    let cache = tempfile::tempdir().unwrap();
    let dir = dir_of("sms");
    for expect_cached in [false, true] {
        let mut host = PluginHost::new(Limits::default()).unwrap();
        host.load(
            plugin_manifest(&dir),
            &dir,
            PluginConfig::default(),
            cache.path(),
        )
        .unwrap();
        let summary = &host.loaded()[0];
        assert_eq!(summary.from_cache, expect_cached, "{summary:?}");
    }
    let files: Vec<_> = std::fs::read_dir(cache.path()).unwrap().collect();
    assert_eq!(
        files.len(),
        1,
        "one cached artifact per component and engine"
    );
}

/// The example project under `nurture run`: a demo request opens a ticket and adds the
/// contact to an ad audience; the booked meeting sends the SMS. All three through the
/// wasm plugins, to local servers playing the providers (routed in nurture.toml), with
/// secrets from the environment.
#[test]
fn demo_request_runs_all_three_plugins_end_to_end_under_nurture_run() {
    let built = built_plugins();
    let tmp = tempfile::tempdir().unwrap();
    let repo = crate::util::repo();
    crate::util::copy_project(&repo.join("workflows"), &tmp.path().join("workflows"));
    for (name, dir) in built
        .iter()
        .filter(|(n, _)| ["sms", "ads", "ticketing"].contains(&n.as_str()))
    {
        // Only the manifest and the component: nothing to build from.
        let to = tmp.path().join("plugins").join(name);
        std::fs::create_dir_all(&to).unwrap();
        std::fs::copy(dir.join("plugin.toml"), to.join("plugin.toml")).unwrap();
        let wasm = format!("{name}.wasm");
        std::fs::copy(dir.join(&wasm), to.join(&wasm)).unwrap();
    }
    let provider = RecordingServer::start(|r| {
        if r.path.contains("/tickets") {
            (201, r#"{"ticket":{"id":77}}"#.into())
        } else if r.path.contains("Messages.json") {
            (201, r#"{"sid":"SM9"}"#.into())
        } else {
            (200, "{}".into())
        }
    });
    let base = provider.base_url();
    let project = tmp.path().join("workflows");
    let mut toml = std::fs::read_to_string(project.join("nurture.toml")).unwrap();
    toml.push_str(&format!(
        "\n[plugins.sms.routes]\n\"api.sms-provider.test\" = \"{base}\"\n\
         [plugins.ads.routes]\n\"graph.ads-provider.test\" = \"{base}\"\n\
         [plugins.ticketing]\nroutes = {{ \"helpdesk.ticketing-provider.test\" = \"{base}\" }}\n\
         secrets_env = {{ api_token = \"HELPDESK_TOKEN\" }}\n"
    ));
    std::fs::write(project.join("nurture.toml"), toml).unwrap();
    let port = crate::util::free_port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_nurture"))
        .args([
            "run",
            project.to_str().unwrap(),
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .env("NURTURE_API_KEY", "test-key-0123456789abcdef0123456789")
        .env("NURTURE_SECRET_SMS_ACCOUNT_SID", "AC7")
        .env("NURTURE_SECRET_SMS_AUTH_TOKEN", "sms-token")
        .env("NURTURE_SECRET_ADS_ACCESS_TOKEN", "ads-token")
        .env("HELPDESK_TOKEN", "helpdesk-token")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let api = format!("http://127.0.0.1:{port}");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let outcome = rt.block_on(async {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !http.get(format!("{api}/healthz")).send().await.is_ok_and(|r| r.status() == 200) {
            if Instant::now() > deadline {
                return Err("nurture run did not start".to_string());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let post = |path: &str, body: Value| {
            http.post(format!("{api}{path}")).bearer_auth("test-key-0123456789abcdef0123456789").json(&body).send()
        };
        let r = post("/v1/contacts", json!({"id": "lee", "email": "lee@example.com", "first_name": "Lee", "phone": "+359888123456", "consent": "opted_in", "consent_sms": "opted_in"})).await.unwrap();
        assert_eq!(r.status(), 200);
        let r = post("/v1/events", json!([
            {"id": "e1", "type": "demo.requested", "contact": "lee"},
            {"id": "e2", "type": "meeting.booked", "contact": "lee"}
        ])).await.unwrap();
        assert_eq!(r.status(), 200);
        while provider.requests().len() < 3 {
            if Instant::now() > deadline {
                return Err(format!("providers saw only {:?}", provider.requests()));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    });
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    outcome.unwrap();
    assert!(
        status.success(),
        "nurture run exits 0 on SIGTERM: {status:?}"
    );

    let seen = provider.requests();
    let by_path = |p: &str| {
        seen.iter()
            .find(|r| r.path.contains(p))
            .unwrap_or_else(|| panic!("no request to {p}: {seen:#?}"))
    };
    let ticket = by_path("/api/v2/tickets");
    assert_eq!(
        ticket.header("authorization"),
        Some("Bearer helpdesk-token")
    );
    assert_eq!(
        ticket.json()["ticket"]["subject"],
        "Prepare a demo for Lee (lee@example.com)"
    );
    let key = ticket.header("idempotency-key").unwrap();
    assert_eq!(ticket.json()["ticket"]["external_id"], key);
    let ads = by_path("/v1/audiences/demo-requested/users");
    assert_eq!(ads.header("authorization"), Some("Bearer ads-token"));
    let sms = by_path("/Accounts/AC7/Messages.json");
    assert!(
        sms.text()
            .contains("Body=Hi+Lee%2C+see+you+at+the+demo+tomorrow"),
        "{}",
        sms.text()
    );
    // Three different outbox entries, three different keys; each sent once.
    let mut keys: Vec<&str> = seen
        .iter()
        .filter_map(|r| r.header("idempotency-key"))
        .collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 3, "{seen:#?}");
    assert_eq!(seen.len(), 3, "{seen:#?}");

    // The deliveries record each plugin's output.
    let db = format!("sqlite://{}", project.join("nurture.db").display());
    let deliveries = rt.block_on(async {
        let store = nurture_server::open_store(&db).await.unwrap();
        store.deliveries().await.unwrap()
    });
    let outputs: Vec<Value> = deliveries
        .iter()
        .filter(|d| d.record["channel"] == "plugin")
        .map(|d| json!({"plugin": d.record["plugin"], "output": d.record["output"]}))
        .collect();
    assert!(outputs.contains(&json!({"plugin": "ticketing/create-task", "output": {"ticket_id": 77, "queue": "sales-engineering"}})), "{outputs:#?}");
    assert!(
        outputs.contains(
            &json!({"plugin": "sms/send", "output": {"message_sid": "SM9", "to": "+359888123456"}})
        ),
        "{outputs:#?}"
    );
    assert_eq!(outputs.len(), 3, "{outputs:#?}");
}

/// `nurture plugin new` then `cargo test` in the new crate: the path the plugin guide
/// (docs/plugins.md) walks a new developer through.
#[test]
fn plugin_new_scaffolds_a_crate_whose_tests_pass() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("crm-sync");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_nurture"))
        .args(["plugin", "new", "crm-sync", "--dir", dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let manifest = plugin_manifest(&dir);
    assert_eq!(manifest.name, "crm-sync");
    assert_eq!(manifest.api, "1.0");
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| crate::util::repo().join("target"))
        .join("scaffold");
    let test = std::process::Command::new(std::env::var("CARGO").unwrap_or("cargo".into()))
        .args(["test", "--quiet"])
        .current_dir(&dir)
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&test.stdout);
    assert!(
        test.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&test.stderr)
    );
    assert!(stdout.contains("2 passed"), "{stdout}");
    // A bad name is refused with the rule.
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_nurture"))
        .args([
            "plugin",
            "new",
            "CRM Sync",
            "--dir",
            tmp.path().join("x").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("lowercase letters, digits and dashes"));
}
