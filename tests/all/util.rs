use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root.
pub(crate) fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("crates/cli/ is two levels down")
        .to_path_buf()
}

/// Runs the `nurture` binary built for these tests, from the repository root.
pub(crate) fn nurture(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nurture"))
        .args(args)
        .current_dir(repo())
        .output()
        .expect("run nurture")
}

/// Renders diagnostics with paths relative to the repository root (stable snapshots).
pub(crate) fn render_relative(loaded: &nurture_core::project::Loaded) -> String {
    let root = repo();
    loaded
        .diagnostics
        .iter()
        .map(|d| {
            let src = loaded.sources.get(&d.file).map(String::as_str);
            let mut d = d.clone();
            if let Ok(rel) = d.file.strip_prefix(&root) {
                d.file = rel.to_path_buf();
            }
            d.render(src)
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A fresh, empty Postgres database for one test, when the suite has Postgres
/// (`./scripts/test` always does: it sets NURTURE_REQUIRE_POSTGRES and starts a cluster).
pub(crate) fn fresh_postgres() -> Option<String> {
    let admin = match std::env::var("NURTURE_TEST_DATABASE_URL") {
        Ok(u) if !u.is_empty() => u,
        _ => {
            assert!(
                std::env::var("NURTURE_REQUIRE_POSTGRES").is_err(),
                "NURTURE_REQUIRE_POSTGRES is set but NURTURE_TEST_DATABASE_URL is not"
            );
            eprintln!("note: Postgres tests skipped (run ./scripts/test to include them)");
            return None;
        }
    };
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "nurture_test_{}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use sqlx::Connection;
        let mut c = sqlx::PgConnection::connect(&admin)
            .await
            .expect("connect to the test cluster");
        // On a cluster of the user's own (DATABASE_URL), the databases of earlier runs
        // would pile up: the first test of a run drops those whose process has ended.
        static SWEPT: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
        SWEPT
            .get_or_init(|| async {
                let names: Vec<String> = sqlx::query_scalar(
                    "SELECT datname FROM pg_database WHERE datname LIKE 'nurture\\_test\\_%'",
                )
                .fetch_all(&mut c)
                .await
                .unwrap_or_default();
                for stale in names.iter().filter(|n| !test_process_alive(n)) {
                    let drop = format!("DROP DATABASE IF EXISTS \"{stale}\" WITH (FORCE)");
                    let _ = sqlx::query(&drop).execute(&mut c).await;
                }
            })
            .await;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut c)
            .await
            .unwrap();
    });
    let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
    Some(format!("{base}/{name}"))
}

/// Whether the test process that made database `name` (`nurture_test_PID_...`) still
/// runs; when unsure, yes (its database stays).
fn test_process_alive(name: &str) -> bool {
    let pid = name
        .strip_prefix("nurture_test_")
        .and_then(|rest| rest.split('_').next())
        .and_then(|p| p.parse::<u32>().ok());
    match pid {
        Some(pid) if std::path::Path::new("/proc/self").exists() => {
            std::path::Path::new(&format!("/proc/{pid}")).exists()
        }
        _ => true,
    }
}

