//! `server` binary: parse options, set up telemetry, run.

use mensageria::{config::parse_or_exit, ops::healthcheck, service::run_main, telemetry};
use server::config::{Cli, Command, DEFAULT_HTTP_PORT};

fn main() -> std::process::ExitCode {
    let cli: Cli = parse_or_exit();
    match cli.command {
        Some(Command::Healthcheck) => {
            return healthcheck(cli.config.common.http_addr_or(DEFAULT_HTTP_PORT))
        }
        Some(Command::Keygen) => return mensageria::curve::keygen_command(),
        None => {}
    }
    let _telemetry = telemetry::init_or_exit("server", &cli.config.common);
    run_main(|shutdown| server::run(cli.config, shutdown))
}
