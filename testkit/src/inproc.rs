//! Fixtures of the services' own integration tests (`services/*/tests`),
//! which start a service in-process, drive it through plain ZeroMQ sockets
//! and read it through its ops HTTP server. Nothing here knows a service
//! crate: a test passes the ops address (read with [`crate::ops`]), and the service's `wait()` future
//! to [`stopped`].
//!
//! Every wait has a deadline ([`crate::ops::WAIT_LIMIT`], [`RECV_LIMIT`],
//! [`STOP_LIMIT`]).

use std::{fmt::Debug, future::Future, time::Duration};

use mensageria::{
    header::{Header, ReplyHeader, RequestHeader},
    Status,
};

/// Longest a test socket waits to send or receive one message.
pub const RECV_LIMIT: Duration = Duration::from_secs(5);

/// Longest a service may take to stop once its shutdown is cancelled.
pub const STOP_LIMIT: Duration = Duration::from_secs(10);

/// A test-side socket of `kind`: no linger, [`RECV_LIMIT`] send and receive
/// timeouts, not yet bound or connected.
pub fn socket(ctx: &zmq::Context, kind: zmq::SocketType) -> zmq::Socket {
    let s = ctx.socket(kind).expect("create a test socket");
    let limit = RECV_LIMIT.as_millis() as i32;
    s.set_linger(0).expect("set linger");
    s.set_rcvtimeo(limit).expect("set the receive timeout");
    s.set_sndtimeo(limit).expect("set the send timeout");
    s
}

/// A [`socket`] connected to `endpoint`.
pub fn connected(ctx: &zmq::Context, kind: zmq::SocketType, endpoint: &str) -> zmq::Socket {
    let s = socket(ctx, kind);
    s.connect(endpoint)
        .unwrap_or_else(|e| panic!("connect to {endpoint}: {e}"));
    s
}

/// A [`socket`] bound to an ephemeral loopback port (playing a peer the
/// service connects to), and the endpoint it bound.
pub fn bound(ctx: &zmq::Context, kind: zmq::SocketType) -> (zmq::Socket, String) {
    let s = socket(ctx, kind);
    s.bind("tcp://127.0.0.1:*").expect("bind a loopback port");
    let endpoint = s
        .get_last_endpoint()
        .expect("the bound endpoint")
        .expect("a UTF-8 endpoint");
    (s, endpoint)
}

/// Awaits a service's `wait()` once its shutdown token is cancelled.
///
/// # Panics
/// If it takes longer than [`STOP_LIMIT`] or ends with an error.
pub async fn stopped<E: Debug>(service: &str, wait: impl Future<Output = Result<(), E>>) {
    tokio::time::timeout(STOP_LIMIT, wait)
        .await
        .unwrap_or_else(|_| panic!("{service} did not stop within {STOP_LIMIT:?}"))
        .unwrap_or_else(|e| panic!("{service} did not stop cleanly: {e:?}"));
}

/// The header frame of request `id`, sent a moment after the epoch (so any
/// lag computed from it is large but harmless), for `service` (`None`: the
/// broker's default) with an optional budget.
pub fn request_header(id: u64, service: Option<&str>, budget_ms: Option<u32>) -> Vec<u8> {
    Header::Request(RequestHeader {
        budget_ms,
        id,
        sent_at_us: 1,
        trace: None,
        service: service.map(|s| s.parse().expect("a valid service name")),
    })
    .encode()
}

/// The header frame of a reply to request `id` with `status`.
pub fn reply_frame(id: u64, status: Status) -> Vec<u8> {
    Header::Reply(ReplyHeader {
        id,
        status,
        trace: None,
    })
    .encode()
}

/// The reply header in `frame`.
///
/// # Panics
/// If `frame` is not a reply header.
pub fn reply_header(frame: &[u8]) -> ReplyHeader {
    match Header::decode(frame) {
        Ok(Header::Reply(h)) => h,
        other => panic!("expected a reply header, got {other:?}"),
    }
}

/// The `(id, status)` of the reply header in `frame` (see [`reply_header`]).
pub fn reply_status(frame: &[u8]) -> (u64, Status) {
    let h = reply_header(frame);
    (h.id, h.status)
}

/// A Majordomo 0.1 client request on a REQ socket (RFC 7):
/// `["MDPC01", service, body…]`; returns the reply body after checking its
/// `["MDPC01", service]` head.
///
/// # Panics
/// On a send or receive failure, or a reply of another shape.
pub fn call_v1(s: &zmq::Socket, service: &str, body: &[&[u8]]) -> Vec<Vec<u8>> {
    let mut frames: Vec<&[u8]> = vec![b"MDPC01", service.as_bytes()];
    frames.extend_from_slice(body);
    s.send_multipart(frames, 0)
        .expect("send the MDPC01 request");
    let mut r = s.recv_multipart(0).expect("an MDPC01 reply");
    assert!(r.len() >= 2, "MDPC01 reply too short: {r:?}");
    assert_eq!(r.remove(0), b"MDPC01");
    assert_eq!(r.remove(0), service.as_bytes());
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_header_decodes_to_what_was_asked() {
        let frame = request_header(42, Some("echo"), Some(250));
        match Header::decode(&frame).unwrap() {
            Header::Request(h) => {
                assert_eq!((h.id, h.budget_ms, h.sent_at_us), (42, Some(250), 1));
                assert_eq!(
                    h.service.map(|s| s.as_str().to_owned()),
                    Some("echo".into())
                );
            }
            other => panic!("{other:?}"),
        }
        match Header::decode(&request_header(7, None, None)).unwrap() {
            Header::Request(h) => assert_eq!((h.id, h.service, h.budget_ms), (7, None, None)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bound_sockets_report_the_port_they_got() {
        let ctx = zmq::Context::new();
        let (_s, endpoint) = bound(&ctx, zmq::ROUTER);
        let port: u16 = endpoint
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        assert!(
            endpoint.starts_with("tcp://127.0.0.1:") && port > 0,
            "{endpoint}"
        );
    }
}
