//! The watchdog every test body runs under ([`with_timeout`]): a hard time
//! limit that kills the processes the body started when it passes. Children
//! are registered here by [`crate::process`] from start until reaped.

use std::{
    cell::Cell,
    sync::{
        atomic::{AtomicU64, Ordering},
        Mutex, MutexGuard,
    },
    thread,
    time::Duration,
};

use crate::signal::{self, Signal};

static NEXT_SCOPE: AtomicU64 = AtomicU64::new(1);
/// Live (not yet reaped) children: (watchdog scope, pid).
static LIVE: Mutex<Vec<(u64, u32)>> = Mutex::new(Vec::new());

thread_local! {
    static SCOPE: Cell<u64> = const { Cell::new(0) };
}

fn live() -> MutexGuard<'static, Vec<(u64, u32)>> {
    LIVE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `spawn` and registers the child it starts under the current
/// thread's scope, holding the registry lock so a watchdog firing meanwhile
/// never misses it.
pub(crate) fn register(
    spawn: impl FnOnce() -> std::io::Result<std::process::Child>,
) -> std::io::Result<std::process::Child> {
    let mut live = live();
    let child = spawn()?;
    live.push((SCOPE.with(Cell::get), child.id()));
    Ok(child)
}

/// Forgets a reaped child.
pub(crate) fn unregister(pid: u32) {
    live().retain(|(_, p)| *p != pid);
}

/// Runs a test body on its own thread with a hard time limit. When the limit
/// passes, every process the body started (and has not reaped) is killed
/// with SIGKILL and the test fails; a panic in the body fails the test with
/// that panic.
pub fn with_timeout<F>(limit: Duration, body: F)
where
    F: FnOnce() + Send + 'static,
{
    let scope = NEXT_SCOPE.fetch_add(1, Ordering::Relaxed);
    let name = thread::current().name().unwrap_or("test").to_owned();
    let handle = thread::Builder::new()
        .name(name.clone())
        .spawn(move || {
            SCOPE.with(|s| s.set(scope));
            body();
        })
        .expect("spawn the test thread");
    // Finished normally or by panic.
    if crate::wait::poll_until(limit, || handle.is_finished().then_some(())).is_some() {
        if let Err(panic) = handle.join() {
            std::panic::resume_unwind(panic);
        }
        return;
    }
    let pids: Vec<u32> = live()
        .iter()
        .filter(|(s, _)| *s == scope)
        .map(|(_, p)| *p)
        .collect();
    for pid in &pids {
        signal::send(*pid, Signal::Kill);
    }
    panic!("{name}: exceeded its time limit of {limit:?}; killed its processes {pids:?}");
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;
    use crate::process::ProcBuilder;

    #[test]
    fn an_overrun_kills_the_bodys_processes_and_fails() {
        let (tx, rx) = mpsc::channel();
        let r = std::panic::catch_unwind(move || {
            with_timeout(Duration::from_millis(300), move || {
                let mut p = ProcBuilder::new("sleep", "sleep")
                    .args(["30"])
                    .spawn()
                    .unwrap();
                tx.send(p.pid()).unwrap();
                // Outlives the limit; the watchdog kills the child, which ends this wait.
                p.wait_exit(Duration::from_secs(20));
            });
        });
        assert!(r.is_err(), "the overrun must fail the test");
        let pid = rx.recv().unwrap();
        let gone = crate::wait::poll_until(Duration::from_secs(10), || {
            let state = crate::procfs::cpu_seconds(pid).map(|(_, s)| s);
            matches!(state, None | Some('Z' | 'X')).then_some(())
        });
        assert!(gone.is_some(), "the child {pid} still runs");
    }

    #[test]
    fn a_body_within_its_limit_passes_and_its_panic_is_the_tests() {
        with_timeout(Duration::from_secs(10), || {});
        let r = std::panic::catch_unwind(|| {
            with_timeout(Duration::from_secs(10), || panic!("inner failure"));
        });
        let msg = r.unwrap_err();
        assert_eq!(msg.downcast_ref::<&str>(), Some(&"inner failure"));
    }
}
