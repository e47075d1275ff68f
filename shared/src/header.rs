//! The header frame: the small, versioned, binary frame our peers put in front
//! of a request, a reply or an event payload.
//!
//! A header frame starts with [`MAGIC`] (`0xFF` can never start a UTF-8 text, so
//! no text payload is mistaken for a header), then one version byte, then the
//! [`Header`] encoded with `postcard`. Decoding is total: any byte string gives
//! either a header or a [`HeaderError`], never a panic, and
//! [`is_header`] lets a peer that does not care skip the frame by looking at
//! three bytes.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// The bytes every header frame starts with.
pub const MAGIC: [u8; 3] = [0xFF, b'M', b'Q'];
/// The header format version this build writes and reads (2: requests carry
/// a service name and a time budget).
pub const VERSION: u8 = 2;
/// Where a request header's budget sits in its frame: magic, version, the
/// one-byte variant tag, then four little-endian bytes (see
/// [`set_request_budget`]).
pub const BUDGET_OFFSET: usize = MAGIC.len() + 2;
/// The budget's wire value meaning "no budget".
const NO_BUDGET: u32 = u32::MAX;

pub use crate::mdp::ServiceName;

/// Why a frame is not a valid header.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HeaderError {
    /// The frame does not start with [`MAGIC`]: it is payload, not a header.
    #[error("frame is not a header (no magic prefix)")]
    NotAHeader,
    /// The frame has the magic but no version byte.
    #[error("header frame truncated before the version byte")]
    MissingVersion,
    /// The version byte names a format this build cannot read.
    #[error("header version {0} not supported; this build speaks {VERSION}")]
    UnsupportedVersion(u8),
    /// The body is not a valid encoding (truncated, bad tag, bad UTF-8, …).
    #[error("invalid header body: {0}")]
    Invalid(#[from] postcard::Error),
    /// The body decoded but bytes were left over.
    #[error("header has {0} trailing bytes")]
    TrailingBytes(usize),
}

/// W3C trace context (`traceparent`, version `00`) in binary form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceContext {
    /// 16-byte trace id.
    pub trace_id: [u8; 16],
    /// 8-byte parent span id.
    pub span_id: [u8; 8],
    /// Trace flags; bit 0 is "sampled".
    pub flags: u8,
}

impl TraceContext {
    /// Whether the sampled flag is set.
    pub fn is_sampled(&self) -> bool {
        self.flags & 1 == 1
    }

    /// Formats the context as a W3C `traceparent` header value.
    pub fn to_traceparent(&self) -> String {
        let mut s = String::with_capacity(55);
        s.push_str("00-");
        push_hex(&mut s, &self.trace_id);
        s.push('-');
        push_hex(&mut s, &self.span_id);
        s.push('-');
        push_hex(&mut s, &[self.flags]);
        s
    }

    /// Parses a W3C `traceparent` value (version `00`); `None` if malformed or
    /// if the trace or span id is all zeros (invalid per the spec).
    pub fn from_traceparent(value: &str) -> Option<Self> {
        let mut parts = value.trim().split('-');
        let (version, trace, span, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || version != "00" {
            return None;
        }
        let mut ctx = TraceContext {
            trace_id: [0; 16],
            span_id: [0; 8],
            flags: 0,
        };
        parse_hex(trace, &mut ctx.trace_id)?;
        parse_hex(span, &mut ctx.span_id)?;
        let mut f = [0u8; 1];
        parse_hex(flags, &mut f)?;
        ctx.flags = f[0];
        if ctx.trace_id == [0; 16] || ctx.span_id == [0; 8] {
            return None;
        }
        Some(ctx)
    }
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xF)] as char);
    }
}

fn parse_hex(s: &str, out: &mut [u8]) -> Option<()> {
    if s.len() != out.len() * 2 || !s.is_ascii() {
        return None;
    }
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&s[i * 2..i * 2 + 2], 16).ok()?;
    }
    Some(())
}

