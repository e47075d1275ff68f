//! The one supervisor of child processes, for the suites and the harness:
//!
//! - [`ProcBuilder`] starts a program with stdin closed and stdout and stderr
//!   captured line by line on threads (stderr optionally also written to a
//!   log file), optionally with a cleared environment and a fresh ready-file
//!   path (`READY_FILE`, read back with [`Proc::ready_record`]).
//! - Every child gets `PR_SET_PDEATHSIG` (SIGTERM): if the test run or the
//!   harness is killed outright (no destructor runs), its children are told
//!   to exit too. The kernel sends it when the *thread* that started the
//!   child ends, so start long-lived children from the thread that owns them.
//! - [`Proc`] is stopped by PID: dropping it sends SIGKILL (grace zero, the
//!   suites' default) or SIGTERM, then SIGKILL after its grace (the
//!   harness's), and reaps it. When dropped during a panic it prints the
//!   tail of its stderr.
//! - Every child is registered with [`crate::watchdog`] until reaped, so a
//!   test that overruns its time limit has its processes killed.
//! - [`Proc::mark`] and [`Proc::usage`] account CPU time and peak memory
//!   ([`crate::procfs`]) to a measured phase.
//!
//! Every wait has a deadline.

use std::{
    ffi::OsStr,
    fs::File,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Output, Stdio},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use mensageria::ready::ReadyRecord;
use serde_json::Value;

use crate::{
    capture::{Capture, Gave},
    procfs::{cpu_seconds, memory_mb},
    signal::{self, Signal},
    wait::poll_until,
    watchdog,
};

/// Environment variables a child started with [`ProcBuilder::clean_env`]
/// keeps; everything else (in particular the services' own configuration
/// variables) is cleared so the caller's environment cannot change a test.
const KEPT_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "TMPDIR",
    "LANG",
    "LC_ALL",
    "LD_LIBRARY_PATH",
];

/// How a child process is started (see the module documentation).
#[derive(Debug)]
pub struct ProcBuilder {
    name: String,
    cmd: Command,
    log_dir: Option<PathBuf>,
    ready_file: Option<PathBuf>,
    grace: Duration,
}

impl ProcBuilder {
    /// A child running `program`, called `name` in messages and reports.
    pub fn new(name: impl Into<String>, program: impl AsRef<OsStr>) -> ProcBuilder {
        ProcBuilder {
            name: name.into(),
            cmd: Command::new(program),
            log_dir: None,
            ready_file: None,
            grace: Duration::ZERO,
        }
    }

