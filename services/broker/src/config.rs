//! Broker configuration (docs/design.md §2).

use std::time::Duration;

use clap::Args;
use mensageria::cli::{ServiceCli, ServiceConfig, ServiceInfo};
use mensageria::config::{parse_duration, parse_endpoint, CommonArgs, TransportArgs};
use mensageria::mdp::ServiceName;

/// Default ops HTTP port of the broker.
pub const DEFAULT_HTTP_PORT: u16 = 9101;

/// The broker's command line: options, or the `healthcheck`/`keygen` subcommands.
pub type Cli = ServiceCli<Config>;

/// Name, description and default ops port of the broker binary.
pub const INFO: ServiceInfo = ServiceInfo {
    name: "broker",
    about: "mensageria broker: a Majordomo-compatible service broker; queues requests per service and hands them to ready workers (least recently used first), with deadlines, overload protection and metrics",
    default_port: DEFAULT_HTTP_PORT,
};

/// Everything the broker needs to run.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Shared options.
    #[command(flatten)]
    pub common: CommonArgs,
    /// ZeroMQ transport options.
    #[command(flatten)]
    pub transport: TransportArgs,
    /// Where clients connect (ROUTER).
    #[arg(long, env = "FRONTEND_BIND", default_value = "tcp://*:5555", value_parser = parse_endpoint)]
    pub frontend_bind: String,
    /// Where workers connect (DEALER).
    #[arg(long, env = "BACKEND_BIND", default_value = "tcp://*:5556", value_parser = parse_endpoint)]
    pub backend_bind: String,
    /// Deadline of a request in the broker; past it the client gets `timeout`.
    #[arg(long, env = "REQUEST_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub request_timeout: Duration,
    /// Requests in flight beyond which new ones get `overloaded` at once.
    #[arg(long, env = "MAX_INFLIGHT", default_value_t = 100_000,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_inflight: u32,
    /// Service of a request that names none (a plain REQ client).
    #[arg(long, env = "DEFAULT_SERVICE", default_value = "echo")]
    pub default_service: ServiceName,
    /// Requests waiting per service beyond which new ones get `overloaded`.
    #[arg(long, env = "MAX_QUEUE", default_value_t = 10_000,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_queue: u32,
    /// Most services registered at once; a READY for one more is refused.
    #[arg(long, env = "MAX_SERVICES", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_services: u32,
    /// Interval of Majordomo heartbeats to workers.
    #[arg(long, env = "WORKER_HEARTBEAT_IVL", default_value = "1s", value_parser = parse_positive_duration)]
    pub worker_heartbeat_ivl: Duration,
    /// Heartbeat intervals without a word from a worker before it is lost.
    #[arg(long, env = "WORKER_LIVENESS", default_value_t = 3,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub worker_liveness: u32,
    /// How long requests for a service whose last worker just left wait for
    /// one to come back before they get `unavailable` (0 = at once).
    #[arg(long, env = "NO_WORKER_GRACE", default_value = "0s", value_parser = parse_duration)]
    pub no_worker_grace: Duration,
}

/// A duration above zero (a zero heartbeat interval would lose every worker).
fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        d if d.is_zero() => Err("must be more than 0".into()),
        d => Ok(d),
    }
}

impl ServiceConfig for Config {
    fn common(&self) -> &CommonArgs {
        &self.common
    }
}

impl Config {
    /// A configuration for tests: loopback, ephemeral ports everywhere.
    pub fn for_tests() -> Self {
        Cli::for_tests(
            "broker",
            &[
                "--frontend-bind",
                "tcp://127.0.0.1:*",
                "--backend-bind",
                "tcp://127.0.0.1:*",
            ],
        )
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[test]
    fn defaults_match_the_design() {
        let c = Cli::try_parse_from(["broker"]).unwrap().config;
        assert_eq!(c.frontend_bind, "tcp://*:5555");
        assert_eq!(c.backend_bind, "tcp://*:5556");
        assert_eq!(c.request_timeout, Duration::from_secs(5));
        assert_eq!(c.max_inflight, 100_000);
        assert_eq!(c.default_service.as_str(), "echo");
        assert_eq!(c.max_queue, 10_000);
        assert_eq!(c.max_services, 1024);
        assert_eq!(c.worker_heartbeat_ivl, Duration::from_secs(1));
        assert_eq!(c.worker_liveness, 3);
        assert_eq!(c.no_worker_grace, Duration::ZERO);
        assert_eq!(c.common.http_addr_or(DEFAULT_HTTP_PORT).port(), 9101);
    }

    #[test]
    fn bad_values_are_errors_naming_the_option() {
        for (flag, value) in [
            ("--max-inflight", "0"),
            ("--max-inflight", "lots"),
            ("--request-timeout", "5"),
            ("--frontend-bind", "localhost:5555"),
            ("--default-service", "has space"),
            ("--max-queue", "0"),
            ("--worker-liveness", "0"),
            ("--worker-heartbeat-ivl", "0s"),
        ] {
            let err = Cli::try_parse_from(["broker", flag, value]).unwrap_err();
            assert!(err.to_string().contains(flag), "{flag}: {err}");
        }
    }

    #[test]
    fn healthcheck_subcommand_parses() {
        let cli = Cli::try_parse_from(["broker", "healthcheck"]).unwrap();
        assert!(matches!(
            cli.command,
            Some(mensageria::cli::ServiceCommand::Healthcheck)
        ));
    }
}
