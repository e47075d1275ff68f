//! Majordomo clients and workers of both versions, our header client and a
//! plain REQ client all work through one frontend endpoint.

use std::thread;

use mensageria::{header::Header, Status};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfc_clients_and_workers_of_both_versions_interoperate() {
    let f = start(|_| {}).await;
    let w1 = f.worker(false, "upper.v1", None);
    let w2 = f.worker(true, "upper.v2", None);
    let serve = |w: RfcWorker, n: usize| {
        thread::spawn(move || {
            for _ in 0..n {
                let (addr, body) = w.request();
                let up: Vec<Vec<u8>> = body.iter().map(|b| b.to_ascii_uppercase()).collect();
                let refs: Vec<&[u8]> = up.iter().map(Vec::as_slice).collect();
                w.reply(&addr, &refs);
            }
        })
    };
    let (t1, t2) = (serve(w1, 2), serve(w2, 2));
    // A 0.1 client (REQ) and a 0.2 client (DEALER), each calling both workers.
    let req = f.socket(zmq::REQ);
    let dealer = f.socket(zmq::DEALER);
    assert_eq!(call_v1(&req, "upper.v2", &[b"a", b"b"]), vec![b"A", b"B"]);
    assert_eq!(call_v1(&req, "upper.v1", &[b"c"]), vec![b"C"]);
    assert_eq!(call_v2(&dealer, "upper.v1", &[b"d"]), vec![b"D"]);
    assert_eq!(
        call_v2(&dealer, "upper.v2", &[b"e", b"f"]),
        vec![b"E", b"F"]
    );
    t1.join().unwrap();
    t2.join().unwrap();
    f.expect_replies("upper.v1", "ok", 2.0);
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_header_client_and_a_plain_req_client_reach_majordomo_workers() {
    let f = start(|_| {}).await;
    let echo = f.worker(true, "echo", None);
    let other = f.worker(false, "billing", None);
    // Plain REQ: no header, so the default service (echo).
    let req = f.socket(zmq::REQ);
    req.send("plain", 0).unwrap();
    let (addr, body) = echo.request();
    assert_eq!(
        body,
        vec![b"plain".to_vec()],
        "a plain body goes through untouched"
    );
    echo.reply(&addr, &[b"plain back"]);
    assert_eq!(req.recv_bytes(0).unwrap(), b"plain back");
    // Ours: service and budget in the header; the worker sees the header with
    // the budget rewritten to what was left at dispatch.
    let dealer = f.socket(zmq::DEALER);
    send_ours(&dealer, &header(7, Some("billing"), Some(2_000)), b"pay");
    let (addr, body) = other.request();
    let Ok(Header::Request(h)) = Header::decode(&body[0]) else {
        panic!("the worker gets our header first: {body:?}");
    };
    assert_eq!((h.id, h.service.unwrap().as_str()), (7, "billing"));
    let budget = h.budget_ms.expect("a budget");
    assert!(budget > 0 && budget <= 2_000, "budget {budget}");
    assert_eq!(body[1], b"pay");
    other.reply(&addr, &[&reply_frame(7, Status::Ok), b"paid"]);
    let r = dealer.recv_multipart(0).unwrap();
    assert_eq!(r[0], b"");
    assert_eq!(reply_header(&r[1]).status, Status::Ok);
    assert_eq!(r[2], b"paid");
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_rep_workers_still_serve_the_default_service() {
    let f = start(|_| {}).await;
    let t = rep_worker(&f, 1, |m| m);
    // A Majordomo 0.1 client of the default service is served by the REP
    // worker too, and answered in its own envelope.
    let req = f.socket(zmq::REQ);
    assert_eq!(call_v1(&req, "echo", &[b"via rep"]), vec![b"via rep"]);
    t.join().unwrap();
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_of_another_version_is_refused_clearly() {
    let f = start(|_| {}).await;
    let dealer = f.socket(zmq::DEALER);
    let mut v1 = header(3, None, None);
    v1[3] = 1;
    let r = call_ours(&dealer, &v1, b"x");
    assert_eq!(
        String::from_utf8_lossy(&r[0]),
        "ERR bad_request invalid header: header version 1 not supported; this build speaks 2"
    );
    f.stop().await;
}
