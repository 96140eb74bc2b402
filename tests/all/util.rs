use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("runtime/ has a parent")
        .to_path_buf()
}

/// Runs the `nurture` binary built for these tests, from the repository root.
pub fn nurture(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nurture"))
        .args(args)
        .current_dir(repo())
        .output()
        .expect("run nurture")
}

/// Renders diagnostics with paths relative to the repository root (stable snapshots).
pub fn render_relative(loaded: &nurture::project::Loaded) -> String {
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
pub fn fresh_postgres() -> Option<String> {
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
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut c)
            .await
            .unwrap();
    });
    let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
    Some(format!("{base}/{name}"))
}