/// Outcome of a request, carried in reply headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Status {
    /// Handled successfully.
    Ok,
    /// The handler failed.
    Error,
    /// The request could not be understood.
    BadRequest,
    /// No reply within the deadline.
    Timeout,
    /// No worker could take the request.
    Unavailable,
    /// Too many requests in flight.
    Overloaded,
}

impl Status {
    /// Every status, in a stable order (used to pre-create metric series).
    pub const ALL: [Status; 6] = [
        Status::Ok,
        Status::Error,
        Status::BadRequest,
        Status::Timeout,
        Status::Unavailable,
        Status::Overloaded,
    ];

    /// The lower-case name used in metrics labels and plain error replies.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Error => "error",
            Status::BadRequest => "bad_request",
            Status::Timeout => "timeout",
            Status::Unavailable => "unavailable",
            Status::Overloaded => "overloaded",
        }
    }

    /// Parses the name given by [`Status::as_str`].
    pub fn parse(name: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// Whether a client may usefully retry a request that ended this way.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            Status::Timeout | Status::Unavailable | Status::Overloaded
        )
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Header of a request sent by our client.
///
/// Field order is part of the wire format: the budget comes first, in fixed
/// width, so the broker can rewrite it in place ([`set_request_budget`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestHeader {
    /// Time left to answer, in milliseconds: set by the client from its
    /// timeout, rewritten by the broker to what is left when it dispatches
    /// the request. `None` = no budget. Values are capped at `u32::MAX - 1`.
    #[serde(with = "budget_wire")]
    pub budget_ms: Option<u32>,
    /// Client-chosen request id, echoed in the reply.
    pub id: u64,
    /// When the client sent it, microseconds since the Unix epoch.
    pub sent_at_us: u64,
    /// Trace context of the sending span, if any.
    pub trace: Option<TraceContext>,
    /// Service to call; `None` = the broker's default service.
    pub service: Option<ServiceName>,
}

/// The budget on the wire: four little-endian bytes, `u32::MAX` = none.
mod budget_wire {
    use super::NO_BUDGET;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<u32>, s: S) -> Result<S::Ok, S::Error> {
        v.map_or(NO_BUDGET, |b| b.min(NO_BUDGET - 1))
            .to_le_bytes()
            .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
        let v = u32::from_le_bytes(<[u8; 4]>::deserialize(d)?);
        Ok((v != NO_BUDGET).then_some(v))
    }
}

/// Rewrites the budget of an encoded request header in place (no decoding,
/// no allocation). Returns `false`, leaving the frame alone, if `frame` is
/// not a request header of this [`VERSION`].
pub fn set_request_budget(frame: &mut [u8], budget_ms: Option<u32>) -> bool {
    let is_request = frame.len() >= BUDGET_OFFSET + 4
        && frame.starts_with(&MAGIC)
        && frame[MAGIC.len()] == VERSION
        && frame[MAGIC.len() + 1] == 0;
    if is_request {
        let wire = budget_ms.map_or(NO_BUDGET, |b| b.min(NO_BUDGET - 1));
        frame[BUDGET_OFFSET..BUDGET_OFFSET + 4].copy_from_slice(&wire.to_le_bytes());
    }
    is_request
}

/// Header of a reply (from our server, or an error reply from the broker).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplyHeader {
    /// The id of the request this answers.
    pub id: u64,
    /// Outcome.
    pub status: Status,
    /// Trace context of the replying span, if any.
    pub trace: Option<TraceContext>,
}

/// Header of a published event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventHeader {
    /// Id of the publishing process (random per process start).
    pub publisher: u64,
    /// Per-publisher sequence number, +1 per event, starting at 1.
    pub seq: u64,
    /// When it was published, microseconds since the Unix epoch.
    pub published_at_us: u64,
    /// Trace context of the span that caused the event, if any.
    pub trace: Option<TraceContext>,
}

/// Any header frame.
// The request variant carries its service name inline (up to 255 bytes) so
// that decoding allocates nothing on the broker's hot path; boxing it would
// allocate per request, and a header only lives on the stack briefly.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Header {
    /// A request.
    Request(RequestHeader),
    /// A reply.
    Reply(ReplyHeader),
    /// An event.
    Event(EventHeader),
}

