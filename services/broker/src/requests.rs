//! The request path: a client request is answered at once (bad input, MMI,
//! drain, overload, no worker), handed to the least recently used worker of
//! its service that has room ([`crate::dispatch`]), queued until one has,
//! or, for the default service without Majordomo workers, sent to the plain
//! REP backend ([`crate::rep`]).

use std::time::Instant;

use mensageria::{header::Header, mdp::ServiceName, otel, Status};
use tracing::debug;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::{
    client::{self, ClientKind, Inbound, Layout, Shape},
    dispatch::Sent,
    metrics::DropReason,
    replies::Answer,
    route::Route,
    router::{Pending, Router, State},
    services::{Queued, ServiceId},
    view::{byte_len, Views},
};

/// A request the broker accepted: what [`Router::accept`] needs once the
/// frames' views are no longer borrowed.
pub(crate) struct Accepted {
    pending: Pending,
    /// Its service and how many requests were waiting there.
    id: ServiceId,
    waiting: usize,
    /// For the REP backend (the default service without Majordomo workers).
    to_rep: bool,
    route_end: usize,
    body_at: usize,
    /// Bytes of the body frames (after any header rewrite).
    body_bytes: usize,
    /// A re-encoded header (a sampled request carries the broker's span).
    header: Option<Vec<u8>>,
}

impl Router {
    /// Handles one frontend message (client request or worker command).
    pub(crate) fn on_frontend(&mut self, frames: &mut [zmq::Message], draining: bool) {
        let now = Instant::now();
        let views = Views::of(frames);
        self.metrics.frontend_in.count(views.bytes());
        match client::classify(&views) {
            Inbound::Worker => {
                if let Some(addressed) = self.on_worker(&views, now) {
                    self.on_addressed(frames, addressed, now);
                }
            }
            Inbound::Malformed => {
                self.metrics.drop(DropReason::Malformed);
                debug!(frames = frames.len(), "Malformed frontend message dropped.");
            }
            Inbound::Client(layout) => {
                if let Some(accepted) = self.on_request(&views, now, draining, layout) {
                    self.accept(frames, accepted, now);
                }
            }
        }
    }

