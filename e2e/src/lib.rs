//! Helpers of the mensageria end-to-end suite (`e2e/tests/e2e`), which runs
//! the real `broker`, `proxy`, `server` and `client` binaries on loopback
//! with ephemeral ports.
//!
//! Processes and services come from the test kit (`testkit`), re-exported:
//!
//! - [`bin`]: where the binaries are (`MENSAGERIA_BIN_DIR`, default
//!   `<workspace>/target/debug`; build them first with `cargo build --bins`).
//! - [`Proc`], [`spawn`]: a child process whose stdout and stderr lines are
//!   captured on threads; waits with deadlines, signals, and SIGKILL + reap
//!   on drop.
//! - [`Stack::builder`], [`Launcher`]: services started on ephemeral ports
//!   (read back from their ready records) and waited for until ready (one
//!   definition: `testkit::stack`); servers are Majordomo workers on the
//!   broker's frontend unless a test asks for plain REP ones
//!   ([`StackBuilder::rep`]).
//! - [`broker_workers`], [`wait_workers`],
//!   [`wait_registered`]: the broker's view of its Majordomo workers.
//! - [`metric`], [`http_get`], [`wait_until`]: observing services.
//! - [`run_client`], [`request`], [`bench`], [`bench_summary`]: one-shot
//!   client subcommands.
//! - [`with_timeout`]: the watchdog every test body runs under.
//!
//! Nothing here sleeps to synchronise: every wait is for a condition, with a
//! deadline, and fails with the captured logs when the deadline passes.

use std::{collections::HashMap, net::SocketAddr, process::Output, time::Duration};

pub use mensageria::header::{EventHeader, Header};
use serde_json::Value;

/// Default time limit of a one-shot client command.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------
// Binaries and processes (testkit)
// ---------------------------------------------------------------------------

pub use testkit::{
    bins::{bin, bin_dir},
    process::{Proc, ProcBuilder},
    signal::Signal,
    wait::{poll_until, wait_until},
    watchdog::with_timeout,
};

/// Starts the binary `bin_name` (a service binary of [`bin_dir`], or an
/// absolute path) with `args` and `env` on top of a cleared environment
/// ([`ProcBuilder::clean_env`]), a fresh `READY_FILE`, stdin closed and
/// stdout and stderr captured.
///
/// # Panics
/// If the binary is missing or cannot be started.
pub fn spawn(bin_name: &str, args: &[&str], env: &[(&str, &str)]) -> Proc {
    let sub = args
        .first()
        .filter(|a| !a.starts_with('-'))
        .map_or(String::new(), |a| format!(" {a}"));
    ProcBuilder::new(format!("{bin_name}{sub}"), bin(bin_name))
        .args(args)
        .clean_env()
        .ready_file()
        .envs(env.iter().copied())
        .spawn()
        .unwrap_or_else(|e| panic!("{e:#}"))
}

/// Runs a binary to completion with a time limit and returns its output.
///
/// # Panics
/// If it cannot start or overruns `timeout` (it is then killed).
pub fn run_bin(bin_name: &str, args: &[&str], env: &[(&str, &str)], timeout: Duration) -> Output {
    spawn(bin_name, args, env).output(timeout)
}

/// Runs `client <args>` to completion with a time limit.
///
/// # Panics
/// As [`run_bin`].
pub fn run_client(args: &[&str], timeout: Duration) -> Output {
    run_bin("client", args, &[], timeout)
}

/// Stdout of an output as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Stderr of an output as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Status, stdout and stderr of an output, for failure messages.
pub fn describe(o: &Output) -> String {
    format!(
        "exit: {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        stdout(o),
        stderr(o)
    )
}

/// Asserts that a command exited 0; returns its stdout.
pub fn succeeded(out: &Output) -> String {
    assert!(out.status.success(), "{}", describe(out));
    stdout(out)
}

/// Asserts that a command exited with `code` and said `wanted` on stderr
/// (`what` names the case in the failure message).
pub fn assert_failed(out: &Output, code: i32, wanted: &str, what: &str) {
    assert_eq!(out.status.code(), Some(code), "{what}\n{}", describe(out));
    assert!(
        stderr(out).contains(wanted),
        "{what}: stderr does not say {wanted:?}\n{}",
        describe(out)
    );
}

/// Runs `<bin> healthcheck` against the ops server at `addr`.
pub fn healthcheck(bin: &str, addr: impl std::fmt::Display) -> Output {
    let addr = addr.to_string();
    run_bin(
        bin,
        &["healthcheck"],
        &[("HTTP_ADDR", &addr)],
        CLIENT_TIMEOUT,
    )
}

// ---------------------------------------------------------------------------
// Waiting and observing
// ---------------------------------------------------------------------------

