//! Majordomo workers (`WORKER_PROTOCOL=majordomo`, the default): the server
//! registers every service in `SERVICES` with every broker in
//! `BROKER_ENDPOINTS` and takes requests only when it has room.
//!
//! One I/O thread (`server-mdp`) owns one DEALER per (broker, service), a
//! *link*, as MDP/0.2 (ZeroMQ RFC 18) wants: one worker, one service, one
//! broker per socket. It sends READY with our extension frame
//! (`credit=N;instance=NAME`), heartbeats both ways, reconnects a link whose
//! broker has been silent for `WORKER_LIVENESS` intervals, and hands requests
//! to `WORKERS` handler threads through a channel. Handler threads send the
//! reply body back through an inproc PUSH/PULL pair, and the I/O thread sends
//! it to the broker as FINAL. Because handlers never touch the sockets, a
//! handler busy for longer than the liveness does not look dead. Quick
//! requests ([`crate::handler::Handler::is_quick`]) skip the hand-off: the
//! I/O thread runs them itself and sends FINAL at once.
//!
//! Credit is honest across brokers and services: the server holds at most
//! `CREDIT` requests in total. Each broker is told the full credit; a request
//! that arrives while the server is full (another broker got there first)
//! is handed straight back with REQUEUE, which makes that broker put it back
//! at the head of its queue and treat this worker as full until the server
//! sends CREDIT (as soon as a request finishes). Draining works the same
//! way: everything that arrives is handed back, what is held is finished, and
//! then every link sends DISCONNECT.

