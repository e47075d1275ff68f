//! Shutdown signalling: SIGTERM (what Kubernetes and Docker send) and SIGINT
//! (Ctrl-C) cancel one root token; a second signal exits at once.

use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

/// Spawns a task that cancels `token` on the first SIGTERM/SIGINT and exits
/// the process with status 130 on the second.
///
/// # Errors
/// If the signal handlers cannot be installed.
pub fn install(token: CancellationToken) -> std::io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(signal = name, "Shutdown signal received, draining.");
        token.cancel();
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::warn!(signal = name, "Second signal received, exiting now.");
        std::process::exit(130);
    });
    Ok(())
}