/// One request seen by a [`RecordingServer`].
#[derive(Debug, Clone)]
pub(crate) struct Recorded {
    pub(crate) method: String,
    pub(crate) path: String,
    /// Header names lower-cased.
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl Recorded {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

type Answer = dyn Fn(&Recorded) -> (u16, String) + Send + Sync;

/// A real local HTTP/1.1 server playing a third-party provider: records every request
/// and answers what `answer` says (status, JSON body).
pub(crate) struct RecordingServer {
    pub(crate) port: u16,
    pub(crate) seen: std::sync::Arc<std::sync::Mutex<Vec<Recorded>>>,
}

impl RecordingServer {
    pub(crate) fn start(
        answer: impl Fn(&Recorded) -> (u16, String) + Send + Sync + 'static,
    ) -> Self {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen: std::sync::Arc<std::sync::Mutex<Vec<Recorded>>> = Default::default();
        let answer: std::sync::Arc<Answer> = std::sync::Arc::new(answer);
        let s = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let (s, answer) = (s.clone(), answer.clone());
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    loop {
                        let mut request_line = String::new();
                        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
                            return;
                        }
                        let mut parts = request_line.split_whitespace();
                        let method = parts.next().unwrap_or("").to_string();
                        let path = parts.next().unwrap_or("").to_string();
                        let mut headers = Vec::new();
                        let mut len = 0usize;
                        loop {
                            let mut line = String::new();
                            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                                return;
                            }
                            let line = line.trim_end();
                            if line.is_empty() {
                                break;
                            }
                            if let Some((k, v)) = line.split_once(':') {
                                let k = k.trim().to_ascii_lowercase();
                                if k == "content-length" {
                                    len = v.trim().parse().unwrap_or(0);
                                }
                                headers.push((k, v.trim().to_string()));
                            }
                        }
                        let mut body = vec![0; len];
                        if reader.read_exact(&mut body).is_err() {
                            return;
                        }
                        let rec = Recorded {
                            method,
                            path,
                            headers,
                            body,
                        };
                        let (status, text) = answer(&rec);
                        s.lock().unwrap().push(rec);
                        let reply = format!(
                            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{text}",
                            text.len()
                        );
                        if stream.write_all(reply.as_bytes()).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        RecordingServer { port, seen }
    }

    pub(crate) fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub(crate) fn requests(&self) -> Vec<Recorded> {
        self.seen.lock().unwrap().clone()
    }
}

/// Builds the first-party and test plugins to wasm (once per test process) with
/// `nurture_channels::plugin::build`, the code behind `nurture plugins build`. Each component lands
/// beside its `plugin.toml`: `plugins/<name>/` and `tests/plugins/<name>/`.
pub(crate) fn built_plugins() -> &'static [(String, PathBuf)] {
    static BUILT: std::sync::OnceLock<Vec<(String, PathBuf)>> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| {
        use nurture_channels::plugin::build;
        build::ensure_target().expect("the wasm32-wasip2 target");
        let target = std::env::var("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|_| repo().join("target"))
            .join("wasm-plugins");
        let dirs = [
            "plugins/sms",
            "plugins/ads",
            "plugins/ticketing",
            "tests/plugins/misbehave",
            "tests/plugins/future-version",
        ];
        dirs.iter()
            .map(|d| {
                let dir = repo().join(d);
                let manifest = plugin_manifest(&dir);
                build::build(&manifest, &dir, &target)
                    .unwrap_or_else(|e| panic!("building {d}: {e}"));
                (manifest.name, dir)
            })
            .collect()
    })
}

/// A plugin folder's parsed `plugin.toml`.
pub(crate) fn plugin_manifest(dir: &Path) -> nurture_core::project::PluginManifest {
    toml::from_str(&std::fs::read_to_string(dir.join("plugin.toml")).unwrap()).unwrap()
}

/// A free TCP port on 127.0.0.1.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Copies a project folder, leaving out its runtime state (store, `.nurture/`, outbox).
pub(crate) fn copy_project(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with("nurture.db") || name == ".nurture" || name == "outbox" {
            continue;
        }
        if e.path().is_dir() {
            copy_project(&e.path(), &to.join(&name));
        } else {
            std::fs::copy(e.path(), to.join(&name)).unwrap();
        }
    }
}

/// The example project copied to `tmp/project`, its plugin folder pointed at the
/// repository's `plugins/`, with `extra_toml` appended to its `nurture.toml`.
pub(crate) fn example_project(tmp: &Path, extra_toml: &str) -> PathBuf {
    let dir = tmp.join("project");
    copy_project(&repo().join("workflows"), &dir);
    let toml = std::fs::read_to_string(dir.join("nurture.toml"))
        .unwrap()
        .replace(
            "plugin_dirs = [\"../plugins\"]",
            &format!("plugin_dirs = [\"{}\"]", repo().join("plugins").display()),
        );
    std::fs::write(dir.join("nurture.toml"), format!("{toml}\n{extra_toml}\n")).unwrap();
    dir
}

