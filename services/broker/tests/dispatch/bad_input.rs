//! Bad input on the worker path is refused (DISCONNECT), counted, and
//! harms nothing else: a good worker and its clients carry on throughout.

use crate::support::*;

/// Waits for DISCONNECT on a worker socket (heartbeats skipped).
fn expect_disconnect(w: &RfcWorker) {
    let (cmd, rest) = w.recv();
    assert_eq!(cmd, w.cmd(4), "expected DISCONNECT, got {cmd} {rest:?}");
}

/// A request through the good worker still works.
fn still_served(good: &RfcWorker, client: &zmq::Socket, n: u8) {
    send_v2(client, "good", &[n]);
    let (addr, body) = good.request();
    good.reply(&addr, &[&body[0]]);
    let r = client.recv_multipart(0).unwrap();
    assert_eq!(r[3], [n]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_worker_commands_are_refused_counted_and_harmless() {
    let f = start(|_| {}).await;
    let good = f.worker(true, "good", None);
    let client = f.socket(zmq::DEALER);
    let mut refused = 0.0;

    // An unknown command byte from a registered worker.
    let w = f.worker(true, "victim", None);
    w.send(0x42, &[]);
    expect_disconnect(&w);
    refused += 1.0;
    f.wait_workers("victim", 0.0);
    still_served(&good, &client, 1);

    // A reply for a request the worker does not hold.
    let w = f.worker(false, "victim", None);
    w.reply(&7u64.to_le_bytes(), &[b"forged"]);
    expect_disconnect(&w);
    refused += 1.0;
    still_served(&good, &client, 2);

    // READY twice.
    let w = f.worker(true, "victim", None);
    w.send(1, &[b"victim"]);
    expect_disconnect(&w);
    refused += 1.0;
    f.wait_workers("victim", 0.0);

    // An oversized service name, a name with a space, a name in `mmi.`,
    // and a bad credit.
    let long = "s".repeat(256);
    for (name, ext) in [
        (long.as_str(), None),
        ("has space", None),
        ("mmi.mine", None),
        ("fine", Some("credit=0")),
    ] {
        let w = RfcWorker::new(&f, true, name, ext);
        expect_disconnect(&w);
        refused += 1.0;
    }
    f.expect_dropped("worker_protocol", refused);
    assert_eq!(
        f.metric("mensageria_broker_workers{service=\"fine\",state=\"idle\"}"),
        0.0
    );
    still_served(&good, &client, 3);
    f.expect_metric(
        "mensageria_broker_workers{service=\"good\",state=\"idle\"}",
        1.0,
    );
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_breaks_the_protocol_loses_its_requests_to_unavailable() {
    let f = start(|_| {}).await;
    let w = f.worker(true, "held", None);
    let c = f.socket(zmq::DEALER);
    send_ours(&c, &header(3, Some("held"), None), b"x");
    let _ = w.request();
    w.send(0x42, &[]);
    expect_disconnect(&w);
    let r = c.recv_multipart(0).unwrap();
    assert_eq!(reply_status(&r[1]), (3, mensageria::Status::Unavailable));
    f.expect_metric(
        "mensageria_broker_workers_lost_total{service=\"held\"}",
        1.0,
    );
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_beyond_the_cap_are_refused() {
    // The default service counts: echo, then one more.
    let f = start(|c| c.max_services = 2).await;
    let ok = f.worker(true, "one", None);
    let over = RfcWorker::new(&f, true, "two", None);
    expect_disconnect(&over);
    f.expect_dropped("too_many_services", 1.0);
    // A second worker of an existing service is fine.
    let _more = f.worker(false, "one", None);
    drop(ok);
    f.stop().await;
}
