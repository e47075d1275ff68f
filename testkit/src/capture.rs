//! The lines of one output stream of a child process, read on a thread as
//! they come (so the child never blocks on a full pipe), kept in memory and
//! optionally appended to a log file as well.

use std::{
    fs::File,
    io::{BufRead, BufReader, Read, Write},
    sync::{Arc, Mutex, MutexGuard},
    thread,
    time::{Duration, Instant},
};

#[derive(Debug, Default)]
pub(crate) struct State {
    pub(crate) lines: Vec<String>,
    pub(crate) eof: bool,
}

/// Lines of one output stream, appended by a reader thread.
#[derive(Debug, Default)]
pub(crate) struct Capture {
    state: Mutex<State>,
}

/// Why [`Capture::wait_for`] gave up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Gave {
    /// The stream ended (the process closed it, usually by exiting).
    Eof,
    /// The deadline passed.
    Timeout,
}

impl Gave {
    pub(crate) fn why(self, stream: &str) -> String {
        match self {
            Gave::Eof => format!("its {stream} closed (exited?)"),
            Gave::Timeout => "timed out".to_owned(),
        }
    }
}

impl Capture {
    /// Starts reading `pipe` on a thread named `thread_name`; every line is
    /// also appended to `tee` when given.
    pub(crate) fn start<R: Read + Send + 'static>(
        pipe: R,
        thread_name: String,
        mut tee: Option<File>,
    ) -> Arc<Capture> {
        let cap = Arc::new(Capture::default());
        let c = cap.clone();
        thread::Builder::new()
            .name(thread_name)
            .spawn(move || {
                let mut reader = BufReader::new(pipe);
                let mut buf = Vec::new();
                loop {
                    buf.clear();
                    match reader.read_until(b'\n', &mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {
                            if let Some(f) = tee.as_mut() {
                                // A full disk loses the log file, never the capture.
                                let _ = f.write_all(&buf);
                            }
                            while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                                buf.pop();
                            }
                            let line = String::from_utf8_lossy(&buf).into_owned();
                            c.lock().lines.push(line);
                        }
                    }
                }
                c.lock().eof = true;
            })
            .expect("spawn an output reader thread");
        cap
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until `f` finds something in the lines, the stream ends or the
    /// deadline passes.
    pub(crate) fn wait_for<T>(
        &self,
        deadline: Instant,
        mut f: impl FnMut(&[String]) -> Option<T>,
    ) -> Result<T, Gave> {
        let timeout = deadline.saturating_duration_since(Instant::now());
        crate::wait::poll_until(timeout, || {
            let st = self.lock();
            match f(&st.lines) {
                Some(v) => Some(Ok(v)),
                None => st.eof.then_some(Err(Gave::Eof)),
            }
        })
        .unwrap_or(Err(Gave::Timeout))
    }

    /// Waits up to `timeout` for the stream to end; whether it did.
    pub(crate) fn wait_eof(&self, timeout: Duration) -> bool {
        self.wait_for(Instant::now() + timeout, |_| None::<()>) == Err(Gave::Eof)
    }

    pub(crate) fn eof(&self) -> bool {
        self.lock().eof
    }

    pub(crate) fn lines(&self) -> Vec<String> {
        self.lock().lines.clone()
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().lines.len()
    }

    pub(crate) fn tail(&self, n: usize) -> Vec<String> {
        let st = self.lock();
        st.lines[st.lines.len().saturating_sub(n)..].to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_split_teed_and_end_with_eof() {
        let dir = crate::tempdir::TempDir::new("capture-test");
        let log = dir.path().join("tee.log");
        let input: &[u8] = b"one\r\ntwo\nthree";
        let cap = Capture::start(
            input,
            "capture-test".into(),
            Some(File::create(&log).unwrap()),
        );
        assert!(cap.wait_eof(Duration::from_secs(5)));
        assert_eq!(cap.lines(), ["one", "two", "three"]);
        assert_eq!(cap.tail(2), ["two", "three"]);
        assert_eq!(std::fs::read(&log).unwrap(), input);
    }

    #[test]
    fn a_wait_reports_whether_the_stream_ended_or_the_deadline_passed() {
        let cap = Capture::start(&b"a\n"[..], "capture-test".into(), None);
        let r = cap.wait_for(Instant::now() + Duration::from_secs(5), |l| {
            l.iter().any(|x| x == "b").then_some(())
        });
        assert_eq!(r, Err(Gave::Eof));
        let (r, _w) = std::io::pipe().unwrap();
        let open = Capture::start(r, "capture-test".into(), None);
        let got = open.wait_for(Instant::now() + Duration::from_millis(20), |_| None::<()>);
        assert_eq!(got, Err(Gave::Timeout));
    }
}
