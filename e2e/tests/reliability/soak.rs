//! Soak: the whole system under steady load for `SOAK_SECS` (default 600),
//! with the resident memory of every service printed every
//! `SOAK_REPORT_SECS` (default 10). Fails if any request fails, any event is
//! lost, or a service's RSS grows more than `SOAK_MAX_GROWTH` (default 0.20)
//! between the end of the warm-up (`SOAK_WARMUP_SECS`, default 15) and the
//! last quarter of the run.
//!
//! ```sh
//! cargo build --release --bins
//! MENSAGERIA_BIN_DIR=$PWD/target/release SOAK_SECS=60 \
//!   cargo test -p e2e --test reliability -- --ignored --exact soak::soak --nocapture
//! ```
//! (`cargo test` rather than nextest: the nextest profile kills a test after
//! 120 s.) `SOAK_RATE` (default 500 requests/s) sets the load.

use std::time::{Duration, Instant};

use e2e::{
    faults::{assert_all_healthy, rss, ClientRun},
    with_timeout, Signal, Stack, GRACE,
};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a valid value")),
        Err(_) => default,
    }
}

#[test]
#[ignore = "soak: runs SOAK_SECS (default 600 s); `make soak`"]
fn soak() {
    let secs: u64 = env_or("SOAK_SECS", 600);
    let report_every: u64 = env_or("SOAK_REPORT_SECS", 10);
    let warmup: u64 = env_or("SOAK_WARMUP_SECS", 15);
    let max_growth: f64 = env_or("SOAK_MAX_GROWTH", 0.20);
    let rate: f64 = env_or("SOAK_RATE", 500.0);
    assert!(
        secs > warmup + 10,
        "SOAK_SECS must exceed the warm-up by 10 s"
    );
    with_timeout(Duration::from_secs(secs + 180), move || {
        let stack = Stack::start(2);
        let rate_arg = rate.to_string();
        let mut flags = vec!["--rate", &rate_arg, "--concurrency", "5000"];
        flags.extend(["--timeout", "2500ms", "--retries", "3"]);
        flags.extend(["--payload", "work 1ms soak"]);
        let mut client = ClientRun::ready(&stack, &flags, &[]);
        let mut services = vec![("broker", stack.broker.http), ("proxy", stack.proxy.http)];
        services.push(("server0", stack.servers[0].http));
        services.push(("server1", stack.servers[1].http));
        services.push(("client", client.http));

        // One sample a second; a line every `report_every` seconds.
        let started = Instant::now();
        let mut samples: Vec<(f64, Vec<f64>)> = Vec::new();
        let mut next = started;
        let mut next_report = report_every;
        eprintln!(
            "soak: {secs} s at {rate} req/s, binaries from {}",
            e2e::bin_dir().display()
        );
        while started.elapsed() < Duration::from_secs(secs) {
            next += Duration::from_secs(1);
            std::thread::sleep(next.saturating_duration_since(Instant::now())); // pacing
            let t = started.elapsed().as_secs_f64();
            let values: Vec<f64> = services
                .iter()
                .map(|(n, a)| rss(*a).unwrap_or_else(|| panic!("{n} stopped answering at {t:.0}s")))
                .collect();
            if t + 0.5 >= next_report as f64 {
                let s = client.stats();
                let rss_text: Vec<String> = services
                    .iter()
                    .zip(&values)
                    .map(|((n, _), v)| format!("{n}={:.1}MiB", v / 1048576.0))
                    .collect();
                eprintln!(
                    "soak t={t:>4.0}s {} ok={} failed={} retries={} events={} lost={}",
                    rss_text.join(" "),
                    s.ok(),
                    s.failed(),
                    s.retries,
                    s.received.values().sum::<f64>(),
                    s.lost
                );
                next_report += report_every;
            }
            samples.push((t, values));
        }

        let s = client.stats();
        let base_at = samples
            .iter()
            .position(|(t, _)| *t >= warmup as f64)
            .expect("a sample after the warm-up");
        let late_from = secs as f64 * 0.75;
        let mut verdicts = Vec::new();
        let mut grown = Vec::new();
        for (i, (name, _)) in services.iter().enumerate() {
            let base = samples[base_at].1[i];
            let late = samples
                .iter()
                .filter(|(t, _)| *t >= late_from)
                .map(|(_, v)| v[i])
                .fold(0.0, f64::max);
            let growth = late / base - 1.0;
            verdicts.push(format!(
                "{name} {:.1}->{:.1}MiB ({:+.1}%)",
                base / 1048576.0,
                late / 1048576.0,
                growth * 100.0
            ));
            if growth > max_growth {
                grown.push(*name);
            }
        }
        eprintln!(
            "RESULT soak: {secs}s at {rate} req/s: ok={} failed={} retries={} events={} lost={}; \
             RSS after {warmup}s warm-up -> max of the last quarter: {}",
            s.ok(),
            s.failed(),
            s.retries,
            s.received.values().sum::<f64>(),
            s.lost,
            verdicts.join(", ")
        );
        assert_eq!(s.failed(), 0.0, "requests failed during the soak: {s:?}");
        assert_eq!(s.lost, 0.0, "events lost during the soak: {s:?}");
        assert!(s.ok() > 0.0);
        assert!(
            grown.is_empty(),
            "RSS grew more than {:.0}% after warm-up: {grown:?}",
            max_growth * 100.0
        );
        assert_all_healthy(&services);
        client.proc.kill(Signal::Term);
        assert!(client
            .proc
            .wait_exit(GRACE + Duration::from_secs(5))
            .success());
    });
}