impl Header {
    /// Encodes the header as a frame: magic, version, body.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(48);
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        // Writing into a Vec cannot fail; postcard only errors on I/O and on
        // types serde cannot describe, neither of which applies here.
        postcard::to_io(self, &mut out).expect("encoding a header into a Vec cannot fail");
        out
    }

    /// Decodes a header frame.
    ///
    /// # Errors
    /// Returns a [`HeaderError`] for anything that is not a complete, valid
    /// header of this [`VERSION`]; never panics.
    pub fn decode(frame: &[u8]) -> Result<Header, HeaderError> {
        let body = frame.strip_prefix(&MAGIC).ok_or(HeaderError::NotAHeader)?;
        let (&version, body) = body.split_first().ok_or(HeaderError::MissingVersion)?;
        if version != VERSION {
            return Err(HeaderError::UnsupportedVersion(version));
        }
        // Requests (the broker decodes one per request) are read in place
        // when they have the shape `encode` writes; anything else, and every
        // error, goes through postcard.
        if let Some(request) = decode_request_in_place(body) {
            return Ok(Header::Request(request));
        }
        decode_body(body)
    }
}

/// The postcard decode of a header body (after magic and version).
fn decode_body(body: &[u8]) -> Result<Header, HeaderError> {
    let (header, rest) = postcard::take_from_bytes::<Header>(body)?;
    if !rest.is_empty() {
        return Err(HeaderError::TrailingBytes(rest.len()));
    }
    Ok(header)
}

/// A postcard varint `u64`: at most ten bytes, the tenth holding one bit.
fn take_varint(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let mut value = 0u64;
    for (i, &b) in bytes.iter().take(10).enumerate() {
        value |= u64::from(b & 0x7F) << (7 * i);
        if b & 0x80 == 0 {
            return (i < 9 || b <= 1).then_some((value, &bytes[i + 1..]));
        }
    }
    None
}

/// A request header body read field by field, exactly as postcard reads it
/// (tag, budget, id, sent-at, trace, service, nothing after); `None` for
/// anything else, which [`decode_body`] then decodes or refuses.
fn decode_request_in_place(body: &[u8]) -> Option<RequestHeader> {
    let body = body.strip_prefix(&[0])?;
    let (budget, rest) = body.split_first_chunk::<4>()?;
    let budget = u32::from_le_bytes(*budget);
    let (id, rest) = take_varint(rest)?;
    let (sent_at_us, rest) = take_varint(rest)?;
    let (trace, rest) = match rest.split_first()? {
        (0, rest) => (None, rest),
        (1, rest) => {
            let (trace_id, rest) = rest.split_first_chunk::<16>()?;
            let (span_id, rest) = rest.split_first_chunk::<8>()?;
            let (&flags, rest) = rest.split_first()?;
            let t = TraceContext {
                trace_id: *trace_id,
                span_id: *span_id,
                flags,
            };
            (Some(t), rest)
        }
        _ => return None,
    };
    let service = match rest.split_first()? {
        (0, []) => None,
        (1, rest) => {
            let (len, name) = take_varint(rest)?;
            if name.len() as u64 != len {
                return None;
            }
            Some(ServiceName::new(name).ok()?)
        }
        _ => return None,
    };
    Some(RequestHeader {
        budget_ms: (budget != NO_BUDGET).then_some(budget),
        id,
        sent_at_us,
        trace,
        service,
    })
}

/// The status of a reply header frame, or `None` if `frame` is not a valid
/// reply header: always the same answer as [`Header::decode`], but the
/// usual shape (the encoding [`Header::encode`] writes) is read in place,
/// without a full decode. Anything else is decoded in full.
pub fn reply_status(frame: &[u8]) -> Option<Status> {
    /// Postcard's tag of [`Header::Reply`].
    const REPLY_TAG: u8 = 1;
    /// Trace id, span id, flags.
    const TRACE_LEN: usize = 16 + 8 + 1;
    let fast = || -> Option<Status> {
        let body = frame.strip_prefix(&MAGIC)?.strip_prefix(&[VERSION])?;
        let body = body.strip_prefix(&[REPLY_TAG])?;
        // The id: a varint of at most ten bytes, the tenth holding one bit.
        let id_len = body.iter().take(10).position(|b| b & 0x80 == 0)? + 1;
        if id_len == 10 && body[9] > 1 {
            return None;
        }
        let (&status, trace) = body[id_len..].split_first()?;
        let status = *Status::ALL.get(usize::from(status))?;
        match trace {
            [0] => Some(status),
            [1, rest @ ..] if rest.len() == TRACE_LEN => Some(status),
            _ => None,
        }
    };
    fast().or_else(|| match Header::decode(frame) {
        Ok(Header::Reply(h)) => Some(h.status),
        _ => None,
    })
}

