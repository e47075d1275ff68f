//! The ready record: where a running service is, as JSON, for whoever started
//! it (tests, `make run`, a supervisor) instead of matching log text.
//!
//! With `--ready-file PATH` (`READY_FILE`), a service writes a [`ReadyRecord`]
//! to `PATH` once it is ready (every readiness check holds and the ops HTTP
//! server is bound). The file is written atomically (a temporary file in the
//! same directory, then renamed), so a reader sees either no file or a
//! complete record. A service that stops cleanly removes it; one that crashes
//! leaves it behind, so remove the file before starting a service with it.
//!
//! The path reaches [`crate::Service::new`] through [`scope`]: a task-local
//! value that [`crate::cli::service_main`] sets around a service's `run`, so
//! the services' own code does not pass it along.

use std::{
    collections::BTreeMap,
    io::Write as _,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

/// What a ready service writes to its ready file. The JSON field names are
/// this struct's field names; this is the one definition of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadyRecord {
    /// The service's name (`broker`, `proxy`, `server`, `client`).
    pub service: String,
    /// Its process id.
    pub pid: u32,
    /// The ops HTTP server's bound address (`/healthz`, `/readyz`, `/metrics`).
    pub http_addr: SocketAddr,
    /// Endpoints bound, by socket name (the `socket` metrics label), as
    /// actually bound: `tcp://127.0.0.1:43127` for `tcp://127.0.0.1:*`.
    pub bound: BTreeMap<String, Vec<String>>,
    /// Endpoints connected to, by socket name, as configured.
    pub connected: BTreeMap<String, Vec<String>>,
    /// What else the service says about itself (e.g. a server's `instance`),
    /// from [`crate::Service::ready_detail`].
    pub details: BTreeMap<String, String>,
}

impl ReadyRecord {
    /// Reads and parses a ready file.
    ///
    /// # Errors
    /// If the file cannot be read or is not a ready record.
    pub fn read(path: impl AsRef<Path>) -> anyhow::Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read(path)
            .with_context(|| format!("read the ready file {}", path.display()))?;
        serde_json::from_slice(&text)
            .with_context(|| format!("parse the ready file {}", path.display()))
    }

    /// Waits up to `timeout` for the ready file at `path` to appear, then
    /// reads it (for tests and tools that start a service).
    ///
    /// # Errors
    /// If the file has not appeared by then, or cannot be read.
    pub fn wait(path: impl AsRef<Path>, timeout: Duration) -> anyhow::Result<Self> {
        let path = path.as_ref();
        let deadline = Instant::now() + timeout;
        while !path.exists() {
            anyhow::ensure!(
                Instant::now() < deadline,
                "no ready file at {} after {timeout:?}",
                path.display()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        Self::read(path)
    }

    /// The first endpoint the socket `name` bound, if any.
    pub fn bound_endpoint(&self, name: &str) -> Option<&str> {
        self.bound.get(name)?.first().map(String::as_str)
    }

    /// Writes the record to `path` atomically: a temporary file next to it,
    /// flushed, then renamed over `path`.
    ///
    /// # Errors
    /// If the directory cannot be written.
    pub fn write(&self, path: impl AsRef<Path>) -> anyhow::Result<()> {
        let path = path.as_ref();
        let name = path
            .file_name()
            .with_context(|| format!("ready file {} has no file name", path.display()))?;
        let mut tmp_name = name.to_owned();
        tmp_name.push(format!(".tmp-{}", std::process::id()));
        let tmp = path.with_file_name(tmp_name);
        let json = serde_json::to_vec_pretty(self).context("encode the ready record")?;
        let result = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&json)?;
            f.write_all(b"\n")?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result.with_context(|| format!("write the ready file {}", path.display()))
    }
}

/// What the ready record will say, gathered while the service starts: the
/// endpoints its sockets bound and connected, by socket name (filled in by
/// [`crate::socket::SocketFactory`]; each endpoint listed once per socket
/// name however often a socket of that name is re-created), and its details.
#[derive(Debug, Clone, Default)]
pub struct ReadyLog {
    inner: Arc<Mutex<Gathered>>,
}

#[derive(Debug, Default)]
struct Gathered {
    bound: BTreeMap<String, Vec<String>>,
    connected: BTreeMap<String, Vec<String>>,
    details: BTreeMap<String, String>,
}

fn add(map: &mut BTreeMap<String, Vec<String>>, socket: &str, endpoint: &str) {
    let list = map.entry(socket.to_owned()).or_default();
    if !list.iter().any(|e| e == endpoint) {
        list.push(endpoint.to_owned());
    }
}

impl ReadyLog {
    /// Records that socket `socket` bound `endpoint`.
    pub fn bound(&self, socket: &str, endpoint: &str) {
        add(&mut self.lock().bound, socket, endpoint);
    }

