//! A real Prometheus (Debian's /usr/bin/prometheus) scrapes the four
//! services under steady load with the job names of
//! deploy/prometheus/prometheus.yml, and every Grafana panel query of the
//! overview dashboard returns data.

use std::time::Duration;

use e2e::{
    describe,
    faults::ClientRun,
    observability::{python3, workspace_root, Prometheus},
    stderr, stdout, wait_until, with_timeout, Stack,
};

/// Rate queries the dashboard relies on, by the family they read: each must
/// return data before the dashboard checker runs (a rate needs two scrapes
/// of a series).
const RATE_PROBES: &[&str] = &[
    "sum(rate(mensageria_broker_requests_total[1m])) > 0",
    "sum(rate(mensageria_client_requests_total[1m])) > 0",
    "sum(rate(mensageria_server_requests_total[1m])) > 0",
    "sum(rate(mensageria_proxy_deliveries_total[1m])) > 0",
    "sum(rate(mensageria_client_events_received_total[1m])) > 0",
    "sum(rate(mensageria_client_event_lag_seconds_bucket[1m])) > 0",
    "sum(rate(process_cpu_seconds_total[1m]))",
];

#[test]
fn prometheus_scrapes_every_service_and_every_dashboard_query_has_data() {
    with_timeout(Duration::from_secs(90), || {
        let stack = Stack::start(2);
        // Concurrency 8: a request slower than the 5 ms between sends does not
        // hold up the next ones.
        let client = ClientRun::ready(&stack, &["--rate", "200", "--concurrency", "8"], &[]);

        // The job names the dashboard and alerts select on
        // (deploy/prometheus/prometheus.yml: job = service name).
        let prom_config =
            std::fs::read_to_string(workspace_root().join("deploy/prometheus/prometheus.yml"))
                .expect("read deploy/prometheus/prometheus.yml");
        for job in ["broker", "proxy", "server", "client"] {
            assert!(
                prom_config.contains(&format!("job_name: {job}\n")),
                "deploy/prometheus/prometheus.yml has no job {job}; keep this test's jobs in step"
            );
        }
        let prom = Prometheus::start(&[
            ("broker", vec![stack.broker.http]),
            ("proxy", vec![stack.proxy.http]),
            ("server", stack.servers.iter().map(|s| s.http).collect()),
            ("client", vec![client.http]),
        ]);

        // Every target up.
        let mut last = Err(String::new());
        let up = e2e::poll_until(Duration::from_secs(20), || {
            last = prom.vector("up");
            let series = last.as_ref().ok()?;
            let mut jobs: Vec<String> = series
                .iter()
                .filter(|(_, v)| *v == 1.0)
                .filter_map(|(m, _)| Some(m["job"].as_str()?.to_owned()))
                .collect();
            jobs.sort();
            (series.len() == 5 && jobs == ["broker", "client", "proxy", "server", "server"])
                .then_some(())
        });
        assert!(up.is_some(), "not every target is up: {last:?}");

        // The broker's request rate is visible while the load runs.
        wait_until(
            "a positive broker request rate in Prometheus",
            Duration::from_secs(20),
            || {
                let v = prom
                    .vector("sum(rate(mensageria_broker_requests_total[30s]))")
                    .ok()?;
                v.first().is_some_and(|(_, r)| *r > 0.0).then_some(())
            },
        );
        for probe in RATE_PROBES {
            wait_until(
                &format!("data for {probe}"),
                Duration::from_secs(20),
                || prom.vector(probe).ok().filter(|v| !v.is_empty()),
            );
        }

        // Every panel expression of the Grafana dashboard returns data.
        let checker = workspace_root().join("deploy/validate/dashboard_queries.py");
        let out = python3(
            &[&checker.to_string_lossy(), &prom.url()],
            Duration::from_secs(60),
        );
        assert!(
            out.status.success(),
            "dashboard_queries.py reported panels without data or with errors\n{}",
            describe(&out)
        );
        assert!(
            stdout(&out).contains(" 0 failed"),
            "{}\n{}",
            stdout(&out),
            stderr(&out)
        );
        eprintln!("{}", stdout(&out).trim());
    });
}