/// Whether a frame looks like a header (starts with [`MAGIC`]).
pub fn is_header(frame: &[u8]) -> bool {
    frame.starts_with(&MAGIC)
}

/// Microseconds since the Unix epoch (0 if the clock is before 1970).
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ctx() -> TraceContext {
        TraceContext {
            trace_id: [0xAB; 16],
            span_id: [0x01, 2, 3, 4, 5, 6, 7, 8],
            flags: 1,
        }
    }

    #[test]
    fn round_trips_every_kind() {
        let headers = [
            Header::Request(RequestHeader {
                budget_ms: Some(2500),
                id: 7,
                sent_at_us: 1_700_000_000_000_000,
                trace: Some(ctx()),
                service: Some("billing.v2".parse().unwrap()),
            }),
            Header::Request(RequestHeader {
                budget_ms: None,
                id: 8,
                sent_at_us: 1,
                trace: None,
                service: None,
            }),
            Header::Reply(ReplyHeader {
                id: u64::MAX,
                status: Status::Overloaded,
                trace: None,
            }),
            Header::Event(EventHeader {
                publisher: 42,
                seq: 1,
                published_at_us: 5,
                trace: Some(ctx()),
            }),
        ];
        for h in headers {
            let frame = h.encode();
            assert!(is_header(&frame));
            assert_eq!(Header::decode(&frame), Ok(h));
        }
    }

    #[test]
    fn other_versions_are_refused_with_a_clear_message() {
        let mut frame = Header::Reply(ReplyHeader {
            id: 1,
            status: Status::Ok,
            trace: None,
        })
        .encode();
        for v in [1, 3] {
            frame[3] = v;
            let err = Header::decode(&frame).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("header version {v} not supported; this build speaks 2")
            );
        }
    }

    #[test]
    fn budget_rewrite_leaves_other_frames_alone() {
        let mut reply = Header::Reply(ReplyHeader {
            id: 1,
            status: Status::Ok,
            trace: None,
        })
        .encode();
        let before = reply.clone();
        assert!(!set_request_budget(&mut reply, Some(5)));
        assert_eq!(reply, before);
        let mut text = b"hello world".to_vec();
        assert!(!set_request_budget(&mut text, Some(5)));
        assert_eq!(text, b"hello world");
        let mut short = MAGIC.to_vec();
        short.extend_from_slice(&[VERSION, 0, 1]);
        assert!(!set_request_budget(&mut short, Some(5)));
    }

    #[test]
    fn invalid_service_names_do_not_decode() {
        let mut frame = Header::Request(RequestHeader {
            budget_ms: None,
            id: 1,
            sent_at_us: 2,
            trace: None,
            service: Some("ab".parse().unwrap()),
        })
        .encode();
        let at = frame.len() - 2;
        frame[at] = b' ';
        assert!(matches!(
            Header::decode(&frame),
            Err(HeaderError::Invalid(_))
        ));
    }

    #[test]
    fn text_is_not_a_header() {
        assert_eq!(Header::decode(b"hello"), Err(HeaderError::NotAHeader));
        assert_eq!(Header::decode(b""), Err(HeaderError::NotAHeader));
        assert!(!is_header(b"work 5ms"));
    }

    #[test]
    fn magic_without_version_is_rejected() {
        assert_eq!(Header::decode(&MAGIC), Err(HeaderError::MissingVersion));
    }

    #[test]
    fn wrong_version_is_rejected() {
        let mut frame = Header::Reply(ReplyHeader {
            id: 1,
            status: Status::Ok,
            trace: None,
        })
        .encode();
        frame[3] = 9;
        assert_eq!(
            Header::decode(&frame),
            Err(HeaderError::UnsupportedVersion(9))
        );
    }

    #[test]
    fn every_truncation_is_an_error() {
        let frame = Header::Event(EventHeader {
            publisher: 1 << 60,
            seq: 1 << 40,
            published_at_us: 1 << 50,
            trace: Some(ctx()),
        })
        .encode();
        for len in 0..frame.len() {
            assert!(
                Header::decode(&frame[..len]).is_err(),
                "prefix of {len} bytes decoded"
            );
        }
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        let mut frame = Header::Request(RequestHeader {
            budget_ms: None,
            id: 1,
            sent_at_us: 2,
            trace: None,
            service: None,
        })
        .encode();
        frame.extend_from_slice(b"xx");
        assert_eq!(Header::decode(&frame), Err(HeaderError::TrailingBytes(2)));
    }

    #[test]
    fn unknown_variant_tag_is_rejected() {
        let mut frame = MAGIC.to_vec();
        frame.push(VERSION);
        frame.push(200);
        assert!(matches!(
            Header::decode(&frame),
            Err(HeaderError::Invalid(_))
        ));
    }

    #[test]
    fn traceparent_round_trip() {
        let tp = ctx().to_traceparent();
        assert_eq!(
            tp,
            "00-abababababababababababababababab-0102030405060708-01"
        );
        assert_eq!(TraceContext::from_traceparent(&tp), Some(ctx()));
    }

    #[test]
    fn malformed_traceparents_are_rejected() {
        for bad in [
            "",
            "00",
            "01-abababababababababababababababab-0102030405060708-01",
            "00-abababababababababababababababab-0102030405060708",
            "00-00000000000000000000000000000000-0102030405060708-01",
            "00-abababababababababababababababab-0000000000000000-01",
            "00-zzababababababababababababababab-0102030405060708-01",
            "00-abababababababababababababababab-0102030405060708-01-ff",
            "00-ababababababababababababababab\u{e9}b-0102030405060708-01",
        ] {
            assert_eq!(TraceContext::from_traceparent(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn status_names_round_trip() {
        for s in Status::ALL {
            assert_eq!(Status::parse(s.as_str()), Some(s));
        }
        assert_eq!(Status::parse("nope"), None);
    }

    proptest! {
        #[test]
        fn decoding_random_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = Header::decode(&bytes);
        }

        #[test]
        fn decoding_random_bodies_after_magic_never_panics(body in proptest::collection::vec(any::<u8>(), 0..128)) {
            let mut frame = MAGIC.to_vec();
            frame.push(VERSION);
            frame.extend_from_slice(&body);
            if let Ok(h) = Header::decode(&frame) {
                // Anything that decodes re-encodes to a frame that decodes to
                // the same header (postcard also accepts over-long varints,
                // so the bytes need not be identical).
                prop_assert_eq!(Header::decode(&h.encode()), Ok(h));
            }
        }

        #[test]
        fn request_headers_round_trip(id in any::<u64>(), at in any::<u64>(), tid in any::<[u8; 16]>(), sid in any::<[u8; 8]>(), flags in any::<u8>(), traced in any::<bool>()) {
            let trace = traced.then_some(TraceContext { trace_id: tid, span_id: sid, flags });
            let h = Header::Request(RequestHeader { budget_ms: None, id, sent_at_us: at, trace, service: None });
            prop_assert_eq!(Header::decode(&h.encode()), Ok(h));
        }

        #[test]
        fn budget_rewrite_in_place_matches_a_fresh_encoding(id in any::<u64>(), before in proptest::option::of(0u32..u32::MAX), after in proptest::option::of(any::<u32>()), name in "[a-z.]{1,20}") {
            let h = RequestHeader { budget_ms: before, id, sent_at_us: 5, trace: None, service: Some(name.parse().unwrap()) };
            let mut frame = Header::Request(h).encode();
            prop_assert!(set_request_budget(&mut frame, after));
            let want = RequestHeader { budget_ms: after.map(|b| b.min(u32::MAX - 1)), ..h };
            prop_assert_eq!(Header::decode(&frame), Ok(Header::Request(want)));
        }

        #[test]
        fn reply_status_agrees_with_a_full_decode(id in any::<u64>(), status in 0usize..6, tid in any::<[u8; 16]>(), traced in any::<bool>(), cut in any::<proptest::sample::Index>(), extra in proptest::collection::vec(any::<u8>(), 0..3), flip in any::<proptest::sample::Index>()) {
            let trace = traced.then_some(TraceContext { trace_id: tid, span_id: [7; 8], flags: 1 });
            let h = Header::Reply(ReplyHeader { id, status: Status::ALL[status], trace });
            let frame = h.encode();
            prop_assert_eq!(reply_status(&frame), Some(Status::ALL[status]));
            let expected = |f: &[u8]| match Header::decode(f) {
                Ok(Header::Reply(r)) => Some(r.status),
                _ => None,
            };
            // Truncated, extended and corrupted frames: the same answer as a decode.
            let truncated = &frame[..cut.index(frame.len() + 1)];
            prop_assert_eq!(reply_status(truncated), expected(truncated));
            let mut longer = frame.clone();
            longer.extend_from_slice(&extra);
            prop_assert_eq!(reply_status(&longer), expected(&longer));
            let mut corrupt = frame.clone();
            let i = flip.index(corrupt.len());
            corrupt[i] ^= 0x81;
            prop_assert_eq!(reply_status(&corrupt), expected(&corrupt));
        }

        #[test]
        fn requests_read_in_place_agree_with_postcard(id in any::<u64>(), at in any::<u64>(), budget in proptest::option::of(any::<u32>()), traced in any::<bool>(), name in proptest::option::of("[a-z.]{1,20}"), cut in any::<proptest::sample::Index>(), extra in proptest::collection::vec(any::<u8>(), 0..3), flip in any::<proptest::sample::Index>(), mask in 1u8..) {
            let trace = traced.then_some(TraceContext { trace_id: [3; 16], span_id: [7; 8], flags: 1 });
            let h = RequestHeader { budget_ms: budget, id, sent_at_us: at, trace, service: name.map(|n| n.parse().unwrap()) };
            let frame = Header::Request(h).encode();
            let body = &frame[MAGIC.len() + 1..];
            prop_assert!(decode_request_in_place(body).is_some());
            prop_assert_eq!(decode_body(body), Ok(Header::Request(RequestHeader { budget_ms: budget.map(|b| b.min(u32::MAX - 1)), ..h })));
            // Whatever the fast path reads, postcard reads the same.
            let agrees = |b: &[u8]| match decode_request_in_place(b) {
                Some(r) => decode_body(b) == Ok(Header::Request(r)),
                None => true,
            };
            prop_assert!(agrees(body));
            prop_assert!(agrees(&body[..cut.index(body.len() + 1)]));
            let mut longer = body.to_vec();
            longer.extend_from_slice(&extra);
            prop_assert!(agrees(&longer));
            let mut corrupt = body.to_vec();
            let i = flip.index(corrupt.len());
            corrupt[i] ^= mask;
            prop_assert!(agrees(&corrupt));
        }

        #[test]
        fn requests_read_in_place_from_random_bodies_agree_with_postcard(rest in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut body = vec![0];
            body.extend_from_slice(&rest);
            if let Some(r) = decode_request_in_place(&body) {
                prop_assert_eq!(decode_body(&body), Ok(Header::Request(r)));
            }
        }

        #[test]
        fn reply_status_of_random_bodies_agrees_with_a_full_decode(body in proptest::collection::vec(any::<u8>(), 0..48)) {
            let mut frame = MAGIC.to_vec();
            frame.push(VERSION);
            frame.push(1);
            frame.extend_from_slice(&body);
            let expected = match Header::decode(&frame) {
                Ok(Header::Reply(r)) => Some(r.status),
                _ => None,
            };
            prop_assert_eq!(reply_status(&frame), expected);
        }
    }
}
