//! Proxy integration tests: the real proxy in-process, plain PUB and SUB
//! sockets on either side.

use std::time::Duration;

use proxy::{Config, Proxy};
use testkit::{inproc, wait::wait_until};
use tokio_util::sync::CancellationToken;

struct Fixture {
    proxy: Proxy,
    shutdown: CancellationToken,
    ctx: zmq::Context,
}

async fn start() -> Fixture {
    mensageria::telemetry::init_for_tests();
    let shutdown = CancellationToken::new();
    let proxy = proxy::start(Config::for_tests(), shutdown.clone())
        .await
        .expect("proxy starts");
    Fixture {
        proxy,
        shutdown,
        ctx: zmq::Context::new(),
    }
}

impl Fixture {
    fn socket(&self, kind: zmq::SocketType, endpoint: &str) -> zmq::Socket {
        let s = inproc::socket(&self.ctx, kind);
        // Unbounded queues on the test side: only the proxy's limits are under test.
        s.set_sndhwm(0).unwrap();
        s.set_rcvhwm(0).unwrap();
        s.connect(endpoint).unwrap();
        s
    }

    /// A SUB on the proxy's XPUB, subscribed to `prefix`.
    fn subscriber(&self, prefix: &[u8]) -> zmq::Socket {
        let s = self.socket(zmq::SUB, &self.proxy.xpub);
        s.set_subscribe(prefix).unwrap();
        s
    }

    fn value(&self, series: &str) -> Option<f64> {
        testkit::ops::metric_opt(self.proxy.http_addr, series)
    }

    /// Waits until `series` reaches `want` (0 while not exposed).
    fn wait_for(&self, series: &str, want: f64) {
        testkit::ops::expect_metric(self.proxy.http_addr, series, want);
    }

    /// Publishes `topic` until `sub` receives one (the subscription has
    /// travelled upstream), returning how many were sent.
    fn prime(&self, publisher: &zmq::Socket, sub: &zmq::Socket, topic: &str) -> u64 {
        let mut sent = 0;
        let reached = "the subscription to reach the publisher";
        wait_until(reached, Duration::from_secs(5), || {
            publish(publisher, topic.as_bytes(), b"prime");
            sent += 1;
            (sub.poll(zmq::POLLIN, 20).unwrap() > 0).then(|| sub.recv_multipart(0).unwrap())
        });
        sent
    }

    async fn stop(self) {
        self.shutdown.cancel();
        inproc::stopped("proxy", self.proxy.wait()).await;
    }
}

/// Publishes one event: `[topic, "h", payload]`.
fn publish(publisher: &zmq::Socket, topic: &[u8], payload: &[u8]) {
    publisher.send_multipart([topic, b"h", payload], 0).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_flow_and_fan_out_is_counted() {
    let f = start().await;
    let publisher = f.socket(zmq::PUB, &f.proxy.xsub);
    let a = f.subscriber(b"requests");
    let b = f.subscriber(b"");
    f.wait_for("mensageria_proxy_subscriptions{topic=\"requests\"}", 1.0);
    f.wait_for("mensageria_proxy_subscriptions{topic=\"none\"}", 1.0);
    let primed = f.prime(&publisher, &a, "requests.completed");
    // b saw the priming events too.
    for _ in 0..primed {
        b.recv_multipart(0).unwrap();
    }
    for i in 0..10u8 {
        publish(&publisher, b"requests.completed", &[i]);
    }
    publish(&publisher, b"server.status", b"x");
    for i in 0..10u8 {
        assert_eq!(
            a.recv_multipart(0).unwrap(),
            vec![b"requests.completed".to_vec(), b"h".to_vec(), vec![i]]
        );
        assert_eq!(b.recv_multipart(0).unwrap()[2], vec![i]);
    }
    assert_eq!(b.recv_multipart(0).unwrap()[0], b"server.status");
    assert_eq!(
        a.poll(zmq::POLLIN, 50).unwrap(),
        0,
        "a is not subscribed to server.*"
    );
    let n = primed as f64 + 10.0;
    f.wait_for("mensageria_proxy_events_in_total{topic=\"requests\"}", n);
    assert_eq!(
        f.value("mensageria_proxy_deliveries_total{topic=\"requests\"}"),
        Some(2.0 * n)
    );
    assert_eq!(
        f.value("mensageria_proxy_events_in_total{topic=\"server\"}"),
        Some(1.0)
    );
    assert_eq!(
        f.value("mensageria_proxy_deliveries_total{topic=\"server\"}"),
        Some(1.0)
    );
    // Unsubscribing (and disconnecting) is seen too.
    a.set_unsubscribe(b"requests").unwrap();
    f.wait_for("mensageria_proxy_subscriptions{topic=\"requests\"}", 0.0);
    drop(b);
    f.wait_for("mensageria_proxy_subscriptions{topic=\"none\"}", 0.0);
    f.wait_for("mensageria_zmq_peers{socket=\"xpub\"}", 1.0);
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_topics_keep_label_cardinality_bounded() {
    let f = start().await;
    let publisher = f.socket(zmq::PUB, &f.proxy.xsub);
    let sub = f.subscriber(b"");
    f.wait_for("mensageria_proxy_subscriptions{topic=\"none\"}", 1.0);
    // Priming events use their own topic: how many of them get through
    // depends on when the subscription reaches the publisher.
    f.prime(&publisher, &sub, "warmup");
    for i in 0..10_000 {
        publish(&publisher, format!("t{i}.x").as_bytes(), b"p");
    }
    for _ in 0..10_000 {
        sub.recv_multipart(0).expect("every event delivered");
    }
    let by_topic = testkit::wait::wait_until("all events counted", Duration::from_secs(5), || {
        let mut by_topic = testkit::metrics::by_label(
            &testkit::ops::metrics_text(f.proxy.http_addr),
            "mensageria_proxy_events_in_total",
            "topic",
        );
        by_topic.remove("warmup");
        (by_topic.values().sum::<f64>() == 10_000.0).then_some(by_topic)
    });
    assert!(
        by_topic.len() <= mensageria::metrics::TOPIC_LABEL_CAP,
        "{} series",
        by_topic.len()
    );
    assert!(by_topic.contains_key("other"), "{by_topic:?}");
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_once_bound_and_stops_on_shutdown() {
    let f = start().await;
    // Both answer 200 (`get` asserts it).
    testkit::ops::get(f.proxy.http_addr, "/readyz");
    testkit::ops::metrics_text(f.proxy.http_addr);
    f.stop().await;
}
