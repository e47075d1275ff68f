//! Dispatch by readiness: least recently used worker with room, credit,
//! the queue bound, expiry in the queue, no workers, REQUEUE and CREDIT.

use std::time::Duration;

use mensageria::Status;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_worker_gets_nothing_more_and_the_least_recently_used_goes_first() {
    let f = start(|_| {}).await;
    let a = f.worker(true, "work", None);
    let b = f.worker(true, "work", None);
    let c1 = f.socket(zmq::DEALER);
    let send = |c: &zmq::Socket, body: &[u8]| send_v2(c, "work", body);
    // Both idle: a registered first, so a is the least recently used.
    send(&c1, b"1");
    let addr = a.request_of(b"1");
    a.reply(&addr, &[b"one"]);
    assert_eq!(c1.recv_multipart(0).unwrap()[3], b"one");
    // Both idle again, but a was just used: b goes first now.
    send(&c1, b"2");
    let addr_b = b.request_of(b"2");
    assert!(a.gets_nothing_for(50));
    // b is busy (credit 1): the next goes to a.
    let c2 = f.socket(zmq::DEALER);
    send(&c2, b"3");
    let addr_a = a.request_of(b"3");
    // Both busy: the fourth waits in the queue and nobody gets it.
    let c3 = f.socket(zmq::DEALER);
    send(&c3, b"4");
    f.expect_metric("mensageria_broker_queue_depth{service=\"work\"}", 1.0);
    assert!(a.gets_nothing_for(100) && b.gets_nothing_for(100));
    // b finishes first, so b takes it.
    b.reply(&addr_b, &[b"two"]);
    let addr_b4 = b.request_of(b"4");
    a.reply(&addr_a, &[b"three"]);
    b.reply(&addr_b4, &[b"four"]);
    for (c, want) in [(&c1, &b"two"[..]), (&c2, b"three"), (&c3, b"four")] {
        assert_eq!(c.recv_multipart(0).unwrap()[3], want);
    }
    f.expect_metric("mensageria_broker_queue_depth{service=\"work\"}", 0.0);
    f.expect_metric(
        "mensageria_broker_queue_wait_seconds_count{service=\"work\"}",
        4.0,
    );
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credit_lets_a_worker_hold_that_many_and_no_more() {
    let f = start(|_| {}).await;
    let w = f.worker(true, "bulk", Some("credit=3;instance=test-0"));
    let c = f.socket(zmq::DEALER);
    for i in 0..4u8 {
        send_v2(&c, "bulk", &[b'0' + i]);
    }
    let held: Vec<_> = (0..3).map(|_| w.request()).collect();
    f.expect_metric("mensageria_broker_queue_depth{service=\"bulk\"}", 1.0);
    assert!(
        w.gets_nothing_for(100),
        "a fourth request exceeds the credit"
    );
    let bulk = f.service_view("bulk", |s| s["workers"][0]["in_flight"] == 3);
    assert_eq!(bulk["workers"][0]["credit"], 3);
    assert_eq!(bulk["workers"][0]["in_flight"], 3);
    assert_eq!(bulk["workers"][0]["instance"], "test-0");
    w.reply(&held[0].0, &[b"done"]);
    let last = w.request_of(b"3");
    for (addr, _) in &held[1..] {
        w.reply(addr, &[b"done"]);
    }
    w.reply(&last, &[b"done"]);
    for _ in 0..4 {
        assert_eq!(c.recv_multipart(0).unwrap()[3], b"done");
    }
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_overloaded() {
    let f = start(|c| c.max_queue = 2).await;
    let w = f.worker(true, "q", None);
    let c = f.socket(zmq::DEALER);
    send_ours(&c, &header(1, Some("q"), None), b"held");
    let (addr, _) = w.request();
    for id in 2..=3 {
        send_ours(&c, &header(id, Some("q"), None), b"queued");
    }
    f.expect_metric("mensageria_broker_queue_depth{service=\"q\"}", 2.0);
    let r = call_ours(&c, &header(4, Some("q"), None), b"one too many");
    assert_eq!(reply_status(&r[0]), (4, Status::Overloaded));
    w.reply(&addr, &[b"ok"]);
    f.expect_replies("q", "overloaded", 1.0);
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_expires_in_the_queue_is_answered_timeout_and_never_dispatched() {
    let f = start(|c| c.request_timeout = Duration::from_millis(400)).await;
    let w = f.worker(false, "slow", None);
    let c = f.socket(zmq::DEALER);
    send_ours(&c, &header(1, Some("slow"), None), b"first");
    let (addr, _) = w.request();
    // The second waits behind the first; its own budget is shorter than the
    // broker's timeout, and both pass while the worker is busy.
    send_ours(&c, &header(2, Some("slow"), Some(150)), b"second");
    let mut statuses: Vec<_> = (0..2)
        .map(|_| reply_status(&c.recv_multipart(0).unwrap()[1]))
        .collect();
    statuses.sort_by_key(|s| s.0);
    assert_eq!(statuses, vec![(1, Status::Timeout), (2, Status::Timeout)]);
    // The worker finishes the first (late) and must not get the second.
    w.reply(&addr, &[b"late"]);
    assert!(w.gets_nothing_for(300), "an expired request was dispatched");
    f.expect_metric(
        "mensageria_broker_expired_in_queue_total{service=\"slow\"}",
        1.0,
    );
    f.expect_dropped("late_reply", 1.0);
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_without_workers_is_unavailable_at_once() {
    let f = start(|_| {}).await;
    let c = f.socket(zmq::DEALER);
    let r = call_ours(&c, &header(5, Some("nobody.home"), None), b"x");
    assert_eq!(reply_status(&r[0]), (5, Status::Unavailable));
    let req = f.socket(zmq::REQ);
    let r = call_v1(&req, "nobody.home", &[b"x"]);
    assert!(r[0].starts_with(b"ERR unavailable "), "{r:?}");
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requeue_hands_a_request_to_another_worker_and_credit_reopens_the_first() {
    let f = start(|_| {}).await;
    let a = f.worker(true, "rq", Some("credit=1"));
    let b = f.worker(true, "rq", None);
    let c = f.socket(zmq::DEALER);
    send_v2(&c, "rq", b"job");
    let (addr, body) = a.request();
    // a hands it back unchanged but for the command byte (REQUEUE 0x10).
    let mut rest: Vec<&[u8]> = vec![&addr, b""];
    rest.extend(body.iter().map(Vec::as_slice));
    a.send(0x10, &rest);
    let addr_b = b.request_of(b"job");
    // a is marked full: the next request waits for b even though a is idle.
    send_v2(&c, "rq", b"job2");
    assert!(
        a.gets_nothing_for(150),
        "a REQUEUEing worker gets nothing until CREDIT"
    );
    a.send(0x11, &[]);
    let addr_a2 = a.request_of(b"job2");
    b.reply(&addr_b, &[b"by b"]);
    a.reply(&addr_a2, &[b"by a"]);
    let mut got: Vec<Vec<u8>> = (0..2)
        .map(|_| c.recv_multipart(0).unwrap().remove(3))
        .collect();
    got.sort();
    assert_eq!(got, vec![b"by a".to_vec(), b"by b".to_vec()]);
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_wait_out_the_grace_for_a_returning_worker_then_get_unavailable() {
    let f = start(|c| c.no_worker_grace = Duration::from_secs(2)).await;
    let first = f.worker(true, "flaky", None);
    first.send(6, &[]);
    f.wait_workers("flaky", 0.0);
    // Within the grace: the request waits, and a worker coming back gets it.
    let c = f.socket(zmq::DEALER);
    send_v2(&c, "flaky", b"wait");
    f.expect_metric("mensageria_broker_queue_depth{service=\"flaky\"}", 1.0);
    let back = RfcWorker::new(&f, false, "flaky", None);
    let addr = back.request_of(b"wait");
    back.reply(&addr, &[b"served"]);
    assert_eq!(c.recv_multipart(0).unwrap()[3], b"served");
    // The worker leaves again and none comes back: after the grace the
    // waiting request is answered `unavailable`.
    back.send(5, &[]);
    f.wait_workers("flaky", 0.0);
    send_v2(&c, "flaky", b"in vain");
    let r = c.recv_multipart(0).unwrap();
    assert!(r[3].starts_with(b"ERR unavailable "), "{r:?}");
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_replies_reach_0_2_clients_and_are_counted_for_others() {
    let f = start(|_| {}).await;
    let w = f.worker(true, "stream", None);
    // An MDP/0.2 client gets PARTIAL then FINAL (RFC 18).
    let dealer = f.socket(zmq::DEALER);
    send_v2(&dealer, "stream", b"go");
    let answer_in_two_parts = || {
        let (addr, _) = w.request();
        w.send(3, &[&addr, b"", b"part"]);
        w.reply(&addr, &[b"end"]);
    };
    answer_in_two_parts();
    let partial = dealer.recv_multipart(0).unwrap();
    assert_eq!(
        partial,
        vec![
            b"MDPC02".to_vec(),
            vec![2],
            b"stream".to_vec(),
            b"part".to_vec()
        ]
    );
    assert_eq!(recv_v2(&dealer, "stream"), vec![b"end".to_vec()]);
    // A REQ client takes one reply: the PARTIAL is dropped and counted.
    let req = f.socket(zmq::REQ);
    req.send_multipart([&b"MDPC01"[..], b"stream", b"go"], 0)
        .unwrap();
    answer_in_two_parts();
    let r = req.recv_multipart(0).unwrap();
    assert_eq!(
        r,
        vec![b"MDPC01".to_vec(), b"stream".to_vec(), b"end".to_vec()]
    );
    f.expect_dropped("partial_unsupported", 1.0);
    f.stop().await;
}
