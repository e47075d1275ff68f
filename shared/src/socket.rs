//! ZeroMQ socket construction: every socket gets the transport options
//! (heartbeats, bounded linger, HWMs, max message size) and a monitor, and
//! connect-side sockets get `ZMQ_IMMEDIATE` so nothing queues to a peer that
//! is not there.

use std::{
    collections::HashMap,
    os::fd::RawFd,
    sync::{mpsc, Arc, Mutex},
    time::Duration,
};

use tokio_util::sync::CancellationToken;

use crate::{
    config::{Endpoints, TransportArgs},
    health::lock,
    metrics::SocketMetrics,
    monitor::{run_hub, Watched},
    ready::ReadyLog,
};

/// Errors while creating, binding or connecting a socket.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// A libzmq call failed.
    #[error("{what}: {source}")]
    Zmq {
        /// What we were doing.
        what: String,
        /// The libzmq error.
        source: zmq::Error,
    },
    /// The configuration cannot be applied.
    #[error("{0}")]
    Config(String),
}

fn ctx_err(what: impl Into<String>) -> impl FnOnce(zmq::Error) -> SocketError {
    let what = what.into();
    move |source| SocketError::Zmq { what, source }
}

/// Creates configured, monitored sockets for one service instance. Clone it
/// into each socket thread.
#[derive(Clone)]
pub struct SocketFactory {
    ctx: zmq::Context,
    transport: TransportArgs,
    hub: mpsc::Sender<Watched>,
    metrics: SocketMetrics,
    /// Socket name by the socket's signalling descriptor (unique among open
    /// sockets), so `bind` and `connect_all` know whose endpoint they record.
    names: Arc<Mutex<HashMap<RawFd, &'static str>>>,
    ready: ReadyLog,
}

impl std::fmt::Debug for SocketFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocketFactory")
            .field("transport", &self.transport)
            .finish()
    }
}

impl SocketFactory {
    /// A new context plus the monitor hub thread (`zmq-monitor`), which stops
    /// after `cancel` once every monitored socket has closed.
    ///
    /// # Errors
    /// If the monitor thread cannot be spawned.
    pub fn new(
        transport: TransportArgs,
        metrics: SocketMetrics,
        cancel: CancellationToken,
    ) -> std::io::Result<(Self, std::thread::JoinHandle<()>)> {
        transport
            .curve
            .client_keys()
            .map_err(std::io::Error::other)?;
        let ctx = zmq::Context::new();
        if transport.curve.is_server() {
            let (ctx, allowed, cancel) = (
                ctx.clone(),
                transport.curve.curve_allowed_clients.clone(),
                cancel.clone(),
            );
            // The ZAP handler must be bound before any CURVE socket binds.
            let (ready_tx, ready_rx) = mpsc::channel();
            std::thread::Builder::new().name("zmq-zap".into()).spawn(move || {
                if let Err(e) = crate::curve::run_zap(&ctx, allowed, cancel, ready_tx) {
                    tracing::error!(error.message = %e, "ZAP handler failed; CURVE clients will be refused.");
                }
            })?;
            ready_rx
                .recv()
                .map_err(|_| std::io::Error::other("the ZAP handler did not start"))?
                .map_err(|e| std::io::Error::other(format!("bind the ZAP handler: {e}")))?;
        }
        let (tx, rx) = mpsc::channel();
        let stop_within = transport.linger * 2 + std::time::Duration::from_secs(1);
        let hub = std::thread::Builder::new()
            .name("zmq-monitor".into())
            .spawn({
                let metrics = metrics.clone();
                move || run_hub(rx, metrics, cancel, stop_within)
            })?;
        Ok((
            SocketFactory {
                ctx,
                transport,
                hub: tx,
                metrics,
                names: Arc::default(),
                ready: ReadyLog::default(),
            },
            hub,
        ))
    }

    /// The ZeroMQ context.
    pub fn context(&self) -> &zmq::Context {
        &self.ctx
    }

    /// The transport options in force.
    pub fn transport(&self) -> &TransportArgs {
        &self.transport
    }

    /// What the ready record will say: the endpoints bound and connected so
    /// far, by socket name.
    pub fn ready_log(&self) -> &ReadyLog {
        &self.ready
    }

    /// The name `s` was created with, or its socket type for a socket made
    /// elsewhere.
    fn name_of(&self, s: &zmq::Socket) -> String {
        let named = s
            .get_fd()
            .ok()
            .and_then(|fd| lock(&self.names).get(&fd).copied());
        match (named, s.get_socket_type()) {
            (Some(name), _) => name.to_owned(),
            (None, Ok(kind)) => format!("{kind:?}").to_lowercase(),
            (None, Err(_)) => "unknown".to_owned(),
        }
    }

