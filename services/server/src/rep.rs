//! A plain REP worker (`WORKER_PROTOCOL=rep`): one thread owning a REP socket
//! connected to every broker's backend, answering one request at a time.
//! The broker deals requests to REP workers round-robin (REP cannot say when
//! it is ready), and only for its default service.

use std::time::{Duration, Instant};

use mensageria::{
    health::Heartbeat,
    socket::{recv_frames, send_frames},
    Endpoints, Status,
};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::worker::{Processor, WorkerSettings};

/// How long a draining worker waits for one more request already on the
/// wire before it disconnects.
const DRAIN_QUIET: Duration = Duration::from_millis(10);
/// The longest a draining worker stays connected refusing requests.
const DRAIN_REFUSE_MAX: Duration = Duration::from_millis(100);

/// Everything a REP worker thread is made of.
pub struct RepSettings {
    /// The REP socket, connected to `brokers`.
    pub socket: zmq::Socket,
    /// The endpoints it is connected to (to disconnect from when draining).
    pub brokers: Endpoints,
    /// Request processing.
    pub worker: WorkerSettings,
    /// This thread's liveness heartbeat.
    pub heartbeat: Heartbeat,
    /// Cancelled at shutdown.
    pub shutdown: CancellationToken,
    /// The shutdown grace period.
    pub grace: Duration,
}

/// A REP worker thread's state.
pub struct Worker {
    socket: zmq::Socket,
    brokers: Endpoints,
    processor: Processor,
    heartbeat: Heartbeat,
    shutdown: CancellationToken,
    grace: Duration,
}

impl Worker {
    /// A worker around its settings.
    pub fn new(s: RepSettings) -> Self {
        Worker {
            socket: s.socket,
            brokers: s.brokers,
            processor: Processor::new(s.worker),
            heartbeat: s.heartbeat,
            shutdown: s.shutdown,
            grace: s.grace,
        }
    }

    /// Serves until shutdown; then disconnects from the brokers, answers what
    /// is still queued, and returns.
    ///
    /// # Errors
    /// On a libzmq failure that leaves the socket unusable.
    pub fn run(mut self) -> anyhow::Result<()> {
        let mut frames = Vec::with_capacity(4);
        let mut drain_started: Option<Instant> = None;
        loop {
            let now = Instant::now();
            self.heartbeat.beat_at(now);
            if self.shutdown.is_cancelled() {
                // Draining. The request being handled at SIGTERM has finished
                // normally. Requests already queued at this socket are refused
                // with `unavailable` while the way back to the broker still
                // exists, so their clients retry elsewhere at once instead of
                // waiting for a timeout. Stop as soon as the queue is empty
                // for DRAIN_QUIET (requests already on the wire) or after
                // DRAIN_REFUSE_MAX at most: under steady load the queue is
                // never empty for long, and staying connected only draws
                // more requests to refuse.
                let started = *drain_started.get_or_insert(now);
                let limit = (started + DRAIN_REFUSE_MAX).min(started + self.grace);
                if now >= limit {
                    break;
                }
                let wait = DRAIN_QUIET.min(limit - now);
                match self.socket.poll(zmq::POLLIN, wait.as_millis() as i64) {
                    Ok(0) => break,
                    Ok(_) | Err(zmq::Error::EINTR) => {}
                    Err(e) => return Err(anyhow::anyhow!("worker poll failed: {e}")),
                }
                match recv_frames(&self.socket, zmq::DONTWAIT, &mut frames) {
                    Ok(()) => {
                        let reply = self.processor.refuse(
                            &frames,
                            Status::Unavailable,
                            "server is shutting down",
                        );
                        self.send(&reply)?;
                        self.processor.completed(&reply);
                    }
                    Err(zmq::Error::EAGAIN) => {}
                    Err(e) => return Err(anyhow::anyhow!("worker receive failed: {e}")),
                }
                continue;
            }
            // Try to receive first and poll only when nothing is queued: under
            // load this saves a system call per request.
            match recv_frames(&self.socket, zmq::DONTWAIT, &mut frames) {
                Ok(()) => {
                    let reply = {
                        // Alive while running a request, up to MAX_WORK (+ margin).
                        let _busy = self.heartbeat.busy_at(now);
                        self.processor.process(&frames, now)
                    };
                    self.send(&reply)?;
                    self.processor.completed(&reply);
                }
                Err(zmq::Error::EAGAIN) => match self.socket.poll(zmq::POLLIN, 50) {
                    Ok(_) | Err(zmq::Error::EINTR) => {}
                    Err(e) => return Err(anyhow::anyhow!("worker poll failed: {e}")),
                },
                Err(e) => return Err(anyhow::anyhow!("worker receive failed: {e}")),
            }
        }
        // Every request this worker read has been answered. Disconnecting now
        // stops new work; anything still in flight to us was never read, and
        // the broker times it out so the client retries elsewhere.
        for e in &self.brokers.0 {
            let _ = self.socket.disconnect(e);
        }
        debug!("Worker stopped.");
        Ok(())
    }

    fn send(&self, reply: &crate::worker::Reply) -> anyhow::Result<()> {
        // REP cannot go on without sending its reply; a failure is fatal for the socket.
        send_frames(&self.socket, reply.frames(), 0)
            .map_err(|e| anyhow::anyhow!("worker reply failed: {e}"))
    }
}
