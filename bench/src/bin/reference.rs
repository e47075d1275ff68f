//! `reference`: the bare-libzmq baseline the harness measures mensageria
//! against. Each role runs as its own process, like the real services:
//!
//! - `reference broker --frontend EP --backend EP`: `zmq::proxy(ROUTER, DEALER)`, both bound;
//! - `reference proxy --xsub EP --xpub EP`: `zmq::proxy(XSUB, XPUB)`, both bound;
//! - `reference worker --connect EP [--threads N] [--publish EP]`: N trivial REP sockets that
//!   echo every request and, with `--publish`, then publish one event each on their own PUB
//!   socket (the full-system shape of `make bench`, in bare libzmq).
//!
//! Sockets get the same high-water marks as the services' default (`--hwm`,
//! 10000) and nothing else: no heartbeats, monitors, metrics or tracing.
//! SIGTERM ends the process (default action).

use clap::{Parser, Subcommand};
use mensageria_bench::load::socket;

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
        /// Also publish one event per request to this XSUB endpoint: topic
        /// `requests`, payload = publisher id and sequence number (two
        /// little-endian u64), padded to `--event-size`.
        #[arg(long, value_name = "EP")]
        publish: Option<String>,
        /// Event payload size, bytes (at least 16).
        #[arg(long, default_value_t = 100)]
        event_size: usize,
    },
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
        Role::Worker {
            connect,
            threads,
            publish,
            event_size,
        } => {
            let handles: Vec<_> = (0..threads.max(1))
                .map(|i| {
                    let (ctx, connect, publish) = (ctx.clone(), connect.clone(), publish.clone());
                    let hwm = cli.hwm;
                    // Unique per thread across processes: pid and thread index.
                    let id = (u64::from(std::process::id()) << 16) | i as u64;
                    std::thread::spawn(move || echo(&ctx, hwm, &connect, publish, id, event_size))
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

/// One REP worker: echoes every request; with `publish`, then publishes one
/// event (`[requests, id ‖ seq ‖ padding]`).
fn echo(
    ctx: &zmq::Context,
    hwm: i32,
    connect: &str,
    publish: Option<String>,
    id: u64,
    event_size: usize,
) -> zmq::Result<()> {
    let s = socket(ctx, zmq::REP, hwm)?;
    s.connect(connect)?;
    let publisher = match publish {
        Some(ep) => {
            let p = socket(ctx, zmq::PUB, hwm)?;
            p.connect(&ep)?;
            Some(p)
        }
        None => None,
    };
    let mut event = vec![b'.'; event_size.max(16)];
    event[0..8].copy_from_slice(&id.to_le_bytes());
    let mut seq = 0u64;
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
        if let Some(p) = &publisher {
            event[8..16].copy_from_slice(&seq.to_le_bytes());
            seq += 1;
            p.send(&b"requests"[..], zmq::SNDMORE)?;
            p.send(&event[..], 0)?;
        }
    }
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