/// A single-threaded Tokio runtime for one test.
pub(crate) fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A two-worker Tokio runtime, for tests whose tasks must run side by side.
pub(crate) fn rt_multi() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Requests counted per Idempotency-Key.
pub(crate) type Seen = std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>;

/// A tiny real HTTP server that answers every request with `response` (a whole HTTP/1.1
/// response) and counts requests per Idempotency-Key.
pub(crate) fn http_receiver(response: &'static [u8]) -> (u16, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen: Seen = Default::default();
    let s = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let s = s.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut key = None;
                let mut len = 0usize;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let l = line.trim_end().to_ascii_lowercase();
                    if l.is_empty() {
                        break;
                    }
                    if let Some(v) = l.strip_prefix("idempotency-key:") {
                        key = Some(v.trim().to_string());
                    }
                    if let Some(v) = l.strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; len];
                let _ = reader.read_exact(&mut body);
                if let Some(k) = key {
                    *s.lock().unwrap().entry(k).or_default() += 1;
                }
                let _ = stream.write_all(response);
            });
        }
    });
    (port, seen)
}

/// Starts the API (key `k`) on `engine`; returns its base URL.
pub(crate) async fn api(engine: std::sync::Arc<nurture_engine::Engine>) -> String {
    use std::sync::Arc;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = nurture_server::router(nurture_server::AppState::new(
        engine,
        Arc::new("k".into()),
        Arc::new(tokio::sync::Notify::new()),
        Arc::new(nurture_channels::email::Signer::new(b"test-tracking-key")),
    ));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    base
}

/// `project` deployed (version 1 of every workflow) on the store at `url` at `start`,
/// with an engine over it: the start of a live run on a virtual clock.
pub(crate) async fn deployed(
    project: std::sync::Arc<nurture_core::project::Project>,
    url: &str,
    start: chrono::DateTime<chrono::Utc>,
) -> (
    std::sync::Arc<dyn nurture_store::Store>,
    std::sync::Arc<nurture_engine::Engine>,
) {
    let store = nurture_server::open_store(url).await.unwrap();
    let engine = std::sync::Arc::new(nurture_engine::Engine::new(project.clone(), store.clone()));
    let plan = nurture_engine::deploy::plan(&*store, &project, "test", start)
        .await
        .unwrap();
    nurture_engine::deploy::apply(&engine, &plan, start)
        .await
        .unwrap();
    (store, engine)
}

/// Delivers every outbox entry due at `now` through `store`, as a deliverer records it
/// (claims apply the send limits and suppressions).
pub(crate) async fn deliver_recorded(
    store: &dyn nurture_store::Store,
    now: chrono::DateTime<chrono::Utc>,
) {
    use nurture_store::OutboxOutcome;
    loop {
        let due = store.pending_outbox(now, 1000).await.unwrap();
        if due.is_empty() {
            return;
        }
        let done: Vec<(String, OutboxOutcome)> = due
            .iter()
            .map(|e| {
                let record = serde_json::json!({"id": e.key});
                (e.key.clone(), OutboxOutcome::Delivered { record })
            })
            .collect();
        for r in store.complete_outbox_many(&done, now).await.unwrap() {
            r.unwrap();
        }
    }
}

/// Waits (10 s at most) until a session of `pool`'s database waits for a lock that
/// `which` (a condition on `pg_locks`) describes, or `task` has ended without one;
/// whether one waits.
pub(crate) async fn until_a_lock_waits<T>(
    pool: &sqlx::PgPool,
    which: &str,
    task: &tokio::task::JoinHandle<T>,
) -> bool {
    let sql = format!("SELECT EXISTS (SELECT 1 FROM pg_locks WHERE NOT granted AND {which})");
    for _ in 0..500 {
        let waits: bool = sqlx::query_scalar(&sql).fetch_one(pool).await.unwrap();
        if waits || task.is_finished() {
            return waits;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    false
}