pub use testkit::{
    metrics::value as parse_metric,
    ops::{
        expect_metric, http_get, metric, metric_opt, metrics_text, wait_metric, wait_ready,
        WAIT_LIMIT,
    },
};

/// [`wait_metric`] until the value is at least `min`.
pub fn wait_metric_at_least(addr: SocketAddr, series: &str, min: f64) -> f64 {
    wait_metric(addr, series, &format!(">= {min}"), |v| v >= min)
}

pub use testkit::ports::unused_port;

/// Waits until the broker at `broker_http` has exactly `n` Majordomo
/// workers whose labels include `matching` ([`broker_workers`]).
///
/// # Panics
/// After `timeout`.
pub fn wait_workers(broker_http: SocketAddr, matching: &[(&str, &str)], n: f64, timeout: Duration) {
    wait_until(
        &format!("{n} workers {matching:?} at the broker {broker_http}"),
        timeout,
        || (broker_workers(broker_http, matching) == n).then_some(()),
    );
}

// ---------------------------------------------------------------------------
// Services (testkit)
// ---------------------------------------------------------------------------

pub use testkit::stack::{
    broker_workers, wait_registered, Broker, Launcher, Server, Stack, StackBuilder, GRACE,
    GRACE_ARG, START_TIMEOUT,
};

/// Runs `client request <payload> --broker-endpoints <frontend> <extra…>`
/// against `stack`.
pub fn request(stack: &Stack, payload: &str, extra: &[&str]) -> Output {
    let mut args = vec!["request", payload, "--broker-endpoints", stack.frontend()];
    args.extend(extra);
    run_client(&args, CLIENT_TIMEOUT)
}

/// Starts `client bench --json --broker-endpoints <frontend> <extra…>` in
/// the background.
pub fn spawn_bench(frontend: &str, extra: &[&str]) -> Proc {
    let mut args = vec!["bench", "--json", "--broker-endpoints", frontend];
    args.extend(extra);
    spawn("client", &args, &[])
}

/// Runs a bench against `stack` to completion (exit 0 required) and returns
/// its summary.
pub fn bench(stack: &Stack, extra: &[&str], timeout: Duration) -> BenchSummary {
    bench_summary(spawn_bench(stack.frontend(), extra), timeout)
}

/// The `--json` summary of `client bench`.
pub use client::bench::Summary as BenchSummary;

/// Waits for a background `client bench --json` to exit 0 and reads its
/// summary (every field required).
///
/// # Panics
/// If it overruns `timeout`, fails, or prints no summary.
pub fn bench_summary(mut proc: Proc, timeout: Duration) -> BenchSummary {
    let out = proc.output(timeout);
    assert!(
        out.status.success(),
        "client bench failed\n{}",
        describe(&out)
    );
    let text = stdout(&out);
    let line = text
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON summary\n{}", describe(&out)));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not a bench summary ({e}): {line}"))
}

// ---------------------------------------------------------------------------
// Plain ZeroMQ peers
// ---------------------------------------------------------------------------

pub use testkit::inproc::connected;

/// A plain REQ socket connected to `endpoint` ([`connected`]: 5 s send and
/// receive timeouts, so a test can never block forever).
pub fn plain_req(ctx: &zmq::Context, endpoint: &str) -> zmq::Socket {
    connected(ctx, zmq::REQ, endpoint)
}

/// Sends `payload` (e.g. `work 2s`) on a fresh plain REQ to `broker`'s
/// frontend and waits until a Majordomo worker is busy with it, the only
/// request in flight; returns the socket, to receive the reply.
///
/// # Panics
/// If no worker is busy with it within [`WAIT_LIMIT`].
pub fn busy_request(ctx: &zmq::Context, broker: &Broker, payload: &str) -> zmq::Socket {
    let req = plain_req(ctx, &broker.frontend);
    req.send(payload.as_bytes(), 0).expect("send the request");
    wait_workers(broker.http, &[("state", "busy")], 1.0, WAIT_LIMIT);
    req
}

/// Sends `frames` on a REQ socket and returns the reply frames.
///
/// # Panics
/// On a send or receive failure (including the 5 s timeout).
pub fn req_roundtrip(req: &zmq::Socket, frames: &[&[u8]]) -> Vec<Vec<u8>> {
    req.send_multipart(frames.iter().copied(), 0)
        .expect("send the request");
    req.recv_multipart(0)
        .unwrap_or_else(|e| panic!("no reply to {:?}: {e}", show(frames)))
}

/// Asserts that `reply` is a plain error: one frame starting with `prefix`
/// (e.g. `ERR unavailable `).
pub fn assert_plain_error(reply: &[Vec<u8>], prefix: &str) {
    assert!(
        reply.len() == 1 && reply[0].starts_with(prefix.as_bytes()),
        "expected one frame `{prefix}…`, got {:?}",
        show(reply)
    );
}

