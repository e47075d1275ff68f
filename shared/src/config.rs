//! Configuration pieces every service shares: the common options (ops HTTP
//! address, logging, shutdown grace), the ZeroMQ transport options, and the
//! value parsers for durations, sizes and endpoint lists.
//!
//! Every option is a CLI flag with an environment variable of the same meaning
//! (clap `env`), so a shell, compose and Kubernetes configure a binary alike.

use std::{net::SocketAddr, str::FromStr, time::Duration};

use clap::{Args, Parser, ValueEnum};

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Options every service has.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// Address of the ops HTTP server (/healthz, /readyz, /metrics); port 0 picks a free port.
    #[arg(long, env = "HTTP_ADDR")]
    pub http_addr: Option<SocketAddr>,
    /// Log filter (tracing EnvFilter syntax).
    #[arg(long = "log", env = "RUST_LOG", default_value = "info")]
    pub log_filter: String,
    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// How long in-flight work may take to finish after SIGTERM/SIGINT.
    #[arg(long, env = "SHUTDOWN_GRACE", default_value = "10s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,
    /// Once ready, write a JSON record of where this service is (pid, ops
    /// address, every bound and connected ZeroMQ endpoint) to this file,
    /// atomically; it is removed on a clean stop.
    #[arg(long, env = "READY_FILE")]
    pub ready_file: Option<std::path::PathBuf>,
    /// Trace export (OpenTelemetry).
    #[command(flatten)]
    pub otel: crate::otel::OtelArgs,
}

impl CommonArgs {
    /// The ops HTTP address, or `0.0.0.0:<default_port>` when unset.
    pub fn http_addr_or(&self, default_port: u16) -> SocketAddr {
        self.http_addr
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], default_port)))
    }
}

/// ZeroMQ transport options applied to every socket.
#[derive(Debug, Clone, Args)]
pub struct TransportArgs {
    /// ZMTP heartbeat interval (PING every this often on an idle connection).
    #[arg(long, env = "ZMQ_HEARTBEAT_IVL", default_value = "1s", value_parser = parse_duration)]
    pub heartbeat_ivl: Duration,
    /// Drop a connection when no traffic arrives within this time after a PING.
    #[arg(long, env = "ZMQ_HEARTBEAT_TIMEOUT", default_value = "3s", value_parser = parse_duration)]
    pub heartbeat_timeout: Duration,
    /// Time-to-live the peer is asked to apply to us (rounded to 100 ms, max 6553 s).
    #[arg(long, env = "ZMQ_HEARTBEAT_TTL", default_value = "6s", value_parser = parse_duration)]
    pub heartbeat_ttl: Duration,
    /// How long unsent messages may delay closing a socket.
    #[arg(long, env = "ZMQ_LINGER", default_value = "1s", value_parser = parse_duration)]
    pub linger: Duration,
    /// Send and receive high-water mark, in messages, per peer.
    #[arg(long, env = "ZMQ_HWM", default_value_t = 10_000)]
    pub hwm: i32,
    /// Largest message accepted from a peer (bytes; `K`, `M`, `KiB`, `MiB` suffixes allowed).
    #[arg(long, env = "ZMQ_MAXMSGSIZE", default_value = "4MiB", value_parser = parse_size)]
    pub max_msg_size: u64,
    /// First wait before reconnecting to a peer that is gone or not there yet (libzmq adds up to this much jitter).
    #[arg(long, env = "ZMQ_RECONNECT_IVL", default_value = "100ms", value_parser = parse_duration)]
    pub reconnect_ivl: Duration,
    /// Longest wait between reconnection attempts: the wait doubles after each failed attempt up to this (0 = no backoff).
    #[arg(long, env = "ZMQ_RECONNECT_IVL_MAX", default_value = "5s", value_parser = parse_duration)]
    pub reconnect_ivl_max: Duration,
    /// CURVE encryption and authentication.
    #[command(flatten)]
    pub curve: crate::curve::CurveArgs,
}

