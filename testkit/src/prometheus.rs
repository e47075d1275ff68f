//! A real Prometheus (Debian's `/usr/bin/prometheus`) on 127.0.0.1, scraping
//! static jobs every second, run by the one supervisor
//! ([`crate::process`]), and its instant-query API.

use std::{net::SocketAddr, time::Duration};

use serde_json::Value;

use crate::{
    process::{Proc, ProcBuilder},
    tempdir::TempDir,
};

/// Debian's Prometheus binary.
pub const BINARY: &str = "/usr/bin/prometheus";

/// How long one start attempt may take to answer `/-/ready`.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Start attempts (a port picked free may be taken before Prometheus binds it).
const ATTEMPTS: usize = 3;

/// A running Prometheus, its HTTP address, and the directory of its
/// configuration and data (removed when this is dropped).
#[derive(Debug)]
pub struct Prometheus {
    /// The process.
    pub proc: Proc,
    /// Its HTTP address.
    pub addr: SocketAddr,
    _dir: TempDir,
}

/// The configuration of [`Prometheus::start`]: scrape and evaluate every
/// second, one static job per `(job, targets)`.
fn config(jobs: &[(&str, Vec<SocketAddr>)]) -> String {
    let mut config = String::from(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
         scrape_configs:\n",
    );
    for (job, targets) in jobs {
        let list: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
        config.push_str(&format!(
            "  - job_name: {job}\n    static_configs:\n      - targets: [{}]\n",
            list.join(", ")
        ));
    }
    config
}

impl Prometheus {
    /// Writes [`config`]`(jobs)` into a temporary directory and starts
    /// Prometheus on a free port, retrying with another port (the one picked
    /// may be taken meanwhile), and waits until `/-/ready` answers 200.
    ///
    /// # Panics
    /// If the configuration cannot be written or Prometheus does not become
    /// ready.
    pub fn start(jobs: &[(&str, Vec<SocketAddr>)]) -> Prometheus {
        let dir = TempDir::new("prometheus");
        let config = config(jobs);
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, &config)
            .unwrap_or_else(|e| panic!("write {}: {e}", config_path.display()));
        let mut last = String::new();
        for attempt in 0..ATTEMPTS {
            let addr: SocketAddr = ([127, 0, 0, 1], crate::ports::unused_port()).into();
            let data = dir.path().join(format!("data-{attempt}"));
            let args = [
                format!("--config.file={}", config_path.display()),
                format!("--storage.tsdb.path={}", data.display()),
                format!("--web.listen-address={addr}"),
                "--log.level=warn".to_owned(),
            ];
            let mut proc = match ProcBuilder::new("prometheus", BINARY).args(args).spawn() {
                Ok(proc) => proc,
                Err(e) => panic!("{e:#} (see .ci/run for what the tests need installed)"),
            };
            // Ready, or exited (the port was taken, most likely).
            let ready = crate::wait::poll_until(READY_TIMEOUT, || {
                let exited = proc.try_status().is_some();
                (exited || matches!(get(addr, "/-/ready"), Ok((200, _)))).then_some(!exited)
            });
            match ready {
                Some(true) => {
                    return Prometheus {
                        proc,
                        addr,
                        _dir: dir,
                    }
                }
                Some(false) => last = proc.diagnostics(),
                None => last = format!("not ready within {READY_TIMEOUT:?}"),
            }
        }
        panic!("Prometheus did not become ready ({ATTEMPTS} attempts)\nconfig:\n{config}\n{last}");
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The values of an instant vector query, with each series' labels.
    ///
    /// # Errors
    /// A transport failure, an HTTP error or a Prometheus error, as text.
    pub fn vector(&self, expr: &str) -> Result<Vec<(Value, f64)>, String> {
        let path = format!("/api/v1/query?query={}", percent_encode(expr));
        let (code, body) = get(self.addr, &path).map_err(|e| format!("GET {path}: {e}"))?;
        let json: Value = serde_json::from_str(&body)
            .map_err(|e| format!("HTTP {code}, body is not JSON ({e}): {body}"))?;
        if code != 200 || json["status"] != "success" {
            return Err(format!("HTTP {code}: {body}"));
        }
        let series = json["data"]["result"].as_array().into_iter().flatten();
        Ok(series
            .map(|s| {
                let v = s["value"][1].as_str().and_then(|v| v.parse().ok());
                (s["metric"].clone(), v.unwrap_or(f64::NAN))
            })
            .collect())
    }
}

fn get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    mensageria::ops::http_get(addr, path, Duration::from_secs(5))
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_percent_encoded_except_unreserved_characters() {
        assert_eq!(
            percent_encode(r#"sum(rate(x{a="b c"}[1m])) > 0"#),
            "sum%28rate%28x%7Ba%3D%22b%20c%22%7D%5B1m%5D%29%29%20%3E%200"
        );
        assert_eq!(percent_encode("A-z_0.9~"), "A-z_0.9~");
    }

    #[test]
    fn the_configuration_has_one_static_job_per_entry() {
        let a: SocketAddr = "127.0.0.1:9001".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:9002".parse().unwrap();
        let c = config(&[("broker", vec![a]), ("server", vec![a, b])]);
        assert!(c.starts_with("global:\n  scrape_interval: 1s\n"), "{c}");
        assert!(
            c.ends_with(
                "  - job_name: broker\n    static_configs:\n      - targets: [\"127.0.0.1:9001\"]\n\
                 \x20 - job_name: server\n    static_configs:\n      \
                 - targets: [\"127.0.0.1:9001\", \"127.0.0.1:9002\"]\n"
            ),
            "{c}"
        );
    }
}
