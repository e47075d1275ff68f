//! The ops HTTP server under bad input: garbage, oversized headers, slow
//! clients and wrong methods must not stop it answering a normal client.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    sync::Arc,
    time::{Duration, Instant},
};

use mensageria::{
    health::Health,
    metrics::new_registry,
    ops::{http_get, serve, OpsState, METRICS_CONTENT_TYPE},
};
use tokio_util::sync::CancellationToken;

async fn start() -> (SocketAddr, CancellationToken) {
    start_with(Vec::new()).await
}

async fn start_with(routes: Vec<mensageria::ops::JsonRoute>) -> (SocketAddr, CancellationToken) {
    let health = Health::new();
    health.check("sockets_bound").set(true);
    let registry = Arc::new(new_registry("test", |_| {}));
    let cancel = CancellationToken::new();
    let server = serve(
        "127.0.0.1:0".parse().unwrap(),
        OpsState {
            health,
            registry,
            routes,
        },
        cancel.clone(),
    )
    .await
    .unwrap();
    (server.local_addr, cancel)
}

fn metrics_ok(addr: SocketAddr) {
    let t = Instant::now();
    let (code, body) =
        http_get(addr, "/metrics", Duration::from_secs(3)).expect("metrics still served");
    assert_eq!(code, 200);
    assert!(body.contains("mensageria_build_info"));
    assert!(t.elapsed() < Duration::from_secs(3));
}

fn raw(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(request);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_methods_and_content_types() {
    let (addr, _cancel) = start().await;
    let resp = raw(
        addr,
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains(METRICS_CONTENT_TYPE), "{resp}");
    assert!(resp.contains("process_resident_memory_bytes"));
    let resp = raw(
        addr,
        b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    assert!(resp.starts_with("HTTP/1.1 405"), "{resp}");
    assert!(
        resp.to_ascii_lowercase().contains("allow: get, head"),
        "{resp}"
    );
    let resp = raw(
        addr,
        b"GET /admin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(resp.starts_with("HTTP/1.1 404"), "{resp}");
    let resp = raw(
        addr,
        b"HEAD /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let (code, body) = http_get(addr, "/readyz", Duration::from_secs(3)).unwrap();
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["checks"]["sockets_bound"], true);
    let (code, _) = http_get(addr, "/healthz", Duration::from_secs(3)).unwrap();
    assert_eq!(code, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_oversized_headers_are_refused() {
    let (addr, _cancel) = start().await;
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let resp = raw(addr, &garbage);
    assert!(
        resp.is_empty() || resp.starts_with("HTTP/1.1 400"),
        "{resp}"
    );
    metrics_ok(addr);
    // A TLS ClientHello is garbage to us too.
    let resp = raw(
        addr,
        &[
            0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
        ],
    );
    assert!(!resp.starts_with("HTTP/1.1 200"), "{resp}");
    metrics_ok(addr);
    let mut big = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', 256 * 1024));
    big.extend_from_slice(b"\r\n\r\n");
    let resp = raw(addr, &big);
    assert!(
        !resp.starts_with("HTTP/1.1 200"),
        "an oversized header must not be served"
    );
    metrics_ok(addr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_do_not_stall_the_server() {
    let (addr, _cancel) = start().await;
    // Many slowloris connections: each sends a partial request and stalls.
    let slow: Vec<TcpStream> = (0..200)
        .map(|_| {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
                .unwrap();
            s
        })
        .collect();
    metrics_ok(addr);
    // And each is cut off after the header read timeout (5 s), not kept forever.
    let mut first = slow.into_iter().next().unwrap();
    first
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let t = Instant::now();
    let mut buf = Vec::new();
    let _ = first.read_to_end(&mut buf);
    assert!(
        t.elapsed() < Duration::from_secs(15),
        "slow connection never closed"
    );
    metrics_ok(addr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stops_on_cancel() {
    let (addr, cancel) = start().await;
    metrics_ok(addr);
    cancel.cancel();
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(addr).is_ok() {
        assert!(
            Instant::now() < deadline,
            "listener still open after cancel"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extra_json_routes_are_served_get_only() {
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = calls.clone();
    let route: mensageria::ops::JsonRoute = (
        "/services",
        Arc::new(move || {
            seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            r#"{"services":[]}"#.into()
        }),
    );
    let (addr, _cancel) = start_with(vec![route]).await;
    let resp = raw(
        addr,
        b"GET /services HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains("application/json"), "{resp}");
    assert!(resp.ends_with("{\"services\":[]}\n"), "{resp}");
    let resp = raw(
        addr,
        b"POST /services HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    assert!(resp.starts_with("HTTP/1.1 405"), "{resp}");
    assert_eq!(
        calls.load(std::sync::atomic::Ordering::Relaxed),
        1,
        "rendered for the GET only"
    );
    // The fixed routes are still there, and unknown paths still 404.
    metrics_ok(addr);
    let resp = raw(
        addr,
        b"GET /servicesx HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(resp.starts_with("HTTP/1.1 404"), "{resp}");
}
