//! Helpers of the observability end-to-end tests (`e2e/tests/observability`):
//! priming of event subscriptions, a tiny OTLP/HTTP
//! JSON collector, a real Prometheus (from `testkit`), exposition-format parsing, the README
//! metrics table, and the compose file read through PyYAML.
//!
//! As in the rest of the suite, nothing here sleeps to synchronise: every
//! wait is for a condition, with a deadline.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    path::Path,
    process::Output,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{describe, metric_opt, plain_sub, recv_within, wait_until, ProcBuilder, Stack};

pub use testkit::bins::workspace_root;

/// JSON logs at info, for processes not started by a [`Launcher`](crate::Launcher)
/// (which gives them to every service by default), so logs of a failing
/// test are structured.
pub const JSON_LOGS: &[(&str, &str)] = &[("LOG_FORMAT", "json"), ("RUST_LOG", "info")];

// ---------------------------------------------------------------------------
// Temporary directories and external programs
// ---------------------------------------------------------------------------

pub use testkit::prometheus::Prometheus;

/// Runs `python3 <args>` (from `PATH`) to completion within `timeout`.
///
/// # Panics
/// If python3 cannot be started or overruns `timeout` (it is then killed).
pub fn python3(args: &[&str], timeout: Duration) -> Output {
    ProcBuilder::new("python3", "python3")
        .args(args)
        .spawn()
        .unwrap_or_else(|e| panic!("{e:#} (see .ci/run for what the tests need installed)"))
        .output(timeout)
}

// ---------------------------------------------------------------------------
// Events: making sure subscriptions have reached the publishers
// ---------------------------------------------------------------------------

/// Waits until the proxy counts at least `n` live subscriptions for `topic`
/// (the label: first dotted segment, `none` for the empty prefix).
pub fn wait_proxy_subscriptions(proxy: SocketAddr, topic: &str, n: f64) {
    let series = format!("mensageria_proxy_subscriptions{{topic=\"{topic}\"}}");
    wait_until(
        &format!("{series} >= {n} on {proxy}"),
        Duration::from_secs(15),
        || (metric_opt(proxy, &series).unwrap_or(0.0) >= n).then_some(()),
    );
}

/// Waits, on `sub` (already subscribed to `server.status`), for a status event
/// from every server of `instances` (servers must run with a short
/// `--status-interval`), and returns the other messages received meanwhile.
///
/// The proxy forwards subscriptions upstream in the order it reads them, and
/// each server's PUB socket applies them in order: once `sub`'s
/// `server.status` subscription has carried a status event from a server,
/// every subscription the proxy had seen before it has reached that server
/// too. That is how a test knows no event will be dropped for lack of a
/// subscription, without sending requests to find out.
pub fn wait_status_from_all(
    sub: &zmq::Socket,
    instances: &[String],
    timeout: Duration,
) -> Vec<Vec<Vec<u8>>> {
    let deadline = Instant::now() + timeout;
    let mut seen = BTreeSet::new();
    let mut others = Vec::new();
    while seen.len() < instances.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "no server.status event within {timeout:?} from {:?} (seen {seen:?})",
            instances
        );
        let Some(frames) = recv_within(sub, left.min(Duration::from_millis(200))) else {
            continue;
        };
        if frames.first().map(|t| t.as_slice()) == Some(b"server.status") {
            let payload: Value = frames
                .last()
                .and_then(|p| serde_json::from_slice(p).ok())
                .unwrap_or(Value::Null);
            if let Some(s) = payload["server"].as_str() {
                if instances.iter().any(|i| i == s) {
                    seen.insert(s.to_owned());
                }
            }
        } else {
            others.push(frames);
        }
    }
    others
}

/// After the proxy has seen the subscriptions under test: waits until they
/// have reached every server of `stack` (see [`wait_status_from_all`]), with
/// a throwaway SUB socket.
pub fn wait_subscriptions_reach_servers(stack: &Stack) {
    let ctx = zmq::Context::new();
    let sub = plain_sub(&ctx, stack.xpub(), b"server.status");
    let instances: Vec<String> = stack.servers.iter().map(|s| s.instance.clone()).collect();
    wait_status_from_all(&sub, &instances, Duration::from_secs(15));
}

// ---------------------------------------------------------------------------
// Exposition format
// ---------------------------------------------------------------------------

pub use testkit::metrics::{families, Family};

// ---------------------------------------------------------------------------
// README metrics table
// ---------------------------------------------------------------------------

/// One row-entry of README's "### Metrics" table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentedMetric {
    /// `all`, `broker`, `proxy`, `server` or `client`.
    pub service: String,
    /// The name samples are queried by (counters with `_total`).
    pub name: String,
    /// The type column (empty when not given).
    pub kind: String,
    /// Label names: the backticked words of the labels column outside
    /// parentheses.
    pub labels: BTreeSet<String>,
}

