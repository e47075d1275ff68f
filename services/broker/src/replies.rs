//! Answers to clients, in the protocol each spoke ([`crate::client`]):
//! workers' replies forwarded, and the answers the broker makes itself.

use std::time::Instant;

use mensageria::{
    header::{is_header, reply_status},
    otel,
    socket::{send_frames, send_head_body},
    Status,
};
use tracing::debug;

use crate::{
    client::{self, ClientKind},
    metrics::{DropReason, ServiceMetrics},
    requests::take,
    router::{Pending, Router},
    view::byte_len,
};

/// An answer the broker makes itself.
pub(crate) struct Answer<'a> {
    /// How the client spoke.
    kind: ClientKind,
    /// The service frame of a Majordomo answer.
    service: &'a [u8],
    /// Its status (for the metrics).
    status: Status,
    /// When the request arrived.
    started: Instant,
}

impl<'a> Answer<'a> {
    pub(crate) fn new(
        kind: ClientKind,
        service: &'a [u8],
        status: Status,
        started: Instant,
    ) -> Self {
        Answer {
            kind,
            service,
            status,
            started,
        }
    }
}

/// What the broker needs to know of a reply body it forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Reply {
    /// The status in its reply header; `ok` without one (a foreign worker).
    pub status: Status,
    /// Bytes of its frames.
    pub bytes: usize,
}

impl Reply {
    /// Reads the status and size of a reply body from its frames' views.
    pub(crate) fn of(body: &[&[u8]]) -> Self {
        let status = body
            .first()
            .filter(|f| is_header(f))
            .and_then(|f| reply_status(f))
            .unwrap_or(Status::Ok);
        Reply {
            status,
            bytes: byte_len(body),
        }
    }
}

impl Router {
    /// Forwards a worker's reply body to the client of `p` in its protocol;
    /// `now` (when the reply arrived) ends the request's duration.
    pub(crate) fn forward_reply(
        &self,
        p: &Pending,
        body: &mut [zmq::Message],
        reply: Reply,
        final_: bool,
        now: Instant,
    ) {
        let Reply { status, bytes } = reply;
        let s = self.services.get(p.service);
        let service = s.name.as_bytes();
        let bytes = p.route.byte_len() + bytes;
        let head = p
            .route
            .frames()
            .chain(client::reply_prefix(p.client, service, final_));
        let body = body.iter_mut().map(take);
        match send_head_body(&self.frontend, head, body, zmq::DONTWAIT) {
            Ok(()) if final_ => {
                self.metrics.frontend_out.count(bytes);
                s.metrics.reply(status);
                s.metrics
                    .duration
                    .observe(now.saturating_duration_since(p.started));
                if status != Status::Ok {
                    s.errors.set(s.errors.get() + 1);
                }
            }
            Ok(()) => self.metrics.frontend_out.count(bytes),
            Err(e) => {
                self.metrics.drop(DropReason::ClientGone);
                debug!(error.message = %e, "Reply for a client that is gone dropped.");
            }
        }
    }

    /// Answers the client of `p` with an error (timeout, overload, …).
    pub(crate) fn reply_error(&self, p: &Pending, status: Status, message: &str) {
        otel::set_error(&p.span, status.as_str());
        let s = self.services.get(p.service);
        s.errors.set(s.errors.get() + 1);
        let answer = Answer {
            kind: p.client,
            service: s.name.as_bytes(),
            status,
            started: p.started,
        };
        let body = client::error_body(p.client, status, message);
        self.send_answer(p.route.frames(), &answer, &body, &s.metrics);
    }

    /// Answers a request the broker did not accept (no pending entry), or an
    /// MMI request; counted under the `other` service label.
    pub(crate) fn answer_now(&self, route: &[&[u8]], answer: &Answer<'_>, body: &[Vec<u8>]) {
        let other = &self.metrics.services.other;
        other.requests.inc();
        self.send_answer(route.iter().copied(), answer, body, other);
    }

    /// [`Router::answer_now`] with an error body.
    pub(crate) fn error_now(&self, route: &[&[u8]], answer: Answer<'_>, why: &str) {
        let body = client::error_body(answer.kind, answer.status, why);
        self.answer_now(route, &answer, &body);
    }

    fn send_answer<'a>(
        &self,
        route: impl Iterator<Item = &'a [u8]> + Clone,
        answer: &Answer<'a>,
        body: &'a [Vec<u8>],
        metrics: &ServiceMetrics,
    ) {
        let bytes = route.clone().map(<[u8]>::len).sum::<usize>()
            + body.iter().map(Vec::len).sum::<usize>();
        let frames = route
            .chain(client::reply_prefix(answer.kind, answer.service, true))
            .chain(body.iter().map(Vec::as_slice));
        match send_frames(&self.frontend, frames, zmq::DONTWAIT) {
            Ok(()) => {
                self.metrics.frontend_out.count(bytes);
                self.count_reply(metrics, answer.status, answer.started);
            }
            Err(_) => self.metrics.drop(DropReason::ClientGone),
        }
    }

    fn count_reply(&self, m: &ServiceMetrics, status: Status, started: Instant) {
        m.reply(status);
        m.duration.observe(started.elapsed());
    }
}
