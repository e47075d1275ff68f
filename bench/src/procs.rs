//! Child processes the harness starts, on the test kit's supervisor
//! ([`testkit::process`]): stopped by PID (SIGTERM, then SIGKILL after
//! [`STOP_GRACE`]) even on error or panic, stderr in a log file of the run,
//! CPU time and memory read from `/proc` ([`testkit::procfs`]).

use std::{
    ffi::OsStr,
    net::{SocketAddr, TcpStream},
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};

use testkit::process::ProcBuilder;
pub use testkit::process::{stop_all, Proc, Usage};
pub use testkit::procfs::{cpu_seconds, machine_busy_seconds, memory_mb, self_cpu_seconds};

/// How long a process gets between SIGTERM and SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(3);

/// Starts `program args…` called `name` with `envs` added (and `RUST_LOG=warn`
/// unless given), stdin closed, stdout captured, stderr captured and written
/// to a numbered log file in `log_dir`; stopped with [`STOP_GRACE`].
///
/// # Errors
/// If the program cannot be started.
pub fn spawn(
    name: &str,
    program: impl AsRef<OsStr>,
    args: &[String],
    envs: &[(String, String)],
    log_dir: &Path,
) -> anyhow::Result<Proc> {
    ProcBuilder::new(name, program)
        .args(args)
        .env("RUST_LOG", "warn")
        .envs(envs.iter().map(|(k, v)| (k, v)))
        .log_to(log_dir)
        .grace(STOP_GRACE)
        .spawn()
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
            bail!("{} not listening on {port} within {timeout:?}", p.name());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
