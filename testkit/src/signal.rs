//! The Unix signals the suites and the harness send, by PID.

/// A Unix signal sent to a child process (its value is the signal number).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum Signal {
    /// SIGTERM: drain and exit.
    Term = libc::SIGTERM,
    /// SIGINT.
    Int = libc::SIGINT,
    /// SIGKILL: die at once.
    Kill = libc::SIGKILL,
    /// SIGSTOP: freeze (until SIGCONT).
    Stop = libc::SIGSTOP,
    /// SIGCONT: resume after SIGSTOP.
    Cont = libc::SIGCONT,
}

/// Sends `signal` to `pid`; a PID that is not a positive process id (0
/// would mean "my process group") is ignored, as is a process that is gone.
pub fn send(pid: u32, signal: Signal) {
    let Ok(pid) = i32::try_from(pid) else { return };
    if pid <= 0 {
        return;
    }
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    #[allow(unsafe_code)]
    unsafe {
        libc::kill(pid, signal as i32);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    #[test]
    fn a_sent_signal_ends_the_process_with_it() {
        use std::os::unix::process::ExitStatusExt as _;
        let mut child = Command::new("sleep")
            .arg("30")
            .stdin(Stdio::null())
            .spawn()
            .expect("start sleep");
        send(child.id(), Signal::Term);
        let status = child.wait().expect("reap sleep");
        assert_eq!(status.signal(), Some(libc::SIGTERM));
    }
}