impl Default for TransportArgs {
    fn default() -> Self {
        TransportArgs {
            heartbeat_ivl: Duration::from_secs(1),
            heartbeat_timeout: Duration::from_secs(3),
            heartbeat_ttl: Duration::from_secs(6),
            linger: Duration::from_secs(1),
            hwm: 10_000,
            max_msg_size: 4 << 20,
            reconnect_ivl: Duration::from_millis(100),
            reconnect_ivl_max: Duration::from_secs(5),
            curve: crate::curve::CurveArgs::default(),
        }
    }
}

/// A comma-separated list of ZeroMQ endpoints (`tcp://host:port`, `ipc://path`, `inproc://name`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints(pub Vec<String>);

impl FromStr for Endpoints {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let list: Vec<String> = s
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(str::to_owned)
            .collect();
        if list.is_empty() {
            return Err("expected at least one endpoint, e.g. tcp://127.0.0.1:5555".into());
        }
        for e in &list {
            validate_endpoint(e)?;
        }
        Ok(Endpoints(list))
    }
}

impl std::fmt::Display for Endpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join(","))
    }
}

/// Checks one endpoint's shape: a known transport and a non-empty address;
/// for tcp, a `host:port` with a numeric port or `*`.
///
/// # Errors
/// A message saying what is wrong.
pub fn validate_endpoint(e: &str) -> Result<(), String> {
    let (transport, address) = e.split_once("://").ok_or_else(|| {
        format!("endpoint {e:?} has no transport (expected tcp://, ipc:// or inproc://)")
    })?;
    if address.is_empty() {
        return Err(format!("endpoint {e:?} has an empty address"));
    }
    match transport {
        "tcp" => {
            let (_, port) = address
                .rsplit_once(':')
                .ok_or_else(|| format!("endpoint {e:?} has no port"))?;
            if port != "*" && port.parse::<u16>().is_err() {
                return Err(format!("endpoint {e:?} has an invalid port {port:?}"));
            }
            Ok(())
        }
        "ipc" | "inproc" => Ok(()),
        other => Err(format!(
            "endpoint {e:?} has unsupported transport {other:?} (expected tcp, ipc or inproc)"
        )),
    }
}

/// Clap value parser for a single bind endpoint.
///
/// # Errors
/// See [`validate_endpoint`].
pub fn parse_endpoint(s: &str) -> Result<String, String> {
    let s = s.trim();
    validate_endpoint(s)?;
    Ok(s.to_owned())
}

/// Parses a duration such as `250ms`, `5s`, `1m 30s`.
///
/// # Errors
/// A message naming the accepted forms.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("{e} (expected a duration such as 250ms or 5s)"))
}

/// Parses a byte size: a plain number or one with a `K`/`KiB`/`M`/`MiB`/`G`/`GiB` suffix.
///
/// # Errors
/// A message naming the accepted forms.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("invalid size {s:?} (expected e.g. 1048576, 512KiB or 4MiB)"))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "K" | "KiB" | "KB" => 1 << 10,
        "M" | "MiB" | "MB" => 1 << 20,
        "G" | "GiB" | "GB" => 1 << 30,
        other => {
            return Err(format!(
                "unknown size unit {other:?} in {s:?} (use KiB, MiB or GiB)"
            ))
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("size {s:?} is too large"))
}

/// Parses the command line (and environment) or exits: help and version go to
/// stdout with exit 0; any bad value is a one-line error naming the option, on
/// stderr, with exit code 2.
pub fn parse_or_exit<T: Parser>() -> T {
    parse_or_exit_with(T::command())
}

/// [`parse_or_exit`] for a command built at run time (e.g. renamed).
pub fn parse_or_exit_with<T: clap::FromArgMatches>(command: clap::Command) -> T {
    match command
        .try_get_matches()
        .and_then(|mut m| T::from_arg_matches_mut(&mut m))
    {
        Ok(v) => v,
        Err(e) => {
            use clap::error::ErrorKind::*;
            if matches!(
                e.kind(),
                DisplayHelp | DisplayVersion | DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                e.exit();
            }
            let rendered = e.render().to_string();
            let line = rendered
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("error: invalid arguments");
            eprintln!("{}", redact_secret(line));
            std::process::exit(2);
        }
    }
}