use std::{
    sync::{
        mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use mensageria::{
    health::Heartbeat,
    mdp::{self, Version, WorkerBody, WorkerCommand, WorkerOptions},
    socket::{recv_frames, send_frames, SocketFactory},
    Endpoints,
};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::{
    metrics::ServerMetrics,
    worker::{with_slices, Processor, Reply, WorkerSettings},
};

/// The `socket` metrics label of a link's DEALER.
pub const LINK_SOCKET: &str = "mdp";
/// Longest wait in one poll, so the thread beats and checks shutdown.
const MAX_POLL: Duration = Duration::from_millis(100);
/// Most messages read from one link per poll wake-up, so quick requests run
/// inline cannot keep the thread from its heartbeats and other links.
const BATCH: usize = 256;

/// A request on its way to a handler thread.
pub struct Job {
    /// The link it came from and that link's connection generation.
    tag: [u8; 8],
    /// The broker's opaque address frame, echoed in the reply.
    address: zmq::Message,
    /// The request body (our header first, when the client is ours).
    body: Vec<zmq::Message>,
    /// When the I/O thread read it (the header's time budget counts from here).
    received: Instant,
}

fn tag(link: usize, generation: u32) -> [u8; 8] {
    let mut t = [0u8; 8];
    t[..4].copy_from_slice(&u32::try_from(link).unwrap_or(u32::MAX).to_le_bytes());
    t[4..].copy_from_slice(&generation.to_le_bytes());
    t
}

fn untag(frame: &[u8]) -> Option<(usize, u32)> {
    let t: [u8; 8] = frame.try_into().ok()?;
    let link = u32::from_le_bytes(t[..4].try_into().ok()?) as usize;
    Some((link, u32::from_le_bytes(t[4..].try_into().ok()?)))
}

/// Everything the I/O thread is made of.
pub struct MajordomoSettings {
    /// Creates the link sockets (transport options, CURVE, monitors).
    pub sockets: SocketFactory,
    /// Broker frontend endpoints: one link per broker and service.
    pub brokers: Endpoints,
    /// Services registered with every broker.
    pub services: Vec<String>,
    /// Requests held at once, in total.
    pub credit: u32,
    /// This server's instance id (announced in READY).
    pub instance: String,
    /// Heartbeat interval, both ways.
    pub heartbeat_ivl: Duration,
    /// Intervals of silence before a broker is considered lost.
    pub liveness: u32,
    /// The inproc endpoint handler threads push replies to.
    pub replies_endpoint: String,
    /// Where requests go to the handler threads.
    pub jobs: SyncSender<Job>,
    /// This thread's liveness heartbeat.
    pub heartbeat: Heartbeat,
    /// Cancelled at shutdown.
    pub shutdown: CancellationToken,
    /// The longest a drain may take.
    pub grace: Duration,
    /// The server's metrics.
    pub metrics: ServerMetrics,
    /// Request processing, for quick requests run on the I/O thread.
    pub worker: WorkerSettings,
}

/// One DEALER registered with one broker for one service.
struct Link {
    endpoint: String,
    service: String,
    socket: zmq::Socket,
    /// +1 per reconnect: replies to requests of an older connection are dropped.
    generation: u32,
    /// Last message from the broker.
    heard: Instant,
    /// Last message to the broker.
    sent: Instant,
    /// The broker thinks this worker is full (it was handed a REQUEUE).
    blocked: bool,
}

/// The I/O thread's state.
pub struct Dispatcher {
    s: MajordomoSettings,
    links: Vec<Link>,
    replies: zmq::Socket,
    jobs: Option<SyncSender<Job>>,
    /// Requests held, across all links.
    held: u32,
    ready_ext: Vec<u8>,
    frames: Vec<zmq::Message>,
    readable: Vec<bool>,
    /// The last poll saw handler replies waiting.
    replies_readable: bool,
    /// Runs quick requests on this thread.
    inline: Processor,
}

impl Dispatcher {
    /// Binds the reply endpoint, connects every link and sends READY.
    ///
    /// # Errors
    /// If a socket cannot be created, bound or connected.
    pub fn new(s: MajordomoSettings) -> anyhow::Result<Self> {
        let replies = s.sockets.context().socket(zmq::PULL)?;
        replies.set_linger(0)?;
        replies.bind(&s.replies_endpoint)?;
        // The instance as the READY extension allows it (printable, no `;`/`=`, bounded).
        let instance: String = s
            .instance
            .chars()
            .filter(|c| c.is_ascii_graphic() && *c != ';' && *c != '=')
            .take(mdp::MAX_INSTANCE)
            .collect();
        let ready_ext = WorkerOptions {
            credit: Some(s.credit),
            instance: (!instance.is_empty()).then_some(instance),
        }
        .encode();
        let now = Instant::now();
        let mut links = Vec::new();
        for endpoint in &s.brokers.0 {
            for service in &s.services {
                links.push(Link {
                    endpoint: endpoint.clone(),
                    service: service.clone(),
                    socket: open(&s.sockets, endpoint)?,
                    generation: 0,
                    heard: now,
                    sent: now,
                    blocked: false,
                });
            }
        }
        let jobs = Some(s.jobs.clone());
        let inline = Processor::new(s.worker.clone());
        let mut d = Dispatcher {
            inline,
            readable: vec![false; links.len()],
            replies_readable: false,
            links,
            replies,
            jobs,
            held: 0,
            ready_ext,
            frames: Vec::with_capacity(8),
            s,
        };
        for i in 0..d.links.len() {
            d.ready(i);
        }
        Ok(d)
    }

    /// Serves until shutdown; then hands back what arrives, finishes what it
    /// holds (within the grace period), and sends DISCONNECT on every link.
    ///
    /// # Errors
    /// On a libzmq failure that leaves the thread unable to go on.
    pub fn run(mut self) -> anyhow::Result<()> {
        let mut drain_until: Option<Instant> = None;
        loop {
            let now = Instant::now();
            self.s.heartbeat.beat_at(now);
            if drain_until.is_none() && self.s.shutdown.is_cancelled() {
                info!(held = self.held, "Draining: no new requests.");
                drain_until = Some(now + self.s.grace);
            }
            if let Some(t) = drain_until {
                if self.held == 0 {
                    break;
                }
                if now >= t {
                    warn!(
                        held = self.held,
                        "Grace period over with requests unfinished; the brokers answer them."
                    );
                    break;
                }
            }
            self.poll(now)?;
            // Only when the poll saw replies: a failed read costs a trip into libzmq.
            while self.replies_readable
                && recv_frames(&self.replies, zmq::DONTWAIT, &mut self.frames).is_ok()
            {
                self.finish();
            }
            for i in 0..self.links.len() {
                if !self.readable[i] {
                    continue;
                }
                let mut frames = std::mem::take(&mut self.frames);
                for _ in 0..BATCH {
                    if recv_frames(&self.links[i].socket, zmq::DONTWAIT, &mut frames).is_err() {
                        break;
                    }
                    let now = Instant::now();
                    self.links[i].heard = now;
                    self.on_broker_message(i, &mut frames, drain_until.is_some(), now);
                }
                self.frames = frames;
            }
            self.keep_alive(drain_until.is_some());
        }
        for i in 0..self.links.len() {
            self.command(i, WorkerCommand::Disconnect);
        }
        // Handler threads end when the channel closes.
        self.jobs = None;
        info!("Majordomo links disconnected.");
        Ok(())
    }

    fn poll(&mut self, now: Instant) -> anyhow::Result<()> {
        let next_beat = self
            .links
            .iter()
            .map(|l| l.sent + self.s.heartbeat_ivl)
            .min()
            .unwrap_or(now + MAX_POLL);
        let wait = next_beat.saturating_duration_since(now).min(MAX_POLL);
        // With no request at a handler thread no reply can come: leaving the
        // PULL out spares a look into its mailbox (often a system call) on
        // every pass of zmq_poll.
        let with_replies = self.held > 0;
        let mut items: Vec<zmq::PollItem<'_>> = Vec::with_capacity(self.links.len() + 1);
        if with_replies {
            items.push(self.replies.as_poll_item(zmq::POLLIN));
        }
        items.extend(
            self.links
                .iter()
                .map(|l| l.socket.as_poll_item(zmq::POLLIN)),
        );
        match zmq::poll(&mut items, wait.as_millis() as i64) {
            Ok(_) | Err(zmq::Error::EINTR) => {}
            Err(e) => return Err(anyhow::anyhow!("majordomo poll failed: {e}")),
        }
        self.replies_readable = with_replies && items[0].is_readable();
        let links = &items[usize::from(with_replies)..];
        for (r, item) in self.readable.iter_mut().zip(links) {
            *r = item.is_readable();
        }
        Ok(())
    }

    /// A reply from a handler thread: `[tag, address, body…]`.
    fn finish(&mut self) {
        self.held = self.held.saturating_sub(1);
        let Some((link, generation)) = self.frames.first().and_then(|f| untag(f)) else {
            return;
        };
        let Some(l) = self.links.get_mut(link) else {
            return;
        };
        if l.generation != generation {
            // That broker connection is gone; the broker has answered the
            // request already ("worker lost"), and a FINAL for it on the new
            // connection would be a protocol error.
            debug!(endpoint = %l.endpoint, "Reply for a previous connection dropped.");
        } else {
            let mut it = self.frames.drain(..).skip(1);
            let address = it.next();
            let rest = address
                .into_iter()
                .chain(std::iter::once(zmq::Message::new()))
                .chain(it);
            let sent = send_command(&l.socket, WorkerCommand::Final, rest);
            if let Err(e) = sent {
                debug!(endpoint = %l.endpoint, error.message = %e, "Reply not sent; the broker answers it.");
            }
            l.sent = Instant::now();
        }
        // Room again: brokers that were handed a request back may dispatch again.
        if self.held < self.s.credit && !self.s.shutdown.is_cancelled() {
            for i in 0..self.links.len() {
                if self.links[i].blocked {
                    self.links[i].blocked = false;
                    self.command(i, WorkerCommand::Credit);
                }
            }
        }
    }

    fn on_broker_message(
        &mut self,
        i: usize,
        frames: &mut Vec<zmq::Message>,
        draining: bool,
        received: Instant,
    ) {
        let parsed = with_slices(frames, |views| {
            let (command, body_len) = match mdp::parse_worker(views) {
                Ok(m) => match m.body {
                    WorkerBody::Addressed { body, .. } => (m.command, Some(body.len())),
                    _ => (m.command, None),
                },
                Err(e) => {
                    warn!(endpoint = %self.links[i].endpoint, error.message = %e, "Invalid message from a broker dropped.");
                    return None;
                }
            };
            if let (WorkerCommand::Request, Some(n)) = (command, body_len) {
                if !draining && self.held < self.s.credit {
                    let body = &views[views.len() - n..];
                    if let Some(reply) = self.inline.process_quick(body, received) {
                        return Some(Err((reply, n)));
                    }
                }
            }
            Some(Ok((command, body_len)))
        });
        let parsed = match parsed {
            None => return,
            Some(Ok(parsed)) => parsed,
            Some(Err((reply, n))) => {
                // […, address, "", body…]: the address is two before the body.
                let at = frames.len() - n - 2;
                self.final_inline(i, &mut frames[at..at + 2], &reply, received);
                self.inline.completed(&reply);
                return;
            }
        };
        match parsed {
            (WorkerCommand::Request, Some(n)) => {
                // Not quick, or no room: take the body, the delimiter and
                // the address off the end, without copying.
                let full = draining || self.held >= self.s.credit;
                let body = frames.split_off(frames.len() - n);
                let _delimiter = frames.pop();
                let Some(address) = frames.pop() else { return };
                let job = Job {
                    tag: tag(i, self.links[i].generation),
                    address,
                    body,
                    received,
                };
                if full {
                    self.hand_back(i, &job);
                } else {
                    self.dispatch(i, job);
                }
            }
            (WorkerCommand::Heartbeat, _) => {}
            (WorkerCommand::Disconnect, _) => {
                info!(endpoint = %self.links[i].endpoint, service = %self.links[i].service, "Broker sent DISCONNECT; registering again.");
                if !draining {
                    self.reconnect(i);
                }
            }
            (other, _) => {
                warn!(endpoint = %self.links[i].endpoint, command = other.name(), "Unexpected command from a broker ignored.");
            }
        }
    }

    /// FINAL for a request run on this thread. `envelope` is the REQUEST's
    /// `[address, ""]`: those frames go back as they came, without copies.
    /// `received` was a few microseconds ago: close enough for the
    /// heartbeat schedule.
    fn final_inline(
        &mut self,
        i: usize,
        envelope: &mut [zmq::Message],
        reply: &Reply,
        received: Instant,
    ) {
        let l = &mut self.links[i];
        let rest = envelope
            .iter_mut()
            .map(|m| std::mem::replace(m, zmq::Message::new()))
            .chain(reply.frames().map(zmq::Message::from));
        if let Err(e) = send_command(&l.socket, WorkerCommand::Final, rest) {
            debug!(endpoint = %l.endpoint, error.message = %e, "Reply not sent; the broker answers it.");
        }
        l.sent = received;
    }

    fn dispatch(&mut self, i: usize, job: Job) {
        let Some(jobs) = &self.jobs else { return };
        match jobs.try_send(job) {
            Ok(()) => self.held += 1,
            // Cannot happen while held < credit = the channel's bound; hand
            // it back rather than lose it.
            Err(TrySendError::Full(job) | TrySendError::Disconnected(job)) => {
                self.hand_back(i, &job)
            }
        }
    }

    /// REQUEUE: the request goes back to the head of that broker's queue,
    /// unchanged but for the command byte.
    fn hand_back(&mut self, i: usize, job: &Job) {
        self.s.metrics.requeued.inc();
        let l = &mut self.links[i];
        l.blocked = true;
        let rest = [&job.address[..], &[][..]]
            .into_iter()
            .chain(job.body.iter().map(|m| &m[..]))
            .map(zmq::Message::from);
        if let Err(e) = send_command(&l.socket, WorkerCommand::Requeue, rest) {
            debug!(endpoint = %l.endpoint, error.message = %e, "REQUEUE not sent.");
        }
        l.sent = Instant::now();
    }

    /// Heartbeats to quiet links; reconnects links whose broker went silent.
    fn keep_alive(&mut self, draining: bool) {
        let now = Instant::now();
        let lost_after = self.s.heartbeat_ivl * self.s.liveness;
        for i in 0..self.links.len() {
            if !draining && now.saturating_duration_since(self.links[i].heard) > lost_after {
                warn!(endpoint = %self.links[i].endpoint, service = %self.links[i].service, "Broker silent; reconnecting.");
                self.reconnect(i);
            } else if now.saturating_duration_since(self.links[i].sent) >= self.s.heartbeat_ivl {
                self.command(i, WorkerCommand::Heartbeat);
            }
        }
    }

    /// A new socket (a new identity for the broker) and READY again.
    fn reconnect(&mut self, i: usize) {
        let l = &mut self.links[i];
        match open(&self.s.sockets, &l.endpoint) {
            Ok(s) => {
                l.socket = s;
                l.generation = l.generation.wrapping_add(1);
                l.heard = Instant::now();
                l.blocked = false;
                self.ready(i);
            }
            Err(e) => {
                warn!(endpoint = %l.endpoint, error.message = %e, "Cannot reopen a broker link; retrying later.");
                l.heard = Instant::now();
            }
        }
    }

    fn ready(&mut self, i: usize) {
        let l = &mut self.links[i];
        let rest = [l.service.as_bytes(), &self.ready_ext[..]].map(zmq::Message::from);
        let sent = send_command(&l.socket, WorkerCommand::Ready, rest);
        if let Err(e) = sent {
            warn!(endpoint = %l.endpoint, error.message = %e, "READY not queued.");
        }
        l.sent = Instant::now();
    }

    fn command(&mut self, i: usize, cmd: WorkerCommand) {
        let l = &mut self.links[i];
        let _ = send_command(&l.socket, cmd, std::iter::empty());
        l.sent = Instant::now();
    }
}

/// Sends an MDP/0.2 worker command (`["MDPW02", cmd, rest…]`, no leading
/// empty frame, as RFC 18 says) without blocking.
fn send_command(
    socket: &zmq::Socket,
    cmd: WorkerCommand,
    rest: impl IntoIterator<Item = zmq::Message>,
) -> zmq::Result<()> {
    send_frames(
        socket,
        mdp::worker_prefix(Version::V2, cmd, false)
            .map(zmq::Message::from)
            .chain(rest),
        zmq::DONTWAIT,
    )
}

/// A link DEALER connected to one broker. No `ZMQ_IMMEDIATE`: READY must wait
/// in the pipe until the connection is up rather than be refused.
fn open(sockets: &SocketFactory, endpoint: &str) -> anyhow::Result<zmq::Socket> {
    let s = sockets.socket(zmq::DEALER, LINK_SOCKET)?;
    sockets
        .transport()
        .curve
        .apply_client(&s)
        .map_err(|e| anyhow::anyhow!("CURVE client keys: {e}"))?;
    s.connect(endpoint)
        .map_err(|e| anyhow::anyhow!("connect {endpoint}: {e}"))?;
    // In the ready record with the factory's other connects (a reconnect
    // records nothing new: the record keeps each endpoint once).
    sockets.ready_log().connected(LINK_SOCKET, endpoint);
    Ok(s)
}

/// The jobs channel shared by the handler threads.
pub type Jobs = Arc<Mutex<Receiver<Job>>>;

/// What a handler thread is made of.
pub struct HandlerSettings {
    /// Where jobs come from.
    pub jobs: Jobs,
    /// PUSH connected to the I/O thread's reply endpoint.
    pub replies: zmq::Socket,
    /// Request processing.
    pub worker: WorkerSettings,
    /// This thread's liveness heartbeat.
    pub heartbeat: Heartbeat,
}

/// A handler thread: runs jobs until the I/O thread closes the channel.
///
/// # Errors
/// If a reply cannot be handed to the I/O thread.
pub fn run_handler(s: HandlerSettings) -> anyhow::Result<()> {
    let mut processor = Processor::new(s.worker);
    loop {
        s.heartbeat.beat();
        let job = s
            .jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .recv_timeout(MAX_POLL);
        let job = match job {
            Ok(j) => j,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return Ok(()),
        };
        let reply = {
            // Alive while running a request, up to MAX_WORK (+ margin).
            let _busy = s.heartbeat.busy();
            processor.process(&job.body, job.received)
        };
        send_frames(
            &s.replies,
            [zmq::Message::from(&job.tag[..]), job.address]
                .into_iter()
                .chain(reply.frames().map(zmq::Message::from)),
            0,
        )
        .map_err(|e| anyhow::anyhow!("hand a reply to the I/O thread: {e}"))?;
        processor.completed(&reply);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_round_trip() {
        assert_eq!(untag(&tag(3, 7)), Some((3, 7)));
        assert_eq!(untag(&tag(0, u32::MAX)), Some((0, u32::MAX)));
        assert_eq!(untag(b"short"), None);
    }
}
