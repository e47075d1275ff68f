//! The command line of the long-running services (broker, proxy, server):
//! `<service> [OPTIONS]` runs it, `<service> healthcheck` probes its
//! `/readyz`, `<service> keygen` prints a CURVE key pair. One `main` serves
//! them all: parse, set up telemetry, run until a signal.

use std::{future::Future, process::ExitCode};

use clap::{Args, CommandFactory, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::{
    config::{parse_or_exit_with, CommonArgs},
    curve::keygen_command,
    ops::healthcheck,
    service::run_main,
    telemetry,
};

/// Subcommands every service has besides running.
#[derive(Debug, Subcommand, PartialEq, Eq)]
pub enum ServiceCommand {
    /// Probe this service's /readyz on HTTP_ADDR (exit 0 when ready, 1 otherwise).
    Healthcheck,
    /// Print a new CURVE key pair.
    Keygen,
}

/// A service's command line: an optional subcommand plus its options.
#[derive(Debug, Parser)]
#[command(version)]
pub struct ServiceCli<C: Args> {
    /// What to do (default: run the service).
    #[command(subcommand)]
    pub command: Option<ServiceCommand>,
    /// The service's options.
    #[command(flatten)]
    pub config: C,
}

impl<C: Args> ServiceCli<C> {
    /// A service's options for tests: `name --http-addr 127.0.0.1:0` (the
    /// ops server on an ephemeral loopback port) followed by `args`.
    ///
    /// # Panics
    /// If `args` are not valid options.
    pub fn for_tests(name: &str, args: &[&str]) -> C {
        let mut all = vec![name, "--http-addr", "127.0.0.1:0"];
        all.extend_from_slice(args);
        Self::try_parse_from(all)
            .unwrap_or_else(|e| panic!("test arguments {args:?}: {e}"))
            .config
    }
}

/// What a service binary says about itself.
#[derive(Debug, Clone, Copy)]
pub struct ServiceInfo {
    /// Binary and role name (`broker`, …).
    pub name: &'static str,
    /// One-line description for `--help`.
    pub about: &'static str,
    /// Port of the ops HTTP server when `HTTP_ADDR` is unset.
    pub default_port: u16,
}

/// A service configuration: its options include the common ones.
pub trait ServiceConfig: Args + Send + 'static {
    /// The options every service has.
    fn common(&self) -> &CommonArgs;
}

/// The whole `main` of a service: parse (exit 2 on a bad value), answer
/// `healthcheck`/`keygen`, or set up telemetry and `run` until a signal.
pub fn service_main<C, F, Fut>(info: ServiceInfo, run: F) -> ExitCode
where
    C: ServiceConfig,
    F: FnOnce(C, CancellationToken) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let command = ServiceCli::<C>::command()
        .name(info.name)
        .bin_name(info.name)
        .about(info.about);
    let cli: ServiceCli<C> = parse_or_exit_with(command);
    match cli.command {
        Some(ServiceCommand::Healthcheck) => {
            healthcheck(cli.config.common().http_addr_or(info.default_port))
        }
        Some(ServiceCommand::Keygen) => keygen_command(),
        None => {
            let _telemetry = telemetry::init_or_exit(info.name, cli.config.common());
            let ready_file = cli.config.common().ready_file.clone();
            run_main(|shutdown| crate::ready::scope(ready_file, run(cli.config, shutdown)))
        }
    }
}
