//! Child processes the harness starts, stopped by PID (SIGTERM, then SIGKILL)
//! even on error or panic, and the `/proc` readings taken from them: CPU time
//! (`utime + stime` of `/proc/<pid>/stat`) and memory (`VmRSS`, `VmHWM` of
//! `/proc/<pid>/status`).

use std::{
    fs,
    io::Read,
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::atomic::{AtomicUsize, Ordering},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use serde::Serialize;

/// How long a process gets between SIGTERM and SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(3);

pub use testkit::procfs::{cpu_seconds, machine_busy_seconds, memory_mb, self_cpu_seconds};

/// What one process used.
#[derive(Debug, Clone, Serialize)]
pub struct Usage {
    /// Process label, e.g. `broker`, `server#2`, `harness (load)`.
    pub name: String,
    /// CPU seconds (user + system) during the measured phase.
    pub cpu_s: f64,
    /// Peak resident set (VmHWM) in MiB.
    pub peak_rss_mb: f64,
}

/// Signals `pid` (no-op for pid 0).
pub fn signal(pid: u32, sig: i32) {
    let Ok(pid) = i32::try_from(pid) else { return };
    if pid <= 0 {
        return;
    }
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    #[allow(unsafe_code)]
    unsafe {
        libc::kill(pid, sig);
    }
}

/// A started child process. Dropping it stops it (SIGTERM, then SIGKILL).
pub struct Proc {
    /// Label used in reports.
    pub name: String,
    child: Child,
    log: PathBuf,
    stdout: Option<JoinHandle<String>>,
    exited: Option<ExitStatus>,
    cpu_mark: f64,
    grace: Duration,
}

impl std::fmt::Debug for Proc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proc")
            .field("name", &self.name)
            .field("pid", &self.child.id())
            .finish()
    }
}

static SPAWNED: AtomicUsize = AtomicUsize::new(0);

