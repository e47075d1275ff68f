//! The command line: bad values and the `healthcheck` subcommands.

use std::time::Duration;

use e2e::{
    assert_failed, describe, healthcheck, http_get, metric, run_bin, stderr, unused_port,
    with_timeout, Launcher, Stack,
};

#[test]
fn bad_values_exit_2_with_one_line_naming_the_option() {
    with_timeout(Duration::from_secs(60), || {
        let cases: &[(&str, &[&str], &str)] = &[
            ("broker", &["--max-inflight", "0"], "--max-inflight"),
            ("broker", &["--request-timeout", "5"], "--request-timeout"),
            (
                "broker",
                &["--frontend-bind", "localhost:5555"],
                "--frontend-bind",
            ),
            ("proxy", &["--xpub-bind", "5558"], "--xpub-bind"),
            ("server", &["--workers", "0"], "--workers"),
            (
                "server",
                &["--broker-endpoints", "tcp://a:1,udp://b:2"],
                "--broker-endpoints",
            ),
            ("client", &["bench", "--concurrency", "x"], "--concurrency"),
            ("client", &["bench", "--requests", "0"], "--requests"),
            ("client", &["request", "hi", "--timeout", "3"], "--timeout"),
            ("client", &["subscribe", "--duration", "soon"], "--duration"),
            (
                "client",
                &["run", "--shutdown-grace", "forever"],
                "--shutdown-grace",
            ),
        ];
        for (bin, args, option) in cases {
            let out = run_bin(bin, args, &[], Duration::from_secs(10));
            let what = format!("{bin} {}", args.join(" "));
            assert_eq!(out.status.code(), Some(2), "{what}\n{}", describe(&out));
            let err = stderr(&out);
            let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
            assert_eq!(lines.len(), 1, "{what}: expected one line on stderr\n{err}");
            assert!(
                lines[0].contains(option),
                "{what}: the error does not name {option}: {err}"
            );
            assert!(out.stdout.is_empty(), "{what}\n{}", describe(&out));
        }
    });
}

#[test]
fn healthcheck_exits_0_when_ready_and_1_otherwise() {
    with_timeout(Duration::from_secs(60), || {
        let stack = Stack::start(1);
        let services = [
            ("broker", stack.broker.http),
            ("proxy", stack.proxy.http),
            ("server", stack.servers[0].http),
        ];
        for (bin, http) in services {
            let out = healthcheck(bin, http);
            assert!(
                out.status.success(),
                "{bin} healthcheck against a ready {bin}\n{}",
                describe(&out)
            );
            assert_eq!(
                http_get(http, "/healthz").expect("GET /healthz").0,
                200,
                "{bin}"
            );
            assert_eq!(
                http_get(http, "/nowhere").expect("GET /nowhere").0,
                404,
                "{bin}"
            );
            let info = format!(
                "mensageria_build_info{{service=\"{bin}\",version=\"{}\"}}",
                env!("CARGO_PKG_VERSION")
            );
            assert_eq!(metric(http, &info), 1.0, "{bin}");
        }

        // Nothing listening.
        let nowhere = format!("127.0.0.1:{}", unused_port());
        for bin in ["broker", "proxy", "server", "client"] {
            let what = format!("{bin} healthcheck with nothing listening");
            assert_failed(&healthcheck(bin, &nowhere), 1, "not ready", &what);
        }

        // Alive but not ready: a server whose broker does not exist.
        let dead = format!("tcp://127.0.0.1:{}", unused_port());
        let (_lonely, http) = Launcher::default()
            .server_alive((&dead, &dead), &[])
            .unwrap();
        assert_eq!(http_get(http, "/healthz").expect("GET /healthz").0, 200);
        let (code, body) = http_get(http, "/readyz").expect("GET /readyz");
        assert_eq!(code, 503, "{body}");
        let json: serde_json::Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("/readyz body is not JSON ({e}): {body}"));
        assert!(json.is_object(), "{body}");
        let what = "server healthcheck when not ready";
        assert_failed(&healthcheck("server", http), 1, "503", what);
    });
}