/// Parses the "### Metrics" table of a README.
///
/// # Panics
/// If the section or its table is missing.
pub fn readme_metrics(readme: &str) -> Vec<DocumentedMetric> {
    let start = readme
        .find("\n### Metrics")
        .expect("README has a \"### Metrics\" section");
    let mut out = Vec::new();
    let mut in_table = false;
    for line in readme[start..].lines().skip(1) {
        let line = line.trim();
        if !line.starts_with('|') {
            if in_table {
                break;
            }
            continue;
        }
        in_table = true;
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        if cells.len() < 4 || cells[0] == "service" || cells[0].starts_with("---") {
            continue;
        }
        let labels = backticked(&strip_parens(cells[3]));
        for name in backticked(cells[1]) {
            out.push(DocumentedMetric {
                service: cells[0].to_owned(),
                name,
                kind: cells[2].to_owned(),
                labels: labels.iter().cloned().collect(),
            });
        }
    }
    assert!(
        !out.is_empty(),
        "README's \"### Metrics\" section has no table rows"
    );
    out
}

fn backticked(s: &str) -> Vec<String> {
    s.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .filter(|w| !w.is_empty())
        .collect()
}

fn strip_parens(s: &str) -> String {
    let mut depth = 0usize;
    s.chars()
        .filter(|c| {
            match c {
                '(' => depth += 1,
                ')' => {
                    depth = depth.saturating_sub(1);
                    return false;
                }
                _ => {}
            }
            depth == 0
        })
        .collect()
}

// ---------------------------------------------------------------------------
// A tiny OTLP/HTTP JSON collector
// ---------------------------------------------------------------------------

pub use testkit::otlp::{ExportedSpan, OtlpCollector};

// ---------------------------------------------------------------------------
// docker-compose.yml
// ---------------------------------------------------------------------------

/// One service of the compose file, as far as running it locally goes.
#[derive(Debug, Clone)]
pub struct ComposeService {
    /// Service name (also its DNS name inside compose).
    pub name: String,
    /// `command` (for ours: binary name, then arguments).
    pub command: Vec<String>,
    /// `environment`, `${VAR:-default}` resolved to the default.
    pub environment: BTreeMap<String, String>,
    /// `healthcheck.test` without the leading `CMD`.
    pub healthcheck: Vec<String>,
    /// `depends_on` service names.
    pub depends_on: Vec<String>,
    /// `deploy.replicas` (default 1).
    pub replicas: usize,
}

/// Reads a compose file with python3's PyYAML (anchors and `<<` merge keys
/// resolved) and returns its services.
///
/// # Panics
/// If python3 or PyYAML is missing, or the file is not a compose file.
pub fn read_compose(path: &Path) -> Vec<ComposeService> {
    const SCRIPT: &str = "import json, sys, yaml\n\
        doc = yaml.safe_load(open(sys.argv[1]))\n\
        print(json.dumps(doc.get('services') or {}))\n";
    let out = python3(
        &["-c", SCRIPT, &path.to_string_lossy()],
        Duration::from_secs(30),
    );
    assert!(
        out.status.success(),
        "reading {} with python3 + PyYAML failed (PyYAML is python3-yaml on Debian, \
         `pip install PyYAML` elsewhere)\n{}",
        path.display(),
        describe(&out)
    );
    let services: serde_json::Map<String, Value> = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("python3 printed no JSON ({e})\n{}", describe(&out)));
    services
        .into_iter()
        .map(|(name, s)| {
            let strings = |v: &Value| -> Vec<String> {
                match v {
                    Value::Array(a) => a.iter().map(scalar).collect(),
                    Value::String(s) => s.split_whitespace().map(str::to_owned).collect(),
                    _ => Vec::new(),
                }
            };
            let environment = match &s["environment"] {
                Value::Object(m) => m
                    .iter()
                    .map(|(k, v)| (k.clone(), interpolate_defaults(&scalar(v))))
                    .collect(),
                Value::Array(a) => a
                    .iter()
                    .map(|kv| {
                        let kv = scalar(kv);
                        let (k, v) = kv.split_once('=').unwrap_or((&kv, ""));
                        (k.to_owned(), interpolate_defaults(v))
                    })
                    .collect(),
                _ => BTreeMap::new(),
            };
            let mut healthcheck = strings(&s["healthcheck"]["test"]);
            if healthcheck.first().is_some_and(|c| c == "CMD") {
                healthcheck.remove(0);
            }
            let depends_on = match &s["depends_on"] {
                Value::Object(m) => m.keys().cloned().collect(),
                v => strings(v),
            };
            ComposeService {
                command: strings(&s["command"]),
                environment,
                healthcheck,
                depends_on,
                replicas: s["deploy"]["replicas"].as_u64().unwrap_or(1) as usize,
                name,
            }
        })
        .collect()
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Resolves compose interpolation to what it gives with an empty host
/// environment: `${VAR:-default}` and `${VAR-default}` → `default`,
/// `${VAR}` and `$VAR` → empty, `$$` → `$`.
pub fn interpolate_defaults(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(r) = after.strip_prefix('$') {
            out.push('$');
            rest = r;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body.find('}').unwrap_or(body.len());
            let expr = &body[..end];
            if let Some((_, default)) = expr.split_once(":-").or_else(|| expr.split_once('-')) {
                out.push_str(default);
            }
            rest = body.get(end + 1..).unwrap_or("");
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            rest = &after[end..];
        }
    }
    out.push_str(rest);
    out
}

