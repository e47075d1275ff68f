//! Load generators that run inside the harness process on plain libzmq
//! sockets, so the same load goes through mensageria and the reference:
//! lockstep REQ clients, pipelined DEALER clients, a paced PUB with SUB
//! receivers, and a flood of never-answered requests.

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Arc, OnceLock,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use hdrhistogram::Histogram;

/// High-water mark of the harness's sockets (the services' default).
pub const HWM: i32 = 10_000;

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Nanoseconds since the harness's epoch (monotonic, shared by all threads).
pub fn now_ns() -> u64 {
    epoch().elapsed().as_nanos() as u64
}

/// A latency histogram in nanoseconds.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000_000, 3).expect("valid histogram bounds")
}

/// The time a load runs and counts what it does.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// Measurement starts here.
    pub from: Instant,
    /// And ends here.
    pub to: Instant,
}

impl Window {
    /// A window from now, lasting `measure`.
    pub fn new(measure: Duration) -> Self {
        let from = Instant::now();
        Window {
            from,
            to: from + measure,
        }
    }

    /// Seconds measured.
    pub fn secs(&self) -> f64 {
        (self.to - self.from).as_secs_f64()
    }
}

/// Result of a request/reply load.
#[derive(Debug, Clone, Default)]
pub struct RpcResult {
    /// Replies inside the window.
    pub ok: u64,
    /// Errors (error replies, wrong replies, timeouts).
    pub errors: u64,
    /// `ok` per second of the window.
    pub rps: f64,
    /// Median latency, µs.
    pub p50_us: f64,
    /// 99th percentile latency, µs.
    pub p99_us: f64,
    /// Maximum latency, µs.
    pub max_us: f64,
}

impl RpcResult {
    fn from_parts(hist: &Histogram<u64>, ok: u64, errors: u64, secs: f64) -> Self {
        let us = |v: u64| v as f64 / 1000.0;
        RpcResult {
            ok,
            errors,
            rps: ok as f64 / secs,
            p50_us: us(hist.value_at_quantile(0.5)),
            p99_us: us(hist.value_at_quantile(0.99)),
            max_us: us(hist.max()),
        }
    }
}

/// A socket of `kind` with send and receive high-water mark `hwm` and no
/// linger: the harness's and the `reference` roles' only socket options.
///
/// # Errors
/// If libzmq refuses.
pub fn socket(ctx: &zmq::Context, kind: zmq::SocketType, hwm: i32) -> zmq::Result<zmq::Socket> {
    let s = ctx.socket(kind)?;
    s.set_linger(0)?;
    s.set_sndhwm(hwm)?;
    s.set_rcvhwm(hwm)?;
    Ok(s)
}

/// The little-endian u64 at `at` of an event payload (at least `at + 8` bytes).
pub fn le_u64(payload: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(payload[at..at + 8].try_into().expect("8 bytes"))
}

fn text_payload(prefix: &str, size: usize) -> Vec<u8> {
    let mut p = prefix.as_bytes().to_vec();
    while p.len() < size {
        p.push(b'.');
    }
    p
}

/// `clients` REQ sockets, each doing send → receive in a loop. Counts round
/// trips that start and end inside the window.
///
/// # Errors
/// If a socket cannot be created or connected.
pub fn lockstep(
    endpoint: &str,
    clients: usize,
    window: Window,
    payload_size: usize,
) -> anyhow::Result<RpcResult> {
    let ctx = zmq::Context::new();
    let payload = text_payload("bench lockstep", payload_size);
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let (ctx, endpoint, payload) = (ctx.clone(), endpoint.to_owned(), payload.clone());
            std::thread::spawn(move || -> ThreadResult {
                let mut hist = histogram();
                let (mut ok, mut errors) = (0u64, 0u64);
                let mut s = socket(&ctx, zmq::REQ, HWM)?;
                s.connect(&endpoint)?;
                let mut reply = zmq::Message::new();
                loop {
                    let sent = Instant::now();
                    if sent >= window.to {
                        break;
                    }
                    s.send(&payload[..], 0)?;
                    if s.poll(zmq::POLLIN, 2000)? == 0 {
                        // Lost request: a REQ socket cannot go on; reopen it.
                        errors += 1;
                        s = socket(&ctx, zmq::REQ, HWM)?;
                        s.connect(&endpoint)?;
                        continue;
                    }
                    s.recv(&mut reply, 0)?;
                    let done = Instant::now();
                    if sent >= window.from && done <= window.to {
                        if reply[..] == payload[..] {
                            ok += 1;
                            let _ = hist.record((done - sent).as_nanos() as u64);
                        } else {
                            errors += 1;
                        }
                    }
                }
                Ok((hist, ok, errors))
            })
        })
        .collect();
    merge(threads, window.secs())
}

