//! Majordomo peers written here from the RFCs alone (ZeroMQ RFC 7 MDP/0.1
//! and RFC 18 MDP/0.2), with no code of ours: what a program written
//! against the ZeroMQ guide sends and expects. They check the broker from
//! the outside.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

/// MDP version of a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mdp {
    /// RFC 7: commands start with an empty frame; REPLY is 0x03.
    V1,
    /// RFC 18: no leading empty frame; PARTIAL 0x03, FINAL 0x04.
    V2,
}

const READY: u8 = 0x01;
const REQUEST: u8 = 0x02;

impl Mdp {
    /// The REPLY (RFC 7) or FINAL (RFC 18), HEARTBEAT and DISCONNECT
    /// command bytes; READY and REQUEST are the same in both.
    fn commands(self) -> [u8; 3] {
        match self {
            Mdp::V1 => [0x03, 0x04, 0x05],
            Mdp::V2 => [0x04, 0x05, 0x06],
        }
    }

    /// The frames every worker command starts with.
    fn worker_head(self, command: u8) -> Vec<Vec<u8>> {
        match self {
            Mdp::V1 => vec![vec![], b"MDPW01".to_vec(), vec![command]],
            Mdp::V2 => vec![b"MDPW02".to_vec(), vec![command]],
        }
    }
}

/// What a worker thread and its [`RfcWorker`] share.
#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    served: AtomicU64,
    disconnected: AtomicBool,
}

/// A Majordomo worker on its own thread: registers `service`, answers every
/// request with its body, the first frame prefixed by `prefix`, after
/// `delay`; heartbeats every second; sends DISCONNECT when stopped.
pub struct RfcWorker {
    shared: Arc<Shared>,
    thread: Option<thread::JoinHandle<()>>,
}

impl RfcWorker {
    /// Connects to `endpoint` and sends READY.
    pub fn start(
        endpoint: &str,
        version: Mdp,
        service: &str,
        prefix: &str,
        delay: Duration,
    ) -> Self {
        let shared = Arc::<Shared>::default();
        let worker = shared.clone();
        let (endpoint, service, prefix) =
            (endpoint.to_owned(), service.to_owned(), prefix.to_owned());
        let thread = thread::Builder::new()
            .name(format!("rfc-worker-{service}"))
            .spawn(move || run_worker(&endpoint, version, &service, &prefix, delay, &worker))
            .expect("spawn the RFC worker");
        RfcWorker {
            shared,
            thread: Some(thread),
        }
    }

    /// Requests answered so far.
    pub fn served(&self) -> u64 {
        self.shared.served.load(Ordering::SeqCst)
    }

    /// Whether the broker sent it DISCONNECT (it then stops).
    pub fn was_disconnected(&self) -> bool {
        self.shared.disconnected.load(Ordering::SeqCst)
    }

    /// Sends DISCONNECT, closes the socket and returns the requests answered.
    pub fn stop(mut self) -> u64 {
        self.halt();
        self.served()
    }

    fn halt(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().expect("the RFC worker thread");
        }
    }
}

impl Drop for RfcWorker {
    fn drop(&mut self) {
        self.halt();
    }
}