/// Rewrites a compose service environment for local processes: every
/// `tcp://<host>:<port>` endpoint (bind `*`/`0.0.0.0` or a compose service
/// name) becomes `tcp://127.0.0.1:<ports[port]>`, allocating a free port the
/// first time a compose port is seen, so binds and connects stay consistent
/// across services; `HTTP_ADDR` becomes `127.0.0.1:<http_port>`.
///
/// # Panics
/// On an endpoint host that is neither a wildcard nor one of `hosts`.
pub fn localize_env(
    env: &BTreeMap<String, String>,
    hosts: &[&str],
    ports: &mut BTreeMap<u16, u16>,
    http_port: u16,
) -> BTreeMap<String, String> {
    env.iter()
        .map(|(k, v)| {
            let v = if k == "HTTP_ADDR" {
                format!("127.0.0.1:{http_port}")
            } else if v.contains("tcp://") {
                v.split(',')
                    .map(|ep| {
                        let ep = ep.trim();
                        let hostport = ep
                            .strip_prefix("tcp://")
                            .unwrap_or_else(|| panic!("{k}: not a tcp endpoint: {ep}"));
                        let (host, port) = hostport
                            .rsplit_once(':')
                            .unwrap_or_else(|| panic!("{k}: endpoint without a port: {ep}"));
                        assert!(
                            host == "*" || host == "0.0.0.0" || hosts.contains(&host),
                            "{k}: endpoint host {host:?} is neither a wildcard nor a compose service"
                        );
                        let port: u16 = port
                            .parse()
                            .unwrap_or_else(|_| panic!("{k}: bad port in {ep}"));
                        let local = *ports.entry(port).or_insert_with(crate::unused_port);
                        format!("tcp://127.0.0.1:{local}")
                    })
                    .collect::<Vec<_>>()
                    .join(",")
            } else {
                v.clone()
            };
            (k.clone(), v)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compose_defaults_are_resolved() {
        assert_eq!(interpolate_defaults("${RATE:-10}"), "10");
        assert_eq!(interpolate_defaults("${TOPICS:-}"), "");
        assert_eq!(interpolate_defaults("a${X}b$$c$Y"), "ab$c");
        assert_eq!(interpolate_defaults("${X-dflt}"), "dflt");
        assert_eq!(interpolate_defaults("tcp://*:5555"), "tcp://*:5555");
    }

    #[test]
    fn endpoints_are_localized_consistently() {
        let mut ports = BTreeMap::new();
        let env: BTreeMap<String, String> = [
            ("BACKEND_BIND", "tcp://*:5556"),
            ("HTTP_ADDR", "0.0.0.0:9101"),
            ("RATE", "10"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        let a = localize_env(&env, &["broker"], &mut ports, 4000);
        let mut other = BTreeMap::new();
        other.insert(
            "BROKER_ENDPOINTS".to_owned(),
            "tcp://broker:5556".to_owned(),
        );
        let b = localize_env(&other, &["broker"], &mut ports, 4001);
        let port = ports[&5556];
        assert_eq!(a["BACKEND_BIND"], format!("tcp://127.0.0.1:{port}"));
        assert_eq!(b["BROKER_ENDPOINTS"], format!("tcp://127.0.0.1:{port}"));
        assert_eq!(a["HTTP_ADDR"], "127.0.0.1:4000");
        assert_eq!(a["RATE"], "10");
    }

    #[test]
    fn readme_table_rows_are_parsed() {
        let md = "x\n### Metrics\n\n| service | metric | type | labels |\n|---|---|---|---|\n\
                  | all | `a`, `b_total` | counter | `socket` (`x`/`y`), `event` |\n\
                  | broker | `c` | histogram | frontend in → reply out |\n\nafter\n| no | `d` | | |\n";
        let m = readme_metrics(md);
        assert_eq!(m.len(), 3);
        assert_eq!(m[1].name, "b_total");
        assert_eq!(
            m[0].labels,
            ["event", "socket"]
                .iter()
                .map(|s| (*s).to_owned())
                .collect()
        );
        assert!(m[2].labels.is_empty());
    }
}