/// Hides the offending value in an error about a secret option, so a
/// mistyped key never lands in logs.
fn redact_secret(line: &str) -> String {
    const OPEN: &str = "invalid value '";
    match (line.find(OPEN), line.find("' for '--")) {
        (Some(a), Some(b)) if line[b..].contains("secret") && a + OPEN.len() <= b => {
            format!("{}<redacted>{}", &line[..a + OPEN.len()], &line[b..])
        }
        _ => line.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_lists_parse_and_trim() {
        let e: Endpoints = " tcp://a:1, tcp://b:2 ,".parse().unwrap();
        assert_eq!(e.0, vec!["tcp://a:1", "tcp://b:2"]);
        assert_eq!(e.to_string(), "tcp://a:1,tcp://b:2");
    }

    #[test]
    fn bad_endpoints_are_rejected_with_a_reason() {
        for (bad, why) in [
            ("", "at least one"),
            ("localhost:5555", "no transport"),
            ("tcp://", "empty address"),
            ("tcp://host", "no port"),
            ("tcp://host:99999", "invalid port"),
            ("udp://host:1", "unsupported transport"),
            ("tcp://a:1,http://b:2", "unsupported transport"),
        ] {
            let err = bad.parse::<Endpoints>().unwrap_err();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
        assert!(parse_endpoint("tcp://*:5555").is_ok());
        assert!(parse_endpoint("tcp://127.0.0.1:*").is_ok());
        assert!(parse_endpoint("ipc:///tmp/x").is_ok());
    }

    #[test]
    fn secret_values_are_redacted_in_errors() {
        let line = "error: invalid value 'abc' for '--curve-server-secret <X>': nope";
        assert_eq!(
            redact_secret(line),
            "error: invalid value '<redacted>' for '--curve-server-secret <X>': nope"
        );
        let other = "error: invalid value 'abc' for '--rate <RATE>': nope";
        assert_eq!(redact_secret(other), other);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert!(parse_duration("5").unwrap_err().contains("250ms"));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("4MiB"), Ok(4 << 20));
        assert_eq!(parse_size("512K"), Ok(512 << 10));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("4 parsecs").is_err());
        assert!(parse_size("99999999999999999999G").is_err());
    }

    #[derive(Parser, Debug)]
    struct TestCli {
        #[command(flatten)]
        common: CommonArgs,
        #[command(flatten)]
        transport: TransportArgs,
    }

    #[test]
    fn defaults_and_flags() {
        let cli = TestCli::try_parse_from(["x"]).unwrap();
        assert_eq!(cli.common.shutdown_grace, Duration::from_secs(10));
        assert_eq!(cli.common.http_addr_or(9101).to_string(), "0.0.0.0:9101");
        assert_eq!(cli.transport.max_msg_size, 4 << 20);
        assert_eq!(cli.transport.reconnect_ivl, Duration::from_millis(100));
        assert_eq!(cli.transport.reconnect_ivl_max, Duration::from_secs(5));
        let d = TransportArgs::default();
        assert_eq!(
            (d.reconnect_ivl, d.reconnect_ivl_max),
            (cli.transport.reconnect_ivl, cli.transport.reconnect_ivl_max),
            "Default matches the CLI defaults"
        );
        let cli = TestCli::try_parse_from([
            "x",
            "--http-addr",
            "127.0.0.1:0",
            "--shutdown-grace",
            "250ms",
            "--log-format",
            "json",
        ])
        .unwrap();
        assert_eq!(cli.common.http_addr_or(9101).to_string(), "127.0.0.1:0");
        assert_eq!(cli.common.shutdown_grace, Duration::from_millis(250));
        assert_eq!(cli.common.log_format, LogFormat::Json);
    }

    #[test]
    fn bad_values_name_the_option() {
        let err = TestCli::try_parse_from(["x", "--shutdown-grace", "forever"]).unwrap_err();
        let first = err.render().to_string();
        let first = first.lines().next().unwrap();
        assert!(first.contains("--shutdown-grace"), "{first}");
        let err = TestCli::try_parse_from(["x", "--hwm", "many"]).unwrap_err();
        assert!(err.to_string().contains("--hwm"), "{err}");
    }
}
