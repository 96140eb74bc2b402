//! Issue 23, item 1: the OpenAPI 3.1 document of the HTTP API (`schema/openapi.json`,
//! `GET /openapi.json`, `nurture openapi`): committed as generated, served as committed,
//! listing exactly the routes the server answers, accepted by an independent validator
//! (`openapi-spec-validator`, installed by `scripts/test`), and describing what the
//! server really answers (real answers checked against its schemas with `jsonschema`).

use std::path::Path;
use std::process::{Command, Output};

use serde_json::{json, Value};

use crate::sec_server::{project, Serve};
use crate::util::{nurture, repo, rt};

const KEY: &str = "test-key-0123456789abcdef0123456789";
const REGENERATE: &str = "cargo run -p nurture -- openapi > schema/openapi.json";

fn committed() -> String {
    std::fs::read_to_string(repo().join("schema/openapi.json")).expect("schema/openapi.json")
}

#[test]
fn the_committed_document_is_what_the_code_generates() {
    let generated = nurture_server::openapi::json();
    assert!(
        committed() == generated,
        "schema/openapi.json is stale: regenerate it with `{REGENERATE}` and commit it"
    );
    let out = nurture(&["openapi"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), generated);
    let help = nurture(&["openapi", "--help"]);
    assert!(text(&help).contains("/openapi.json"), "{}", text(&help));
    let doc: Value = serde_json::from_str(&generated).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
}

/// A `/v1` operation carries the key's security requirement and the shared problems;
/// the tracking routes and `/openapi.json` need no key.
#[test]
fn security_and_problems_are_documented_where_they_apply() {
    let doc: Value = serde_json::from_str(&nurture_server::openapi::json()).unwrap();
    let schemes = doc["components"]["securitySchemes"].as_object().unwrap();
    assert_eq!(
        schemes.keys().collect::<Vec<_>>(),
        ["apiKey", "basic", "bearer"]
    );
    assert_eq!(schemes["apiKey"]["name"], "X-Api-Key");
    for (method, path) in nurture_server::openapi::operations() {
        let op = &doc["paths"][&path][method.to_lowercase()];
        let keyed = path.starts_with("/v1/") || path == "/metrics";
        assert_eq!(op["security"].is_array(), keyed, "{method} {path}");
        if keyed {
            for status in ["401", "500", "503"] {
                let content = &op["responses"][status]["content"]["application/problem+json"];
                assert_eq!(
                    content["schema"]["$ref"], "#/components/schemas/Problem",
                    "{method} {path} {status}"
                );
            }
        }
    }
}

/// The route registrations of the server crate: only [`nurture_server::api_routes`]
/// registers API routes (from their annotations, so each is in the document); a plain
/// `.route(` anywhere else in the crate must be a dashboard route (`/ui`).
#[test]
fn no_route_is_registered_outside_the_documented_list() {
    let src = repo().join("crates/server/src");
    let mut files = Vec::new();
    walk(&src, &mut files);
    let mut ui_routes = 0;
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for (i, line) in text.lines().enumerate() {
            let Some(at) = line.find(".route(") else {
                continue;
            };
            let rest = &line[at + ".route(".len()..];
            assert!(
                rest.starts_with("\"/ui"),
                "{}:{}: a route outside `api_routes()` is not in the OpenAPI document: \
                 register it there with `routes!(handler)` and a `#[utoipa::path]`\n{line}",
                f.display(),
                i + 1
            );
            ui_routes += 1;
        }
    }
    assert!(ui_routes > 5, "the scan found the dashboard's routes");
}

fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            walk(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// A running server serves the committed document without the key, answers every
/// documented operation with something else than its "no route" 404 or a 405, and its
/// real answers match the documented schemas.
#[test]
fn the_server_serves_the_document_and_every_operation_in_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("p");
    project(&dir, "");
    let url = format!("sqlite://{}", tmp.path().join("p.db").display());
    let mut serve = Serve::start(&dir, Some(&url));
    let answers = rt().block_on(async {
        let http = reqwest::Client::new();
        serve.ready(&http).await;
        let r = http
            .get(format!("{}/openapi.json", serve.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(
            r.headers()["content-type"],
            "application/json",
            "{:?}",
            r.headers()
        );
        assert!(
            r.text().await.unwrap() == committed(),
            "served != committed"
        );

        for (method, path) in nurture_server::openapi::operations() {
            let concrete = path
                .split('/')
                .map(|s| if s.starts_with('{') { "x" } else { s })
                .collect::<Vec<_>>()
                .join("/");
            let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
            let mut req = http
                .request(m, format!("{}{concrete}", serve.base))
                .bearer_auth(KEY);
            if method == "POST" {
                // Harmless bodies: an empty batch, or one that is refused.
                req = req.header("content-type", "application/json").body("[]");
            }
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            let body = r.text().await.unwrap();
            assert!(
                status != 405 && !(status == 404 && body.contains("no route")),
                "{method} {path} is documented but not routed: {status} {body}"
            );
        }
        answers(&serve, &http).await
    });
    check_answers(&answers);
}

/// Real answers of the reads a client needs, with the schema each should match.
async fn answers(serve: &Serve, http: &reqwest::Client) -> Vec<(String, Value)> {
    let contact = json!({"id": "c1", "email": "c1@example.test", "first_name": "Ada"});
    let (st, imported) = serve.post(http, "/v1/contacts", &contact).await;
    assert_eq!(st, 200, "{imported}");
    let event = json!([{"type": "signup.done", "contact": "c1", "data": {"plan": "pro"}}]);
    let (st, posted) = serve.post(http, "/v1/events", &event).await;
    assert_eq!(st, 200, "{posted}");
    let get = async |path: &str| -> Value {
        let r = http
            .get(format!("{}{path}", serve.base))
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        r.json().await.unwrap()
    };
    // (`nurture serve` runs no scheduler: the run is started by hand.)
    let start = json!({"workflow": "hello", "contact": "c1", "reason": "openapi test"});
    let (st, started) = serve.post(http, "/v1/runs", &start).await;
    assert_eq!(st, 201, "{started}");
    let runs = get("/v1/runs?contact=c1").await;
    let run_id = runs["runs"][0]["id"].as_str().unwrap().to_string();
    let r = http
        .get(format!("{}/v1/contacts/nobody", serve.base))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let problem: Value = r.json().await.unwrap();
    vec![
        ("ContactsAnswer".into(), imported),
        ("EventsAnswer".into(), posted),
        ("Started".into(), started),
        ("RunsPage".into(), runs),
        ("ContactsPage".into(), get("/v1/contacts?limit=1").await),
        ("ContactStory".into(), get("/v1/contacts/c1").await),
        (
            "ContactEventsPage".into(),
            get("/v1/contacts/c1/events").await,
        ),
        (
            "RunWithJournal".into(),
            get(&format!("/v1/runs/{run_id}")).await,
        ),
        (
            "Explanation".into(),
            get(&format!("/v1/runs/{run_id}/explain")).await,
        ),
        ("Health".into(), get("/healthz").await),
        ("Problem".into(), problem),
    ]
}

/// Validates each answer against its schema of the committed document (JSON Schema
/// 2020-12, Python's `jsonschema`); a deliberately wrong answer must be refused.
fn check_answers(answers: &[(String, Value)]) {
    let Some(python) = validator() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let cases = tmp.path().join("cases.json");
    let mut all: Vec<Value> = answers
        .iter()
        .map(|(schema, v)| json!({"schema": schema, "instance": v, "valid": true}))
        .collect();
    assert!(
        answers[4].1["contacts"][0]["id"].is_string(),
        "{}",
        answers[4].1
    );
    // Must fail: a contact without its id, a run with an unknown status.
    let mut no_id = answers[4].1.clone();
    no_id["contacts"][0].as_object_mut().unwrap().remove("id");
    all.push(json!({"schema": "ContactsPage", "instance": no_id, "valid": false}));
    let mut bad_status = answers[3].1.clone();
    bad_status["runs"][0]["status"] = json!("sleeping");
    all.push(json!({"schema": "RunsPage", "instance": bad_status, "valid": false}));
    std::fs::write(&cases, serde_json::to_string(&all).unwrap()).unwrap();
    let out = Command::new(&python)
        .arg("-c")
        .arg(CHECK_ANSWERS)
        .arg(repo().join("schema/openapi.json"))
        .arg(&cases)
        .output()
        .expect("run python3");
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("checked {}", all.len())),
        "{}",
        text(&out)
    );
}