    /// Records that socket `socket` connected to `endpoint`.
    pub fn connected(&self, socket: &str, endpoint: &str) {
        add(&mut self.lock().connected, socket, endpoint);
    }

    /// Sets the detail `key` to `value`.
    pub fn detail(&self, key: &str, value: String) {
        self.lock().details.insert(key.to_owned(), value);
    }

    /// The record of service `service` with ops address `http_addr` and what
    /// was gathered so far.
    pub fn record(&self, service: &str, http_addr: SocketAddr) -> ReadyRecord {
        let e = self.lock();
        ReadyRecord {
            service: service.to_owned(),
            pid: std::process::id(),
            http_addr,
            bound: e.bound.clone(),
            connected: e.connected.clone(),
            details: e.details.clone(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Gathered> {
        crate::health::lock(&self.inner)
    }
}

tokio::task_local! {
    static READY_FILE: Option<PathBuf>;
}

/// Runs `fut` (a service's `run`) with `path` as the ready file of the
/// [`crate::Service`] it creates.
pub async fn scope<F: std::future::Future>(path: Option<PathBuf>, fut: F) -> F::Output {
    READY_FILE.scope(path, fut).await
}

/// The ready file set by the enclosing [`scope`], if any.
pub(crate) fn current_path() -> Option<PathBuf> {
    READY_FILE.try_with(Clone::clone).ok().flatten()
}

/// Checks, at start-up, that a ready file can be created at `path`: its
/// directory exists.
///
/// # Errors
/// A message naming the path.
pub(crate) fn check_path(path: &Path) -> anyhow::Result<()> {
    anyhow::ensure!(
        path.file_name().is_some(),
        "ready file {} has no file name",
        path.display()
    );
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    anyhow::ensure!(
        dir.is_dir(),
        "ready file {}: directory {} does not exist",
        path.display(),
        dir.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("mensageria-ready-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn record_round_trips_with_the_documented_field_names() {
        let log = ReadyLog::default();
        log.bound("frontend", "tcp://127.0.0.1:43127");
        log.bound("frontend", "tcp://127.0.0.1:43127");
        log.bound("frontend", "ipc:///tmp/b");
        log.connected("pub", "tcp://proxy:5557");
        log.detail("instance", "a".into());
        log.detail("instance", "b".into());
        let r = log.record("broker", "127.0.0.1:9101".parse().unwrap());
        assert_eq!(r.pid, std::process::id());
        assert_eq!(
            r.bound["frontend"],
            ["tcp://127.0.0.1:43127", "ipc:///tmp/b"],
            "an endpoint is listed once, in the order bound"
        );
        assert_eq!(r.bound_endpoint("frontend"), Some("tcp://127.0.0.1:43127"));
        assert_eq!(r.bound_endpoint("backend"), None);
        let v: serde_json::Value = serde_json::to_value(&r).unwrap();
        let mut keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "bound",
                "connected",
                "details",
                "http_addr",
                "pid",
                "service"
            ],
            "README and docs/design.md name these fields"
        );
        assert_eq!(v["connected"]["pub"][0], "tcp://proxy:5557");
        assert_eq!(v["http_addr"], "127.0.0.1:9101");
        assert_eq!(v["details"]["instance"], "b", "the last value set");

        let dir = temp_dir("roundtrip");
        let path = dir.join("broker.json");
        r.write(&path).unwrap();
        assert_eq!(ReadyRecord::read(&path).unwrap(), r);
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            1,
            "no temporary file is left behind"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_files_and_paths_are_reported() {
        let dir = temp_dir("bad");
        let path = dir.join("x.json");
        let err = ReadyRecord::read(&path).unwrap_err();
        assert!(
            format!("{err:#}").contains("read the ready file"),
            "{err:#}"
        );
        std::fs::write(&path, b"{\"service\": \"proxy\"}").unwrap();
        let err = ReadyRecord::read(&path).unwrap_err();
        assert!(
            format!("{err:#}").contains("parse the ready file"),
            "{err:#}"
        );
        let err = ReadyRecord::wait(dir.join("never.json"), Duration::from_millis(50)).unwrap_err();
        assert!(err.to_string().contains("no ready file"), "{err}");

        assert!(check_path(&path).is_ok());
        assert!(
            check_path(Path::new("ready.json")).is_ok(),
            "current directory"
        );
        let err = check_path(&dir.join("missing/x.json")).unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
        let err = check_path(Path::new("/")).unwrap_err();
        assert!(err.to_string().contains("no file name"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn the_path_is_seen_only_inside_its_scope() {
        assert_eq!(current_path(), None);
        let p = PathBuf::from("/tmp/r.json");
        let seen = scope(Some(p.clone()), async { current_path() }).await;
        assert_eq!(seen, Some(p));
        assert_eq!(scope(None, async { current_path() }).await, None);
    }
}
