//! Client configuration and subcommands (docs/design.md §2).

use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use mensageria::{
    config::{parse_duration, CommonArgs, TransportArgs},
    header::ServiceName,
    Endpoints,
};

/// Default ops HTTP port of the client.
pub const DEFAULT_HTTP_PORT: u16 = 9104;

/// mensageria client: sends requests through brokers and subscribes to events
/// through proxies.
#[derive(Debug, Parser)]
#[command(name = "client", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// The long-running service: steady requests plus a subscription, with metrics.
    Run(RunArgs),
    /// Send one request and print the reply; the exit code reflects success.
    Request(RequestArgs),
    /// Print events until interrupted or `--count` events.
    Subscribe(SubscribeArgs),
    /// Drive load as fast as allowed and print a summary.
    Bench(BenchArgs),
    /// Probe the `client run` service's /readyz (exit 0 when ready, 1 otherwise).
    Healthcheck {
        /// Shared options.
        #[command(flatten)]
        common: CommonArgs,
    },
    /// Print a broker's services and workers (its ops HTTP `GET /services`) as a table.
    Services(ServicesArgs),
    /// Print a new CURVE key pair.
    Keygen,
}

/// Options of everything that sends requests.
#[derive(Debug, Clone, Args)]
pub struct RequestOptions {
    /// Broker frontend endpoints (one socket connects to all).
    #[arg(long, env = "BROKER_ENDPOINTS", default_value = "tcp://127.0.0.1:5555")]
    pub broker_endpoints: Endpoints,
    /// How long to wait for a reply before retrying.
    #[arg(long, env = "TIMEOUT", default_value = "2500ms", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Retries after the first attempt (timeouts and `unavailable`/`overloaded`/`timeout` replies).
    #[arg(long, env = "RETRIES", default_value_t = 3)]
    pub retries: u32,
    /// Talk to plain REP servers: no header frame, one socket per outstanding request.
    #[arg(long, env = "PLAIN", conflicts_with = "service")]
    pub plain: bool,
    /// Service to call (named in the header; unset: the broker's `DEFAULT_SERVICE`).
    /// Plain requests carry no header, so they cannot name one.
    #[arg(long, env = "SERVICE", value_parser = parse_service)]
    pub service: Option<ServiceName>,
    /// ZeroMQ transport options.
    #[command(flatten)]
    pub transport: TransportArgs,
}

/// Options of everything that subscribes.
#[derive(Debug, Clone, Args)]
pub struct SubscribeOptions {
    /// Proxy XPUB endpoints (one socket connects to all).
    #[arg(long, env = "PROXY_ENDPOINTS", default_value = "tcp://127.0.0.1:5558")]
    pub proxy_endpoints: Endpoints,
}

/// `client run`.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Shared options.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Request options.
    #[command(flatten)]
    pub requests: RequestOptions,
    /// Subscription options.
    #[command(flatten)]
    pub events: SubscribeOptions,
    /// Requests per second (0: requests off, subscription only).
    #[arg(long, env = "RATE", default_value_t = 10.0)]
    pub rate: f64,
    /// Requests outstanding at once.
    #[arg(long, env = "CONCURRENCY", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub concurrency: u32,
    /// Topic prefixes to subscribe to, comma-separated (empty: all).
    #[arg(long, env = "TOPICS", default_value = "")]
    pub topics: String,
    /// Request payload (see the server's demo operations, e.g. `work 2ms`).
    #[arg(long, env = "PAYLOAD", default_value = "hello")]
    pub payload: String,
}

/// `client request`.
#[derive(Debug, Clone, Args)]
pub struct RequestArgs {
    /// The payload (one frame).
    pub payload: String,
    /// Request options.
    #[command(flatten)]
    pub requests: RequestOptions,
    /// Trace export.
    #[command(flatten)]
    pub otel: mensageria::otel::OtelArgs,
    /// Log filter.
    #[arg(long = "log", env = "RUST_LOG", default_value = "warn")]
    pub log_filter: String,
}

/// `client subscribe`.
#[derive(Debug, Clone, Args)]
pub struct SubscribeArgs {
    /// Topic prefixes (none: everything).
    pub topics: Vec<String>,
    /// Subscription options.
    #[command(flatten)]
    pub events: SubscribeOptions,
    /// Exit after this many events.
    #[arg(long)]
    pub count: Option<u64>,
    /// Exit after this long.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Pause this long after each event: simulates a slow consumer (its
    /// losses at the proxy's high-water mark show as sequence gaps).
    #[arg(long, value_parser = parse_duration)]
    pub delay: Option<Duration>,
    /// Print nothing per event, only the totals at exit (counting, as a
    /// benchmark's subscriber does).
    #[arg(long)]
    pub quiet: bool,
    /// Also write the totals at exit to this file, as one JSON object
    /// (`{"received":N,"lost":M}`, see `SubscribeSummary`), for programs.
    #[arg(long, value_name = "PATH")]
    pub summary_file: Option<std::path::PathBuf>,
    /// ZeroMQ transport options.
    #[command(flatten)]
    pub transport: TransportArgs,
    /// Trace export.
    #[command(flatten)]
    pub otel: mensageria::otel::OtelArgs,
    /// Log filter.
    #[arg(long = "log", env = "RUST_LOG", default_value = "warn")]
    pub log_filter: String,
}