fn run_worker(
    endpoint: &str,
    v: Mdp,
    service: &str,
    prefix: &str,
    delay: Duration,
    shared: &Shared,
) {
    let [reply_cmd, heartbeat, disconnect] = v.commands();
    let ctx = zmq::Context::new();
    let socket = ctx.socket(zmq::DEALER).expect("DEALER");
    socket.set_linger(500).expect("linger");
    socket.connect(endpoint).expect("connect");
    let send = |frames: Vec<Vec<u8>>| socket.send_multipart(frames, 0).expect("send");
    let mut ready = v.worker_head(READY);
    ready.push(service.as_bytes().to_vec());
    send(ready);
    let heartbeat_every = Duration::from_secs(1);
    let mut last_sent = Instant::now();
    while !shared.stop.load(Ordering::SeqCst) {
        if last_sent.elapsed() >= heartbeat_every {
            send(v.worker_head(heartbeat));
            last_sent = Instant::now();
        }
        if socket.poll(zmq::POLLIN, 50).unwrap_or(0) == 0 {
            continue;
        }
        let frames = socket.recv_multipart(0).expect("receive");
        let skip = usize::from(v == Mdp::V1);
        let (protocol, command) = (frames.get(skip), frames.get(skip + 1));
        let expected: &[u8] = if v == Mdp::V1 { b"MDPW01" } else { b"MDPW02" };
        assert_eq!(protocol.map(Vec::as_slice), Some(expected), "{frames:?}");
        let command = command.and_then(|f| f.first().copied());
        if command == Some(REQUEST) {
            // [head…, address, "", body…]
            let address = frames[skip + 2].clone();
            assert!(
                frames[skip + 3].is_empty(),
                "envelope delimiter: {frames:?}"
            );
            let mut body: Vec<Vec<u8>> = frames[skip + 4..].to_vec();
            thread::sleep(delay);
            if let Some(first) = body.first_mut() {
                first.splice(0..0, prefix.bytes());
            }
            let mut reply = v.worker_head(reply_cmd);
            reply.push(address);
            reply.push(vec![]);
            reply.extend(body);
            send(reply);
            shared.served.fetch_add(1, Ordering::SeqCst);
            last_sent = Instant::now();
        } else if command == Some(disconnect) {
            shared.disconnected.store(true, Ordering::SeqCst);
            return;
        }
    }
    send(v.worker_head(disconnect));
}

/// A Majordomo client call: [`call_v1`] or [`call_v2`].
pub type Call = fn(&zmq::Context, &str, &str, &[&[u8]]) -> Vec<Vec<u8>>;

/// Asserts what each `(call, service, body, reply)` answers: the one reply
/// frame.
pub fn expect_replies(ctx: &zmq::Context, endpoint: &str, cases: &[(Call, &str, &str, &str)]) {
    for (call, service, body, want) in cases {
        let got = call(ctx, endpoint, service, &[body.as_bytes()]);
        assert_eq!(got, [want.as_bytes()], "{service} {body}");
    }
}

/// MDP/0.1 client over REQ (RFC 7): [`testkit::inproc::call_v1`] on a
/// fresh REQ socket.
pub fn call_v1(ctx: &zmq::Context, endpoint: &str, service: &str, body: &[&[u8]]) -> Vec<Vec<u8>> {
    testkit::inproc::call_v1(&e2e::plain_req(ctx, endpoint), service, body)
}

/// MDP/0.2 client over DEALER (RFC 18): REQUEST `["MDPC02", 0x01, service,
/// body…]`; skips PARTIALs and returns the FINAL's body.
pub fn call_v2(ctx: &zmq::Context, endpoint: &str, service: &str, body: &[&[u8]]) -> Vec<Vec<u8>> {
    let dealer = e2e::connected(ctx, zmq::DEALER, endpoint);
    let mut frames: Vec<&[u8]> = vec![b"MDPC02", &[0x01], service.as_bytes()];
    frames.extend_from_slice(body);
    dealer.send_multipart(frames, 0).expect("send");
    loop {
        let reply = e2e::recv_within(&dealer, Duration::from_secs(5))
            .unwrap_or_else(|| panic!("no MDPC02 reply from {service}"));
        assert!(
            reply.len() >= 4,
            "MDPC02 reply too short: {:?}",
            e2e::show(&reply)
        );
        assert_eq!(reply[0], b"MDPC02", "{:?}", e2e::show(&reply));
        assert_eq!(reply[2], service.as_bytes(), "{:?}", e2e::show(&reply));
        match reply[1].as_slice() {
            [0x02] => continue, // PARTIAL
            [0x03] => return reply[3..].to_vec(),
            other => panic!("unexpected MDPC02 command {other:?}"),
        }
    }
}