    /// Appends arguments.
    pub fn args<I, S>(mut self, args: I) -> ProcBuilder
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.cmd.args(args);
        self
    }

    /// Sets one environment variable.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> ProcBuilder {
        self.cmd.env(key, value);
        self
    }

    /// Sets environment variables.
    pub fn envs<I, K, V>(mut self, vars: I) -> ProcBuilder
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        self.cmd.envs(vars);
        self
    }

    /// Starts from an empty environment but for `PATH`, `HOME`, `TMPDIR`,
    /// the locale and `LD_LIBRARY_PATH`, plus `NO_COLOR=1`. Call before
    /// [`ProcBuilder::env`].
    pub fn clean_env(mut self) -> ProcBuilder {
        self.cmd.env_clear();
        for k in KEPT_ENV {
            if let Some(v) = std::env::var_os(k) {
                self.cmd.env(k, v);
            }
        }
        self.cmd.env("NO_COLOR", "1");
        self
    }

    /// Gives the child a fresh ready-file path in `READY_FILE` (a service
    /// writes its [`ReadyRecord`] there once ready; see [`Proc::ready_record`]).
    pub fn ready_file(mut self) -> ProcBuilder {
        let path = fresh_ready_file(&self.name);
        self.cmd.env("READY_FILE", &path);
        self.ready_file = Some(path);
        self
    }

    /// Also writes the child's stderr to a numbered log file in `dir`.
    pub fn log_to(mut self, dir: &Path) -> ProcBuilder {
        self.log_dir = Some(dir.to_owned());
        self
    }

    /// How long [`Proc::stop`] (and drop) waits after SIGTERM before SIGKILL;
    /// zero (the default) means drop sends SIGKILL at once.
    pub fn grace(mut self, grace: Duration) -> ProcBuilder {
        self.grace = grace;
        self
    }

    /// Starts the child.
    ///
    /// # Errors
    /// If the log file cannot be created or the program cannot be started.
    pub fn spawn(mut self) -> anyhow::Result<Proc> {
        let log = match &self.log_dir {
            None => None,
            Some(dir) => {
                static NEXT: AtomicU64 = AtomicU64::new(0);
                let n = NEXT.fetch_add(1, Ordering::Relaxed);
                let path = dir.join(format!("{n:04}-{}.log", file_safe(&self.name)));
                let file =
                    File::create(&path).with_context(|| format!("create {}", path.display()))?;
                Some((path, file))
            }
        };
        self.cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        {
            use std::os::unix::process::CommandExt as _;
            // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe and touches
            // no memory of ours; it runs in the child between fork and exec.
            #[allow(unsafe_code)]
            unsafe {
                self.cmd.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                    Ok(())
                });
            }
        }
        let mut child = watchdog::register(|| self.cmd.spawn())
            .with_context(|| format!("start {} ({:?})", self.name, self.cmd.get_program()))?;
        let pid = child.id();
        let (log_path, log_file) = log.unzip();
        let stdout = Capture::start(
            child.stdout.take().expect("piped"),
            format!("{}[{pid}]-stdout", self.name),
            None,
        );
        let stderr = Capture::start(
            child.stderr.take().expect("piped"),
            format!("{}[{pid}]-stderr", self.name),
            log_file,
        );
        Ok(Proc {
            name: self.name,
            child,
            pid,
            stdout,
            stderr,
            status: None,
            ready_file: self.ready_file,
            log: log_path,
            grace: self.grace,
            cpu_mark: 0.0,
        })
    }
}

/// A fresh ready-file path for a `name` process: unique in this process, in
/// a directory of the system temporary directory named after it.
fn fresh_ready_file(name: &str) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!("mensageria-ready-{}", std::process::id()));
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|e| panic!("create the ready-file directory {}: {e}", dir.display()));
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let path = dir.join(format!("{}-{n}.json", file_safe(name)));
    let _ = std::fs::remove_file(&path);
    path
}

/// `name` with everything but ASCII letters and digits replaced by `_`.
fn file_safe(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// Lines as one text, each `\n`-terminated.
fn joined(lines: Vec<String>) -> String {
    lines.iter().map(|l| format!("{l}\n")).collect()
}

/// What one process used in a measured phase.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Usage {
    /// Process label, e.g. `broker`, `server#2`, `harness (load)`.
    pub name: String,
    /// CPU seconds (user + system) since [`Proc::mark`].
    pub cpu_s: f64,
    /// Peak resident set (VmHWM) in MiB.
    pub peak_rss_mb: f64,
}

/// A started child process (see the module documentation).
#[derive(Debug)]
pub struct Proc {
    name: String,
    child: Child,
    pid: u32,
    stdout: Arc<Capture>,
    stderr: Arc<Capture>,
    status: Option<ExitStatus>,
    ready_file: Option<PathBuf>,
    log: Option<PathBuf>,
    grace: Duration,
    cpu_mark: f64,
}

impl Proc {
    /// The name given to [`ProcBuilder::new`].
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Sends `signal` unless the process has already been reaped.
    pub fn kill(&mut self, signal: Signal) {
        if self.try_status().is_none() {
            signal::send(self.pid, signal);
        }
    }

