//! Proxy configuration (docs/design.md §2).

use clap::Args;
use mensageria::cli::{ServiceCli, ServiceConfig, ServiceInfo};
use mensageria::config::{parse_endpoint, CommonArgs, TransportArgs};

/// Default ops HTTP port of the proxy.
pub const DEFAULT_HTTP_PORT: u16 = 9102;

/// The proxy's command line: options, or the `healthcheck`/`keygen` subcommands.
pub type Cli = ServiceCli<Config>;

/// Name, description and default ops port of the proxy binary.
pub const INFO: ServiceInfo = ServiceInfo {
    name: "proxy",
    about: "mensageria proxy: forwards events from publishers (XSUB) to subscribers (XPUB) and subscriptions back, counting fan-out",
    default_port: DEFAULT_HTTP_PORT,
};

/// Everything the proxy needs to run.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Shared options.
    #[command(flatten)]
    pub common: CommonArgs,
    /// ZeroMQ transport options.
    #[command(flatten)]
    pub transport: TransportArgs,
    /// Where publishers connect (XSUB).
    #[arg(long, env = "XSUB_BIND", default_value = "tcp://*:5557", value_parser = parse_endpoint)]
    pub xsub_bind: String,
    /// Where subscribers connect (XPUB).
    #[arg(long, env = "XPUB_BIND", default_value = "tcp://*:5558", value_parser = parse_endpoint)]
    pub xpub_bind: String,
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
            "proxy",
            &[
                "--xsub-bind",
                "tcp://127.0.0.1:*",
                "--xpub-bind",
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
        let c = Cli::try_parse_from(["proxy"]).unwrap().config;
        assert_eq!(c.xsub_bind, "tcp://*:5557");
        assert_eq!(c.xpub_bind, "tcp://*:5558");
        assert_eq!(c.common.http_addr_or(DEFAULT_HTTP_PORT).port(), 9102);
    }

    #[test]
    fn bad_bind_is_an_error_naming_the_option() {
        let err = Cli::try_parse_from(["proxy", "--xpub-bind", "5558"]).unwrap_err();
        assert!(err.to_string().contains("--xpub-bind"), "{err}");
    }
}
