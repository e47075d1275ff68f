//! Server integration tests of the Majordomo path (the default): the real
//! server in-process, with a ROUTER playing the broker's frontend, speaking
//! MDP/0.2 frames as RFC 18 writes them (plus our credit extensions).

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use mensageria::{
    mdp::{self, Version, WorkerBody, WorkerCommand},
    Status,
};
use server::{
    handler::{DemoHandler, Handler, Request, Response},
    Config, Server,
};
use testkit::inproc::{self, reply_status};
use tokio_util::sync::CancellationToken;

/// The fake broker: a bound ROUTER.
struct Broker {
    router: zmq::Socket,
    _ctx: zmq::Context,
}

/// A worker command as the broker received it.
#[derive(Debug)]
struct Cmd {
    identity: Vec<u8>,
    command: WorkerCommand,
    /// Service (READY), address (addressed commands), options (CREDIT).
    first: Vec<u8>,
    /// Body frames of addressed commands; the extension frame of READY.
    rest: Vec<Vec<u8>>,
}

impl Broker {
    fn bind() -> (Broker, String) {
        let ctx = zmq::Context::new();
        let (router, ep) = inproc::bound(&ctx, zmq::ROUTER);
        (Broker { router, _ctx: ctx }, ep)
    }

    /// The next command other than HEARTBEAT, within [`inproc::RECV_LIMIT`].
    fn next(&self) -> Cmd {
        self.next_any(inproc::RECV_LIMIT, |c| {
            c.command != WorkerCommand::Heartbeat
        })
    }

    /// The next command `keep` accepts, within `timeout`.
    fn next_any(&self, timeout: Duration, keep: impl Fn(&Cmd) -> bool) -> Cmd {
        self.poll_cmd(timeout, keep)
            .unwrap_or_else(|| panic!("no such worker command within {timeout:?}"))
    }

    /// The next command `keep` accepts, if one comes within `timeout`.
    fn poll_cmd(&self, timeout: Duration, keep: impl Fn(&Cmd) -> bool) -> Option<Cmd> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero()
                || self
                    .router
                    .poll(zmq::POLLIN, left.as_millis() as i64)
                    .unwrap()
                    == 0
            {
                return None;
            }
            let mut frames = self.router.recv_multipart(0).unwrap();
            let identity = frames.remove(0);
            let msg = mdp::parse_worker(&frames)
                .unwrap_or_else(|e| panic!("invalid worker message ({e}): {frames:?}"));
            assert_eq!(msg.version, Version::V2);
            assert!(!msg.leading_empty, "MDP/0.2 has no leading empty frame");
            let (first, rest) = match msg.body {
                WorkerBody::Ready { service, options } => {
                    (service.as_bytes().to_vec(), vec![options.encode()])
                }
                WorkerBody::Addressed { address, body } => {
                    (address.to_vec(), body.iter().map(|f| f.to_vec()).collect())
                }
                WorkerBody::Credit { options } => (options.encode(), vec![]),
                WorkerBody::None => (vec![], vec![]),
            };
            let cmd = Cmd {
                identity,
                command: msg.command,
                first,
                rest,
            };
            if keep(&cmd) {
                return Some(cmd);
            }
        }
    }

    /// Sends REQUEST `[identity, "MDPW02", 0x02, address, "", body…]`.
    fn request(&self, identity: &[u8], address: &[u8], body: &[&[u8]]) {
        let mut frames: Vec<&[u8]> = vec![identity];
        for f in mdp::worker_prefix(Version::V2, WorkerCommand::Request, false) {
            frames.push(f);
        }
        frames.extend([address, b""]);
        frames.extend(body.iter().copied());
        self.router.send_multipart(frames, 0).unwrap();
    }

    /// READY from every link, by service: identity per service.
    fn registrations(&self, services: &[&str]) -> Vec<(String, Vec<u8>, String)> {
        let mut got = Vec::new();
        while got.len() < services.len() {
            let c = self.next();
            assert_eq!(c.command, WorkerCommand::Ready, "{c:?}");
            let service = String::from_utf8(c.first).unwrap();
            let ext = String::from_utf8(c.rest[0].clone()).unwrap();
            got.push((service, c.identity, ext));
        }
        got.sort();
        got
    }

    /// The next command other than HEARTBEAT, asserted to be `command` with
    /// `first` (the address of an addressed command).
    fn expect(&self, command: WorkerCommand, first: &[u8]) -> Cmd {
        let c = self.next();
        assert_eq!((c.command, c.first.as_slice()), (command, first), "{c:?}");
        c
    }
}

