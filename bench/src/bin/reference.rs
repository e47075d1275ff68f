//! `reference`: the bare-libzmq baseline the harness measures mensageria
//! against. Each role runs as its own process, like the real services:
//!
//! - `reference broker --frontend EP --backend EP`: `zmq::proxy(ROUTER, DEALER)`, both bound;
//! - `reference proxy --xsub EP --xpub EP`: `zmq::proxy(XSUB, XPUB)`, both bound;
//! - `reference worker --connect EP [--threads N]`: N trivial REP sockets that echo every request.
//!
//! Sockets get the same high-water marks as the services' default (`--hwm`,
//! 10000) and nothing else: no heartbeats, monitors, metrics or tracing.
//! SIGTERM ends the process (default action).

use clap::{Parser, Subcommand};

/// Bare-libzmq reference broker, proxy and worker for the mensageria benchmark.
#[derive(Debug, Parser)]
#[command(
    name = "reference",
    version,
    about = "Bare-libzmq reference broker, proxy and worker for the mensageria benchmark (one role per process)."
)]
struct Cli {
    #[command(subcommand)]
    role: Role,
    /// Send and receive high-water mark of every socket (messages).
    #[arg(long, global = true, default_value_t = 10_000)]
    hwm: i32,
}

#[derive(Debug, Subcommand)]
enum Role {
    /// zmq::proxy between a bound ROUTER (clients) and a bound DEALER (workers).
    Broker {
        /// ROUTER bind endpoint, e.g. tcp://127.0.0.1:5555.
        #[arg(long)]
        frontend: String,
        /// DEALER bind endpoint, e.g. tcp://127.0.0.1:5556.
        #[arg(long)]
        backend: String,
    },
    /// zmq::proxy between a bound XSUB (publishers) and a bound XPUB (subscribers).
    Proxy {
        /// XSUB bind endpoint.
        #[arg(long)]
        xsub: String,
        /// XPUB bind endpoint.
        #[arg(long)]
        xpub: String,
    },
    /// Trivial REP workers that echo every request unchanged.
    Worker {
        /// Broker backend endpoint to connect to.
        #[arg(long)]
        connect: String,
        /// REP sockets, one thread each.
        #[arg(long, default_value_t = 2)]
        threads: usize,
    },
}

fn socket(ctx: &zmq::Context, kind: zmq::SocketType, hwm: i32) -> zmq::Result<zmq::Socket> {
    let s = ctx.socket(kind)?;
    s.set_sndhwm(hwm)?;
    s.set_rcvhwm(hwm)?;
    s.set_linger(0)?;
    Ok(s)
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let ctx = zmq::Context::new();
    match cli.role {
        Role::Broker { frontend, backend } => {
            let f = socket(&ctx, zmq::ROUTER, cli.hwm)?;
            let b = socket(&ctx, zmq::DEALER, cli.hwm)?;
            f.bind(&frontend)?;
            b.bind(&backend)?;
            eprintln!("reference broker: frontend={frontend} backend={backend}");
            zmq::proxy(&f, &b)?;
        }
        Role::Proxy { xsub, xpub } => {
            let s = socket(&ctx, zmq::XSUB, cli.hwm)?;
            let p = socket(&ctx, zmq::XPUB, cli.hwm)?;
            s.bind(&xsub)?;
            p.bind(&xpub)?;
            eprintln!("reference proxy: xsub={xsub} xpub={xpub}");
            zmq::proxy(&s, &p)?;
        }
        Role::Worker { connect, threads } => {
            let handles: Vec<_> = (0..threads.max(1))
                .map(|_| {
                    let ctx = ctx.clone();
                    let connect = connect.clone();
                    let hwm = cli.hwm;
                    std::thread::spawn(move || -> zmq::Result<()> {
                        let s = socket(&ctx, zmq::REP, hwm)?;
                        s.connect(&connect)?;
                        let mut frames: Vec<zmq::Message> = Vec::with_capacity(4);
                        loop {
                            frames.clear();
                            loop {
                                let m = s.recv_msg(0)?;
                                let more = m.get_more();
                                frames.push(m);
                                if !more {
                                    break;
                                }
                            }
                            let n = frames.len();
                            for (i, m) in frames.drain(..).enumerate() {
                                s.send(m, if i + 1 < n { zmq::SNDMORE } else { 0 })?;
                            }
                        }
                    })
                })
                .collect();
            eprintln!("reference worker: {threads} REP socket(s) connected to {connect}");
            for h in handles {
                h.join()
                    .map_err(|_| anyhow::anyhow!("worker thread panicked"))??;
            }
        }
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("reference: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