/// What one load thread returns: latency histogram, ok count, error count.
type ThreadResult = anyhow::Result<(Histogram<u64>, u64, u64)>;

/// Joins the load `threads` (`what`): their histograms merged, their counts summed.
fn join_all(
    threads: Vec<std::thread::JoinHandle<ThreadResult>>,
    what: &str,
) -> anyhow::Result<(Histogram<u64>, u64, u64)> {
    let mut all = (histogram(), 0, 0);
    for t in threads {
        let (h, a, b) = t
            .join()
            .map_err(|_| anyhow::anyhow!("{what} thread panicked"))??;
        all.0.add(&h).context("merge histograms")?;
        all.1 += a;
        all.2 += b;
    }
    Ok(all)
}

fn merge(
    threads: Vec<std::thread::JoinHandle<ThreadResult>>,
    secs: f64,
) -> anyhow::Result<RpcResult> {
    let (hist, ok, errors) = join_all(threads, "load")?;
    Ok(RpcResult::from_parts(&hist, ok, errors, secs))
}

/// `clients` DEALER sockets, each keeping `depth` plain requests
/// (`["", payload]`) outstanding; the payload carries its send time, so the
/// echoed reply gives the latency. Counts replies received inside the window
/// for requests sent inside it.
///
/// # Errors
/// If a socket cannot be created or connected.
pub fn pipelined(
    endpoint: &str,
    clients: usize,
    depth: usize,
    window: Window,
    payload_size: usize,
) -> anyhow::Result<RpcResult> {
    let ctx = zmq::Context::new();
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let (ctx, endpoint) = (ctx.clone(), endpoint.to_owned());
            std::thread::spawn(move || -> ThreadResult {
                let mut hist = histogram();
                let (mut ok, mut errors) = (0u64, 0u64);
                let s = socket(&ctx, zmq::DEALER, HWM)?;
                s.connect(&endpoint)?;
                let send = |s: &zmq::Socket| -> zmq::Result<()> {
                    let p = text_payload(&format!("bench {:016x}", now_ns()), payload_size);
                    s.send(&b""[..], zmq::SNDMORE)?;
                    s.send(p, 0)
                };
                for _ in 0..depth {
                    send(&s)?;
                }
                let mut outstanding = depth;
                let mut last_reply = Instant::now();
                let drain_until = window.to + Duration::from_secs(2);
                let (mut delim, mut body) = (zmq::Message::new(), zmq::Message::new());
                while outstanding > 0 {
                    let now = Instant::now();
                    if now >= drain_until || now.duration_since(last_reply) > Duration::from_secs(3)
                    {
                        if now < window.to {
                            errors += outstanding as u64; // stalled
                        }
                        break;
                    }
                    if s.poll(zmq::POLLIN, 100)? == 0 {
                        continue;
                    }
                    loop {
                        match s.recv(&mut delim, zmq::DONTWAIT) {
                            Ok(()) => {}
                            Err(zmq::Error::EAGAIN) => break,
                            Err(e) => return Err(e.into()),
                        }
                        if !delim.get_more() {
                            errors += 1; // not ["", body]
                            continue;
                        }
                        s.recv(&mut body, 0)?;
                        while body.get_more() {
                            s.recv(&mut body, 0)?;
                        }
                        let done = Instant::now();
                        last_reply = done;
                        outstanding -= 1;
                        let sent_ns = std::str::from_utf8(&body)
                            .ok()
                            .and_then(|t| t.strip_prefix("bench "))
                            .and_then(|t| t.get(..16))
                            .and_then(|h| u64::from_str_radix(h, 16).ok());
                        match sent_ns {
                            Some(ns) => {
                                let sent = epoch() + Duration::from_nanos(ns);
                                if sent >= window.from && done <= window.to {
                                    ok += 1;
                                    let _ = hist.record(now_ns().saturating_sub(ns).max(1));
                                }
                            }
                            None => {
                                if done >= window.from && done <= window.to {
                                    errors += 1;
                                }
                            }
                        }
                        if done < window.to {
                            send(&s)?;
                            outstanding += 1;
                        }
                    }
                }
                Ok((hist, ok, errors))
            })
        })
        .collect();
    merge(threads, window.secs())
}