fn header(id: u64, budget_ms: Option<u32>) -> Vec<u8> {
    inproc::request_header(id, None, budget_ms)
}

/// Notes each request it handles, then behaves as the demo handler; with
/// `quick`, its quick requests are quick too.
/// (Demo, quick, (first frame, thread) of each request handled.)
struct Counting(DemoHandler, bool, Mutex<Vec<(Vec<u8>, String)>>);

impl Counting {
    fn handled(&self) -> usize {
        self.2.lock().unwrap().len()
    }
}

impl Handler for Counting {
    fn handle(&self, request: &Request<'_>) -> Response {
        let thread = std::thread::current().name().unwrap_or("").to_owned();
        let first = request
            .frames
            .first()
            .map(|f| f.to_vec())
            .unwrap_or_default();
        self.2.lock().unwrap().push((first, thread));
        self.0.handle(request)
    }

    fn is_quick(&self, request: &Request<'_>) -> bool {
        self.1 && self.0.is_quick(request)
    }
}

struct Fixture {
    server: Server,
    shutdown: CancellationToken,
    handler: Arc<Counting>,
    broker: Broker,
}

async fn start(workers: u16, services: &str, ivl: Duration) -> Fixture {
    start_with(workers, services, ivl, false).await
}

async fn start_with(workers: u16, services: &str, ivl: Duration, quick: bool) -> Fixture {
    mensageria::telemetry::init_for_tests();
    let (broker, ep) = Broker::bind();
    let nowhere = format!("tcp://127.0.0.1:{}", testkit::ports::unused_port());
    let mut config = Config::for_tests(&ep, &nowhere, workers);
    config.services = services.parse().unwrap();
    config.worker_heartbeat_ivl = ivl;
    config.common.shutdown_grace = Duration::from_secs(5);
    let handler = Arc::new(Counting(
        DemoHandler {
            instance: "srv-test".into(),
            max_work: Duration::from_secs(5),
        },
        quick,
        Mutex::new(Vec::new()),
    ));
    let shutdown = CancellationToken::new();
    let server =
        server::start_with_handler(config, shutdown.clone(), "srv-test".into(), handler.clone())
            .await
            .expect("server starts");
    Fixture {
        server,
        shutdown,
        handler,
        broker,
    }
}

