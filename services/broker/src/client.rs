//! The client side of a request: which protocol the client spoke, where its
//! message splits into route, service and body, and the frames of an answer
//! in that same protocol.
//!
//! Everything arrives on the one frontend ROUTER (`[route…, rest…]`):
//! - `[R, "MDPC02", 0x01, service, body…]`: a Majordomo 0.2 client (RFC 18);
//! - `[R, "MDPW02", …]` or `[R, "", "MDPW01"|"MDPW02", …]`: a worker;
//! - `[R…, "", "MDPC01", service, body…]` (RFC 7) or `[R…, "", "MDPC02", 0x01, service, body…]`;
//! - `[R…, "", header, payload…]`: our client (service and budget in the header);
//! - `[R…, "", body…]`: a plain peer, for the default service.

use mensageria::{
    header::{Header, ReplyHeader},
    mdp::{self, Version},
    Status,
};

/// How a client spoke, so the broker answers alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientKind {
    /// Our client: header frame first; replies carry a reply header.
    Ours {
        /// The request id from its header.
        id: u64,
    },
    /// A plain ZeroMQ peer: no header.
    Plain,
    /// A Majordomo client.
    Majordomo {
        /// MDP version.
        version: Version,
        /// Whether it put an empty frame before the protocol frame.
        leading_empty: bool,
    },
}

/// Where a frontend message splits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inbound {
    /// A worker-protocol message from a directly connected worker:
    /// `frames[0]` is its identity, the rest its command.
    Worker,
    /// A client request.
    Client(Layout),
    /// Neither: no route, no delimiter, no body, or a Majordomo request
    /// without its frames.
    Malformed,
}

/// Where a client request's parts are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Route frames are `frames[..route_end]`.
    pub route_end: usize,
    /// How it spoke (for ours, the id is read from the header later).
    pub shape: Shape,
    /// Index of the service name frame (Majordomo only).
    pub service_at: Option<usize>,
    /// Index of the first body frame.
    pub body_at: usize,
}

/// The client protocol before its header is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// First body frame starts with the header magic.
    Header,
    /// No header.
    Plain,
    /// Majordomo client.
    Majordomo {
        /// MDP version.
        version: Version,
        /// Whether an empty frame came first.
        leading_empty: bool,
    },
}

/// Classifies a frontend message (see the module docs).
pub fn classify<F: std::ops::Deref<Target = [u8]>>(frames: &[F]) -> Inbound {
    let at = |i: usize| frames.get(i).map(|f| &f[..]);
    // MDP/0.2 without an empty frame: only from a directly connected peer.
    match at(1) {
        Some(f) if f == mdp::MDPW02 => return Inbound::Worker,
        Some(f) if f == mdp::MDPC02 => return majordomo_v2(frames, 1, false),
        _ => {}
    }
    let Some(delim) = frames.iter().position(|f| f.is_empty()) else {
        return Inbound::Malformed;
    };
    let Some(first) = at(delim + 1).filter(|_| delim > 0) else {
        return Inbound::Malformed;
    };
    if mdp::Version::of_worker(first).is_some() {
        return if delim == 1 {
            Inbound::Worker
        } else {
            Inbound::Malformed
        };
    }
    match mdp::Version::of_client(first) {
        Some(Version::V2) => majordomo_v2(frames, delim, true),
        Some(Version::V1) if frames.len() > delim + 3 => Inbound::Client(Layout {
            route_end: delim,
            shape: Shape::Majordomo {
                version: Version::V1,
                leading_empty: true,
            },
            service_at: Some(delim + 2),
            body_at: delim + 3,
        }),
        Some(Version::V1) => Inbound::Malformed,
        None => Inbound::Client(Layout {
            route_end: delim,
            shape: if mensageria::header::is_header(first) {
                Shape::Header
            } else {
                Shape::Plain
            },
            service_at: None,
            body_at: delim + 1,
        }),
    }
}

/// `[route…, ("",) "MDPC02", 0x01, service, body…]` with the protocol frame
/// at `proto + leading_empty`.
fn majordomo_v2<F: std::ops::Deref<Target = [u8]>>(
    frames: &[F],
    route_end: usize,
    leading_empty: bool,
) -> Inbound {
    let proto = route_end + usize::from(leading_empty);
    let request = frames
        .get(proto + 1)
        .is_some_and(|c| &c[..] == mdp::client_command::REQUEST);
    if !request || frames.len() <= proto + 3 {
        return Inbound::Malformed;
    }
    Inbound::Client(Layout {
        route_end,
        shape: Shape::Majordomo {
            version: Version::V2,
            leading_empty,
        },
        service_at: Some(proto + 2),
        body_at: proto + 3,
    })
}

/// The frames between a client's route and the reply body: `""` for ours
/// and plain peers; the Majordomo reply envelope otherwise (`final_` picks
/// FINAL or PARTIAL for 0.2).
pub fn reply_prefix(kind: ClientKind, service: &[u8], final_: bool) -> impl Iterator<Item = &[u8]> {
    let empty = Some(&b""[..]);
    let parts: [Option<&[u8]>; 4] = match kind {
        ClientKind::Ours { .. } | ClientKind::Plain => [empty, None, None, None],
        ClientKind::Majordomo {
            version: Version::V1,
            ..
        } => [empty, Some(mdp::MDPC01), None, Some(service)],
        ClientKind::Majordomo {
            version: Version::V2,
            leading_empty,
        } => [
            empty.filter(|_| leading_empty),
            Some(mdp::MDPC02),
            Some(if final_ {
                mdp::client_command::FINAL
            } else {
                mdp::client_command::PARTIAL
            }),
            Some(service),
        ],
    };
    parts.into_iter().flatten()
}

