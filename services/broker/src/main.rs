//! `broker` binary: parse options, set up telemetry, run.

use broker::config::{Cli, Command, DEFAULT_HTTP_PORT};
use mensageria::{config::parse_or_exit, ops::healthcheck, service::run_main, telemetry};

fn main() -> std::process::ExitCode {
    let cli: Cli = parse_or_exit();
    match cli.command {
        Some(Command::Healthcheck) => {
            return healthcheck(cli.config.common.http_addr_or(DEFAULT_HTTP_PORT))
        }
        Some(Command::Keygen) => return mensageria::curve::keygen_command(),
        None => {}
    }
    let _telemetry = telemetry::init_or_exit("broker", &cli.config.common);
    run_main(|shutdown| broker::run(cli.config, shutdown))
}
