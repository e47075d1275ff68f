//! The ready record of real services, in-process: the proxy (run exactly as
//! its binary runs it, inside `ready::scope`) and a small publisher built on
//! `Service` write where they are once ready, with the ports ZeroMQ actually
//! picked, and remove the file when they stop.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context as _;
use mensageria::{
    config::TransportArgs, metrics::SocketMetrics, ops::http_get, ready, ready::ReadyRecord,
    Endpoints, Service,
};
use tokio_util::sync::CancellationToken;

const WITHIN: Duration = Duration::from_secs(10);

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mensageria-ready-it-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

async fn wait_for(path: &Path) -> ReadyRecord {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || ReadyRecord::wait(path, WITHIN))
        .await
        .unwrap()
        .unwrap()
}

/// The port of a `tcp://host:port` endpoint that ZeroMQ resolved.
fn resolved_port(endpoint: &str) -> u16 {
    let port = endpoint
        .strip_prefix("tcp://127.0.0.1:")
        .unwrap_or_else(|| panic!("{endpoint} is not a loopback tcp endpoint"));
    let port: u16 = port
        .parse()
        .unwrap_or_else(|_| panic!("{endpoint} has no resolved port"));
    assert_ne!(port, 0, "{endpoint}");
    port
}

/// A bare service named "publisher" (inside a `ready::scope`, it writes
/// the ready file there).
fn bare_service(shutdown: &CancellationToken) -> anyhow::Result<Service> {
    Service::new(
        "publisher",
        TransportArgs::default(),
        SocketMetrics::default(),
        shutdown.clone(),
    )
}

/// A service whose one socket ("pub") connects to `endpoint`, ready at once.
async fn publisher(endpoint: &str, shutdown: CancellationToken) -> anyhow::Result<Service> {
    let mut service = bare_service(&shutdown)?;
    let sockets = service.sockets.clone();
    let endpoints: Endpoints = endpoint.parse().map_err(anyhow::Error::msg)?;
    service
        .spawn_socket_thread(
            "publisher",
            move || {
                let s = sockets.socket(zmq::PUB, "pub")?;
                sockets.connect_all(&s, &endpoints)?;
                Ok(((s, shutdown), ()))
            },
            |(_socket, shutdown): (zmq::Socket, CancellationToken)| {
                while !shutdown.is_cancelled() {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Ok(())
            },
        )
        .await?;
    let registry = mensageria::metrics::new_registry("publisher", |_| {});
    service
        .serve_ops("127.0.0.1:0".parse()?, registry)
        .await
        .context("ops")?;
    service.ready_detail("instance", "publisher-1");
    service.health.check("connected").set(true);
    Ok(service)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_write_where_they_are_and_remove_it_on_stop() {
    let dir = temp_dir("services");
    let proxy_file = dir.join("proxy.json");
    let publisher_file = dir.join("publisher.json");
    let shutdown = CancellationToken::new();

    let proxy = tokio::spawn(ready::scope(
        Some(proxy_file.clone()),
        proxy::run(proxy::Config::for_tests(), shutdown.clone()),
    ));
    let record = wait_for(&proxy_file).await;
    assert_eq!(record.service, "proxy");
    assert_eq!(record.pid, std::process::id());
    assert!(record.connected.is_empty(), "{record:?}");
    assert!(record.details.is_empty(), "{record:?}");
    let xsub = record
        .bound_endpoint("xsub")
        .expect("xsub bound")
        .to_owned();
    let xpub = record
        .bound_endpoint("xpub")
        .expect("xpub bound")
        .to_owned();
    assert_ne!(resolved_port(&xsub), resolved_port(&xpub));
    assert_eq!(record.bound.len(), 2, "{record:?}");
    let (code, body) = http_get(record.http_addr, "/readyz", WITHIN).unwrap();
    assert_eq!(
        (code, body.contains("\"ready\":true")),
        (200, true),
        "{body}"
    );

    let publisher_shutdown = shutdown.child_token();
    let service = ready::scope(
        Some(publisher_file.clone()),
        publisher(&xsub, publisher_shutdown.clone()),
    )
    .await
    .unwrap();
    let record = wait_for(&publisher_file).await;
    assert_eq!(record.service, "publisher");
    assert!(record.bound.is_empty(), "{record:?}");
    assert_eq!(record.connected["pub"], [xsub.as_str()]);
    assert_eq!(record.details["instance"], "publisher-1");
    assert_ne!(record.http_addr.port(), 0);

    publisher_shutdown.cancel();
    tokio::time::timeout(WITHIN, service.join())
        .await
        .expect("publisher stops")
        .unwrap();
    assert!(!publisher_file.exists(), "removed on a clean stop");
    assert!(proxy_file.exists(), "the proxy still runs");

    shutdown.cancel();
    tokio::time::timeout(WITHIN, proxy)
        .await
        .expect("proxy stops")
        .unwrap()
        .unwrap();
    assert!(!proxy_file.exists(), "removed on a clean stop");
    let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert!(left.is_empty(), "no temporary files: {left:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_record_is_written_when_readiness_turns_true() {
    let dir = temp_dir("gate");
    let path = dir.join("publisher.json");
    let shutdown = CancellationToken::new();
    let mut service = ready::scope(Some(path.clone()), async { bare_service(&shutdown) })
        .await
        .unwrap();
    let gate = service.health.check("gate");
    let ops = service
        .serve_ops(
            "127.0.0.1:0".parse().unwrap(),
            mensageria::metrics::new_registry("publisher", |_| {}),
        )
        .await
        .unwrap();
    let (code, _) = http_get(ops, "/readyz", WITHIN).unwrap();
    assert_eq!(code, 503);
    // The writer polls every 10 ms: many rounds in which it must not write.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!path.exists(), "written although not ready");
    gate.set(true);
    let record = wait_for(&path).await;
    assert_eq!(record.http_addr, ops);
    assert!(record.bound.is_empty() && record.connected.is_empty());
    shutdown.cancel();
    tokio::time::timeout(WITHIN, service.join())
        .await
        .unwrap()
        .unwrap();
    assert!(!path.exists(), "removed on a clean stop");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ready_file_in_a_missing_directory_is_refused_at_start() {
    let path = std::env::temp_dir().join("mensageria-no-such-dir/x/ready.json");
    let shutdown = CancellationToken::new();
    let err = ready::scope(Some(path), async { bare_service(&shutdown) })
        .await
        .unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err:#}");
}