    /// The exit status, if the process has exited (reaps it).
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            if let Ok(Some(s)) = self.child.try_wait() {
                self.reaped(s);
            }
        }
        self.status
    }

    /// Whether it is still running (reaps it if it has exited).
    pub fn alive(&mut self) -> bool {
        self.try_status().is_none()
    }

    fn reaped(&mut self, s: ExitStatus) {
        self.status = Some(s);
        watchdog::unregister(self.pid);
    }

    /// SIGKILL and reap.
    fn kill_now(&mut self) {
        if self.try_status().is_none() {
            let _ = self.child.kill();
            if let Ok(s) = self.child.wait() {
                self.reaped(s);
            }
        }
    }

    /// Waits up to `timeout` for the process to exit and for its output to
    /// be fully read.
    ///
    /// # Panics
    /// If it is still running at the deadline (it is then killed).
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let Some(status) = poll_until(timeout, || self.try_status()) else {
            self.kill_now();
            panic!(
                "{} did not exit within {timeout:?} (killed it)\n{}",
                self.name,
                self.diagnostics()
            );
        };
        self.stdout.wait_eof(Duration::from_secs(5));
        self.stderr.wait_eof(Duration::from_secs(5));
        status
    }

    /// Waits for exit (see [`Proc::wait_exit`]) and returns status and output,
    /// one `\n`-terminated line per captured line.
    pub fn output(&mut self, timeout: Duration) -> Output {
        let status = self.wait_exit(timeout);
        Output {
            status,
            stdout: joined(self.stdout.lines()).into_bytes(),
            stderr: joined(self.stderr.lines()).into_bytes(),
        }
    }

    /// Waits for the service's ready record (the child must have been
    /// started with [`ProcBuilder::ready_file`]) and returns it.
    ///
    /// # Errors
    /// If the process exits (closes its stderr) or `timeout` passes first.
    pub fn try_ready_record(&self, timeout: Duration) -> anyhow::Result<ReadyRecord> {
        let Some(path) = &self.ready_file else {
            bail!("{} was started without a ready file", self.name);
        };
        // Until the record appears or the process has closed its stderr.
        let _ = poll_until(timeout, || {
            (path.exists() || self.stderr.eof()).then_some(())
        });
        if path.exists() {
            return ReadyRecord::read(path)
                .with_context(|| format!("{}\n{}", self.name, self.diagnostics()));
        }
        let gave = if self.stderr.eof() {
            Gave::Eof
        } else {
            Gave::Timeout
        };
        bail!(
            "{}: waiting for its ready record {}: {} after up to {timeout:?}\n{}",
            self.name,
            path.display(),
            gave.why("stderr"),
            self.diagnostics()
        );
    }

    /// [`Proc::try_ready_record`], panicking on failure.
    pub fn ready_record(&self, timeout: Duration) -> ReadyRecord {
        self.try_ready_record(timeout)
            .unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// Waits until `GET /healthz` on `http` answers 200 (a service that is
    /// up but may not be ready, so has no ready record yet).
    ///
    /// # Errors
    /// If the process exits or `timeout` passes first.
    pub fn try_wait_alive(&mut self, http: SocketAddr, timeout: Duration) -> anyhow::Result<()> {
        let answered = poll_until(timeout, || {
            if crate::ops::answers_ok(http, "/healthz") {
                return Some(Ok(()));
            }
            self.ensure_alive().err().map(Err)
        });
        answered.unwrap_or_else(|| {
            Err(anyhow::anyhow!(
                "{} did not answer /healthz on {http} within {timeout:?}\n{}",
                self.name,
                self.diagnostics()
            ))
        })
    }

    /// Waits for a JSON log line (`LOG_FORMAT=json`) on stderr that carries
    /// the field `field` and returns it parsed (a structured event found by
    /// its field, never by the wording of its message).
    ///
    /// # Panics
    /// If the process ends its stderr or the timeout passes first.
    pub fn wait_for_json_field(&self, field: &str, timeout: Duration) -> Value {
        let mut seen = 0;
        let r = self.stderr.wait_for(Instant::now() + timeout, |lines| {
            let found = lines[seen..].iter().find_map(|l| {
                serde_json::from_str::<Value>(l)
                    .ok()
                    .filter(|v| v.get(field).is_some())
            });
            seen = lines.len();
            found
        });
        r.unwrap_or_else(|gave| {
            panic!(
                "{}: waiting for a log event with {field:?}: {} after up to {timeout:?}\n{}",
                self.name,
                gave.why("stderr"),
                self.diagnostics()
            )
        })
    }

    /// Captured stdout lines so far.
    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout.lines()
    }

    /// Number of stdout lines so far.
    pub fn stdout_len(&self) -> usize {
        self.stdout.len()
    }

    /// Captured stderr lines so far.
    pub fn stderr_lines(&self) -> Vec<String> {
        self.stderr.lines()
    }

    /// The name, PID, exit status (if known) and the last stderr lines, for
    /// failure messages.
    pub fn diagnostics(&self) -> String {
        let mut s = format!(
            "--- {}[{}] (exit: {:?}), last stderr lines:\n",
            self.name, self.pid, self.status
        );
        if let Some(log) = &self.log {
            s = format!("{s}    (whole log: {})\n", log.display());
        }
        s.extend(self.stderr.tail(40).iter().map(|l| format!("    {l}\n")));
        s
    }

    /// Fails with [`Proc::diagnostics`] if the process has exited.
    ///
    /// # Errors
    /// If it is not running.
    pub fn ensure_alive(&mut self) -> anyhow::Result<()> {
        if self.alive() {
            return Ok(());
        }
        bail!("{} exited early\n{}", self.name, self.diagnostics())
    }

    /// Starts the CPU count of a measured phase now.
    pub fn mark(&mut self) {
        self.cpu_mark = cpu_seconds(self.pid).map_or(0.0, |(c, _)| c);
    }

    /// CPU seconds since [`Proc::mark`] and peak RSS so far.
    pub fn usage(&self) -> Usage {
        let cpu = cpu_seconds(self.pid).map_or(0.0, |(c, _)| c);
        Usage {
            name: self.name.clone(),
            cpu_s: (cpu - self.cpu_mark).max(0.0),
            peak_rss_mb: memory_mb(self.pid).map_or(0.0, |(_, h)| h),
        }
    }

    /// `(VmRSS, VmHWM)` in MiB now.
    pub fn memory(&self) -> Option<(f64, f64)> {
        memory_mb(self.pid)
    }

    /// Waits for the process to exit on its own, reading its CPU time from
    /// the zombie before reaping it (so the total includes its last moments)
    /// and its peak RSS while it runs. Stopped after `timeout`.
    ///
    /// # Errors
    /// If it does not exit in time.
    pub fn wait_with_usage(&mut self, timeout: Duration) -> anyhow::Result<(ExitStatus, Usage)> {
        let deadline = Instant::now() + timeout;
        let (mut cpu, mut hwm) = (0.0, 0.0f64);
        while let Some((c, state)) = cpu_seconds(self.pid) {
            cpu = c;
            if state == 'Z' || state == 'X' {
                break;
            }
            if let Some((_, h)) = memory_mb(self.pid) {
                hwm = hwm.max(h);
            }
            if Instant::now() >= deadline {
                self.stop();
                bail!("{} did not finish within {timeout:?}", self.name);
            }
            thread::sleep(Duration::from_millis(20));
        }
        let status = match self.status {
            Some(s) => s,
            None => {
                let s = self.child.wait()?;
                self.reaped(s);
                s
            }
        };
        self.stdout.wait_eof(Duration::from_secs(5));
        let usage = Usage {
            name: self.name.clone(),
            cpu_s: (cpu - self.cpu_mark).max(0.0),
            peak_rss_mb: hwm,
        };
        Ok((status, usage))
    }

    /// Sends SIGTERM (no wait).
    pub fn terminate(&mut self) {
        self.kill(Signal::Term);
    }

    /// Waits until `deadline` for it to exit, then SIGKILLs it.
    pub fn reap_by(&mut self, deadline: Instant) {
        let left = deadline.saturating_duration_since(Instant::now());
        if poll_until(left, || self.try_status()).is_none() {
            self.kill_now();
        }
    }

    /// SIGTERM, up to its grace to exit, then SIGKILL.
    pub fn stop(&mut self) {
        self.terminate();
        self.reap_by(Instant::now() + self.grace);
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.grace.is_zero() {
            self.kill_now();
        } else {
            self.stop();
        }
        // A service that stops cleanly removes it; a killed one does not.
        if let Some(path) = &self.ready_file {
            let _ = std::fs::remove_file(path);
        }
        if thread::panicking() {
            eprintln!("{}", self.diagnostics());
        }
    }
}

