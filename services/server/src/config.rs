//! Server configuration (docs/design.md §2).

use std::time::Duration;

use clap::Args;
use mensageria::{
    cli::{ServiceCli, ServiceConfig, ServiceInfo},
    config::{parse_duration, CommonArgs, TransportArgs},
    header::ServiceName,
    Endpoints,
};

/// Default ops HTTP port of the server.
pub const DEFAULT_HTTP_PORT: u16 = 9103;

/// The server's command line: options, or the `healthcheck`/`keygen` subcommands.
pub type Cli = ServiceCli<Config>;

/// Name, description and default ops port of the server binary.
pub const INFO: ServiceInfo = ServiceInfo {
    name: "server",
    about: "mensageria server: Majordomo (or plain REP) workers answering requests through brokers, and a publisher of events through proxies",
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
    /// Broker endpoints: the brokers' frontends (Majordomo workers, one
    /// connection per broker and service), or with `--worker-protocol rep`
    /// their backends (every REP worker connects to all of them).
    #[arg(long, env = "BROKER_ENDPOINTS", default_value = "tcp://127.0.0.1:5555")]
    pub broker_endpoints: Endpoints,
    /// How workers talk to the brokers: `majordomo` (register services,
    /// load-aware dispatch) or `rep` (plain REP sockets on the brokers'
    /// backends, round-robin dispatch of the default service only).
    #[arg(long, env = "WORKER_PROTOCOL", value_enum, default_value_t = WorkerProtocol::Majordomo)]
    pub worker_protocol: WorkerProtocol,
    /// Services the workers register with every broker, comma-separated
    /// (Majordomo only).
    #[arg(long, env = "SERVICES", default_value = "echo", value_parser = parse_services)]
    pub services: Services,
    /// Requests this server holds at once across all brokers and services
    /// (Majordomo only; the prefetch announced to each broker). Default: the
    /// number of workers, so every request it takes starts at once.
    #[arg(long, env = "CREDIT", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub credit: Option<u32>,
    /// Majordomo heartbeat interval, both ways.
    #[arg(long, env = "WORKER_HEARTBEAT_IVL", default_value = "1s", value_parser = parse_duration)]
    pub worker_heartbeat_ivl: Duration,
    /// Heartbeats missed before a broker is considered lost (then the worker
    /// reconnects and registers again).
    #[arg(long, env = "WORKER_LIVENESS", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub worker_liveness: u32,
    /// Proxy XSUB endpoints the event publisher connects to.
    #[arg(long, env = "PROXY_ENDPOINTS", default_value = "tcp://127.0.0.1:5557")]
    pub proxy_endpoints: Endpoints,
    /// Worker threads (requests handled at once); default: number of CPUs.
    #[arg(long, env = "WORKERS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub workers: Option<u16>,
    /// How often a `server.status` event is published.
    #[arg(long, env = "STATUS_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub status_interval: Duration,
    /// Longest service time the `work` operation may ask for.
    #[arg(long, env = "MAX_WORK", default_value = "10s", value_parser = parse_duration)]
    pub max_work: Duration,
}

/// How the server's workers talk to the brokers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WorkerProtocol {
    /// Majordomo workers on the brokers' frontends (MDP/0.2 plus our extensions).
    Majordomo,
    /// Plain REP sockets on the brokers' backends.
    Rep,
}

/// The services a server registers: at least one, no duplicates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Services(pub Vec<String>);

impl std::str::FromStr for Services {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        parse_services(s)
    }
}

fn parse_services(s: &str) -> Result<Services, String> {
    let mut out: Vec<String> = Vec::new();
    for name in s.split(',').map(str::trim) {
        let checked =
            ServiceName::new(name.as_bytes()).map_err(|e| format!("service {name:?}: {e}"))?;
        if checked.is_mmi() {
            return Err(format!(
                "service {name:?}: the `mmi.` namespace belongs to the broker"
            ));
        }
        if out.iter().any(|o| o == name) {
            return Err(format!("service {name:?} listed twice"));
        }
        out.push(name.to_owned());
    }
    Ok(Services(out))
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

    /// Requests held at once: `CREDIT`, or the worker count.
    pub fn credit(&self) -> u32 {
        self.credit.unwrap_or_else(|| {
            u32::try_from(self.worker_count()).map_or(mensageria::mdp::MAX_CREDIT, |w| {
                w.min(mensageria::mdp::MAX_CREDIT)
            })
        })
    }

    /// A configuration for tests: loopback ops port 0, the given endpoints.
    pub fn for_tests(broker: &str, proxy: &str, workers: u16) -> Self {
        Cli::for_tests(
            "server",
            &[
                "--broker-endpoints",
                broker,
                "--proxy-endpoints",
                proxy,
                "--workers",
                &workers.to_string(),
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
        let c = Cli::try_parse_from(["server"]).unwrap().config;
        assert_eq!(c.broker_endpoints.0, vec!["tcp://127.0.0.1:5555"]);
        assert_eq!(c.worker_protocol, WorkerProtocol::Majordomo);
        assert_eq!(c.services.0, vec!["echo"]);
        assert_eq!(c.credit(), u32::try_from(c.worker_count()).unwrap());
        assert_eq!(c.worker_heartbeat_ivl, Duration::from_secs(1));
        assert_eq!(c.worker_liveness, 3);
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
        let c = Cli::try_parse_from(["server", "--services", "echo, work", "--workers", "3"])
            .unwrap()
            .config;
        assert_eq!((c.services.0.len(), c.credit()), (2, 3));
        let long = "s".repeat(mensageria::mdp::MAX_SERVICE_NAME + 1);
        assert!(Cli::try_parse_from(["server", "--services", &long]).is_err());
        for (flag, value) in [
            ("--workers", "0"),
            ("--workers", "x"),
            ("--broker-endpoints", "a:1"),
            ("--status-interval", "often"),
            ("--credit", "0"),
            ("--services", "echo,,work"),
            ("--services", "echo,echo"),
            ("--services", "mmi.service"),
            ("--services", "has space"),
            ("--worker-protocol", "http"),
        ] {
            let err = Cli::try_parse_from(["server", flag, value]).unwrap_err();
            assert!(err.to_string().contains(flag), "{flag}: {err}");
        }
    }
}
