//! Server configuration (docs/design.md §2).

use std::time::Duration;

use clap::{Args, Parser};
use mensageria::{
    cli::{ServiceCli, ServiceConfig, ServiceInfo},
    config::{parse_duration, CommonArgs, TransportArgs},
    Endpoints,
};

/// Default ops HTTP port of the server.
pub const DEFAULT_HTTP_PORT: u16 = 9103;

/// The server's command line: options, or the `healthcheck`/`keygen` subcommands.
pub type Cli = ServiceCli<Config>;

/// Name, description and default ops port of the server binary.
pub const INFO: ServiceInfo = ServiceInfo {
    name: "server",
    about: "mensageria server: REP workers answering requests through brokers, and a publisher of events through proxies",
    default_port: DEFAULT_HTTP_PORT,
};

/// Everything the server needs to run.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Shared options.
    #[command(flatten)]
    pub common: CommonArgs,
    /// ZeroMQ transport options.
    #[command(flatten)]
    pub transport: TransportArgs,
    /// Broker backend endpoints; every worker connects to all of them.
    #[arg(long, env = "BROKER_ENDPOINTS", default_value = "tcp://127.0.0.1:5556")]
    pub broker_endpoints: Endpoints,
    /// Proxy XSUB endpoints the event publisher connects to.
    #[arg(long, env = "PROXY_ENDPOINTS", default_value = "tcp://127.0.0.1:5557")]
    pub proxy_endpoints: Endpoints,
    /// Worker threads (REP sockets); default: number of CPUs.
    #[arg(long, env = "WORKERS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub workers: Option<u16>,
    /// How often a `server.status` event is published.
    #[arg(long, env = "STATUS_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub status_interval: Duration,
    /// Longest service time the `work` operation may ask for.
    #[arg(long, env = "MAX_WORK", default_value = "10s", value_parser = parse_duration)]
    pub max_work: Duration,
}

impl ServiceConfig for Config {
    fn common(&self) -> &CommonArgs {
        &self.common
    }
}

impl Config {
    /// Worker count, defaulting to the number of CPUs.
    pub fn worker_count(&self) -> usize {
        self.workers.map(usize::from).unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        })
    }

    /// A configuration for tests: loopback ops port 0, the given endpoints.
    pub fn for_tests(broker: &str, proxy: &str, workers: u16) -> Self {
        Cli::try_parse_from([
            "server",
            "--http-addr",
            "127.0.0.1:0",
            "--broker-endpoints",
            broker,
            "--proxy-endpoints",
            proxy,
            "--workers",
            &workers.to_string(),
        ])
        .expect("test arguments are valid")
        .config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_design() {
        let c = Cli::try_parse_from(["server"]).unwrap().config;
        assert_eq!(c.broker_endpoints.0, vec!["tcp://127.0.0.1:5556"]);
        assert_eq!(c.proxy_endpoints.0, vec!["tcp://127.0.0.1:5557"]);
        assert!(c.worker_count() >= 1);
        assert_eq!(c.common.http_addr_or(DEFAULT_HTTP_PORT).port(), 9103);
    }

    #[test]
    fn endpoint_lists_and_bad_values() {
        let c = Cli::try_parse_from(["server", "--broker-endpoints", "tcp://a:1,tcp://b:2"])
            .unwrap()
            .config;
        assert_eq!(c.broker_endpoints.0.len(), 2);
        for (flag, value) in [
            ("--workers", "0"),
            ("--workers", "x"),
            ("--broker-endpoints", "a:1"),
            ("--status-interval", "often"),
        ] {
            let err = Cli::try_parse_from(["server", flag, value]).unwrap_err();
            assert!(err.to_string().contains(flag), "{flag}: {err}");
        }
    }
}
