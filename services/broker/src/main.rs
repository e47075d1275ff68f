//! `broker` binary: everything is in the library; see [`mensageria::cli::service_main`].

fn main() -> std::process::ExitCode {
    mensageria::cli::service_main(broker::config::INFO, broker::run)
}
