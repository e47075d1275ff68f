//! A local stand-in for `make up`: the mensageria services of
//! docker-compose.yml run as local processes with exactly their compose
//! environment (defaults of `${VAR:-default}`), except that compose DNS
//! names become 127.0.0.1 and every port is remapped to a free one. They
//! start in `depends_on` order, each gated on its compose healthcheck
//! command, and then serve a request and an event.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    time::{Duration, Instant},
};

use e2e::{
    describe, metric_opt,
    observability::{localize_env, read_compose, workspace_root, ComposeService},
    run_bin, unused_port, with_timeout, Proc, Signal,
};

const OURS: &[&str] = &["broker", "proxy", "server", "client"];

/// One running replica.
struct Instance {
    service: String,
    env: BTreeMap<String, String>,
    proc: Proc,
}

fn env_pairs(env: &BTreeMap<String, String>) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// Runs the compose healthcheck command of `service` with `env` until it
/// exits 0, as Docker would (every 100 ms here instead of `interval`).
fn wait_healthy(service: &ComposeService, env: &BTreeMap<String, String>, proc: &mut Proc) {
    let (program, args) = service
        .healthcheck
        .split_first()
        .unwrap_or_else(|| panic!("compose service {} has no healthcheck", service.name));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = run_bin(program, &args, &env_pairs(env), Duration::from_secs(10));
        if out.status.success() {
            return;
        }
        assert!(
            proc.try_status().is_none(),
            "{} exited while waiting for its healthcheck\n{}",
            proc.name(),
            proc.diagnostics()
        );
        assert!(
            Instant::now() < deadline,
            "{}'s healthcheck `{}` never passed\n{}\n{}",
            service.name,
            service.healthcheck.join(" "),
            describe(&out),
            proc.diagnostics()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn compose_services_run_locally_with_their_compose_environment() {
    with_timeout(Duration::from_secs(90), || {
        let compose = read_compose(&workspace_root().join("docker-compose.yml"));
        let services: Vec<ComposeService> = compose
            .into_iter()
            .filter(|s| {
                s.command
                    .first()
                    .is_some_and(|c| OURS.contains(&c.as_str()))
            })
            .collect();
        let names: BTreeSet<&str> = services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            OURS.iter().copied().collect(),
            "docker-compose.yml should run each of broker, proxy, server and client"
        );
        for s in &services {
            assert!(
                s.environment.contains_key("HTTP_ADDR"),
                "{}: the healthcheck needs HTTP_ADDR in the compose environment",
                s.name
            );
        }
        let hosts: Vec<&str> = names.iter().copied().collect();
        let mut ports = BTreeMap::new();

        // Start in depends_on order, each replica gated on its healthcheck.
        let mut running: Vec<Instance> = Vec::new();
        let mut healthy: BTreeSet<String> = BTreeSet::new();
        while healthy.len() < services.len() {
            let wave: Vec<&ComposeService> = services
                .iter()
                .filter(|s| !healthy.contains(&s.name))
                .filter(|s| {
                    s.depends_on
                        .iter()
                        .all(|d| healthy.contains(d) || !names.contains(d.as_str()))
                })
                .collect();
            assert!(!wave.is_empty(), "depends_on has a cycle among {names:?}");
            let first = running.len();
            for s in &wave {
                for _ in 0..s.replicas.max(1) {
                    let env = localize_env(&s.environment, &hosts, &mut ports, unused_port());
                    let args: Vec<&str> = s.command[1..].iter().map(String::as_str).collect();
                    let proc = e2e::spawn(&s.command[0], &args, &env_pairs(&env));
                    running.push(Instance {
                        service: s.name.clone(),
                        env,
                        proc,
                    });
                }
            }
            for inst in &mut running[first..] {
                let s = services
                    .iter()
                    .find(|s| s.name == inst.service)
                    .expect("known");
                wait_healthy(s, &inst.env, &mut inst.proc);
            }
            healthy.extend(wave.iter().map(|s| s.name.clone()));
        }
        let replicas = |name: &str| running.iter().filter(|i| i.service == name).count();
        let compose_server = services
            .iter()
            .find(|s| s.name == "server")
            .expect("server");
        assert_eq!(replicas("server"), compose_server.replicas.max(1));

        // `docker compose exec client client request hello`: the client
        // container's environment.
        let client = running
            .iter()
            .find(|i| i.service == "client")
            .expect("client");
        let out = run_bin(
            "client",
            &["request", "hello"],
            &env_pairs(&client.env),
            Duration::from_secs(30),
        );
        assert_eq!(e2e::succeeded(&out), "hello\n", "{}", describe(&out));

        // An event: `client run` sends RATE requests per second, each one
        // published by a server through the proxy.
        let out = run_bin(
            "client",
            &["subscribe", "--count", "1"],
            &env_pairs(&client.env),
            Duration::from_secs(30),
        );
        let line = e2e::succeeded(&out);
        assert!(
            line.starts_with("requests.completed ") || line.starts_with("server.status "),
            "{}",
            describe(&out)
        );
        // The steady load of `client run` is answered.
        let client_http: SocketAddr = client.env["HTTP_ADDR"].parse().expect("HTTP_ADDR");
        let ok = r#"mensageria_client_requests_total{status="ok"}"#;
        let replied = || (metric_opt(client_http, ok).unwrap_or(0.0) > 0.0).then_some(());
        let what = "compose's client run to get replies";
        e2e::wait_until(what, Duration::from_secs(30), replied);

        // `docker compose stop`: SIGTERM, clients first.
        for inst in running.iter_mut().rev() {
            inst.proc.kill(Signal::Term);
            let status = inst.proc.wait_exit(Duration::from_secs(20));
            assert!(
                status.success(),
                "{} exited {status:?} on SIGTERM\n{}",
                inst.proc.name(),
                inst.proc.diagnostics()
            );
        }
    });
}