    /// Creates a socket of `kind` for the role `role` (the `socket` metrics
    /// label), with transport options applied and a monitor attached.
    ///
    /// # Errors
    /// If libzmq refuses the socket or an option.
    pub fn socket(
        &self,
        kind: zmq::SocketType,
        role: &'static str,
    ) -> Result<zmq::Socket, SocketError> {
        let s = self
            .ctx
            .socket(kind)
            .map_err(ctx_err(format!("create {role} socket")))?;
        self.metrics.declare(role);
        self.configure(&s, kind)
            .map_err(ctx_err(format!("configure {role} socket")))?;
        self.monitor(&s, role)?;
        if let Ok(fd) = s.get_fd() {
            lock(&self.names).insert(fd, role);
        }
        Ok(s)
    }

    fn configure(&self, s: &zmq::Socket, kind: zmq::SocketType) -> zmq::Result<()> {
        let t = &self.transport;
        s.set_linger(millis_i32(t.linger))?;
        s.set_sndhwm(t.hwm)?;
        s.set_rcvhwm(t.hwm)?;
        s.set_maxmsgsize(t.max_msg_size.min(i64::MAX as u64) as i64)?;
        // Exponential backoff while a peer is missing (rolling update, fewer
        // pods than listed endpoints): each attempt re-resolves the name, so
        // a fixed 100 ms would be a DNS and SYN storm.
        s.set_reconnect_ivl(millis_i32(t.reconnect_ivl))?;
        s.set_reconnect_ivl_max(millis_i32(t.reconnect_ivl_max))?;
        // No ZMTP heartbeats on the event path (PUB, SUB, XPUB, XSUB). A
        // subscriber whose queue is full stops reading its TCP stream, so
        // heartbeats cannot tell it from a dead one; when either side's
        // heartbeat timeout resets such a connection in the middle of a
        // multipart event, libzmq aborts the subscriber (`Assertion failed:
        // !_more` in src/fq.cpp; zeromq/libzmq#4767, still open). 4.3.4 did,
        // and the 4.3.5 we build still does: with heartbeats on here, the e2e
        // test `slow_subscriber_behind_by_its_hwm_survives_its_heartbeat`
        // fails within seconds.
        // Nothing on that path needs them: publishers drop at the HWM and
        // subscriptions are re-sent on reconnect. Request/reply sockets keep
        // heartbeats, which is how a frozen worker is dropped.
        let event_path = matches!(kind, zmq::PUB | zmq::SUB | zmq::XPUB | zmq::XSUB);
        let ivl = if event_path {
            Duration::ZERO
        } else {
            t.heartbeat_ivl
        };
        s.set_heartbeat_ivl(millis_i32(ivl))?;
        s.set_heartbeat_timeout(millis_i32(t.heartbeat_timeout))?;
        s.set_heartbeat_ttl(t.heartbeat_ttl.as_millis().min(6_553_500) as i32)?;
        Ok(())
    }

    fn monitor(&self, s: &zmq::Socket, role: &'static str) -> Result<(), SocketError> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let endpoint = format!("inproc://monitor-{role}-{n}");
        s.monitor(&endpoint, zmq::SocketEvent::ALL as i32)
            .map_err(ctx_err(format!("monitor {role} socket")))?;
        let pair = self
            .ctx
            .socket(zmq::PAIR)
            .map_err(ctx_err("create monitor socket"))?;
        pair.set_linger(0)
            .map_err(ctx_err("configure monitor socket"))?;
        pair.connect(&endpoint)
            .map_err(ctx_err("connect monitor socket"))?;
        // The hub only goes away after cancellation; a send failure then just
        // means this socket's events go unread, and its PAIR is dropped here.
        let _ = self.hub.send(Watched {
            pair,
            role,
            connected: 0,
        });
        Ok(())
    }

    /// Binds `s` to `endpoint` and returns the endpoint actually bound (with
    /// the port resolved when `*` or 0 was asked for).
    ///
    /// # Errors
    /// If the bind fails (address in use, bad endpoint, …).
    pub fn bind(&self, s: &zmq::Socket, endpoint: &str) -> Result<String, SocketError> {
        self.transport
            .curve
            .apply_server(s)
            .map_err(ctx_err("set CURVE server key"))?;
        s.bind(endpoint)
            .map_err(ctx_err(format!("bind {endpoint}")))?;
        let bound = s
            .get_last_endpoint()
            .ok()
            .and_then(Result::ok)
            .unwrap_or_else(|| endpoint.to_owned());
        self.ready.bound(&self.name_of(s), &bound);
        Ok(bound)
    }