/// Result of a fan-out run.
#[derive(Debug, Clone, Default)]
pub struct FanoutResult {
    /// Events published (measured stream).
    pub published: u64,
    /// Events received, summed over subscribers.
    pub delivered: u64,
    /// Events missing, summed over subscribers (gaps and tail).
    pub lost: u64,
    /// `delivered` per second of publishing.
    pub deliveries_per_s: f64,
    /// Publish → receive lag, median, µs.
    pub lag_p50_us: f64,
    /// Publish → receive lag, 99th percentile, µs.
    pub lag_p99_us: f64,
    /// Achieved publish rate, events/s.
    pub publish_rate: f64,
}

/// One PUB (connected to `xsub`) publishing `[topic, payload]` events of
/// `payload_size` bytes at `rate` events/s for `duration` (0 = as fast as
/// possible), `subscribers` SUB sockets (connected to `xpub`) receiving.
/// The payload starts with the sequence number and the send time.
///
/// # Errors
/// If sockets fail, or subscriptions do not reach the publisher in 5 s.
pub fn fanout(
    xsub: &str,
    xpub: &str,
    subscribers: usize,
    rate: f64,
    duration: Duration,
    payload_size: usize,
) -> anyhow::Result<FanoutResult> {
    let ctx = zmq::Context::new();
    let ready = Arc::new(AtomicUsize::new(0));
    let total = Arc::new(AtomicU64::new(u64::MAX));
    let done = Arc::new(AtomicBool::new(false));
    let subs: Vec<_> = (0..subscribers)
        .map(|_| {
            let (ctx, xpub) = (ctx.clone(), xpub.to_owned());
            let (ready, total, done) = (ready.clone(), total.clone(), done.clone());
            std::thread::spawn(move || -> ThreadResult {
                let s = socket(&ctx, zmq::SUB, HWM)?;
                s.connect(&xpub)?;
                s.set_subscribe(b"")?;
                let mut hist = histogram();
                let (mut received, mut lost, mut expected) = (0u64, 0u64, 0u64);
                let mut warm = false;
                let (mut topic, mut body) = (zmq::Message::new(), zmq::Message::new());
                let mut quiet_since = Instant::now();
                loop {
                    if done.load(Ordering::Acquire) {
                        let t = total.load(Ordering::Acquire);
                        if expected >= t || quiet_since.elapsed() > Duration::from_millis(500) {
                            lost += t.saturating_sub(expected);
                            break;
                        }
                    }
                    if s.poll(zmq::POLLIN, 50)? == 0 {
                        continue;
                    }
                    while s.recv(&mut topic, zmq::DONTWAIT).is_ok() {
                        quiet_since = Instant::now();
                        if !topic.get_more() {
                            continue;
                        }
                        s.recv(&mut body, 0)?;
                        while body.get_more() {
                            s.recv(&mut body, 0)?;
                        }
                        if &topic[..] == b"warm" {
                            if !warm {
                                warm = true;
                                ready.fetch_add(1, Ordering::AcqRel);
                            }
                            continue;
                        }
                        if body.len() < 16 {
                            continue;
                        }
                        let (seq, ts) = (le_u64(&body, 0), le_u64(&body, 8));
                        if seq > expected {
                            lost += seq - expected;
                        }
                        expected = expected.max(seq + 1);
                        received += 1;
                        let _ = hist.record(now_ns().saturating_sub(ts).max(1));
                    }
                }
                Ok((hist, received, lost))
            })
        })
        .collect();

    let result = (|| -> anyhow::Result<(u64, f64)> {
        let p = socket(&ctx, zmq::PUB, HWM)?;
        p.connect(xsub)?;
        let deadline = Instant::now() + Duration::from_secs(5);
        while ready.load(Ordering::Acquire) < subscribers {
            if Instant::now() >= deadline {
                bail!(
                    "only {} of {subscribers} subscribers got the warm-up event within 5 s",
                    ready.load(Ordering::Acquire)
                );
            }
            p.send(&b"warm"[..], zmq::SNDMORE)?;
            p.send(&b""[..], 0)?;
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(50));
        let mut payload = vec![b'.'; payload_size.max(16)];
        let start = Instant::now();
        let end = start + duration;
        let mut seq = 0u64;
        loop {
            let now = Instant::now();
            if now >= end {
                break;
            }
            let due = if rate > 0.0 {
                ((now - start).as_secs_f64() * rate) as u64
            } else {
                seq + 256
            };
            while seq < due {
                payload[0..8].copy_from_slice(&seq.to_le_bytes());
                payload[8..16].copy_from_slice(&now_ns().to_le_bytes());
                p.send(&b"bench.events"[..], zmq::SNDMORE)?;
                p.send(&payload[..], 0)?;
                seq += 1;
            }
            if rate > 0.0 {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        let secs = start.elapsed().as_secs_f64();
        Ok((seq, secs))
    })();
    if let Ok((n, _)) = &result {
        total.store(*n, Ordering::Release);
    } else {
        total.store(0, Ordering::Release);
    }
    done.store(true, Ordering::Release);
    let (hist, delivered, lost) = join_all(subs, "subscriber")?;
    let (published, secs) = result?;
    let us = |v: u64| v as f64 / 1000.0;
    Ok(FanoutResult {
        published,
        delivered,
        lost,
        deliveries_per_s: delivered as f64 / secs,
        lag_p50_us: us(hist.value_at_quantile(0.5)),
        lag_p99_us: us(hist.value_at_quantile(0.99)),
        publish_rate: published as f64 / secs,
    })
}

/// Threads of the harness that run until told to stop: each is given the
/// shared stop flag; [`Background::stop`], or dropping it, sets the flag and
/// joins them.
#[derive(Debug, Default)]
pub struct Background {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<anyhow::Result<()>>>,
}

impl Background {
    /// Runs `f` on a thread called `name`; `f` returns once its flag is set.
    ///
    /// # Errors
    /// If the thread cannot be started.
    pub fn spawn(
        &mut self,
        name: String,
        f: impl FnOnce(&AtomicBool) -> anyhow::Result<()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let stop = self.stop.clone();
        let thread = std::thread::Builder::new()
            .name(name)
            .spawn(move || f(&stop));
        self.threads.push(thread.context("start a thread")?);
        Ok(())
    }

    /// Stops and joins every thread.
    ///
    /// # Errors
    /// The first error a thread returned, or that it panicked.
    pub fn stop(mut self) -> anyhow::Result<()> {
        self.stop.store(true, Ordering::Release);
        let results: Vec<_> = self.threads.drain(..).map(|t| t.join()).collect();
        for r in results {
            r.map_err(|_| anyhow::anyhow!("a harness thread panicked"))??;
        }
        Ok(())
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// What [`flood`] did.
#[derive(Debug, Clone, Copy)]
pub struct Flood {
    /// Until all `n` requests had reached the readers.
    pub took: Duration,
    /// Requests the broker answered at once (e.g. `unavailable` while a
    /// reader's queue was full); each was sent again.
    pub rejected: u64,
}

/// Puts `n` plain requests in flight: `clients` DEALER sockets send them to
/// `frontend` while `readers` DEALER sockets on `backend` read and never
/// answer. A request the broker answers at once (`unavailable`,
/// `overloaded`) is sent again, so exactly `n` reach the readers. Returns
/// once they have (all in flight in the broker).
///
/// # Errors
/// If not all requests reach the readers within `timeout`.
pub fn flood(
    frontend: &str,
    backend: &str,
    n: u64,
    clients: usize,
    timeout: Duration,
) -> anyhow::Result<Flood> {
    let ctx = zmq::Context::new();
    let seen = Arc::new(AtomicU64::new(0));
    // Stopped on every way out, when dropped.
    let mut readers = Background::default();
    for i in 0..2 {
        // No high-water mark: the broker can always pass a request on.
        let reader = socket(&ctx, zmq::DEALER, 0)?;
        reader.connect(backend)?;
        let seen = seen.clone();
        readers.spawn(format!("flood-reader-{i}"), move |stop| {
            let mut m = zmq::Message::new();
            while !stop.load(Ordering::Acquire) {
                if reader.poll(zmq::POLLIN, 50)? == 0 {
                    continue;
                }
                while reader.recv(&mut m, zmq::DONTWAIT).is_ok() {
                    if !m.get_more() {
                        seen.fetch_add(1, Ordering::AcqRel);
                    }
                }
            }
            Ok(())
        })?;
    }
    // Let the readers connect first, or the broker answers `unavailable`
    // (those would be sent again, but the count is cleaner without).
    std::thread::sleep(Duration::from_millis(300));
    let start = Instant::now();
    let request = |s: &zmq::Socket, i: usize, k: u64| -> zmq::Result<()> {
        s.send(&b""[..], zmq::SNDMORE)?;
        s.send(text_payload(&format!("flood {i} {k}"), 32), 0)
    };
    let senders: Vec<_> = (0..clients)
        .map(|i| {
            let (ctx, frontend) = (ctx.clone(), frontend.to_owned());
            let count = n / clients as u64 + u64::from((i as u64) < n % clients as u64);
            std::thread::spawn(move || -> zmq::Result<zmq::Socket> {
                let s = socket(&ctx, zmq::DEALER, HWM)?;
                s.set_sndtimeo(5000)?;
                s.set_rcvhwm(0)?;
                s.connect(&frontend)?;
                for k in 0..count {
                    request(&s, i, k)?;
                }
                Ok(s)
            })
        })
        .collect();
    let mut sockets = Vec::new();
    for t in senders {
        match t.join() {
            Ok(Ok(s)) => sockets.push(s),
            Ok(Err(e)) => return Err(anyhow::Error::from(e).context("send the flood")),
            Err(_) => bail!("a flood sender panicked"),
        }
    }
    let deadline = start + timeout;
    let mut rejected = 0u64;
    let mut m = zmq::Message::new();
    while seen.load(Ordering::Acquire) < n {
        if Instant::now() >= deadline {
            bail!(
                "only {} of {n} requests reached the backend within {timeout:?} ({rejected} answered at once)",
                seen.load(Ordering::Acquire)
            );
        }
        let mut any = false;
        for (i, s) in sockets.iter().enumerate() {
            while s.recv(&mut m, zmq::DONTWAIT).is_ok() {
                if !m.get_more() {
                    // An immediate answer: the request is not in flight; send another.
                    rejected += 1;
                    request(s, i, u64::MAX - rejected)?;
                    any = true;
                }
            }
        }
        if !any {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let took = start.elapsed();
    drop(readers);
    drop(sockets);
    Ok(Flood { took, rejected })
}

/// Sequence numbers per publisher id, for counting lost events.
#[derive(Debug, Default)]
pub struct Gaps(BTreeMap<u64, u64>);

impl Gaps {
    /// Records event `seq` of publisher `id`: how many of its events were
    /// skipped since its last one (none before the first one seen).
    pub fn event(&mut self, id: u64, seq: u64) -> u64 {
        let next = self.0.entry(id).or_insert(seq);
        let lost = seq.saturating_sub(*next);
        *next = (*next).max(seq + 1);
        lost
    }
}

/// Events counted by an [`EventCounter`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EventCount {
    /// Events received.
    pub received: u64,
    /// Sequence gaps, summed over publishers.
    pub lost: u64,
}

/// A SUB socket on a thread of the harness, counting events whose payload
/// starts with a publisher id and a sequence number (two little-endian u64,
/// as `reference worker --publish` sends them); gaps per publisher count as
/// lost, from the first event seen of each publisher.
#[derive(Debug)]
pub struct EventCounter {
    received: Arc<AtomicU64>,
    lost: Arc<AtomicU64>,
    thread: Background,
}

impl EventCounter {
    /// Connects to `xpub` and subscribes to `topic`.
    ///
    /// # Errors
    /// If the socket cannot be set up.
    pub fn start(xpub: &str, topic: &[u8]) -> anyhow::Result<EventCounter> {
        let ctx = zmq::Context::new();
        let s = socket(&ctx, zmq::SUB, HWM)?;
        s.connect(xpub)?;
        s.set_subscribe(topic)?;
        let (received, lost) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (r, l) = (received.clone(), lost.clone());
        let mut thread = Background::default();
        thread.spawn("event-counter".into(), move |stop| {
            let _ctx = ctx;
            let mut gaps = Gaps::default();
            let (mut topic, mut body) = (zmq::Message::new(), zmq::Message::new());
            while !stop.load(Ordering::Acquire) {
                if s.poll(zmq::POLLIN, 50)? == 0 {
                    continue;
                }
                while s.recv(&mut topic, zmq::DONTWAIT).is_ok() {
                    if !topic.get_more() {
                        continue;
                    }
                    s.recv(&mut body, 0)?;
                    while body.get_more() {
                        s.recv(&mut body, 0)?;
                    }
                    if body.len() < 16 {
                        continue;
                    }
                    let lost = gaps.event(le_u64(&body, 0), le_u64(&body, 8));
                    l.fetch_add(lost, Ordering::Relaxed);
                    r.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(())
        })?;
        Ok(EventCounter {
            received,
            lost,
            thread,
        })
    }

    /// What has been counted so far.
    pub fn count(&self) -> EventCount {
        EventCount {
            received: self.received.load(Ordering::Relaxed),
            lost: self.lost.load(Ordering::Relaxed),
        }
    }

    /// Stops the thread; the final count.
    ///
    /// # Errors
    /// If the receiving thread failed.
    pub fn stop(mut self) -> anyhow::Result<EventCount> {
        std::mem::take(&mut self.thread).stop()?;
        Ok(self.count())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(publisher: u64, seq: u64) -> Vec<u8> {
        let mut e = publisher.to_le_bytes().to_vec();
        e.extend(seq.to_le_bytes());
        e.extend(b"padding");
        e
    }

    /// Waits (bounded) until `f` holds.
    fn until(what: &str, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn the_event_counter_counts_gaps_per_publisher_from_the_first_event_seen() {
        let ctx = zmq::Context::new();
        let publisher = socket(&ctx, zmq::PUB, HWM).unwrap();
        publisher.bind("tcp://127.0.0.1:*").unwrap();
        let endpoint = publisher.get_last_endpoint().unwrap().unwrap();
        let counter = EventCounter::start(&endpoint, b"requests").unwrap();
        let send = |topic: &[u8], body: Vec<u8>| {
            publisher.send(topic, zmq::SNDMORE).unwrap();
            publisher.send(body, 0).unwrap();
        };
        // Until the subscription has arrived: probes from a publisher of their own.
        let mut probe = 0;
        until("the subscription", || {
            send(b"requests", event(99, probe));
            probe += 1;
            counter.count().received > 0
        });
        until("the probes to settle", || {
            let before = counter.count();
            std::thread::sleep(Duration::from_millis(20));
            counter.count() == before
        });
        let before = counter.count();
        // Another topic and a short body are not counted (sent first: one
        // connection keeps the order, so a wrong count shows below).
        send(b"other", event(1, 50));
        send(b"requests", b"short".to_vec());
        // Publisher 1 starts at 10 (not a gap), then skips 12; publisher 2
        // skips 3 and 4.
        for (p, seq) in [(1, 10), (1, 11), (1, 13), (2, 0), (2, 1), (2, 2), (2, 5)] {
            send(b"requests", event(p, seq));
        }
        until("seven events", || {
            counter.count().received >= before.received + 7
        });
        let end = counter.stop().unwrap();
        assert_eq!(end.received - before.received, 7);
        assert_eq!(end.lost - before.lost, 3);
    }
}
