//! `client` binary: parse the subcommand, set up telemetry, run it.

use std::process::ExitCode;

use client::config::{Cli, Command, DEFAULT_HTTP_PORT};
use mensageria::{
    config::{parse_or_exit, CommonArgs, LogFormat},
    ops::healthcheck,
    service::run_main,
    telemetry,
};

fn cli_logging(filter: &str) -> CommonArgs {
    CommonArgs {
        http_addr: None,
        log_filter: filter.to_owned(),
        log_format: LogFormat::Text,
        shutdown_grace: Default::default(),
    }
}

fn main() -> ExitCode {
    let cli: Cli = parse_or_exit();
    let mut ok = true;
    let code = match cli.command {
        Command::Healthcheck { common } => {
            return healthcheck(common.http_addr_or(DEFAULT_HTTP_PORT))
        }
        Command::Run(args) => {
            telemetry::init("client", &args.common);
            run_main(|sd| async move { client::start_run(args, sd).await?.wait().await })
        }
        Command::Request(args) => {
            telemetry::init("client", &cli_logging(&args.log_filter));
            run_main(|sd| async {
                ok = client::print_outcome(&client::request(args, sd).await?);
                Ok(())
            })
        }
        Command::Bench(args) => {
            telemetry::init("client", &cli_logging(&args.log_filter));
            let json = args.json;
            run_main(|sd| async move {
                let s = client::bench(args, sd).await?;
                if json {
                    println!("{}", serde_json::to_string(&s)?)
                } else {
                    println!("{s}")
                }
                Ok(())
            })
        }
        Command::Subscribe(args) => {
            telemetry::init("client", &cli_logging(&args.log_filter));
            run_main(|sd| async move {
                let (received, lost) = client::subscribe(args, sd).await?;
                eprintln!("received {received} events, {lost} lost");
                Ok(())
            })
        }
    };
    if ok {
        code
    } else {
        ExitCode::FAILURE
    }
}
