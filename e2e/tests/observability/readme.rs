//! README's "### Metrics" table against what the four running services
//! expose on /metrics: every documented metric is exposed by the service it
//! is listed under (`all`: by every service), with the documented type and
//! labels, and every `mensageria_*` / `process_*` family exposed is
//! documented. The table cannot drift from the code.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    time::Duration,
};

use e2e::{
    faults::ClientRun,
    metrics_text,
    observability::{families, readme_metrics, workspace_root, Family},
    with_timeout, Stack,
};

#[test]
fn readme_metrics_table_matches_what_the_services_expose() {
    with_timeout(Duration::from_secs(60), || {
        let readme =
            std::fs::read_to_string(workspace_root().join("README.md")).expect("read README.md");
        let documented = readme_metrics(&readme);

        let stack = Stack::start(1);
        let client = ClientRun::ready(&stack, &["--rate", "20"], &[]);
        // Traffic, so labelled families have samples to read labels from.
        e2e::succeeded(&e2e::request(&stack, "hello", &[]));
        e2e::wait_metric_at_least(
            client.http,
            r#"mensageria_client_events_received_total{topic="requests"}"#,
            1.0,
        );
        let services = [
            ("broker", stack.broker.http),
            ("proxy", stack.proxy.http),
            ("server", stack.servers[0].http),
            ("client", client.http),
        ];

        let mut problems = String::new();
        for (service, addr) in services {
            let exposed: BTreeMap<String, Family> = families(&metrics_text(addr))
                .into_iter()
                .filter(|(name, _)| name.starts_with("mensageria_") || name.starts_with("process_"))
                .collect();
            let mine: Vec<_> = documented
                .iter()
                .filter(|d| d.service == service || d.service == "all")
                .collect();
            let names: BTreeSet<&str> = mine.iter().map(|d| d.name.as_str()).collect();
            for d in &mine {
                let Some(f) = exposed.get(&d.name) else {
                    let _ = writeln!(
                        problems,
                        "  {service}: README lists `{}` ({} row) but http://{addr}/metrics has no such family",
                        d.name, d.service
                    );
                    continue;
                };
                if !d.kind.is_empty() && d.kind != f.kind {
                    let _ = writeln!(
                        problems,
                        "  {service}: `{}` is a {} per README, exposed as {}",
                        d.name, d.kind, f.kind
                    );
                }
                // Labels are only visible on samples; a family without any
                // yet is checked for its name and type alone.
                if !f.samples.is_empty() && d.labels != f.labels {
                    let _ = writeln!(
                        problems,
                        "  {service}: `{}` has labels {:?} per README, exposed with {:?}",
                        d.name, d.labels, f.labels
                    );
                }
            }
            for name in exposed.keys() {
                if !names.contains(name.as_str()) {
                    let _ = writeln!(
                        problems,
                        "  {service}: exposes `{name}` ({}), which README's metrics table does not list for {service} or all",
                        exposed[name].kind
                    );
                }
            }
        }
        assert!(
            problems.is_empty(),
            "README.md \"### Metrics\" and the services' /metrics differ:\n{problems}"
        );
    });
}
