//! A tiny OTLP/HTTP sink: answers `200` to every request (empty protobuf or
//! `{}` JSON response) and counts requests and body bytes, so trace export
//! can be switched on without a collector.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

/// A running sink; stops accepting when dropped.
#[derive(Debug)]
pub struct Sink {
    /// Port on 127.0.0.1.
    pub port: u16,
    requests: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Sink {
    /// Binds 127.0.0.1:0 and serves on background threads.
    ///
    /// # Errors
    /// If it cannot bind.
    pub fn start() -> std::io::Result<Sink> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        listener.set_nonblocking(true)?;
        let requests = Arc::new(AtomicU64::new(0));
        let bytes = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, b, s) = (requests.clone(), bytes.clone(), stop.clone());
        std::thread::Builder::new()
            .name("otlp-sink".into())
            .spawn(move || {
                while !s.load(Ordering::Acquire) {
                    match listener.accept() {
                        Ok((conn, _)) => {
                            let (r, b) = (r.clone(), b.clone());
                            let _ = conn.set_nonblocking(false);
                            std::thread::spawn(move || {
                                let _ = serve(conn, &r, &b);
                            });
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(20)),
                    }
                }
            })?;
        Ok(Sink {
            port,
            requests,
            bytes,
            stop,
        })
    }

    /// Base URL for `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `(requests, body bytes)` received so far.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.requests.load(Ordering::Acquire),
            self.bytes.load(Ordering::Acquire),
        )
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

fn serve(conn: TcpStream, requests: &AtomicU64, bytes: &AtomicU64) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut out = conn.try_clone()?;
    let mut r = BufReader::new(conn);
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Ok(());
        }
        if line.trim().is_empty() {
            continue;
        }
        let (mut length, mut chunked, mut json, mut close) = (0usize, false, false, false);
        loop {
            line.clear();
            if r.read_line(&mut line)? == 0 {
                return Ok(());
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            let Some((k, v)) = l.split_once(':') else {
                continue;
            };
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_ascii_lowercase());
            match k.as_str() {
                "content-length" => length = v.parse().unwrap_or(0),
                "transfer-encoding" => chunked = v.contains("chunked"),
                "content-type" => json = v.contains("json"),
                "connection" => close = v.contains("close"),
                _ => {}
            }
        }
        let mut body = 0usize;
        if chunked {
            loop {
                line.clear();
                r.read_line(&mut line)?;
                let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or("0"), 16)
                    .unwrap_or(0);
                let mut buf = vec![0u8; size + 2];
                r.read_exact(&mut buf)?;
                body += size;
                if size == 0 {
                    break;
                }
            }
        } else {
            let mut buf = vec![0u8; length];
            r.read_exact(&mut buf)?;
            body = length;
        }
        requests.fetch_add(1, Ordering::AcqRel);
        bytes.fetch_add(body as u64, Ordering::AcqRel);
        let (ctype, payload) = if json {
            ("application/json", "{}")
        } else {
            ("application/x-protobuf", "")
        };
        write!(
            out,
            "HTTP/1.1 200 OK\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\r\n{payload}",
            payload.len()
        )?;
        out.flush()?;
        if close {
            return Ok(());
        }
    }
}