const CHECK_ANSWERS: &str = r##"
import json, sys
import jsonschema
doc = json.load(open(sys.argv[1]))
cases = json.load(open(sys.argv[2]))
bad = []
for c in cases:
    schema = {"$ref": "#/components/schemas/" + c["schema"], "components": doc["components"]}
    v = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
    errors = [e.message for e in v.iter_errors(c["instance"])]
    if (not errors) != c["valid"]:
        bad.append((c["schema"], c["valid"], errors[:3], json.dumps(c["instance"])[:400]))
for b in bad:
    print("MISMATCH", *b)
print("checked", len(cases))
sys.exit(1 if bad else 0)
"##;

/// `python3` with `openapi_spec_validator` (installed by `scripts/test`); `None` (the
/// checks skipped with a note) outside it, a failure where the suite must be complete
/// (`NURTURE_REQUIRE_BROWSER`, `NURTURE_REQUIRE_POSTGRES` or `CI` set).
fn validator() -> Option<String> {
    let python = std::env::var("NURTURE_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = Command::new(&python)
        .args(["-c", "import openapi_spec_validator, jsonschema"])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Some(python);
    }
    let required = ["NURTURE_REQUIRE_BROWSER", "NURTURE_REQUIRE_POSTGRES", "CI"]
        .iter()
        .any(|v| std::env::var_os(v).is_some());
    assert!(
        !required,
        "{python} lacks openapi-spec-validator: scripts/test installs it \
         (python3 -m pip install openapi-spec-validator)"
    );
    eprintln!("note: OpenAPI validator checks skipped (run ./scripts/test to include them)");
    None
}

fn validate(python: &str, file: &Path) -> Output {
    Command::new(python)
        .args(["-m", "openapi_spec_validator"])
        .arg(file)
        .output()
        .expect("run openapi_spec_validator")
}

/// An independent validator accepts the committed document and refuses broken copies.
#[test]
fn openapi_spec_validator_accepts_the_document_and_refuses_broken_ones() {
    let Some(python) = validator() else {
        return;
    };
    let file = repo().join("schema/openapi.json");
    let out = validate(&python, &file);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("OK"), "{}", text(&out));

    let doc: Value = serde_json::from_str(&committed()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let mut no_title = doc.clone();
    no_title["info"].as_object_mut().unwrap().remove("title");
    let mut bad_ref = doc.clone();
    bad_ref["paths"]["/v1/contacts"]["get"]["responses"]["200"]["content"]["application/json"]
        ["schema"] = json!({"$ref": "#/components/schemas/NoSuchSchema"});
    let mut undeclared = doc.clone();
    let params = &mut undeclared["paths"]["/v1/runs/{id}"]["get"]["parameters"];
    *params = json!([]);
    for (name, broken) in [
        ("no-title", no_title),
        ("bad-ref", bad_ref),
        ("undeclared-path-parameter", undeclared),
    ] {
        let f = tmp.path().join(format!("{name}.json"));
        std::fs::write(&f, serde_json::to_string_pretty(&broken).unwrap()).unwrap();
        let out = validate(&python, &f);
        assert!(
            !out.status.success(),
            "{name}: accepted a broken document: {}",
            text(&out)
        );
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}
