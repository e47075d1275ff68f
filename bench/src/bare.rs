//! The full-system shape in bare libzmq: the ceiling that libzmq itself puts
//! on mensageria's sweep, measured in the same run as the NATS rows.
//!
//! `reference broker` (`zmq::proxy` ROUTER/DEALER), `reference proxy`
//! (`zmq::proxy` XSUB/XPUB), `full_servers` × `reference worker --publish`
//! (REP threads that echo each request and publish one event), one DEALER in
//! the harness keeping `c` requests outstanding, and one SUB in the harness
//! counting the events. No headers, deadlines, credit, heartbeats, metrics
//! or traces: what is left is libzmq's own cost per hop. The load and the
//! subscriber run inside the harness, so their CPU is not in the Σ column.

use std::time::Duration;

use anyhow::Context as _;
use testkit::wait::poll_until;

use super::{measure_rpc, RpcStack, Sample, Settings};
use crate::load::{self, EventCounter};

/// Runs `Workload::Bare(c)`: `c` requests outstanding.
///
/// # Errors
/// If a reference process fails to start or dies, or the load fails.
pub(super) fn run(s: &Settings, c: u32) -> anyhow::Result<Sample> {
    let (broker, frontend, backend) = super::ref_broker(s)?;
    let (proxy, xsub, xpub) = super::ref_proxy(s)?;
    let mut procs = vec![broker, proxy];
    procs.extend(super::ref_workers(
        s,
        s.full_servers,
        &backend,
        Some(&xsub),
    )?);
    // Connected before the warm-up, so the subscription reaches the
    // workers' PUB sockets while it runs.
    let events = EventCounter::start(&xpub, b"requests")?;
    let at_start = std::cell::Cell::new(events.count());
    let size = s.payload_size;
    let depth = usize::try_from(c).context("concurrency")?;
    let mut stack = RpcStack { procs, frontend };
    let mut side = measure_rpc(s, &mut stack, &|ep, win| {
        at_start.set(events.count());
        load::pipelined(ep, 1, depth, win, size)
    })?;
    // The last events are on their way: wait until the count holds still.
    let mut last = events.count();
    poll_until(Duration::from_secs(3), || {
        std::thread::sleep(Duration::from_millis(100));
        let now = events.count();
        (std::mem::replace(&mut last, now) == now).then_some(())
    });
    let end = events.stop()?;
    let start = at_start.get();
    side.set("events_received", (end.received - start.received) as f64);
    side.set("events_lost", (end.lost - start.lost) as f64);
    side.set("concurrency", f64::from(c));
    Ok(Sample {
        ours: side,
        reference: None,
    })
}
