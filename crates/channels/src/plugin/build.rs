//! Building plugins from source: `cargo build --release --target wasm32-wasip2` in a
//! plugin's folder, then the component is copied beside its `plugin.toml`. This is what
//! `nurture plugins build` runs, and what `nurture run` runs for a plugin whose component
//! is missing but whose source is there.

use std::path::{Path, PathBuf};
use std::process::Command;

use nurture_core::project::PluginManifest;

/// The Rust target plugins are built for.
pub const TARGET: &str = "wasm32-wasip2";

/// Why building a plugin from source failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The plugin's folder has no `Cargo.toml`.
    #[error("plugin `{plugin}` has no Cargo.toml in {dir}: nothing to build from")]
    NoSource {
        /// The plugin's name, as its `plugin.toml` gives it.
        plugin: String,
        /// Its folder, where `Cargo.toml` was looked for.
        dir: PathBuf,
    },
    /// A tool (`cargo`, `rustup`) could not be run, or failed.
    #[error("could not run {program}: {reason}")]
    Tool {
        /// The program as run.
        program: String,
        /// What went wrong.
        reason: String,
    },
    /// `cargo build` failed.
    #[error("building plugin `{plugin}` failed (cargo exit {status}):\n{stderr}")]
    Cargo {
        /// The plugin's name, as its `plugin.toml` gives it.
        plugin: String,
        /// Cargo's exit code.
        status: i32,
        /// What cargo printed on stderr.
        stderr: String,
    },
    /// Reading the package's name or copying the component failed.
    #[error("plugin `{plugin}`: {message}")]
    Other {
        /// The plugin's name, as its `plugin.toml` gives it.
        plugin: String,
        /// What failed.
        message: String,
    },
}

impl BuildError {
    /// Retrying the same build does not help: fix the source or the toolchain.
    pub fn is_retryable(&self) -> bool {
        false
    }
}

/// Where plugin builds put their artifacts: `NURTURE_PLUGIN_TARGET_DIR`, else
/// `$CARGO_TARGET_DIR/wasm-plugins`, else `<project>/.nurture/plugin-target`.
pub fn target_dir(project_root: &Path) -> PathBuf {
    if let Ok(d) = std::env::var("NURTURE_PLUGIN_TARGET_DIR") {
        return PathBuf::from(d);
    }
    if let Ok(d) = std::env::var("CARGO_TARGET_DIR") {
        return PathBuf::from(d).join("wasm-plugins");
    }
    project_root.join(".nurture").join("plugin-target")
}

/// Builds a plugin from source when its component is missing and its folder has the
/// sources (a `Cargo.toml`), as `nurture run` does at start; `announce` is called first,
/// since a build can take minutes. `Ok(None)` when there was nothing to build.
pub fn build_if_missing(
    manifest: &PluginManifest,
    dir: &Path,
    target_dir: &Path,
    announce: impl FnOnce(),
) -> Result<Option<PathBuf>, BuildError> {
    if component_path(manifest, dir).exists() || !dir.join("Cargo.toml").exists() {
        return Ok(None);
    }
    announce();
    ensure_target()?;
    build(manifest, dir, target_dir).map(Some)
}

/// Adds the wasm target with rustup when it is missing.
pub fn ensure_target() -> Result<(), BuildError> {
    let tool = |e: std::io::Error| BuildError::Tool {
        program: "rustup".into(),
        reason: e.to_string(),
    };
    let out = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map_err(tool)?;
    if String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.trim() == TARGET)
    {
        return Ok(());
    }
    let status = Command::new("rustup")
        .args(["target", "add", TARGET])
        .status()
        .map_err(tool)?;
    if !status.success() {
        return Err(BuildError::Tool {
            program: "rustup".into(),
            reason: format!("`rustup target add {TARGET}` failed"),
        });
    }
    Ok(())
}

/// The component file a manifest names, in its folder.
pub fn component_path(manifest: &PluginManifest, dir: &Path) -> PathBuf {
    dir.join(
        manifest
            .component
            .clone()
            .unwrap_or_else(|| format!("{}.wasm", manifest.name)),
    )
}

/// Builds one plugin and copies its component beside `plugin.toml`; returns its path.
pub fn build(
    manifest: &PluginManifest,
    dir: &Path,
    target_dir: &Path,
) -> Result<PathBuf, BuildError> {
    let plugin = manifest.name.clone();
    let cargo_toml = dir.join("Cargo.toml");
    let text = std::fs::read_to_string(&cargo_toml).map_err(|_| BuildError::NoSource {
        plugin: plugin.clone(),
        dir: dir.to_path_buf(),
    })?;
    let package: toml::Table = toml::from_str(&text).map_err(|e| BuildError::Other {
        plugin: plugin.clone(),
        message: format!("{}: {e}", cargo_toml.display()),
    })?;
    let crate_name = package
        .get("package")
        .and_then(|p| p.get("name"))
        .and_then(|n| n.as_str())
        .ok_or_else(|| BuildError::Other {
            plugin: plugin.clone(),
            message: format!("{} has no [package] name", cargo_toml.display()),
        })?
        .replace('-', "_");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(&cargo)
        .args(["build", "--release", "--quiet", "--target", TARGET])
        .arg("--manifest-path")
        .arg(&cargo_toml)
        .arg("--target-dir")
        .arg(target_dir)
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTFLAGS")
        .output()
        .map_err(|e| BuildError::Tool {
            program: cargo.clone(),
            reason: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(BuildError::Cargo {
            plugin,
            status: out.status.code().unwrap_or(-1),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    let artifact = target_dir
        .join(TARGET)
        .join("release")
        .join(format!("{crate_name}.wasm"));
    let dest = component_path(manifest, dir);
    // Copied beside the destination, then renamed over it: a process loading the plugin
    // meanwhile (another worker starting, a test) reads the old file or the new one,
    // never one half written.
    let partial = dest.with_extension(format!("wasm.partial-{}", std::process::id()));
    std::fs::copy(&artifact, &partial)
        .and_then(|_| std::fs::rename(&partial, &dest))
        .map_err(|e| {
            let _ = std::fs::remove_file(&partial);
            BuildError::Other {
                plugin,
                message: format!("copying {} to {}: {e}", artifact.display(), dest.display()),
            }
        })?;
    Ok(dest)
}
