//! Heartbeats both ways: a silent worker is removed and the requests it held
//! are answered `unavailable` at once, not at their deadline; DISCONNECT.

use std::time::{Duration, Instant};

use mensageria::Status;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_worker_is_lost_and_its_requests_are_answered_unavailable() {
    let f = start(|c| {
        c.worker_heartbeat_ivl = Duration::from_millis(100);
        c.worker_liveness = 3;
        // Far beyond the loss detection, so a `timeout` would mean the
        // loss went unnoticed.
        c.request_timeout = Duration::from_secs(30);
    })
    .await;
    let w = f.worker(true, "fragile", None);
    let c = f.socket(zmq::DEALER);
    send_ours(&c, &header(9, Some("fragile"), None), b"x");
    let (_addr, _) = w.request();
    // The broker heartbeats the worker while it is silent.
    let t = Instant::now();
    let m = w.s.recv_multipart(0).unwrap();
    assert_eq!(m[1], [5], "HEARTBEAT from the broker");
    // The worker now says nothing at all: within liveness x interval the
    // broker gives up on it and answers the held request.
    let r = c
        .recv_multipart(0)
        .expect("answered well before the 30 s timeout");
    assert_eq!(reply_status(&r[1]), (9, Status::Unavailable));
    assert!(String::from_utf8_lossy(&r[2]).contains("worker lost"));
    assert!(t.elapsed() < Duration::from_secs(5));
    f.expect_metric(
        "mensageria_broker_workers_lost_total{service=\"fragile\"}",
        1.0,
    );
    f.expect_metric(
        "mensageria_broker_workers{service=\"fragile\",state=\"busy\"}",
        0.0,
    );
    // The broker told it to go away; anything it says now gets DISCONNECT.
    let (cmd, _) = w.recv();
    assert_eq!(cmd, 6, "DISCONNECT");
    w.send(5, &[]);
    let (cmd, _) = w.recv();
    assert_eq!(cmd, 6, "an unknown worker is told to reconnect");
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_heartbeats_stays_and_disconnect_removes_it() {
    let f = start(|c| {
        c.worker_heartbeat_ivl = Duration::from_millis(100);
        c.worker_liveness = 5;
    })
    .await;
    let w = f.worker(false, "steady", None);
    // Heartbeat every half interval for three liveness periods (10x margin
    // over the interval, so a loaded machine does not make it flaky).
    let until = Instant::now() + Duration::from_millis(1_500);
    while Instant::now() < until {
        w.send(4, &[]);
        std::thread::sleep(Duration::from_millis(50));
    }
    f.expect_metric(
        "mensageria_broker_workers{service=\"steady\",state=\"idle\"}",
        1.0,
    );
    assert_eq!(
        f.metric("mensageria_broker_workers_lost_total{service=\"steady\"}"),
        0.0
    );
    w.send(5, &[]);
    f.wait_workers("steady", 0.0);
    assert_eq!(
        f.metric("mensageria_broker_workers_lost_total{service=\"steady\"}"),
        0.0
    );
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_broker_disconnects_its_workers() {
    let f = start(|_| {}).await;
    let w = f.worker(true, "bye", None);
    let s = w.s;
    f.stop().await;
    let m = s
        .recv_multipart(0)
        .expect("DISCONNECT before the broker goes");
    assert_eq!(m, vec![b"MDPW02".to_vec(), vec![6]]);
}
