//! Where the service binaries under test are: `MENSAGERIA_BIN_DIR`, or
//! `<workspace>/target/debug` (build them first with `cargo build --bins`);
//! the harness passes its release directory instead.

use std::{
    path::{Path, PathBuf},
    sync::Mutex,
    time::SystemTime,
};

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testkit lives inside the workspace")
        .to_owned()
}

/// The directory holding the service binaries: `MENSAGERIA_BIN_DIR`, or
/// `<workspace>/target/debug`.
pub fn bin_dir() -> PathBuf {
    std::env::var_os("MENSAGERIA_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/debug"))
}

/// The path of binary `name` in `dir`, with a warning (once per binary) when
/// a source file of the services is newer than it.
///
/// # Errors
/// With instructions when the binary has not been built.
pub fn bin_in(dir: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join(name);
    anyhow::ensure!(
        path.is_file(),
        "the `{name}` binary is missing at {}: run `cargo build --bins` first \
         (or set MENSAGERIA_BIN_DIR to the directory holding broker, proxy, server and client)",
        path.display()
    );
    warn_if_stale(&path);
    Ok(path)
}

/// The path of a service binary (`broker`, `proxy`, `server`, `client`) in
/// [`bin_dir`].
///
/// # Panics
/// With instructions when the binary has not been built.
pub fn bin(name: &str) -> PathBuf {
    bin_in(&bin_dir(), name).unwrap_or_else(|e| panic!("{e:#}"))
}

/// Prints a warning (once per binary) when a source file of the services or
/// the shared library (not their `tests/`) is newer than the binary: the
/// suite would be testing old code.
fn warn_if_stale(path: &Path) {
    static WARNED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
    let mut warned = WARNED.lock().unwrap_or_else(|e| e.into_inner());
    if warned.iter().any(|p| p == path) {
        return;
    }
    warned.push(path.to_owned());
    let Ok(built) = path.metadata().and_then(|m| m.modified()) else {
        return;
    };
    let root = workspace_root();
    let newest = ["shared", "services"]
        .iter()
        .filter_map(|d| newest_source(&root.join(d)))
        .max();
    if let Some((when, file)) = newest {
        if when > built {
            eprintln!(
                "warning: {} is older than {}; run `cargo build --bins` to test the current code",
                path.display(),
                file.display()
            );
        }
    }
}

fn newest_source(dir: &Path) -> Option<(SystemTime, PathBuf)> {
    let entries = std::fs::read_dir(dir).ok()?.flatten();
    let newest_of = |e: std::fs::DirEntry| {
        let p = e.path();
        if p.is_dir() {
            // Tests, benches and examples are not in the binaries.
            let skipped = ["tests", "benches", "examples"]
                .iter()
                .any(|t| p.ends_with(t));
            return if skipped { None } else { newest_source(&p) };
        }
        let source = p.extension().is_some_and(|x| x == "rs") || p.ends_with("Cargo.toml");
        let modified = e.metadata().and_then(|m| m.modified()).ok()?;
        source.then_some((modified, p))
    };
    entries.filter_map(newest_of).max()
}
