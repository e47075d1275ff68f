//! Compatibility: plain REP workers on the broker's backend (the seed's
//! server, simulated by a plain zmq REP socket, and our server in REP mode)
//! still serve the default service, and Majordomo workers take over the
//! default service when they register.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread,
    time::Duration,
};

use e2e::{plain_req, req_roundtrip, with_timeout, Stack};

use crate::rfc::call_v1;

const BACKEND_PEERS: &str = r#"mensageria_zmq_peers{socket="backend"}"#;

/// A plain REP socket answering `rep:<body>`, as the seed's Python server did.
fn seed_rep_server(endpoint: &str, stop: Arc<AtomicBool>) -> thread::JoinHandle<u64> {
    let endpoint = endpoint.to_owned();
    thread::spawn(move || {
        let ctx = zmq::Context::new();
        let rep = ctx.socket(zmq::REP).expect("REP");
        rep.set_linger(0).expect("linger");
        rep.connect(&endpoint).expect("connect");
        let mut served = 0;
        while !stop.load(Ordering::SeqCst) {
            if rep.poll(zmq::POLLIN, 50).unwrap_or(0) == 0 {
                continue;
            }
            let mut frames = rep.recv_multipart(0).expect("receive");
            let mut first = b"rep:".to_vec();
            first.extend_from_slice(&frames[0]);
            frames[0] = first;
            rep.send_multipart(frames, 0).expect("reply");
            served += 1;
        }
        served
    })
}

#[test]
fn plain_rep_workers_on_the_backend_serve_the_default_service() {
    with_timeout(Duration::from_secs(90), || {
        let mut stack = Stack::start(0);
        let stop = Arc::new(AtomicBool::new(false));
        let seed = seed_rep_server(&stack.broker.backend, stop.clone());
        // The REP server connects.
        e2e::expect_metric(stack.broker.http, BACKEND_PEERS, 1.0);
        let ctx = zmq::Context::new();
        let plain = plain_req(&ctx, stack.frontend());
        assert_eq!(
            req_roundtrip(&plain, &[b"hello"]),
            vec![b"rep:hello".to_vec()]
        );
        let out = e2e::request(&stack, "hi", &["--plain"]);
        assert_eq!(e2e::succeeded(&out), "rep:hi\n");
        assert_eq!(
            call_v1(&ctx, stack.frontend(), "mmi.service", &[b"echo"]),
            vec![b"200".to_vec()]
        );

        // Our server in REP mode beside it: round-robin between the two.
        let rep = stack
            .launcher()
            .server(
                (&stack.broker.backend, &stack.proxy.xsub),
                &["--worker-protocol", "rep", "--workers", "1"],
                &[],
            )
            .unwrap();
        e2e::wait_ready(rep.http, e2e::START_TIMEOUT);
        // Both REP peers connected.
        e2e::expect_metric(stack.broker.http, BACKEND_PEERS, 2.0);
        let mut answers: Vec<Vec<u8>> = (0..6)
            .map(|_| req_roundtrip(&plain, &[b"whoami"]).remove(0))
            .collect();
        answers.sort();
        answers.dedup();
        let mut both = vec![rep.instance.clone().into_bytes(), b"rep:whoami".to_vec()];
        both.sort();
        assert_eq!(answers, both, "round-robin between the REP peers");

        // A Majordomo worker of the default service takes it over.
        let m = stack.add_server(&[]);
        let majordomo = stack.servers[m].instance.clone().into_bytes();
        for _ in 0..6 {
            assert_eq!(req_roundtrip(&plain, &[b"whoami"]), vec![majordomo.clone()]);
        }
        stop.store(true, Ordering::SeqCst);
        let served = seed.join().expect("the REP thread");
        assert!(served >= 2, "the seed's REP server answered {served}");
    });
}
