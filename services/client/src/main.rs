//! `client` binary: parse the subcommand, set up telemetry, run it.

use std::process::ExitCode;

use client::config::{Cli, Command, DEFAULT_HTTP_PORT};
use mensageria::{
    config::{parse_or_exit, CommonArgs, LogFormat},
    ops::healthcheck,
    otel::OtelArgs,
    service::run_main,
    telemetry,
};

/// Logging for the one-shot subcommands: text on stderr, their own filter.
fn cli_logging(filter: &str, otel: &OtelArgs) -> CommonArgs {
    CommonArgs {
        http_addr: None,
        log_filter: filter.to_owned(),
        log_format: LogFormat::Text,
        shutdown_grace: Default::default(),
        ready_file: None,
        otel: otel.clone(),
    }
}

fn main() -> ExitCode {
    let cli: Cli = parse_or_exit();
    match cli.command {
        Command::Healthcheck { common } => healthcheck(common.http_addr_or(DEFAULT_HTTP_PORT)),
        Command::Keygen => mensageria::curve::keygen_command(),
        Command::Services(args) => client::services::command(&args),
        Command::Run(args) => {
            let _telemetry = telemetry::init_or_exit("client", &args.common);
            let ready_file = args.common.ready_file.clone();
            run_main(|sd| {
                mensageria::ready::scope(ready_file, async move {
                    client::start_run(args, sd).await?.wait().await
                })
            })
        }
        Command::Request(args) => {
            let _telemetry =
                telemetry::init_or_exit("client", &cli_logging(&args.log_filter, &args.otel));
            let mut ok = false;
            let code = run_main(|sd| async {
                ok = client::print_outcome(&client::request(args, sd).await?);
                Ok(())
            });
            if ok {
                code
            } else {
                ExitCode::FAILURE
            }
        }
        Command::Bench(args) => {
            let _telemetry =
                telemetry::init_or_exit("client", &cli_logging(&args.log_filter, &args.otel));
            run_main(|sd| async move {
                client::bench(args, sd).await?;
                Ok(())
            })
        }
        Command::Subscribe(args) => {
            let _telemetry =
                telemetry::init_or_exit("client", &cli_logging(&args.log_filter, &args.otel));
            run_main(|sd| async move {
                eprintln!("{}", client::subscribe(args, sd).await?);
                Ok(())
            })
        }
    }
}
