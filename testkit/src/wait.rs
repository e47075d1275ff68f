//! Waiting for a condition with a deadline: the only way the suites and the
//! harness synchronise with the processes they start (no sleep-and-hope).

use std::{
    thread,
    time::{Duration, Instant},
};

/// How often [`poll_until`] asks again.
pub const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// Polls `f` every [`POLL_INTERVAL`] until it returns `Some`, for at most
/// `timeout`; `None` at the deadline (`f` is always asked at least once).
pub fn poll_until<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(POLL_INTERVAL);
    }
}

/// [`poll_until`], panicking at the deadline with `what`.
pub fn wait_until<T>(what: &str, timeout: Duration, f: impl FnMut() -> Option<T>) -> T {
    poll_until(timeout, f)
        .unwrap_or_else(|| panic!("timed out after {timeout:?} waiting for {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polls_until_the_condition_holds() {
        let mut calls = 0;
        let got = poll_until(Duration::from_secs(5), || {
            calls += 1;
            (calls == 3).then_some(calls)
        });
        assert_eq!(got, Some(3));
    }

    #[test]
    fn gives_up_at_the_deadline_after_asking_at_least_once() {
        let mut calls = 0;
        let start = Instant::now();
        let got = poll_until(Duration::from_millis(30), || {
            calls += 1;
            None::<()>
        });
        assert_eq!(got, None);
        assert!(calls >= 1);
        assert!(start.elapsed() >= Duration::from_millis(30));
    }
}