/// Stops every process at once: SIGTERM to all, then each gets until the
/// common deadline (the longest grace) before SIGKILL.
pub fn stop_all(procs: &mut [Proc]) {
    for p in procs.iter_mut() {
        p.terminate();
    }
    let grace = procs.iter().map(|p| p.grace).max().unwrap_or_default();
    let deadline = Instant::now() + grace;
    for p in procs.iter_mut() {
        p.reap_by(deadline);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> ProcBuilder {
        ProcBuilder::new("sh", "/bin/sh").args(["-c", script])
    }

    #[test]
    fn output_is_captured_line_by_line_with_the_exit_status() {
        let mut p = sh("echo out1; echo err1 >&2; echo out2; exit 3")
            .spawn()
            .unwrap();
        let out = p.output(Duration::from_secs(10));
        assert_eq!(out.status.code(), Some(3));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "out1\nout2\n");
        assert_eq!(String::from_utf8_lossy(&out.stderr), "err1\n");
        assert!(!p.alive());
    }

    #[test]
    fn a_clean_environment_keeps_only_the_basics_and_what_is_set() {
        let mut p = ProcBuilder::new("env", "/usr/bin/env")
            .clean_env()
            .env("ONLY_THIS", "1")
            .spawn()
            .unwrap();
        p.wait_exit(Duration::from_secs(10));
        let lines = p.stdout_lines();
        assert!(lines.iter().any(|l| l == "ONLY_THIS=1"), "{lines:?}");
        assert!(lines.iter().any(|l| l == "NO_COLOR=1"), "{lines:?}");
        for l in &lines {
            let key = l.split('=').next().unwrap_or_default();
            assert!(
                KEPT_ENV.contains(&key) || key == "ONLY_THIS" || key == "NO_COLOR",
                "unexpected variable {l}"
            );
        }
    }

    #[test]
    fn stop_sends_sigterm_then_sigkill_after_the_grace() {
        use std::os::unix::process::ExitStatusExt as _;
        // Ignores SIGTERM, so only SIGKILL ends it.
        let mut p = sh("trap '' TERM; echo up; while :; do sleep 1; done")
            .grace(Duration::from_millis(200))
            .spawn()
            .unwrap();
        let up = p
            .stdout
            .wait_for(Instant::now() + Duration::from_secs(10), |l| {
                (!l.is_empty()).then_some(())
            });
        assert_eq!(up, Ok(()), "{}", p.diagnostics());
        let started = Instant::now();
        p.stop();
        assert!(started.elapsed() >= Duration::from_millis(200));
        assert_eq!(p.try_status().and_then(|s| s.signal()), Some(libc::SIGKILL));
    }

    #[test]
    fn a_ready_file_that_never_appears_is_an_error_naming_the_cause() {
        let p = sh("exit 0").ready_file().spawn().unwrap();
        let err = p.try_ready_record(Duration::from_secs(10)).unwrap_err();
        assert!(format!("{err:#}").contains("closed"), "{err:#}");
    }

    #[test]
    fn stderr_is_teed_to_a_log_file() {
        let dir = crate::tempdir::TempDir::new("proc-test");
        let mut p = sh("echo logged >&2").log_to(dir.path()).spawn().unwrap();
        p.wait_exit(Duration::from_secs(10));
        let log = p.log.clone().unwrap();
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "logged\n");
    }

    #[test]
    fn wait_with_usage_reports_the_exit_and_cpu_of_a_finished_child() {
        let mut p = sh("i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done")
            .spawn()
            .unwrap();
        p.mark();
        let (status, usage) = p.wait_with_usage(Duration::from_secs(30)).unwrap();
        assert!(status.success());
        assert!(usage.cpu_s > 0.0, "{usage:?}");
        assert_eq!(usage.name, "sh");
    }
}
