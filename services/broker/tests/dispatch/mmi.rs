//! MMI (RFC 8) and the `/services` view.

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mmi_service_says_200_or_404_and_mmi_services_lists_workers() {
    let f = start(|_| {}).await;
    let _a = f.worker(true, "alpha", None);
    let _b = f.worker(false, "beta", None);
    let _c = f.worker(true, "beta", None);
    let req = f.socket(zmq::REQ);
    assert_eq!(call_v1(&req, "mmi.service", &[b"alpha"]), vec![b"200"]);
    assert_eq!(call_v1(&req, "mmi.service", &[b"gamma"]), vec![b"404"]);
    assert_eq!(call_v1(&req, "mmi.nothing", &[b"x"]), vec![b"501"]);
    let dealer = f.socket(zmq::DEALER);
    assert_eq!(call_v2(&dealer, "mmi.service", &[b"beta"]), vec![b"200"]);
    assert_eq!(
        call_v2(&dealer, "mmi.services", &[b""]),
        vec![b"alpha 1\nbeta 2\n".to_vec()]
    );
    // Our client asks through its header.
    let r = call_ours(&dealer, &header(1, Some("mmi.service"), None), b"beta");
    assert_eq!(reply_header(&r[0]).status, mensageria::Status::Ok);
    assert_eq!(r[1], b"200");
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_json_shows_queues_and_workers() {
    let f = start(|_| {}).await;
    let w = f.worker(true, "shown", Some("credit=2;instance=pod-a/1"));
    let c = f.socket(zmq::DEALER);
    send_v2(&c, "shown", b"x");
    let (addr, _) = w.request();
    let shown = f.service_view("shown", |s| s["workers_busy"] == 1);
    assert_eq!(f.services()["default_service"], "echo");
    assert_eq!(shown["queue_depth"], 0);
    assert_eq!(shown["workers_idle"], 0);
    assert_eq!(shown["requests"], 1);
    let worker = &shown["workers"][0];
    assert_eq!(worker["instance"], "pod-a/1");
    assert_eq!(worker["protocol"], "MDPW02");
    assert_eq!(worker["credit"], 2);
    assert_eq!(worker["in_flight"], 1);
    assert_eq!(worker["served"], 0);
    assert!(worker["identity"].as_str().is_some_and(|i| !i.is_empty()));
    assert!(worker["last_heartbeat_ms_ago"].is_u64());
    w.reply(&addr, &[b"done"]);
    assert_eq!(c.recv_multipart(0).unwrap()[3], b"done");
    f.stop().await;
}
