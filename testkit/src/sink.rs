//! An HTTP sink: answers `200` to every request (an empty protobuf or `{}`
//! JSON response, as an OTLP/HTTP receiver does) and counts requests and body
//! bytes, so trace export can be switched on without a collector.

use std::sync::{
    atomic::{AtomicU64, Ordering},
    Arc,
};

use crate::http::{HttpServer, Response};

/// A running sink; stops when dropped.
#[derive(Debug)]
pub struct Sink {
    server: HttpServer,
    requests: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
}

impl Sink {
    /// Binds 127.0.0.1:0 and serves on a background thread.
    ///
    /// # Errors
    /// If it cannot bind.
    pub fn start() -> std::io::Result<Sink> {
        let requests = Arc::new(AtomicU64::new(0));
        let bytes = Arc::new(AtomicU64::new(0));
        let (r, b) = (requests.clone(), bytes.clone());
        let server = HttpServer::start("http-sink", move |req| {
            r.fetch_add(1, Ordering::AcqRel);
            b.fetch_add(req.body.len() as u64, Ordering::AcqRel);
            let (content_type, body) = if req.content_type.contains("json") {
                ("application/json", b"{}".to_vec())
            } else {
                ("application/x-protobuf", Vec::new())
            };
            Response {
                status: 200,
                content_type,
                body,
            }
        })?;
        Ok(Sink {
            server,
            requests,
            bytes,
        })
    }

    /// Base URL for `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// `(requests, body bytes)` received so far.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.requests.load(Ordering::Acquire),
            self.bytes.load(Ordering::Acquire),
        )
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read as _, Write as _};

    use super::*;

    #[test]
    fn counts_plain_and_chunked_bodies_and_answers_by_content_type() {
        let sink = Sink::start().unwrap();
        let mut s = std::net::TcpStream::connect(sink.server.addr()).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        s.write_all(
            b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
              Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n\
              POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n\
              Content-Length: 4\r\nConnection: close\r\n\r\nwxyz",
        )
        .unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        assert_eq!(answer.matches("HTTP/1.1 200 OK").count(), 2, "{answer}");
        assert!(answer.contains("application/json"), "{answer}");
        assert!(answer.contains("application/x-protobuf"), "{answer}");
        assert_eq!(sink.counts(), (2, 9));
    }
}
