//! CURVE on the broker: an allowed client works; a wrong key or no key gets
//! nothing and the refusal is counted; payloads are not in clear on the wire.

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    sync::{Arc, Mutex},
    thread,
    time::Duration,
};

use broker::Config;
use mensageria::curve::parse_key;
use tokio_util::sync::CancellationToken;

fn pair() -> (String, String) {
    mensageria::curve::keygen().expect("libzmq with CURVE")
}

/// A socket of `kind`, a CURVE client of `server_public` with `keys`
/// (none: plain).
fn client_socket(
    ctx: &zmq::Context,
    kind: zmq::SocketType,
    server_public: &str,
    keys: Option<&(String, String)>,
) -> zmq::Socket {
    let s = ctx.socket(kind).unwrap();
    s.set_linger(0).unwrap();
    s.set_rcvtimeo(3_000).unwrap();
    if let Some((public, secret)) = keys {
        let z85 = |key: &str| zmq::z85_decode(key).unwrap();
        s.set_curve_serverkey(&z85(server_public)).unwrap();
        s.set_curve_publickey(&z85(public)).unwrap();
        s.set_curve_secretkey(&z85(secret)).unwrap();
    }
    s
}

fn metric(addr: std::net::SocketAddr, series: &str) -> f64 {
    testkit::ops::metric_opt(addr, series).unwrap_or(0.0)
}

/// A TCP relay that records every byte the client sends.
fn recording_relay(target: &str) -> (String, Arc<Mutex<Vec<u8>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let target = target.trim_start_matches("tcp://").to_owned();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    thread::spawn(move || {
        let (mut client, _) = listener.accept().unwrap();
        let mut server = TcpStream::connect(&target).unwrap();
        let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
        thread::spawn(move || {
            let _ = std::io::copy(&mut s2, &mut c2);
        });
        let mut buf = [0u8; 4096];
        while let Ok(n) = client.read(&mut buf) {
            if n == 0 || server.write_all(&buf[..n]).is_err() {
                break;
            }
            log.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    (format!("tcp://{addr}"), seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_allowed_clients_get_through_encrypted() {
    mensageria::telemetry::init_for_tests();
    let (server_public, server_secret) = pair();
    let good = pair();
    let worker_keys = pair();
    let stranger = pair();
    let mut config = Config::for_tests();
    config.transport.curve.curve_server_secret = parse_key(&server_secret).unwrap();
    config.transport.curve.curve_allowed_clients =
        mensageria::curve::parse_key_list(&format!("{},{}", good.0, worker_keys.0)).unwrap();
    let shutdown = CancellationToken::new();
    let b = broker::start(config, shutdown.clone()).await.unwrap();
    let ctx = zmq::Context::new();

    // An allowed worker (plain REP with client keys) echoes.
    let rep = client_socket(&ctx, zmq::REP, &server_public, Some(&worker_keys));
    rep.connect(&b.backend).unwrap();
    let worker = thread::spawn(move || {
        let m = rep
            .recv_multipart(0)
            .expect("the allowed client's request reaches the worker");
        rep.send_multipart(m, 0).unwrap();
    });

    // An allowed client, through a relay that records the wire.
    let (relay, wire) = recording_relay(&b.frontend);
    let req = client_socket(&ctx, zmq::REQ, &server_public, Some(&good));
    req.connect(&relay).unwrap();
    let secret_payload = b"TOP-SECRET-PAYLOAD-0123456789";
    // Retry until the worker's CURVE handshake is done (unavailable before that).
    testkit::wait::wait_until("the worker to join", Duration::from_secs(5), || {
        req.send(&secret_payload[..], 0).unwrap();
        let r = req.recv_bytes(0).expect("an allowed client gets a reply");
        let unavailable = r.starts_with(b"ERR unavailable");
        assert!(
            unavailable || r == secret_payload,
            "{}",
            String::from_utf8_lossy(&r)
        );
        (!unavailable).then_some(())
    });
    worker.join().unwrap();
    let wire = wire.lock().unwrap().clone();
    assert!(!wire.is_empty(), "the relay saw traffic");
    assert!(
        !wire
            .windows(secret_payload.len())
            .any(|w| w == secret_payload),
        "payload visible in clear on the wire"
    );

    // A client with an unknown key: no reply, refusal counted as auth_failed.
    let bad = client_socket(&ctx, zmq::REQ, &server_public, Some(&stranger));
    bad.connect(&b.frontend).unwrap();
    bad.send("let me in", 0).unwrap();
    assert!(
        bad.recv_bytes(0).is_err(),
        "an unknown key must get no reply"
    );
    // A client without CURVE: no reply, handshake failure counted.
    let none = client_socket(&ctx, zmq::REQ, &server_public, None);
    none.connect(&b.frontend).unwrap();
    none.send("plain text", 0).unwrap();
    assert!(
        none.recv_bytes(0).is_err(),
        "a client without keys must get no reply"
    );
    let auth = metric(
        b.http_addr,
        "mensageria_zmq_socket_events_total{socket=\"frontend\",event=\"auth_failed\"}",
    );
    let handshake = metric(
        b.http_addr,
        "mensageria_zmq_socket_events_total{socket=\"frontend\",event=\"handshake_failed\"}",
    );
    assert!(auth >= 1.0, "auth failure not counted");
    assert!(handshake >= 1.0, "handshake failure not counted");
    let metrics = testkit::ops::metrics_text(b.http_addr);
    assert!(!metrics.contains(&server_secret), "no secret in /metrics");
    shutdown.cancel();
    b.wait().await.unwrap();
}