/// `client bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Request options.
    #[command(flatten)]
    pub requests: RequestOptions,
    /// Requests outstanding at once; a comma-separated list (e.g.
    /// 1,16,64,256) runs one bench per value, one after another.
    #[arg(long, env = "CONCURRENCY", default_value = "16", value_parser = crate::bench::parse_concurrency)]
    pub concurrency: std::vec::Vec<u32>,
    /// Also subscribe to the `requests` events through the proxies and
    /// report events received and lost (sequence gaps) per run.
    #[arg(long)]
    pub events: bool,
    /// Where `--events` subscribes.
    #[command(flatten)]
    pub subscribe: SubscribeOptions,
    /// Total requests to send per run (default 10000 unless --duration is given).
    #[arg(long = "requests", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
    /// Send for this long instead of a fixed count.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Request payload.
    #[arg(long, env = "PAYLOAD", default_value = "hello")]
    pub payload: String,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
    /// Trace export.
    #[command(flatten)]
    pub otel: mensageria::otel::OtelArgs,
    /// Log filter.
    #[arg(long = "log", env = "RUST_LOG", default_value = "warn")]
    pub log_filter: String,
}

/// `client services`.
#[derive(Debug, Clone, Args)]
pub struct ServicesArgs {
    /// The broker's ops HTTP address (`host:port`, its `HTTP_ADDR`).
    #[arg(long, env = "BROKER_HTTP", default_value = "127.0.0.1:9101")]
    pub broker_http: String,
    /// Print the broker's JSON unchanged instead of a table.
    #[arg(long)]
    pub json: bool,
    /// How long to wait for the broker's answer.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// A service name as `--service` takes it (at most
/// [`mensageria::mdp::MAX_SERVICE_NAME`] bytes of printable ASCII, no spaces).
///
/// # Errors
/// A message saying what is wrong with the name.
pub fn parse_service(s: &str) -> Result<ServiceName, String> {
    ServiceName::new(s.as_bytes()).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subcommands_and_defaults() {
        let Command::Bench(b) = Cli::try_parse_from([
            "client",
            "bench",
            "--requests",
            "20000",
            "--concurrency",
            "16",
        ])
        .unwrap()
        .command
        else {
            panic!("expected bench");
        };
        assert_eq!((b.count, b.concurrency), (Some(20000), vec![16]));
        assert!(!b.events);
        let Command::Bench(b) =
            Cli::try_parse_from(["client", "bench", "--concurrency", "1,16,64", "--events"])
                .unwrap()
                .command
        else {
            panic!("expected bench");
        };
        assert_eq!((b.concurrency, b.events), (vec![1, 16, 64], true));
        assert_eq!(b.requests.timeout, Duration::from_millis(2500));
        assert_eq!(b.requests.retries, 3);
        let Command::Run(r) = Cli::try_parse_from(["client", "run"]).unwrap().command else {
            panic!("expected run");
        };
        assert_eq!((r.rate, r.concurrency, r.topics.as_str()), (10.0, 1, ""));
        assert_eq!(r.requests.broker_endpoints.0, vec!["tcp://127.0.0.1:5555"]);
        assert_eq!(r.events.proxy_endpoints.0, vec!["tcp://127.0.0.1:5558"]);
        let Command::Subscribe(s) =
            Cli::try_parse_from(["client", "subscribe", "requests", "server", "--count", "3"])
                .unwrap()
                .command
        else {
            panic!("expected subscribe");
        };
        assert_eq!((s.topics.len(), s.count), (2, Some(3)));
        let Command::Request(q) = Cli::try_parse_from(["client", "request", "hello", "--plain"])
            .unwrap()
            .command
        else {
            panic!("expected request");
        };
        assert!(q.requests.plain);
        assert_eq!(
            q.requests.service, None,
            "unset: the broker's default service"
        );
        let Command::Request(q) =
            Cli::try_parse_from(["client", "request", "hi", "--service", "work.slow"])
                .unwrap()
                .command
        else {
            panic!("expected request");
        };
        assert_eq!(q.requests.service.unwrap().as_str(), "work.slow");
        let Command::Services(v) = Cli::try_parse_from(["client", "services"]).unwrap().command
        else {
            panic!("expected services");
        };
        assert_eq!((v.broker_http.as_str(), v.json), ("127.0.0.1:9101", false));
    }

    #[test]
    fn service_names_are_checked() {
        let long = "s".repeat(mensageria::mdp::MAX_SERVICE_NAME + 1);
        for bad in ["", "two words", long.as_str()] {
            let err =
                Cli::try_parse_from(["client", "request", "x", "--service", bad]).unwrap_err();
            assert!(err.to_string().contains("--service"), "{bad:?}: {err}");
        }
        let err = Cli::try_parse_from(["client", "request", "x", "--service", "a", "--plain"])
            .unwrap_err();
        assert!(err.to_string().contains("--plain"), "{err}");
    }

    #[test]
    fn bad_values_name_the_option() {
        for args in [
            &["client", "bench", "--concurrency", "0"][..],
            &["client", "bench", "--concurrency", "16,x"][..],
            &["client", "bench", "--requests", "none"][..],
            &["client", "request", "x", "--timeout", "3"][..],
            &["client", "run", "--broker-endpoints", "nowhere"][..],
        ] {
            let err = Cli::try_parse_from(args).unwrap_err();
            assert!(err.to_string().contains(args[2]), "{args:?}: {err}");
        }
        assert!(
            Cli::try_parse_from(["client"]).is_err(),
            "a subcommand is required"
        );
    }
}
