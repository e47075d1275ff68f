//! Readiness and liveness over a service's life: `/readyz` is 503 before
//! the sockets are up and during drain, 200 in between; `/healthz` of a
//! server stays 200 while its broker restarts.

use std::{
    net::SocketAddr,
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use e2e::{
    http_get, recv_within, stdout, unused_port, with_timeout, Launcher, Proc, Signal, Stack, GRACE,
    START_TIMEOUT,
};

/// `/readyz`: status and parsed JSON body.
fn readyz(addr: SocketAddr) -> (u16, serde_json::Value) {
    let (code, body) =
        http_get(addr, "/readyz").unwrap_or_else(|e| panic!("GET http://{addr}/readyz: {e}"));
    let json = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("/readyz of {addr} is not JSON ({e}): {body}"));
    (code, json)
}

/// Waits until `/readyz` answers `code`; returns the body.
fn wait_readyz(addr: SocketAddr, code: u16, timeout: Duration) -> serde_json::Value {
    let mut last = None;
    e2e::poll_until(timeout, || {
        let r = readyz(addr);
        let done = (r.0 == code).then(|| r.1.clone());
        last = Some(r);
        done
    })
    .unwrap_or_else(|| panic!("/readyz of {addr} never answered {code}; last: {last:?}"))
}

/// Sends SIGTERM to `proc` and polls `/readyz` on `http` as fast as it
/// answers until the process exits: returns the first non-200 answer seen
/// before the exit, if any, and the exit status.
fn terminate_watching_readyz(
    proc: &mut Proc,
    http: SocketAddr,
) -> (Option<(u16, String)>, std::process::ExitStatus) {
    proc.kill(Signal::Term);
    let deadline = Instant::now() + GRACE + Duration::from_secs(5);
    let mut seen = None;
    while seen.is_none() && proc.try_status().is_none() && Instant::now() < deadline {
        match http_get(http, "/readyz") {
            Ok((200, _)) => {}
            Ok(answer) => seen = Some(answer),
            Err(_) => break, // the ops server has gone: the process is exiting
        }
    }
    let status = proc.wait_exit(GRACE + Duration::from_secs(5));
    (seen, status)
}

fn check_draining(answer: Option<(u16, String)>, status: std::process::ExitStatus, who: &str) {
    let (code, body) =
        answer.unwrap_or_else(|| panic!("{who}: no 503 from /readyz between SIGTERM and exit"));
    assert_eq!(code, 503, "{who} /readyz while draining: {body}");
    let json: serde_json::Value = serde_json::from_str(&body).expect("JSON /readyz");
    assert_eq!(json["ready"], false, "{who}: {body}");
    assert_eq!(json["checks"]["not_draining"], false, "{who}: {body}");
    assert!(
        status.success(),
        "{who} exited with {status:?} after SIGTERM"
    );
}

#[test]
fn server_readyz_is_503_until_a_broker_is_up_and_while_draining() {
    with_timeout(Duration::from_secs(60), || {
        // A broker frontend endpoint where nothing listens yet.
        let frontend = format!("tcp://127.0.0.1:{}", unused_port());
        let l = Launcher::default();
        let proxy = l.proxy(&[], &[]).unwrap();
        let (mut server, server_http) = l.server_alive((&frontend, &proxy.xsub), &[]).unwrap();

        let (code, body) = readyz(server_http);
        assert_eq!(code, 503, "server without a broker: {body}");
        assert_eq!(body["ready"], false, "{body}");
        assert_eq!(body["checks"]["broker_connected"], false, "{body}");
        assert_eq!(body["checks"]["not_draining"], true, "{body}");
        let (code, live) = http_get(server_http, "/healthz").expect("GET /healthz");
        assert_eq!(
            code, 200,
            "a server waiting for its broker is alive: {live}"
        );

        // The broker comes up on that endpoint: the server becomes ready.
        let broker = l.broker(&["--frontend-bind", &frontend], &[]).unwrap();
        let body = wait_readyz(server_http, 200, START_TIMEOUT);
        e2e::wait_registered(broker.http, 1.0);
        assert_eq!(body["ready"], true, "{body}");
        assert_eq!(body["checks"]["broker_connected"], true, "{body}");
        for addr in [broker.http, proxy.http] {
            assert_eq!(readyz(addr).0, 200, "{addr}");
        }

        // A request executing at SIGTERM keeps the server draining for a
        // while: /readyz must say 503 during that time, and the request
        // still gets its answer.
        let ctx = zmq::Context::new();
        let req = e2e::busy_request(&ctx, &broker, "work 1500ms");
        let (seen, status) = terminate_watching_readyz(&mut server, server_http);
        check_draining(seen, status, "server");
        let reply = recv_within(&req, Duration::from_secs(5)).expect("the in-flight reply");
        assert_eq!(
            reply,
            vec![b"done".to_vec()],
            "the draining server finished its work"
        );
    });
}

#[test]
fn server_healthz_stays_200_through_a_broker_restart() {
    with_timeout(Duration::from_secs(60), || {
        let mut stack = Stack::start(1);
        let server = stack.servers[0].http;

        // Poll the server's /healthz every 10 ms from now until the end (or
        // until the test body panics: dropping `stop` ends the wait too).
        let (stop, stopped) = mpsc::channel::<()>();
        let poller = thread::spawn(move || {
            let (mut ok, mut bad) = (0u32, Vec::new());
            loop {
                match http_get(server, "/healthz") {
                    Ok((200, _)) => ok += 1,
                    other => bad.push(format!("{other:?}")),
                }
                let pace = stopped.recv_timeout(Duration::from_millis(10));
                if pace != Err(mpsc::RecvTimeoutError::Timeout) {
                    return (ok, bad);
                }
            }
        });

        // Stop the broker by SIGTERM with a request in flight: its /readyz
        // is 503 while it drains.
        let ctx = zmq::Context::new();
        let req = e2e::busy_request(&ctx, &stack.broker, "work 1s");
        let broker_http = stack.broker.http;
        let (seen, status) = terminate_watching_readyz(&mut stack.broker.proc, broker_http);
        check_draining(seen, status, "broker");
        let reply = recv_within(&req, Duration::from_secs(5)).expect("the in-flight reply");
        assert_eq!(reply, vec![b"done".to_vec()]);

        // Broker down: the server is alive but not ready.
        let body = wait_readyz(server, 503, Duration::from_secs(15));
        assert_eq!(body["checks"]["broker_connected"], false, "{body}");

        // A new broker on the same ports: the server reconnects by itself.
        stack.broker = stack.broker.restart(&[]);
        let body = wait_readyz(server, 200, START_TIMEOUT);
        assert_eq!(body["checks"]["broker_connected"], true, "{body}");
        // Connected is not yet registered: wait for the broker to list the
        // server's workers before asking it for one.
        let registrations = stack.servers[0].registrations() as f64;
        e2e::wait_registered(stack.broker.http, registrations);
        let out = e2e::request(&stack, "after the restart", &[]);
        assert_eq!(
            stdout(&out),
            "after the restart\n",
            "{}",
            e2e::describe(&out)
        );

        drop(stop);
        let (ok, bad) = poller.join().expect("the /healthz poller");
        assert!(
            bad.is_empty(),
            "/healthz of the server was not 200 {} times during the broker restart: {:?}",
            bad.len(),
            &bad[..bad.len().min(5)]
        );
        assert!(ok >= 10, "only {ok} /healthz polls happened");
    });
}
