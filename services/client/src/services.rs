//! `client services`: a broker's services and workers (its ops HTTP
//! `GET /services`), printed as a table.

use std::{fmt::Write as _, net::ToSocketAddrs, process::ExitCode, time::Duration};

use serde::Deserialize;

use crate::config::ServicesArgs;

/// The broker's `/services` document.
#[derive(Debug, Deserialize)]
pub struct ServicesView {
    /// The service of requests that name none.
    #[serde(default)]
    pub default_service: String,
    /// Plain REP workers connected to the backend.
    #[serde(default)]
    pub rep_backend_peers: u64,
    /// Every known service.
    #[serde(default)]
    pub services: Vec<ServiceView>,
}

/// One service.
#[derive(Debug, Deserialize)]
pub struct ServiceView {
    /// Its name.
    pub name: String,
    /// Requests waiting for a worker.
    #[serde(default)]
    pub queue_depth: u64,
    /// Workers holding no request.
    #[serde(default)]
    pub workers_idle: u64,
    /// Workers holding at least one request.
    #[serde(default)]
    pub workers_busy: u64,
    /// Requests received.
    #[serde(default)]
    pub requests: u64,
    /// Requests answered with an error status.
    #[serde(default)]
    pub errors: u64,
    /// Requests whose deadline passed in the queue.
    #[serde(default)]
    pub expired_in_queue: u64,
    /// Workers lost (silent, disconnected, dead).
    #[serde(default)]
    pub workers_lost: u64,
    /// Its workers.
    #[serde(default)]
    pub workers: Vec<WorkerView>,
}

/// One registered worker.
#[derive(Debug, Deserialize)]
pub struct WorkerView {
    /// The broker's id of its connection (hex).
    #[serde(default)]
    pub identity: String,
    /// The instance it announced, if any.
    pub instance: Option<String>,
    /// `MDPW01` or `MDPW02`.
    #[serde(default)]
    pub protocol: String,
    /// Requests it takes at once.
    #[serde(default)]
    pub credit: u64,
    /// Requests it holds now.
    #[serde(default)]
    pub in_flight: u64,
    /// Requests it has answered.
    #[serde(default)]
    pub served: u64,
    /// Time since the broker last heard from it.
    #[serde(default)]
    pub last_heartbeat_ms_ago: u64,
}

/// Fetches `/services` from the broker's ops server at `addr` (`host:port`).
///
/// # Errors
/// A message naming the address when it cannot be resolved or reached, or
/// when the answer is not the expected document.
pub fn fetch(addr: &str, timeout: Duration) -> anyhow::Result<(ServicesView, String)> {
    let hint = "is the broker running, and is this its HTTP_ADDR? (--broker-http / BROKER_HTTP)";
    let sock = addr
        .to_socket_addrs()
        .map_err(|e| anyhow::anyhow!("cannot resolve broker HTTP address {addr:?}: {e}"))?
        .next()
        .ok_or_else(|| anyhow::anyhow!("broker HTTP address {addr:?} resolves to nothing"))?;
    let (code, body) = mensageria::ops::http_get(sock, "/services", timeout)
        .map_err(|e| anyhow::anyhow!("cannot reach the broker at http://{sock}: {e}; {hint}"))?;
    if code != 200 {
        anyhow::bail!(
            "GET http://{sock}/services answered HTTP {code}: {}; {hint}",
            body.trim()
        );
    }
    let view = serde_json::from_str(&body).map_err(|e| {
        anyhow::anyhow!("http://{sock}/services is not a broker services document: {e}")
    })?;
    Ok((view, body))
}

/// `client services`: prints the table (or the JSON with `--json`); exit
/// code 1 with a message on stderr when the broker cannot be asked.
pub fn command(args: &ServicesArgs) -> ExitCode {
    match fetch(&args.broker_http, args.timeout) {
        Ok((view, json)) => {
            if args.json {
                println!("{}", json.trim());
            } else {
                print!("{}", render(&view));
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("client services: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Renders the table `client services` prints.
pub fn render(v: &ServicesView) -> String {
    let mut rows = vec![row(&[
        "SERVICE", "QUEUE", "IDLE", "BUSY", "REQUESTS", "ERRORS", "EXPIRED", "LOST",
    ])];
    for s in &v.services {
        rows.push(vec![
            s.name.clone(),
            s.queue_depth.to_string(),
            s.workers_idle.to_string(),
            s.workers_busy.to_string(),
            s.requests.to_string(),
            s.errors.to_string(),
            s.expired_in_queue.to_string(),
            s.workers_lost.to_string(),
        ]);
    }
    let mut out = table(&rows);
    let mut workers = vec![row(&[
        "SERVICE",
        "WORKER",
        "INSTANCE",
        "PROTOCOL",
        "CREDIT",
        "IN_FLIGHT",
        "SERVED",
        "LAST_HEARD",
    ])];
    for s in &v.services {
        for w in &s.workers {
            workers.push(vec![
                s.name.clone(),
                w.identity.clone(),
                w.instance.clone().unwrap_or_else(|| "-".into()),
                w.protocol.clone(),
                w.credit.to_string(),
                w.in_flight.to_string(),
                w.served.to_string(),
                format!("{}ms ago", w.last_heartbeat_ms_ago),
            ]);
        }
    }
    if workers.len() > 1 {
        out.push('\n');
        out.push_str(&table(&workers));
    }
    let _ = writeln!(
        out,
        "\ndefault service: {}; plain REP workers on the backend: {}",
        v.default_service, v.rep_backend_peers
    );
    out
}

fn row(cells: &[&str]) -> Vec<String> {
    cells.iter().map(|c| (*c).to_owned()).collect()
}

/// Left-aligned columns separated by two spaces.
fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(String::len)
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        for (c, cell) in r.iter().enumerate() {
            if c + 1 == r.len() {
                out.push_str(cell);
            } else {
                let _ = write!(out, "{cell:<w$}  ", w = widths[c]);
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_services_and_workers() {
        let v: ServicesView = serde_json::from_str(
            r#"{"default_service":"echo","rep_backend_peers":2,"services":[
              {"name":"echo","queue_depth":3,"workers_idle":1,"workers_busy":1,"requests":10,
               "errors":1,"expired_in_queue":0,"workers_lost":0,
               "workers":[{"identity":"0080000041","instance":"srv-1","protocol":"MDPW02",
                           "credit":4,"in_flight":1,"served":9,"last_heartbeat_ms_ago":120}]},
              {"name":"a-much-longer-service","workers":[]}]}"#,
        )
        .unwrap();
        let text = render(&v);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("SERVICE"), "{text}");
        assert!(lines[1].starts_with("echo "), "{text}");
        // Columns line up: QUEUE starts at the same place in every row.
        let col = lines[0].find("QUEUE").unwrap();
        assert_eq!(&lines[1][col..col + 1], "3", "{text}");
        assert!(lines[2].starts_with("a-much-longer-service  0"), "{text}");
        assert!(text.contains("0080000041  srv-1"), "{text}");
        assert!(text.contains("120ms ago"), "{text}");
        assert!(text.contains("default service: echo; plain REP workers on the backend: 2"));
    }

    #[test]
    fn unreachable_broker_is_a_clear_error() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // The listener is dropped: nothing listens there now.
        let err = fetch(&format!("127.0.0.1:{port}"), Duration::from_secs(1)).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("cannot reach the broker"), "{msg}");
        assert!(msg.contains("BROKER_HTTP"), "{msg}");
        let err = fetch("no-port-here", Duration::from_secs(1)).unwrap_err();
        assert!(err.to_string().contains("cannot resolve"), "{err}");
    }
}
