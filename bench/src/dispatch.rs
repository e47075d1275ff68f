//! The service-dispatch path: the real broker with trivial Majordomo
//! workers (MDP/0.2 with our credit extension) running on threads of the
//! harness, under the same plain-client load as the REP path. Its rows are
//! compared with the REP path's pipelined throughput and the bare-libzmq
//! reference's lockstep latency measured in the same run (see
//! `report::rows`).
//!
//! The workers echo every request body at once, like the reference's REP
//! workers; their CPU shows under "harness (load)".

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::Context as _;

use testkit::{ops, wait::poll_until};

use super::{measure_rpc, RpcLoad, RpcStack, Sample, Settings, READY};
use crate::load::{socket, Background};

/// Requests each worker announces it takes at once (READY extension frame):
/// the clients' 400 outstanding over the 4 workers, so the comparison with
/// the REP path is like for like (its DEALER backend prefetches up to the
/// HWM per REP socket). At 16 each worker's pipe stays shallow and the path
/// ran at about half the REP path's rate on the 2-core machine.
const CREDIT: u32 = 100;
/// Heartbeat interval both ways (the broker's default).
const HEARTBEAT: Duration = Duration::from_secs(1);

/// MDP/0.2 worker command bytes (RFC 18) and our extension.
const READY_CMD: u8 = 0x01;
const REQUEST: u8 = 0x02;
const FINAL: u8 = 0x04;
const HEARTBEAT_CMD: u8 = 0x05;
const DISCONNECT: u8 = 0x06;

/// Runs one dispatch workload (mensageria only; the ratios come from the
/// REP-path and reference rows of the same run).
///
/// # Errors
/// If the broker fails to start, the workers never register, or the load fails.
pub(super) fn run(s: &Settings, load: RpcLoad) -> anyhow::Result<Sample> {
    let broker = s.launcher().broker(&[], &[])?;
    let count = s.servers * s.workers;
    let workers = start_workers(&broker.frontend, count)?;
    poll_until(READY, || {
        (ops::scrape(broker.http, "mensageria_broker_workers").unwrap_or(0.0) >= count as f64)
            .then_some(())
    })
    .with_context(|| format!("{count} Majordomo workers did not register within {READY:?}"))?;
    let mut stack = RpcStack {
        frontend: broker.frontend,
        procs: vec![broker.proc],
    };
    let side = measure_rpc(s, &mut stack, load);
    workers.stop()?;
    Ok(Sample {
        ours: side?,
        reference: None,
    })
}

/// `n` worker threads, each with its own DEALER connected to `endpoint`.
fn start_workers(endpoint: &str, n: usize) -> anyhow::Result<Background> {
    let ctx = zmq::Context::new();
    let mut workers = Background::default();
    for i in 0..n {
        let socket = socket(&ctx, zmq::DEALER, 0)?;
        socket.connect(endpoint)?;
        workers.spawn(format!("mdp-worker-{i}"), move |stop| serve(&socket, stop))?;
    }
    Ok(workers)
}

/// READY, then FINAL for every REQUEST with the body echoed, a HEARTBEAT
/// when idle for an interval, DISCONNECT at the end.
fn serve(socket: &zmq::Socket, stop: &AtomicBool) -> anyhow::Result<()> {
    let command = |cmd: u8| -> [zmq::Message; 2] {
        [
            zmq::Message::from(&b"MDPW02"[..]),
            zmq::Message::from(&[cmd][..]),
        ]
    };
    let credit = format!("credit={CREDIT}");
    socket.send_multipart(
        command(READY_CMD).into_iter().chain([
            zmq::Message::from("echo"),
            zmq::Message::from(credit.as_str()),
        ]),
        0,
    )?;
    let mut last_sent = Instant::now();
    let mut frames: Vec<zmq::Message> = Vec::with_capacity(8);
    while !stop.load(Ordering::Relaxed) {
        if last_sent.elapsed() >= HEARTBEAT {
            socket.send_multipart(command(HEARTBEAT_CMD), 0)?;
            last_sent = Instant::now();
        }
        if socket.poll(zmq::POLLIN, 100)? == 0 {
            continue;
        }
        loop {
            frames.clear();
            match socket.recv_msg(zmq::DONTWAIT) {
                Ok(m) => frames.push(m),
                Err(zmq::Error::EAGAIN) => break,
                Err(e) => return Err(e.into()),
            }
            while frames.last().is_some_and(zmq::Message::get_more) {
                frames.push(socket.recv_msg(0)?);
            }
            // ["MDPW02", REQUEST, address, "", body…] → the same with FINAL.
            if frames.len() >= 5 && frames[1][..] == [REQUEST] {
                frames[1] = zmq::Message::from(&[FINAL][..]);
                let last = frames.len() - 1;
                for (i, f) in frames.drain(..).enumerate() {
                    socket.send(f, if i < last { zmq::SNDMORE } else { 0 })?;
                }
                last_sent = Instant::now();
            }
        }
    }
    socket.send_multipart(command(DISCONNECT), 0)?;
    Ok(())
}
