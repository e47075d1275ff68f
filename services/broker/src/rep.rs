//! The plain REP backend, kept for the default service: a request goes out
//! as `[corr, route…, "", body…]` on the DEALER, which deals it round robin
//! to connected REP sockets (REP cannot say when it is ready, so this path
//! is not load-aware); REP echoes the envelope, so the reply comes back as
//! `[corr, route…, "", reply…]`.

use mensageria::{socket::send_frames, Status};
use tracing::debug;

use crate::{
    metrics::DropReason,
    replies::Reply,
    requests::take,
    router::{Pending, Router, State},
    view::Views,
};

impl Router {
    /// Sends a request of the default service to the REP backend:
    /// `[corr, route…, "", body…]`; REP workers echo the envelope.
    /// `bytes` is the size of its route and body frames.
    pub(crate) fn send_to_rep(
        &mut self,
        frames: &mut [zmq::Message],
        route_end: usize,
        body_at: usize,
        mut pending: Pending,
        bytes: usize,
    ) {
        pending.state = State::Rep;
        let corr = self
            .inflight
            .insert(pending.started + self.settings.request_timeout, pending);
        let bytes = 8 + bytes;
        let corr_frame = zmq::Message::from(&corr.to_le_bytes()[..]);
        let (route, rest) = frames.split_at_mut(route_end);
        let out = std::iter::once(corr_frame)
            .chain(route.iter_mut().map(take))
            .chain(std::iter::once(zmq::Message::new()))
            .chain(rest[body_at - route_end..].iter_mut().map(take));
        match send_frames(&self.backend, out, zmq::DONTWAIT) {
            Ok(()) => {
                self.metrics.backend_out.count(bytes);
            }
            Err(e) => {
                // Nothing was queued: the first frame is where DEALER refuses.
                let pending = self.inflight.take(corr).expect("entry inserted just above");
                let why = if e == zmq::Error::EAGAIN {
                    "no worker available".to_owned()
                } else {
                    format!("backend send failed: {e}")
                };
                self.reply_error(&pending, Status::Unavailable, &why);
            }
        }
    }

    /// Handles a reply from the REP backend: `[corr, route…, "", reply…]`.
    pub(crate) fn on_rep_reply(&mut self, frames: &mut [zmq::Message]) {
        let views = Views::of(frames);
        self.metrics.backend_in.count(views.bytes());
        let corr = views
            .first()
            .and_then(|f| <[u8; 8]>::try_from(*f).ok())
            .map(u64::from_le_bytes);
        let delim = views
            .iter()
            .skip(1)
            .position(|f| f.is_empty())
            .map(|d| d + 1);
        let (Some(corr), Some(delim)) = (corr, delim) else {
            self.metrics.drop(DropReason::Malformed);
            debug!("Reply without a correlation frame or envelope dropped.");
            return;
        };
        let Some(pending) = self.inflight.take(corr) else {
            self.metrics.drop(DropReason::LateReply);
            debug!(corr, "Late or unknown reply dropped.");
            return;
        };
        let reply = Reply::of(&views[delim + 1..]);
        let now = std::time::Instant::now();
        self.forward_reply(&pending, &mut frames[delim + 1..], reply, true, now);
    }
}