/// Frames as lossy text, for messages.
pub fn show<T: AsRef<[u8]>>(frames: &[T]) -> Vec<String> {
    frames
        .iter()
        .map(|f| String::from_utf8_lossy(f.as_ref()).into_owned())
        .collect()
}

/// A plain SUB socket connected to `endpoint` and subscribed to `prefix`.
pub fn plain_sub(ctx: &zmq::Context, endpoint: &str, prefix: &[u8]) -> zmq::Socket {
    let s = ctx.socket(zmq::SUB).expect("create a SUB socket");
    s.set_linger(0).expect("set linger");
    s.set_rcvhwm(100_000).expect("set receive HWM");
    s.connect(endpoint).expect("connect SUB");
    s.set_subscribe(prefix).expect("subscribe");
    s
}

/// Receives one message (all frames) within `timeout`, if any.
pub fn recv_within(s: &zmq::Socket, timeout: Duration) -> Option<Vec<Vec<u8>>> {
    let ms = i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX);
    match s.poll(zmq::POLLIN, ms) {
        Ok(n) if n > 0 => s.recv_multipart(zmq::DONTWAIT).ok(),
        _ => None,
    }
}

/// `echo` workers the broker lost (heartbeats, a dead connection).
pub const ECHO_WORKERS_LOST: &str = r#"mensageria_broker_workers_lost_total{service="echo"}"#;

/// Events of completed requests a server published (`topic="requests"`).
pub const PUBLISHED_REQUESTS: &str =
    r#"mensageria_server_events_published_total{topic="requests"}"#;

/// Primes the event path of `stack`: sends plain requests until a plain SUB
/// on `requests` has events of every server, then waits until every event
/// the servers published has reached it. Then every server's PUB holds the
/// `requests` subscription and no older event is still on its way (each
/// publisher's sequence is FIFO end to end). Returns that SUB (keep it
/// while the subscription upstream must not lapse) and, per server
/// instance, its publisher id and the sequence number of its last event.
///
/// # Panics
/// If the events do not arrive in time.
pub fn prime_events(
    stack: &Stack,
    ctx: &zmq::Context,
) -> (zmq::Socket, HashMap<String, (u64, u64)>) {
    let sub = plain_sub(ctx, stack.xpub(), b"requests");
    let req = plain_req(ctx, stack.frontend());
    let mut last = HashMap::new();
    let read = |last: &mut HashMap<String, (u64, u64)>| {
        while let Some(frames) = recv_within(&sub, Duration::from_millis(20)) {
            let e = decode_event(&frames);
            let server = e.payload["server"].as_str().expect("server in the payload");
            last.insert(server.to_owned(), (e.header.publisher, e.header.seq));
        }
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while last.len() < stack.servers.len() {
        assert!(
            std::time::Instant::now() < deadline,
            "events of only {last:?} arrived"
        );
        req_roundtrip(&req, &[b"prime"]);
        read(&mut last);
    }
    for s in &stack.servers {
        let published = wait_until("priming events to be published", WAIT_LIMIT, || {
            let published = metric(s.http, PUBLISHED_REQUESTS);
            (published == s.handled_ok()).then_some(published as u64)
        });
        wait_until("priming events to arrive", WAIT_LIMIT, || {
            read(&mut last);
            (last[&s.instance].1 == published).then_some(())
        });
    }
    (sub, last)
}

/// An event as a plain subscriber receives it.
#[derive(Debug, Clone)]
pub struct PlainEvent {
    /// Topic frame.
    pub topic: String,
    /// Decoded header frame.
    pub header: EventHeader,
    /// Payload frame, parsed as JSON.
    pub payload: Value,
}

/// Decodes `[topic, header, payload]`.
///
/// # Panics
/// If the message does not have exactly that shape.
pub fn decode_event(frames: &[Vec<u8>]) -> PlainEvent {
    let [topic, header, payload] = frames else {
        panic!(
            "an event must be 3 frames (topic, header, payload), got {}: {:?}",
            frames.len(),
            show(frames)
        );
    };
    let header = match Header::decode(header) {
        Ok(Header::Event(h)) => h,
        other => panic!("second frame is not an event header: {other:?}"),
    };
    let payload = serde_json::from_slice(payload).unwrap_or_else(|e| {
        panic!(
            "event payload is not JSON ({e}): {}",
            String::from_utf8_lossy(payload)
        )
    });
    PlainEvent {
        topic: String::from_utf8_lossy(topic).into_owned(),
        header,
        payload,
    }
}
pub mod faults;
pub mod observability;