    /// Answers a request at once, or says how to accept it.
    fn on_request(
        &mut self,
        frames: &[&[u8]],
        now: Instant,
        draining: bool,
        layout: Layout,
    ) -> Option<Accepted> {
        let Layout {
            route_end,
            shape,
            service_at,
            body_at,
        } = layout;
        let route = &frames[..route_end];
        let mut span = tracing::Span::none();
        let mut budget_ms = None;
        let mut named: Option<ServiceName> = None;
        let mut header = None;
        let kind = match shape {
            Shape::Plain => ClientKind::Plain,
            Shape::Majordomo {
                version,
                leading_empty,
            } => ClientKind::Majordomo {
                version,
                leading_empty,
            },
            Shape::Header => match Header::decode(frames[body_at]) {
                Ok(Header::Request(mut h)) => {
                    budget_ms = h.budget_ms;
                    named = h.service;
                    // Parent-based: only a sampled request costs span work.
                    if otel::should_trace(h.trace.as_ref()) {
                        span = otel::child_span("server", "route", "requests", h.trace.as_ref());
                        if let Some(service) = &h.service {
                            span.set_attribute("mensageria.service", service.as_str().to_owned());
                        }
                        h.trace = otel::trace_context(&span).or(h.trace);
                        header = Some(Header::Request(h).encode());
                    }
                    ClientKind::Ours { id: h.id }
                }
                Ok(other) => {
                    let why = format!("expected a request header, got {}", kind_name(&other));
                    self.error_now(
                        route,
                        Answer::new(ClientKind::Plain, b"", Status::BadRequest, now),
                        &why,
                    );
                    return None;
                }
                Err(e) => {
                    let why = format!("invalid header: {e}");
                    self.error_now(
                        route,
                        Answer::new(ClientKind::Plain, b"", Status::BadRequest, now),
                        &why,
                    );
                    return None;
                }
            },
        };
        let name: &[u8] = match (service_at, &named) {
            (Some(i), _) => frames[i],
            (None, Some(n)) => n.as_bytes(),
            (None, None) => self.settings.default_service.as_bytes(),
        };
        // A name from a Majordomo frame is checked here; one from our header
        // was checked when the header decoded, the default at start-up.
        let checked = service_at.map_or(Ok(()), |_| mensageria::mdp::check_service_name(name));
        if let Err(e) = checked {
            let why = format!("invalid service name: {e}");
            self.error_now(
                route,
                Answer::new(kind, b"?", Status::BadRequest, now),
                &why,
            );
            return None;
        }
        if name.starts_with(b"mmi.") {
            // Our client's MMI arguments follow its header.
            let args_at = body_at + usize::from(matches!(kind, ClientKind::Ours { .. }));
            let body = self.mmi(name, frames.get(args_at..).unwrap_or_default());
            let answer = Answer::new(kind, name, Status::Ok, now);
            self.answer_now(route, &answer, &client::ok_body(kind, body));
            return None;
        }
        let Some(id) = self.services.find(name) else {
            let why = format!("no worker for service {}", String::from_utf8_lossy(name));
            self.error_now(
                route,
                Answer::new(kind, name, Status::Unavailable, now),
                &why,
            );
            return None;
        };
        let s = self.services.get_mut(id);
        s.requests += 1;
        s.metrics.requests.inc();
        let (workers, waiting) = (s.workers, s.waiting);
        let grace_open = s
            .no_workers_since
            .is_some_and(|t| now.saturating_duration_since(t) < self.settings.no_worker_grace);
        let why = if draining {
            Some((Status::Unavailable, "broker is shutting down"))
        } else if self.inflight.len() >= self.settings.max_inflight {
            Some((Status::Overloaded, "too many requests in flight"))
        } else if waiting >= self.settings.max_queue {
            Some((Status::Overloaded, "the service's queue is full"))
        } else {
            None
        };
        let pending = Pending {
            route: Route::new(route),
            client: kind,
            service: id,
            started: now,
            client_deadline: budget_ms.map(|ms| now + std::time::Duration::from_millis(ms.into())),
            state: State::Queued,
            span,
        };
        if let Some((status, why)) = why {
            self.reply_error(&pending, status, why);
            return None;
        }
        let to_rep = workers == 0 && !grace_open;
        if to_rep && id != self.default_service {
            let why = format!("no worker for service {}", String::from_utf8_lossy(name));
            self.reply_error(&pending, Status::Unavailable, &why);
            return None;
        }
        let rewritten = header.as_ref().map_or(0, Vec::len);
        let replaced = header.as_ref().map_or(0, |_| frames[body_at].len());
        Some(Accepted {
            pending,
            id,
            waiting,
            to_rep,
            route_end,
            body_at,
            body_bytes: byte_len(&frames[body_at..]) + rewritten - replaced,
            header,
        })
    }

    /// Accepts a request: the REP backend, a ready worker, or the queue.
    fn accept(&mut self, frames: &mut [zmq::Message], a: Accepted, now: Instant) {
        let (id, body_at, body_bytes) = (a.id, a.body_at, a.body_bytes);
        if let Some(h) = a.header {
            frames[body_at] = h.into();
        }
        if a.to_rep {
            let bytes = a.pending.route.byte_len() + body_bytes;
            return self.send_to_rep(frames, a.route_end, body_at, a.pending, bytes);
        }
        let corr = self
            .inflight
            .insert(now + self.settings.request_timeout, a.pending);
        let mut body = self.spare.pop().unwrap_or_default();
        body.extend(frames[body_at..].iter_mut().map(take));
        let mut gone = None;
        if a.waiting == 0 {
            if let Some(worker) = self.pop_ready(id) {
                match self.send_request(worker, corr, &mut body, body_bytes, now, now) {
                    Sent::Ok => return self.recycle(body),
                    Sent::Expired => {
                        // A budget of 0: late before it could go anywhere.
                        self.put_back_ready(id, worker);
                        self.recycle(body);
                        return self.expire_unsent(id, corr);
                    }
                    Sent::WorkerGone => gone = Some(worker),
                }
            }
        }
        self.services.get_mut(id).enqueue(Queued {
            corr,
            body,
            bytes: body_bytes,
            since: now,
        });
        if let Some(worker) = gone {
            self.remove_worker(worker, now, true, "worker unreachable");
        }
        self.dispatch(id, now);
    }
}

/// Moves a frame out, leaving an empty one (no allocation).
pub(crate) fn take(frame: &mut zmq::Message) -> zmq::Message {
    std::mem::replace(frame, zmq::Message::new())
}

fn kind_name(h: &Header) -> &'static str {
    match h {
        Header::Request(_) => "request",
        Header::Reply(_) => "reply",
        Header::Event(_) => "event",
    }
}