/// The body of an answer the broker makes itself: a reply header and the
/// message for ours, one `ERR <status> <message>` frame for everyone else.
pub fn error_body(kind: ClientKind, status: Status, message: &str) -> Vec<Vec<u8>> {
    match kind {
        ClientKind::Ours { id } => vec![
            Header::Reply(ReplyHeader {
                id,
                status,
                trace: None,
            })
            .encode(),
            message.as_bytes().to_vec(),
        ],
        _ => vec![format!("ERR {status} {message}").into_bytes()],
    }
}

/// The body of a successful answer the broker makes itself (MMI): for ours
/// a reply header with `ok` first.
pub fn ok_body(kind: ClientKind, text: Vec<u8>) -> Vec<Vec<u8>> {
    match kind {
        ClientKind::Ours { id } => vec![
            Header::Reply(ReplyHeader {
                id,
                status: Status::Ok,
                trace: None,
            })
            .encode(),
            text,
        ],
        _ => vec![text],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(parts: &[&[u8]]) -> Vec<Vec<u8>> {
        parts.iter().map(|p| p.to_vec()).collect()
    }

    #[test]
    fn every_kind_of_peer_is_recognised() {
        let header = Header::Reply(ReplyHeader {
            id: 1,
            status: Status::Ok,
            trace: None,
        })
        .encode();
        let cases: Vec<(Vec<Vec<u8>>, Inbound)> = vec![
            (f(&[b"w", b"MDPW02", &[1], b"echo"]), Inbound::Worker),
            (f(&[b"w", b"", b"MDPW01", &[1], b"echo"]), Inbound::Worker),
            (f(&[b"w", b"", b"MDPW02", &[5]]), Inbound::Worker),
            (
                f(&[b"c", b"MDPC02", &[1], b"echo", b"hi"]),
                Inbound::Client(Layout {
                    route_end: 1,
                    shape: Shape::Majordomo {
                        version: Version::V2,
                        leading_empty: false,
                    },
                    service_at: Some(3),
                    body_at: 4,
                }),
            ),
            (
                f(&[b"c", b"", b"MDPC02", &[1], b"echo", b"hi"]),
                Inbound::Client(Layout {
                    route_end: 1,
                    shape: Shape::Majordomo {
                        version: Version::V2,
                        leading_empty: true,
                    },
                    service_at: Some(4),
                    body_at: 5,
                }),
            ),
            (
                f(&[b"relay", b"c", b"", b"MDPC01", b"echo", b"hi"]),
                Inbound::Client(Layout {
                    route_end: 2,
                    shape: Shape::Majordomo {
                        version: Version::V1,
                        leading_empty: true,
                    },
                    service_at: Some(4),
                    body_at: 5,
                }),
            ),
            (
                f(&[b"c", b"", &header, b"x"]),
                Inbound::Client(Layout {
                    route_end: 1,
                    shape: Shape::Header,
                    service_at: None,
                    body_at: 2,
                }),
            ),
            (
                f(&[b"c", b"", b"hello"]),
                Inbound::Client(Layout {
                    route_end: 1,
                    shape: Shape::Plain,
                    service_at: None,
                    body_at: 2,
                }),
            ),
        ];
        for (frames, want) in cases {
            assert_eq!(classify(&frames), want, "{frames:?}");
        }
    }

    #[test]
    fn broken_messages_are_malformed() {
        for frames in [
            f(&[b"c"]),
            f(&[b"c", b"no delimiter"]),
            f(&[b"", b"x"]),
            f(&[b"c", b""]),
            f(&[b"c", b"", b"MDPC01", b"echo"]),
            f(&[b"c", b"MDPC02", &[3], b"echo", b"x"]),
            f(&[b"c", b"MDPC02", &[1], b"echo"]),
            f(&[b"relay", b"w", b"", b"MDPW01", &[1], b"echo"]),
        ] {
            assert_eq!(classify(&frames), Inbound::Malformed, "{frames:?}");
        }
    }

    #[test]
    fn replies_use_the_clients_envelope() {
        let p = |k| reply_prefix(k, b"echo", true).collect::<Vec<_>>();
        assert_eq!(p(ClientKind::Plain), vec![&b""[..]]);
        assert_eq!(
            p(ClientKind::Majordomo {
                version: Version::V1,
                leading_empty: true
            }),
            vec![&b""[..], b"MDPC01", b"echo"]
        );
        assert_eq!(
            p(ClientKind::Majordomo {
                version: Version::V2,
                leading_empty: false
            }),
            vec![&b"MDPC02"[..], &[3], b"echo"]
        );
        let partial: Vec<_> = reply_prefix(
            ClientKind::Majordomo {
                version: Version::V2,
                leading_empty: true,
            },
            b"s",
            false,
        )
        .collect();
        assert_eq!(partial, vec![&b""[..], b"MDPC02", &[2], b"s"]);
        assert_eq!(
            error_body(ClientKind::Plain, Status::Timeout, "late"),
            vec![b"ERR timeout late".to_vec()]
        );
        let ours = error_body(ClientKind::Ours { id: 9 }, Status::Overloaded, "full");
        assert_eq!(
            Header::decode(&ours[0]),
            Ok(Header::Reply(ReplyHeader {
                id: 9,
                status: Status::Overloaded,
                trace: None
            }))
        );
    }
}
