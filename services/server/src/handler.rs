//! Request handlers: the [`Handler`] trait the workers call, and the
//! built-in [`DemoHandler`].
//!
//! The demo protocol is text, so plain peers can use it too. The first
//! payload frame is read as `<op> [args]`:
//! - `work <duration> [text]`: sleep `duration` (simulated service time,
//!   capped by `MAX_WORK`), reply `text` or `done`; refused with `timeout`
//!   (without sleeping) when it cannot finish before the request's deadline;
//! - `whoami`: reply this server's instance id;
//! - `fail [message]`: reply status `error`;
//! - anything else: echo every payload frame back unchanged.

use std::time::{Duration, Instant};

use mensageria::Status;

/// A request as a handler sees it: the payload frames, header removed.
#[derive(Debug)]
pub struct Request<'a> {
    /// Payload frames.
    pub frames: &'a [&'a [u8]],
    /// When the client stops waiting (from the header's time budget), if known.
    pub deadline: Option<Instant>,
}

/// What a handler answers.
#[derive(Debug, PartialEq, Eq)]
pub struct Response {
    /// Outcome.
    pub status: Status,
    /// Reply payload frames (for an error: one frame with the message).
    pub frames: Vec<Vec<u8>>,
}

impl Response {
    /// A successful reply.
    pub fn ok(frames: Vec<Vec<u8>>) -> Self {
        Response {
            status: Status::Ok,
            frames,
        }
    }

    /// A failed reply with a message.
    pub fn error(status: Status, message: impl Into<String>) -> Self {
        Response {
            status,
            frames: vec![message.into().into_bytes()],
        }
    }
}

/// Answers requests. Called from several worker threads at once.
pub trait Handler: Send + Sync + 'static {
    /// Handles one request.
    fn handle(&self, request: &Request<'_>) -> Response;

    /// Whether `request` is quick: answered in microseconds, without
    /// sleeping, blocking I/O or locks held by slow code. A Majordomo server
    /// runs quick requests on its I/O thread, saving the hand-off to a
    /// handler thread and back; the others go to the handler threads. The
    /// default, `false`, is always safe.
    fn is_quick(&self, request: &Request<'_>) -> bool {
        let _ = request;
        false
    }
}

/// The built-in demo handler (see the module docs for its operations).
#[derive(Debug, Clone)]
pub struct DemoHandler {
    /// Returned by `whoami`.
    pub instance: String,
    /// Cap on `work` durations.
    pub max_work: Duration,
}

impl Handler for DemoHandler {
    fn handle(&self, request: &Request<'_>) -> Response {
        let Some(first) = request.frames.first() else {
            return Response::error(Status::BadRequest, "empty request");
        };
        let text = std::str::from_utf8(first).unwrap_or("");
        let (op, rest) = text.split_once(' ').unwrap_or((text, ""));
        match op {
            "work" => {
                let (dur, reply) = rest.split_once(' ').unwrap_or((rest, "done"));
                let Ok(d) = humantime::parse_duration(dur) else {
                    return Response::error(
                        Status::BadRequest,
                        format!("work: invalid duration {dur:?} (e.g. work 5ms)"),
                    );
                };
                if d > self.max_work {
                    return Response::error(
                        Status::BadRequest,
                        format!(
                            "work: {dur} exceeds the maximum of {}",
                            humantime::format_duration(self.max_work)
                        ),
                    );
                }
                if let Some(deadline) = request.deadline {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if d > left {
                        return Response::error(
                            Status::Timeout,
                            format!(
                                "work: {dur} cannot finish within the {}ms left before the deadline; not started",
                                left.as_millis()
                            ),
                        );
                    }
                }
                std::thread::sleep(d);
                Response::ok(vec![reply.as_bytes().to_vec()])
            }
            "whoami" if rest.is_empty() => Response::ok(vec![self.instance.as_bytes().to_vec()]),
            "fail" => Response::error(
                Status::Error,
                if rest.is_empty() {
                    "failed on request"
                } else {
                    rest
                },
            ),
            _ => Response::ok(request.frames.iter().map(|f| f.to_vec()).collect()),
        }
    }

    /// Everything but `work` (which sleeps) is quick.
    fn is_quick(&self, request: &Request<'_>) -> bool {
        request
            .frames
            .first()
            .is_none_or(|f| !(f.starts_with(b"work ") || &f[..] == b"work"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demo() -> DemoHandler {
        DemoHandler {
            instance: "srv-1".into(),
            max_work: Duration::from_millis(50),
        }
    }

    fn call(frames: &[&[u8]]) -> Response {
        demo().handle(&Request {
            frames,
            deadline: None,
        })
    }

    #[test]
    fn echoes_anything_else_unchanged() {
        assert_eq!(
            call(&[b"hello", b"\xff\x00"]),
            Response::ok(vec![b"hello".to_vec(), b"\xff\x00".to_vec()])
        );
        assert_eq!(
            call(&[b"workshop"]),
            Response::ok(vec![b"workshop".to_vec()])
        );
    }

    #[test]
    fn work_sleeps_and_replies() {
        let t = std::time::Instant::now();
        assert_eq!(call(&[b"work 5ms hi"]), Response::ok(vec![b"hi".to_vec()]));
        assert!(t.elapsed() >= Duration::from_millis(5));
        assert_eq!(call(&[b"work 1ms"]), Response::ok(vec![b"done".to_vec()]));
    }

    #[test]
    fn bad_work_is_a_bad_request() {
        assert_eq!(call(&[b"work soon"]).status, Status::BadRequest);
        assert_eq!(call(&[b"work 1h"]).status, Status::BadRequest);
        assert_eq!(call(&[]).status, Status::BadRequest);
    }

    #[test]
    fn work_that_cannot_meet_the_deadline_is_refused_without_running() {
        let frames: &[&[u8]] = &[b"work 40ms"];
        let t = Instant::now();
        let r = demo().handle(&Request {
            frames,
            deadline: Some(t + Duration::from_millis(10)),
        });
        assert_eq!(r.status, Status::Timeout, "{r:?}");
        assert!(t.elapsed() < Duration::from_millis(40), "it must not sleep");
        let r = demo().handle(&Request {
            frames,
            deadline: Some(Instant::now() + Duration::from_secs(5)),
        });
        assert_eq!(r, Response::ok(vec![b"done".to_vec()]));
    }

    #[test]
    fn only_work_is_slow() {
        let quick = |frames: &[&[u8]]| {
            demo().is_quick(&Request {
                frames,
                deadline: None,
            })
        };
        assert!(!quick(&[b"work 5ms"]));
        assert!(!quick(&[b"work"]));
        assert!(quick(&[b"workshop"]));
        assert!(quick(&[b"hello"]));
        assert!(quick(&[b"whoami"]));
        assert!(quick(&[b"fail boom"]));
        assert!(quick(&[]));
    }

    #[test]
    fn whoami_and_fail() {
        assert_eq!(call(&[b"whoami"]), Response::ok(vec![b"srv-1".to_vec()]));
        assert_eq!(
            call(&[b"fail boom"]),
            Response::error(Status::Error, "boom")
        );
    }
}
