//! The plain REP backend, kept for the default service: a request goes out
//! as `[corr, route…, "", body…]` on the DEALER, which deals it round robin
//! to connected REP sockets (REP cannot say when it is ready, so this path
//! is not load-aware); REP echoes the envelope, so the reply comes back as
//! `[corr, route…, "", reply…]`.

use mensageria::{socket::send_frames, Status};
use tracing::debug;

use crate::{
    metrics::DropReason,
    requests::take,
    router::{Pending, Router, State},
};

impl Router {
    /// Sends a request of the default service to the REP backend:
    /// `[corr, route…, "", body…]`; REP workers echo the envelope.
    pub(crate) fn send_to_rep(
        &mut self,
        frames: &mut [zmq::Message],
        route_end: usize,
        body_at: usize,
        mut pending: Pending,
    ) {
        pending.state = State::Rep;
        let corr = self
            .inflight
            .insert(pending.started + self.settings.request_timeout, pending);
        let bytes = 8 + frames.iter().map(|f| f.len()).sum::<usize>();
        let corr_frame = zmq::Message::from(&corr.to_le_bytes()[..]);
        let (route, rest) = frames.split_at_mut(route_end);
        let out = std::iter::once(corr_frame)
            .chain(route.iter_mut().map(take))
            .chain(std::iter::once(zmq::Message::new()))
            .chain(rest[body_at - route_end..].iter_mut().map(take));
        match send_frames(&self.backend, out, zmq::DONTWAIT) {
            Ok(()) => {
                self.metrics.backend_out.count(bytes);
                self.metrics.inflight.set(self.inflight.len() as i64);
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
        let bytes: usize = frames.iter().map(|f| f.len()).sum();
        self.metrics.backend_in.count(bytes);
        let corr = frames
            .first()
            .and_then(|f| <[u8; 8]>::try_from(&f[..]).ok())
            .map(u64::from_le_bytes);
        let delim = frames
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
        self.metrics.inflight.set(self.inflight.len() as i64);
        self.forward_reply(&pending, &mut frames[delim + 1..], true);
    }
}