impl Fixture {
    /// Waits (up to 5 s) until the handler has started a request.
    async fn first_started(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.handler.handled() == 0 {
            assert!(Instant::now() < deadline, "the request never started");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn metric(&self, series: &str) -> f64 {
        testkit::ops::metric(self.server.http_addr, series)
    }

    async fn stop(self) {
        self.shutdown.cancel();
        inproc::stopped("server", self.server.wait()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_every_service_with_its_credit_and_answers() {
    let f = start(2, "echo,work", Duration::from_secs(1)).await;
    let regs = f.broker.registrations(&["echo", "work"]);
    assert_eq!(regs[0].0, "echo");
    assert_eq!(regs[1].0, "work");
    assert_ne!(regs[0].1, regs[1].1, "one connection per service");
    for (_, _, ext) in &regs {
        assert_eq!(ext, "credit=2;instance=srv-test", "READY extension frame");
    }
    let echo = regs[0].1.clone();
    f.broker.request(
        &echo,
        b"corr-1",
        &[&header(7, Some(5_000)), b"hello", b"two"],
    );
    let c = f.broker.expect(WorkerCommand::Final, b"corr-1");
    assert_eq!(c.identity, echo);
    assert_eq!(reply_status(&c.rest[0]), (7, Status::Ok));
    assert_eq!(&c.rest[1..], &[b"hello".to_vec(), b"two".to_vec()]);
    // A plain body (a plain or Majordomo client) gets a plain reply.
    f.broker.request(&echo, b"corr-2", &[b"fail nope"]);
    let c = f.broker.expect(WorkerCommand::Final, b"corr-2");
    assert_eq!(c.rest, vec![b"ERR error nope".to_vec()]);
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_server_hands_requests_back_and_grants_credit_when_free() {
    // One worker: credit 1 in total, across both services.
    let f = start(1, "echo,work", Duration::from_secs(1)).await;
    let regs = f.broker.registrations(&["echo", "work"]);
    let (echo, work) = (regs[0].1.clone(), regs[1].1.clone());
    f.broker.request(&echo, b"slow", &[b"work 300ms"]);
    f.broker.request(&work, b"second", &[b"hi"]);
    // The request it has no room for comes back, unchanged.
    let c = f.broker.expect(WorkerCommand::Requeue, b"second");
    assert_eq!((&c.identity, &c.rest), (&work, &vec![b"hi".to_vec()]));
    f.broker.expect(WorkerCommand::Final, b"slow");
    let c = f.broker.next();
    assert_eq!(
        (c.command, c.identity),
        (WorkerCommand::Credit, work),
        "room again: the broker it handed back to hears so"
    );
    assert_eq!(f.metric("mensageria_server_requeued_total"), 1.0);
    assert_eq!(f.handler.handled(), 1, "the handed-back request never ran");
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_requests_are_answered_by_the_io_thread_while_handlers_are_busy() {
    let f = start_with(2, "echo", Duration::from_secs(1), true).await;
    let echo = f.broker.registrations(&["echo"])[0].1.clone();
    f.broker.request(&echo, b"slow", &[b"work 300ms"]);
    f.first_started().await;
    f.broker
        .request(&echo, b"quick", &[&header(9, Some(5_000)), b"hi"]);
    // The quick request does not wait for the busy handler.
    let c = f.broker.expect(WorkerCommand::Final, b"quick");
    assert_eq!(reply_status(&c.rest[0]), (9, Status::Ok));
    assert_eq!(&c.rest[1..], &[b"hi".to_vec()]);
    f.broker.expect(WorkerCommand::Final, b"slow");
    let threads = f.handler.2.lock().unwrap().clone();
    assert_eq!(threads.len(), 2, "{threads:?}");
    assert_eq!(threads[0].0, b"work 300ms");
    assert!(threads[0].1.starts_with("server-worker-"), "{threads:?}");
    assert_eq!(
        (threads[1].0.as_slice(), threads[1].1.as_str()),
        (&b"hi"[..], "server-mdp"),
        "the quick one ran on the I/O thread"
    );
    // Counted like any other, and nothing handed back.
    assert_eq!(
        f.metric("mensageria_server_requests_total{status=\"ok\"}"),
        2.0
    );
    assert_eq!(f.metric("mensageria_server_requeued_total"), 0.0);
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_requests_are_skipped_and_work_that_cannot_finish_is_refused() {
    let f = start(1, "echo", Duration::from_secs(1)).await;
    let echo = f.broker.registrations(&["echo"])[0].1.clone();
    f.broker
        .request(&echo, b"late", &[&header(1, Some(0)), b"work 1ms"]);
    let c = f.broker.expect(WorkerCommand::Final, b"late");
    assert_eq!(reply_status(&c.rest[0]), (1, Status::Timeout));
    assert_eq!(
        f.handler.handled(),
        0,
        "a late request never reaches the handler"
    );
    assert_eq!(f.metric("mensageria_server_late_skipped_total"), 1.0);
    // 200 ms left for 2 s of work: refused without sleeping.
    let t = Instant::now();
    f.broker
        .request(&echo, b"long", &[&header(2, Some(200)), b"work 2s"]);
    let c = f.broker.expect(WorkerCommand::Final, b"long");
    assert_eq!(reply_status(&c.rest[0]), (2, Status::Timeout));
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "it did not run the work"
    );
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_while_busy_and_reconnects_when_the_broker_is_silent() {
    let ivl = Duration::from_millis(100);
    let f = start(1, "echo", ivl).await;
    let first = f.broker.registrations(&["echo"])[0].1.clone();
    // Busy for 600 ms (six intervals): heartbeats keep coming meanwhile.
    f.broker.request(&first, b"busy", &[b"work 600ms"]);
    let t = Instant::now();
    let hb = f.broker.next_any(Duration::from_secs(2), |c| {
        c.command == WorkerCommand::Heartbeat
    });
    assert_eq!(hb.identity, first);
    assert!(
        t.elapsed() < Duration::from_millis(600),
        "a heartbeat while the handler runs"
    );
    // The fake broker never answers anything: after 3 silent intervals the
    // worker opens a new connection (new identity) and registers again.
    let again = f.broker.next_any(Duration::from_secs(5), |c| {
        c.command == WorkerCommand::Ready
    });
    assert_ne!(again.identity, first, "a new socket");
    assert_eq!(again.first, b"echo");
    // The reply to the request of the old connection is not sent on the new one.
    let stray = f.broker.poll_cmd(Duration::from_millis(800), |c| {
        c.command != WorkerCommand::Heartbeat && c.command != WorkerCommand::Ready
    });
    assert!(
        stray.is_none(),
        "unexpected command after reconnecting: {stray:?}"
    );
    // Replaced sockets do not stay counted as connected peers (it keeps
    // reconnecting every 300 ms here, so look for the settled value).
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut last = 0.0;
    while last != 1.0 {
        assert!(Instant::now() < deadline, "link peers stuck at {last}");
        last = f.metric(r#"mensageria_zmq_peers{socket="mdp"}"#);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_hands_back_new_work_finishes_held_work_then_disconnects() {
    let f = start(2, "echo", Duration::from_secs(1)).await;
    let echo = f.broker.registrations(&["echo"])[0].1.clone();
    f.broker.request(&echo, b"held", &[b"work 300ms"]);
    // Let the worker take it before draining starts.
    f.first_started().await;
    f.shutdown.cancel();
    // Once draining, new work goes straight back; the held request finishes.
    let deadline = Instant::now() + Duration::from_secs(5);
    let (mut handed_back, mut held_done) = (false, false);
    while !(handed_back && held_done) {
        assert!(
            Instant::now() < deadline,
            "drain: handed back {handed_back}, held done {held_done}"
        );
        if !handed_back {
            f.broker.request(&echo, b"new", &[b"hi"]);
        }
        let c = f.broker.next();
        match (c.command, c.first.as_slice()) {
            (WorkerCommand::Requeue, b"new") => handed_back = true,
            (WorkerCommand::Final, b"held") => held_done = true,
            // Taken before the drain began: answered normally.
            (WorkerCommand::Final, b"new") => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    let c = f.broker.next();
    assert_eq!(c.command, WorkerCommand::Disconnect, "then it says goodbye");
    inproc::stopped("server", f.server.wait()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ready_record_lists_every_majordomo_link() {
    let dir = testkit::tempdir::TempDir::new("server-ready");
    let path = dir.path().join("mdp-links.json");
    let f = mensageria::ready::scope(
        Some(path.clone()),
        start(1, "echo,work", Duration::from_secs(1)),
    )
    .await;
    let ep = f.broker.router.get_last_endpoint().unwrap().unwrap();
    let record = tokio::task::spawn_blocking(move || {
        mensageria::ready::ReadyRecord::wait(&path, Duration::from_secs(10))
    })
    .await
    .unwrap()
    .expect("the server writes its ready record");
    // Two links (one per service) to the one broker: the endpoint once.
    assert_eq!(record.connected.get("mdp"), Some(&vec![ep]), "{record:?}");
    f.stop().await;
}