    /// Sets `ZMQ_IMMEDIATE` and connects `s` to every endpoint.
    ///
    /// # Errors
    /// If an endpoint is refused by libzmq.
    pub fn connect_all(&self, s: &zmq::Socket, endpoints: &Endpoints) -> Result<(), SocketError> {
        s.set_immediate(true)
            .map_err(ctx_err("set ZMQ_IMMEDIATE"))?;
        self.transport
            .curve
            .apply_client(s)
            .map_err(SocketError::Config)?;
        let name = self.name_of(s);
        for e in &endpoints.0 {
            s.connect(e).map_err(ctx_err(format!("connect {e}")))?;
            self.ready.connected(&name, e);
        }
        Ok(())
    }
}

/// A duration as the whole milliseconds libzmq options take, saturating.
fn millis_i32(d: Duration) -> i32 {
    d.as_millis().min(i32::MAX as u128) as i32
}

/// Enables `ZMQ_XPUB_VERBOSER` on an XPUB socket, so every subscribe *and*
/// unsubscribe reaches the application (the zmq crate only exposes VERBOSE).
///
/// # Errors
/// If libzmq refuses the option.
pub fn set_xpub_verboser(s: &mut zmq::Socket) -> zmq::Result<()> {
    let on: c_int = 1;
    // SAFETY: `as_mut_ptr` is the live socket owned by `s`, which outlives the
    // call; the option value points to a c_int on our stack and its exact size
    // is passed, as zmq_setsockopt(3) requires for ZMQ_XPUB_VERBOSER.
    #[allow(unsafe_code)]
    let rc = unsafe {
        zmq_sys::zmq_setsockopt(
            s.as_mut_ptr(),
            zmq_sys::ZMQ_XPUB_VERBOSER as i32,
            (&on as *const c_int).cast(),
            std::mem::size_of::<c_int>(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        #[allow(unsafe_code)]
        // SAFETY: zmq_errno only reads libzmq's thread-local errno.
        let errno = unsafe { zmq_sys::zmq_errno() };
        Err(zmq::Error::from_raw(errno))
    }
}

use std::os::raw::c_int;

/// Receives every frame of one message without copying (`DONTWAIT` honoured
/// for the first frame; the rest of a multipart message is already there).
///
/// # Errors
/// `EAGAIN` when nothing is ready under `DONTWAIT`, or any libzmq error.
pub fn recv_frames(s: &zmq::Socket, flags: i32, out: &mut Vec<zmq::Message>) -> zmq::Result<()> {
    out.clear();
    loop {
        let msg = s.recv_msg(if out.is_empty() { flags } else { 0 })?;
        let more = msg.get_more();
        out.push(msg);
        if !more {
            return Ok(());
        }
    }
}

/// Receives every frame of one message into `buf`, reusing the messages
/// already there, and returns the number of frames: the message is
/// `buf[..n]`. Unlike [`recv_frames`] no message is created or destroyed per
/// frame (libzmq replaces a reused message's content in place). Slots past
/// `n` keep what an earlier, longer message left in them until reused.
///
/// # Errors
/// `EAGAIN` when nothing is ready under `DONTWAIT`, or any libzmq error.
pub fn recv_frames_into(
    s: &zmq::Socket,
    flags: i32,
    buf: &mut Vec<zmq::Message>,
) -> zmq::Result<usize> {
    let mut n = 0;
    loop {
        if n == buf.len() {
            buf.push(zmq::Message::new());
        }
        s.recv(&mut buf[n], if n == 0 { flags } else { 0 })?;
        let more = buf[n].get_more();
        n += 1;
        if !more {
            return Ok(n);
        }
    }
}

/// Sends frames as one multipart message.
///
/// # Errors
/// `EAGAIN` if the first frame cannot be queued under `DONTWAIT` (nothing was
/// sent then), `EHOSTUNREACH` for an unknown ROUTER peer, or any libzmq error.
pub fn send_frames<I>(s: &zmq::Socket, frames: I, flags: i32) -> zmq::Result<()>
where
    I: IntoIterator,
    I::Item: Into<zmq::Message>,
{
    let mut it = frames.into_iter().peekable();
    while let Some(f) = it.next() {
        let more = if it.peek().is_some() { zmq::SNDMORE } else { 0 };
        s.send(f.into(), flags | more)?;
    }
    Ok(())
}

/// Sends one multipart message: the `head` frames (copied from slices, an
/// envelope or protocol prefix), then the `body` messages, moved. Cheaper
/// than [`send_frames`] over a chain of both: no look-ahead per frame, the
/// body's length says which frame is the last.
///
/// # Errors
/// As [`send_frames`].
pub fn send_head_body<'a, H, B>(s: &zmq::Socket, head: H, body: B, flags: i32) -> zmq::Result<()>
where
    H: IntoIterator<Item = &'a [u8]>,
    B: IntoIterator<Item = zmq::Message>,
    B::IntoIter: ExactSizeIterator,
{
    let body = body.into_iter();
    let mut left = body.len();
    if left == 0 {
        return send_frames(s, head, flags);
    }
    for frame in head {
        s.send(frame, flags | zmq::SNDMORE)?;
    }
    for frame in body {
        left -= 1;
        let more = if left > 0 { zmq::SNDMORE } else { 0 };
        s.send(frame, flags | more)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::metrics::SocketEventLabels;

    fn retries(m: &SocketMetrics, socket: &'static str) -> u64 {
        m.events
            .get_or_create(&SocketEventLabels {
                socket,
                event: "connect_retried",
            })
            .get()
    }

    /// Reconnection to a missing endpoint backs off: while a socket with a
    /// fixed 100 ms interval (ZMQ_RECONNECT_IVL_MAX=0) retries 25 times, the
    /// default (100 ms doubling up to 5 s: 0.1, 0.2, 0.4, 0.8, 1.6, 3.2 s
    /// waits, plus up to 100 ms jitter each) retries at most 6 times.
    #[test]
    fn reconnects_to_a_missing_endpoint_back_off() {
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dead = Endpoints(vec![format!("tcp://{}", free.local_addr().unwrap())]);
        drop(free);
        let metrics = SocketMetrics::default();
        let cancel = CancellationToken::new();
        let backoff = TransportArgs::default();
        let fixed = TransportArgs {
            reconnect_ivl_max: Duration::ZERO,
            ..TransportArgs::default()
        };
        let (f1, hub1) = SocketFactory::new(backoff, metrics.clone(), cancel.clone()).unwrap();
        let (f2, hub2) = SocketFactory::new(fixed, metrics.clone(), cancel.clone()).unwrap();
        let s1 = f1.socket(zmq::DEALER, "backoff").unwrap();
        let s2 = f2.socket(zmq::DEALER, "fixed").unwrap();
        f1.connect_all(&s1, &dead).unwrap();
        f2.connect_all(&s2, &dead).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while retries(&metrics, "fixed") < 25 {
            assert!(
                Instant::now() < deadline,
                "the fixed-interval socket retried only {} times",
                retries(&metrics, "fixed")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let backed_off = retries(&metrics, "backoff");
        assert!(
            (1..=6).contains(&backed_off),
            "{backed_off} retries with backoff while the fixed interval made 25"
        );
        drop((s1, s2));
        cancel.cancel();
        hub1.join().unwrap();
        hub2.join().unwrap();
    }

    /// A connected inproc PAIR (`a` sends, `b` receives), and its context.
    fn pair(name: &str) -> (zmq::Context, zmq::Socket, zmq::Socket) {
        let ctx = zmq::Context::new();
        let (a, b) = (
            ctx.socket(zmq::PAIR).unwrap(),
            ctx.socket(zmq::PAIR).unwrap(),
        );
        a.bind(&format!("inproc://{name}")).unwrap();
        b.connect(&format!("inproc://{name}")).unwrap();
        (ctx, a, b)
    }

    #[test]
    fn reused_buffers_receive_each_message_whole() {
        let (_ctx, a, b) = pair("recv-into");
        let mut buf = Vec::new();
        assert_eq!(
            recv_frames_into(&b, zmq::DONTWAIT, &mut buf),
            Err(zmq::Error::EAGAIN)
        );
        let messages: [&[&[u8]]; 3] = [&[b"a", b"bb", b"ccc"], &[b"x"], &[b"", b"long frame"]];
        for m in messages {
            send_frames(&a, m.iter().copied(), 0).unwrap();
        }
        b.set_rcvtimeo(Duration::from_secs(5).as_millis() as i32)
            .unwrap();
        for m in messages {
            let n = recv_frames_into(&b, 0, &mut buf).unwrap();
            let got: Vec<&[u8]> = buf[..n].iter().map(|f| &f[..]).collect();
            assert_eq!(got, m);
        }
        assert_eq!(buf.len(), 3, "the buffer grew to the longest message only");
    }

    #[test]
    fn head_and_body_go_out_as_one_message() {
        let (_ctx, a, b) = pair("head-body");
        b.set_rcvtimeo(5000).unwrap();
        let body = || {
            vec![
                zmq::Message::from(&b"x"[..]),
                zmq::Message::from(&b"yy"[..]),
            ]
        };
        send_head_body(&a, [&b"h1"[..], b""], body(), 0).unwrap();
        send_head_body(&a, [&b"only head"[..], b"2"], Vec::new(), 0).unwrap();
        send_head_body(&a, [], body(), 0).unwrap();
        let want: [&[&[u8]]; 3] = [
            &[b"h1", b"", b"x", b"yy"],
            &[b"only head", b"2"],
            &[b"x", b"yy"],
        ];
        for w in want {
            assert_eq!(b.recv_multipart(0).unwrap(), w);
        }
    }
}