impl Proc {
    /// Starts `program args…` with `envs` added (and `RUST_LOG=warn` unless
    /// given), stdin closed, stderr to a log file in `log_dir`, stdout
    /// captured (`capture_stdout`) or discarded.
    ///
    /// # Errors
    /// If the program cannot be started.
    pub fn spawn(
        name: &str,
        program: &Path,
        args: &[String],
        envs: &[(String, String)],
        log_dir: &Path,
        capture_stdout: bool,
    ) -> anyhow::Result<Proc> {
        let n = SPAWNED.fetch_add(1, Ordering::Relaxed);
        let safe: String = name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let log = log_dir.join(format!("{n:04}-{safe}.log"));
        let err = fs::File::create(&log).with_context(|| format!("create {}", log.display()))?;
        let mut cmd = Command::new(program);
        cmd.args(args)
            .stdin(Stdio::null())
            .stderr(err)
            .stdout(if capture_stdout {
                Stdio::piped()
            } else {
                Stdio::null()
            });
        if !envs.iter().any(|(k, _)| k == "RUST_LOG") {
            cmd.env("RUST_LOG", "warn");
        }
        for (k, v) in envs {
            cmd.env(k, v);
        }
        // Safety net for when the harness itself is killed (no Drop runs):
        // the child gets SIGTERM when the harness's main thread dies.
        {
            use std::os::unix::process::CommandExt as _;
            // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe and touches
            // no memory of ours; it runs in the child between fork and exec.
            #[allow(unsafe_code)]
            unsafe {
                cmd.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                    Ok(())
                });
            }
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("start {} ({})", name, program.display()))?;
        let stdout = child.stdout.take().map(|mut out| {
            std::thread::spawn(move || {
                let mut s = String::new();
                let _ = out.read_to_string(&mut s);
                s
            })
        });
        let cpu_mark = 0.0;
        Ok(Proc {
            name: name.to_owned(),
            child,
            log,
            stdout,
            exited: None,
            cpu_mark,
            grace: STOP_GRACE,
        })
    }

    /// Sets how long [`Proc::stop`] waits after SIGTERM (e.g. longer under valgrind).
    pub fn set_grace(&mut self, grace: Duration) {
        self.grace = grace;
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it is still running (reaps it if it has exited).
    pub fn alive(&mut self) -> bool {
        if self.exited.is_some() {
            return false;
        }
        match self.child.try_wait() {
            Ok(Some(s)) => {
                self.exited = Some(s);
                false
            }
            Ok(None) => true,
            Err(_) => false,
        }
    }

    /// Starts the CPU count of the measured phase now.
    pub fn mark(&mut self) {
        self.cpu_mark = cpu_seconds(self.pid()).map_or(0.0, |(c, _)| c);
    }

    /// CPU seconds since [`Proc::mark`] and peak RSS so far.
    pub fn usage(&self) -> Usage {
        let cpu = cpu_seconds(self.pid()).map_or(0.0, |(c, _)| c);
        let hwm = memory_mb(self.pid()).map_or(0.0, |(_, h)| h);
        Usage {
            name: self.name.clone(),
            cpu_s: (cpu - self.cpu_mark).max(0.0),
            peak_rss_mb: hwm,
        }
    }

    /// `(VmRSS, VmHWM)` in MiB now.
    pub fn memory(&self) -> Option<(f64, f64)> {
        memory_mb(self.pid())
    }

    /// Waits for the process to exit on its own, reading its CPU time from
    /// the zombie before reaping it (so the total includes its last moments)
    /// and its peak RSS while it runs. Killed after `timeout`.
    ///
    /// # Errors
    /// If it does not exit in time.
    pub fn wait_with_usage(&mut self, timeout: Duration) -> anyhow::Result<(ExitStatus, Usage)> {
        let deadline = Instant::now() + timeout;
        let pid = self.pid();
        let (mut cpu, mut hwm) = (0.0, 0.0f64);
        while let Some((c, state)) = cpu_seconds(pid) {
            cpu = c;
            if state == 'Z' || state == 'X' {
                break;
            }
            if let Some((_, h)) = memory_mb(pid) {
                hwm = hwm.max(h);
            }
            if Instant::now() >= deadline {
                self.stop();
                bail!("{} did not finish within {timeout:?}", self.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let status = self.child.wait()?;
        self.exited = Some(status);
        Ok((
            status,
            Usage {
                name: self.name.clone(),
                cpu_s: (cpu - self.cpu_mark).max(0.0),
                peak_rss_mb: hwm,
            },
        ))
    }

    /// Everything it wrote on stdout (after it exited; empty if not captured).
    pub fn take_stdout(&mut self) -> String {
        self.stdout
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default()
    }

    /// Its stderr log so far.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `n` lines of its stderr log, for error messages.
    pub fn log_tail(&self, n: usize) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Sends SIGTERM (no wait).
    pub fn terminate(&mut self) {
        if self.alive() {
            signal(self.pid(), libc::SIGTERM);
        }
    }

    /// Waits until `deadline` for it to exit, then SIGKILLs it.
    pub fn reap_by(&mut self, deadline: Instant) {
        while self.alive() {
            if Instant::now() >= deadline {
                signal(self.pid(), libc::SIGKILL);
                if let Ok(s) = self.child.wait() {
                    self.exited = Some(s);
                }
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM, up to its grace ([`STOP_GRACE`] by default) to exit, then SIGKILL.
    pub fn stop(&mut self) {
        self.terminate();
        self.reap_by(Instant::now() + self.grace);
    }

    /// Fails with the log tail if the process has exited.
    ///
    /// # Errors
    /// If it is not running.
    pub fn ensure_alive(&mut self) -> anyhow::Result<()> {
        if self.alive() {
            return Ok(());
        }
        bail!(
            "{} exited early ({:?}); its log ends with:\n{}",
            self.name,
            self.exited,
            self.log_tail(15)
        )
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Stops every process at once: SIGTERM to all, then each gets until the
/// common deadline before SIGKILL.
pub fn stop_all(procs: &mut [Proc]) {
    for p in procs.iter_mut() {
        p.terminate();
    }
    let grace = procs.iter().map(|p| p.grace).max().unwrap_or(STOP_GRACE);
    let deadline = Instant::now() + grace;
    for p in procs.iter_mut() {
        p.reap_by(deadline);
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago (distinct within this
/// run): [`testkit::ports::unused_port`].
///
/// # Errors
/// If no port can be found.
pub fn free_port() -> anyhow::Result<u16> {
    testkit::ports::try_unused_port().context("no free port found")
}

/// `tcp://127.0.0.1:<port>`.
pub fn tcp(port: u16) -> String {
    format!("tcp://127.0.0.1:{port}")
}

/// `GET path` on a service's ops server (the services' own client,
/// [`mensageria::ops::http_get`]); returns status code and body.
///
/// # Errors
/// On connection or protocol errors.
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    mensageria::ops::http_get(addr, path, Duration::from_secs(2))
}

/// Waits until `GET /readyz` on `port` answers 200, failing early if the
/// process exits.
///
/// # Errors
/// Not ready in `timeout`, or the process died.
pub fn wait_ready(p: &mut Proc, port: u16, timeout: Duration) -> anyhow::Result<()> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + timeout;
    loop {
        p.ensure_alive()?;
        let last = match http_get(addr, "/readyz") {
            Ok((200, _)) => return Ok(()),
            Ok((code, body)) => format!("{code} {body}"),
            Err(e) => e.to_string(),
        };
        if Instant::now() >= deadline {
            bail!(
                "{} not ready within {timeout:?} (last /readyz: {last}); log:\n{}",
                p.name,
                p.log_tail(15)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until something accepts TCP connections on `port` (for the
/// reference processes, which have no HTTP port).
///
/// # Errors
/// Nothing listening in `timeout`, or the process died.
pub fn wait_listening(p: &mut Proc, port: u16, timeout: Duration) -> anyhow::Result<()> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + timeout;
    loop {
        p.ensure_alive()?;
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("{} not listening on {port} within {timeout:?}", p.name);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Reads one metric from a service's `/metrics` (sum over label sets).
pub fn scrape(port: u16, name: &str) -> Option<f64> {
    let (code, body) = http_get(SocketAddr::from(([127, 0, 0, 1], port)), "/metrics").ok()?;
    (code == 200)
        .then(|| testkit::metrics::value(&body, name))
        .flatten()
}
