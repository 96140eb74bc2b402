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
