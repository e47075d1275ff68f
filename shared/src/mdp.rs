//! The Majordomo Protocol frames (ZeroMQ RFC 7 "MDP/0.1", RFC 18 "MDP/0.2",
//! RFC 8 "MMI") and our documented extensions, as a codec over frames.
//!
//! The broker and our server's workers use this module; tests and foreign
//! peers speak the RFCs directly. Parsing borrows the frames and allocates
//! nothing except for the rare READY/CREDIT option frame.
//!
//! Extensions beyond the RFCs (README "Services and dispatch"):
//! - an optional READY frame after the service name, `credit=N;instance=NAME`
//!   ([`WorkerOptions`]): how many requests the worker takes at once (like
//!   RabbitMQ's `basic.qos` prefetch) and a name for the per-worker view;
//! - `REQUEUE` (0x10): a worker hands a request it cannot take back, unchanged
//!   but for the command byte, so the broker queues it again at the head;
//! - `CREDIT` (0x11): a worker that handed requests back has room again.

use std::ops::Deref;

/// MDP/0.1 client protocol frame.
pub const MDPC01: &[u8] = b"MDPC01";
/// MDP/0.2 client protocol frame.
pub const MDPC02: &[u8] = b"MDPC02";
/// MDP/0.1 worker protocol frame.
pub const MDPW01: &[u8] = b"MDPW01";
/// MDP/0.2 worker protocol frame.
pub const MDPW02: &[u8] = b"MDPW02";
/// Longest service name, in bytes.
pub const MAX_SERVICE_NAME: usize = 255;
/// Largest credit a worker may announce.
pub const MAX_CREDIT: u32 = 1024;
/// Longest instance name a worker may announce, in bytes.
pub const MAX_INSTANCE: usize = 64;

/// MDP version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    /// MDP/0.1 (RFC 7): commands start with an empty frame; one REPLY per request.
    V1,
    /// MDP/0.2 (RFC 18): no empty frame; PARTIAL* then FINAL.
    V2,
}

impl Version {
    /// The worker protocol frame of this version.
    pub fn worker_protocol(self) -> &'static [u8] {
        match self {
            Version::V1 => MDPW01,
            Version::V2 => MDPW02,
        }
    }

    /// The client protocol frame of this version.
    pub fn client_protocol(self) -> &'static [u8] {
        match self {
            Version::V1 => MDPC01,
            Version::V2 => MDPC02,
        }
    }

    /// The version whose worker protocol frame is `frame`.
    pub fn of_worker(frame: &[u8]) -> Option<Version> {
        match frame {
            f if f == MDPW01 => Some(Version::V1),
            f if f == MDPW02 => Some(Version::V2),
            _ => None,
        }
    }

    /// The version whose client protocol frame is `frame`.
    pub fn of_client(frame: &[u8]) -> Option<Version> {
        match frame {
            f if f == MDPC01 => Some(Version::V1),
            f if f == MDPC02 => Some(Version::V2),
            _ => None,
        }
    }
}

/// A command of the worker sub-protocol (RFC 7/18 plus our extensions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WorkerCommand {
    /// Worker registers for a service.
    Ready,
    /// Broker hands a request to a worker.
    Request,
    /// MDP/0.1 reply.
    Reply,
    /// MDP/0.2 partial reply.
    Partial,
    /// MDP/0.2 final reply.
    Final,
    /// Liveness, both ways.
    Heartbeat,
    /// End of the conversation, both ways.
    Disconnect,
    /// Extension: a request handed back unchanged.
    Requeue,
    /// Extension: the worker has room again.
    Credit,
}

/// Every command byte value, so a one-byte frame is a `'static` slice of it.
static BYTES: [u8; 18] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17];

impl WorkerCommand {
    /// The command byte in version `v`; `None` if `v` has no such command.
    pub fn byte(self, v: Version) -> Option<u8> {
        use WorkerCommand::*;
        Some(match (self, v) {
            (Ready, _) => 0x01,
            (Request, _) => 0x02,
            (Reply, Version::V1) => 0x03,
            (Partial, Version::V2) => 0x03,
            (Final, Version::V2) => 0x04,
            (Heartbeat, Version::V1) => 0x04,
            (Heartbeat, Version::V2) => 0x05,
            (Disconnect, Version::V1) => 0x05,
            (Disconnect, Version::V2) => 0x06,
            (Requeue, _) => 0x10,
            (Credit, _) => 0x11,
            (Reply, Version::V2) | (Partial | Final, Version::V1) => return None,
        })
    }

    /// The one-byte command frame in version `v`.
    pub fn frame(self, v: Version) -> Option<&'static [u8]> {
        self.byte(v)
            .map(|b| &BYTES[usize::from(b)..usize::from(b) + 1])
    }

    /// The command a byte stands for in version `v`.
    pub fn from_byte(v: Version, b: u8) -> Option<Self> {
        use WorkerCommand::*;
        [
            Ready, Request, Reply, Partial, Final, Heartbeat, Disconnect, Requeue, Credit,
        ]
        .into_iter()
        .find(|c| c.byte(v) == Some(b))
    }

    /// Upper-case name, as the RFCs write it.
    pub fn name(self) -> &'static str {
        use WorkerCommand::*;
        match self {
            Ready => "READY",
            Request => "REQUEST",
            Reply => "REPLY",
            Partial => "PARTIAL",
            Final => "FINAL",
            Heartbeat => "HEARTBEAT",
            Disconnect => "DISCONNECT",
            Requeue => "REQUEUE",
            Credit => "CREDIT",
        }
    }

    /// Whether this command carries `addr, "", body…`.
    pub fn is_addressed(self) -> bool {
        use WorkerCommand::*;
        matches!(self, Request | Reply | Partial | Final | Requeue)
    }
}

/// MDP/0.2 client command bytes (RFC 18).
pub mod client_command {
    /// Client → broker request.
    pub const REQUEST: &[u8] = &[0x01];
    /// Broker → client partial reply.
    pub const PARTIAL: &[u8] = &[0x02];
    /// Broker → client final reply.
    pub const FINAL: &[u8] = &[0x03];
}

/// Why a service or instance name is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Zero bytes.
    #[error("empty name")]
    Empty,
    /// Longer than the cap.
    #[error("name of {len} bytes is longer than {max}")]
    TooLong {
        /// Its length.
        len: usize,
        /// The cap.
        max: usize,
    },
    /// A byte outside printable ASCII without space (0x21..=0x7E).
    #[error("byte 0x{0:02x} not allowed in a name (printable ASCII without spaces only)")]
    BadByte(u8),
}

fn check_name(bytes: &[u8], max: usize, extra_forbidden: &[u8]) -> Result<(), NameError> {
    if bytes.is_empty() {
        return Err(NameError::Empty);
    }
    if bytes.len() > max {
        return Err(NameError::TooLong {
            len: bytes.len(),
            max,
        });
    }
    match bytes
        .iter()
        .find(|b| !(0x21..=0x7E).contains(*b) || extra_forbidden.contains(b))
    {
        Some(&b) => Err(NameError::BadByte(b)),
        None => Ok(()),
    }
}

/// Checks a service name without copying it (see [`ServiceName`]).
///
/// # Errors
/// [`NameError`] if empty, too long or with a byte outside 0x21..=0x7E.
pub fn check_service_name(name: &[u8]) -> Result<(), NameError> {
    check_name(name, MAX_SERVICE_NAME, &[])
}

/// A valid service name, stored inline (no allocation): 1 to
/// [`MAX_SERVICE_NAME`] bytes of printable ASCII without spaces.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ServiceName {
    len: u8,
    bytes: [u8; MAX_SERVICE_NAME],
}

impl ServiceName {
    /// Validates and copies a name.
    ///
    /// # Errors
    /// [`NameError`] if empty, too long or with a byte outside 0x21..=0x7E.
    pub fn new(name: &[u8]) -> Result<Self, NameError> {
        check_service_name(name)?;
        let mut bytes = [0; MAX_SERVICE_NAME];
        bytes[..name.len()].copy_from_slice(name);
        Ok(ServiceName {
            len: name.len() as u8,
            bytes,
        })
    }

    /// The name's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// The name as text (always ASCII).
    pub fn as_str(&self) -> &str {
        // Only bytes 0x21..=0x7E are ever stored (checked in `new`).
        std::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }

    /// Whether the name is in the broker's own `mmi.` namespace (RFC 8).
    pub fn is_mmi(&self) -> bool {
        self.as_bytes().starts_with(b"mmi.")
    }
}

impl std::fmt::Debug for ServiceName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ServiceName({:?})", self.as_str())
    }
}

impl std::fmt::Display for ServiceName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ServiceName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        ServiceName::new(s.as_bytes())
    }
}

impl serde::Serialize for ServiceName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.as_bytes())
    }
}

impl<'de> serde::Deserialize<'de> for ServiceName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = ServiceName;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a service name")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<ServiceName, E> {
                ServiceName::new(v).map_err(E::custom)
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ServiceName, E> {
                ServiceName::new(v.as_bytes()).map_err(E::custom)
            }
        }
        d.deserialize_bytes(V)
    }
}

/// Why a frame sequence is not a valid Majordomo worker message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MdpError {
    /// No `MDPW01`/`MDPW02` protocol frame where one belongs.
    #[error("not a Majordomo worker message")]
    NotWorker,
    /// The command frame is missing or not one byte.
    #[error("missing or malformed command frame")]
    BadCommandFrame,
    /// A command byte this version does not define.
    #[error("unknown command 0x{0:02x}")]
    UnknownCommand(u8),
    /// Too few or too many frames for the command.
    #[error("{command} has the wrong number of frames")]
    WrongFrames {
        /// The command.
        command: &'static str,
    },
    /// The `addr, ""` envelope of an addressed command is broken.
    #[error("{command} without its address and empty delimiter")]
    BadEnvelope {
        /// The command.
        command: &'static str,
    },
    /// READY's service name is invalid.
    #[error("invalid service name: {0}")]
    ServiceName(NameError),
    /// The option frame is malformed or a value is out of range.
    #[error("invalid worker options: {0}")]
    Options(String),
}

/// Our extension frame on READY and CREDIT: `key=value` pairs joined by `;`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerOptions {
    /// Requests the worker takes at once (1..=[`MAX_CREDIT`]); `None` = 1.
    pub credit: Option<u32>,
    /// A name for the per-worker view (1..=[`MAX_INSTANCE`] bytes).
    pub instance: Option<String>,
}

impl WorkerOptions {
    /// The frame: `credit=N;instance=NAME` (absent keys left out).
    pub fn encode(&self) -> Vec<u8> {
        let mut parts = Vec::new();
        if let Some(c) = self.credit {
            parts.push(format!("credit={c}"));
        }
        if let Some(i) = &self.instance {
            parts.push(format!("instance={i}"));
        }
        parts.join(";").into_bytes()
    }

    /// Parses an option frame. Unknown keys are ignored (forward
    /// compatibility); an empty frame means no options.
    ///
    /// # Errors
    /// [`MdpError::Options`] for a pair without `=`, a credit outside
    /// 1..=[`MAX_CREDIT`] or an invalid instance name.
    pub fn parse(frame: &[u8]) -> Result<Self, MdpError> {
        let bad = |m: String| MdpError::Options(m);
        let text = std::str::from_utf8(frame).map_err(|_| bad("not UTF-8".into()))?;
        let mut out = WorkerOptions::default();
        for pair in text.split(';').filter(|p| !p.is_empty()) {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| bad(format!("{pair:?} is not key=value")))?;
            match key {
                "credit" => {
                    let c: u32 = value
                        .parse()
                        .ok()
                        .filter(|c| (1..=MAX_CREDIT).contains(c))
                        .ok_or_else(|| bad(format!("credit {value:?} not in 1..={MAX_CREDIT}")))?;
                    out.credit = Some(c);
                }
                "instance" => {
                    check_name(value.as_bytes(), MAX_INSTANCE, b";=")
                        .map_err(|e| bad(format!("instance: {e}")))?;
                    out.instance = Some(value.to_owned());
                }
                _ => {}
            }
        }
        Ok(out)
    }
}

/// What follows the command frame.
// READY carries its service name inline like everywhere else (see
// `ServiceName`); a parsed message lives on the stack only briefly.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum WorkerBody<'a, F> {
    /// HEARTBEAT, DISCONNECT.
    None,
    /// READY.
    Ready {
        /// The service the worker serves.
        service: ServiceName,
        /// Our extension frame, if sent.
        options: WorkerOptions,
    },
    /// REQUEST, REPLY, PARTIAL, FINAL, REQUEUE.
    Addressed {
        /// The opaque client address (the broker's correlation id).
        address: &'a [u8],
        /// The body frames after the empty delimiter.
        body: &'a [F],
    },
    /// CREDIT.
    Credit {
        /// Our extension frame, if sent.
        options: WorkerOptions,
    },
}

/// A worker-protocol message (frames without any ROUTER identity).
#[derive(Debug)]
pub struct WorkerMessage<'a, F> {
    /// MDP version.
    pub version: Version,
    /// Whether a 0.2 message came with a leading empty frame (RFC 18 has
    /// none; tolerated, and answered in the same form).
    pub leading_empty: bool,
    /// The command.
    pub command: WorkerCommand,
    /// What follows it.
    pub body: WorkerBody<'a, F>,
}

/// Parses a worker-protocol message: `["", "MDPW01", cmd, …]` or
/// `["MDPW02", cmd, …]` (a leading `""` on 0.2 is accepted).
///
/// # Errors
/// [`MdpError`] for anything that is not a complete, valid command.
pub fn parse_worker<F: Deref<Target = [u8]>>(
    frames: &[F],
) -> Result<WorkerMessage<'_, F>, MdpError> {
    let (leading_empty, rest) = match frames.first() {
        Some(f) if f.is_empty() => (true, &frames[1..]),
        _ => (false, frames),
    };
    let version = rest
        .first()
        .and_then(|f| Version::of_worker(f))
        .ok_or(MdpError::NotWorker)?;
    if version == Version::V1 && !leading_empty {
        return Err(MdpError::NotWorker);
    }
    let cmd_frame = rest.get(1).ok_or(MdpError::BadCommandFrame)?;
    let [b] = cmd_frame[..] else {
        return Err(MdpError::BadCommandFrame);
    };
    let command = WorkerCommand::from_byte(version, b).ok_or(MdpError::UnknownCommand(b))?;
    let args = &rest[2..];
    let wrong = || MdpError::WrongFrames {
        command: command.name(),
    };
    let body = match command {
        WorkerCommand::Heartbeat | WorkerCommand::Disconnect => {
            if !args.is_empty() {
                return Err(wrong());
            }
            WorkerBody::None
        }
        WorkerCommand::Ready => {
            let (service, options) = match args {
                [s] => (s, WorkerOptions::default()),
                [s, o] => (s, WorkerOptions::parse(o)?),
                _ => return Err(wrong()),
            };
            WorkerBody::Ready {
                service: ServiceName::new(service).map_err(MdpError::ServiceName)?,
                options,
            }
        }
        WorkerCommand::Credit => WorkerBody::Credit {
            options: match args {
                [] => WorkerOptions::default(),
                [o] => WorkerOptions::parse(o)?,
                _ => return Err(wrong()),
            },
        },
        _ => match args {
            [address, delim, body @ ..] if delim.is_empty() && !body.is_empty() => {
                WorkerBody::Addressed { address, body }
            }
            _ => {
                return Err(MdpError::BadEnvelope {
                    command: command.name(),
                })
            }
        },
    };
    Ok(WorkerMessage {
        version,
        leading_empty,
        command,
        body,
    })
}

/// The frames a worker message starts with: `["", "MDPW01", cmd]` for 0.1,
/// `["MDPW02", cmd]` for 0.2 (with a leading `""` if `leading_empty`).
/// Chain the command's own frames after it. Yields nothing after the
/// protocol frame if `cmd` does not exist in `v` (see [`WorkerCommand::byte`]).
pub fn worker_prefix<'a>(
    v: Version,
    cmd: WorkerCommand,
    leading_empty: bool,
) -> impl Iterator<Item = &'a [u8]> + Clone {
    let empty = (v == Version::V1 || leading_empty).then_some(&b""[..]);
    empty
        .into_iter()
        .chain(std::iter::once(v.worker_protocol()))
        .chain(cmd.frame(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(parts: &[&[u8]]) -> Vec<Vec<u8>> {
        parts.iter().map(|p| p.to_vec()).collect()
    }

    #[test]
    fn command_bytes_follow_the_rfcs() {
        use WorkerCommand::*;
        let v1 = [
            (Ready, 1),
            (Request, 2),
            (Reply, 3),
            (Heartbeat, 4),
            (Disconnect, 5),
        ];
        let v2 = [
            (Ready, 1),
            (Request, 2),
            (Partial, 3),
            (Final, 4),
            (Heartbeat, 5),
            (Disconnect, 6),
        ];
        for (c, b) in v1 {
            assert_eq!(c.byte(Version::V1), Some(b));
            assert_eq!(WorkerCommand::from_byte(Version::V1, b), Some(c));
        }
        for (c, b) in v2 {
            assert_eq!(c.byte(Version::V2), Some(b));
            assert_eq!(WorkerCommand::from_byte(Version::V2, b), Some(c));
        }
        assert_eq!(Reply.byte(Version::V2), None);
        assert_eq!(Final.byte(Version::V1), None);
        assert_eq!(WorkerCommand::from_byte(Version::V1, 6), None);
        assert_eq!(Requeue.frame(Version::V2), Some(&[0x10][..]));
        assert_eq!(Credit.frame(Version::V1), Some(&[0x11][..]));
    }

    #[test]
    fn ready_parses_in_both_versions_with_and_without_options() {
        let m = frames(&[b"", MDPW01, &[1], b"echo"]);
        let p = parse_worker(&m).unwrap();
        assert_eq!((p.version, p.command), (Version::V1, WorkerCommand::Ready));
        match p.body {
            WorkerBody::Ready { service, options } => {
                assert_eq!(service.as_str(), "echo");
                assert_eq!(options, WorkerOptions::default());
            }
            other => panic!("{other:?}"),
        }
        let m = frames(&[MDPW02, &[1], b"work", b"credit=4;instance=s-1/0;future=x"]);
        let p = parse_worker(&m).unwrap();
        assert!(!p.leading_empty);
        match p.body {
            WorkerBody::Ready { service, options } => {
                assert_eq!(service.as_str(), "work");
                assert_eq!(options.credit, Some(4));
                assert_eq!(options.instance.as_deref(), Some("s-1/0"));
            }
            other => panic!("{other:?}"),
        }
        let m = frames(&[b"", MDPW02, &[5]]);
        let p = parse_worker(&m).unwrap();
        assert!(p.leading_empty);
        assert_eq!(p.command, WorkerCommand::Heartbeat);
    }

    #[test]
    fn addressed_commands_expose_address_and_body() {
        let m = frames(&[MDPW02, &[4], b"12345678", b"", b"a", b"b"]);
        let p = parse_worker(&m).unwrap();
        assert_eq!(p.command, WorkerCommand::Final);
        match p.body {
            WorkerBody::Addressed { address, body } => {
                assert_eq!(address, b"12345678");
                assert_eq!(body, &[b"a".to_vec(), b"b".to_vec()][..]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_messages_are_errors() {
        let cases: Vec<(Vec<Vec<u8>>, MdpError)> = vec![
            (frames(&[]), MdpError::NotWorker),
            (frames(&[b"MDPW03", &[1]]), MdpError::NotWorker),
            (frames(&[MDPW01, &[1], b"echo"]), MdpError::NotWorker),
            (frames(&[MDPW02]), MdpError::BadCommandFrame),
            (frames(&[MDPW02, &[1, 2]]), MdpError::BadCommandFrame),
            (frames(&[MDPW02, &[0x42]]), MdpError::UnknownCommand(0x42)),
            (frames(&[b"", MDPW01, &[6]]), MdpError::UnknownCommand(6)),
            (
                frames(&[MDPW02, &[5], b"x"]),
                MdpError::WrongFrames {
                    command: "HEARTBEAT",
                },
            ),
            (
                frames(&[MDPW02, &[1]]),
                MdpError::WrongFrames { command: "READY" },
            ),
            (
                frames(&[MDPW02, &[4], b"addr", b"x", b"body"]),
                MdpError::BadEnvelope { command: "FINAL" },
            ),
            (
                frames(&[MDPW02, &[4], b"addr", b""]),
                MdpError::BadEnvelope { command: "FINAL" },
            ),
            (
                frames(&[MDPW02, &[1], b"has space"]),
                MdpError::ServiceName(NameError::BadByte(b' ')),
            ),
        ];
        for (m, want) in cases {
            assert_eq!(parse_worker(&m).unwrap_err(), want, "{m:?}");
        }
        let long = vec![b'a'; 256];
        let m = frames(&[MDPW02, &[1], &long]);
        assert!(matches!(
            parse_worker(&m),
            Err(MdpError::ServiceName(NameError::TooLong { len: 256, .. }))
        ));
        for bad in [
            &b"credit=0"[..],
            b"credit=1025",
            b"credit=x",
            b"nonsense",
            b"instance=a=b",
        ] {
            let m = frames(&[MDPW02, &[1], b"echo", bad]);
            assert!(
                matches!(parse_worker(&m), Err(MdpError::Options(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn options_round_trip() {
        let o = WorkerOptions {
            credit: Some(8),
            instance: Some("pod-1/3".into()),
        };
        assert_eq!(o.encode(), b"credit=8;instance=pod-1/3");
        assert_eq!(WorkerOptions::parse(&o.encode()), Ok(o));
        assert_eq!(WorkerOptions::parse(b""), Ok(WorkerOptions::default()));
    }

    #[test]
    fn prefixes_have_the_rfc_shapes() {
        let v1: Vec<_> = worker_prefix(Version::V1, WorkerCommand::Ready, false).collect();
        assert_eq!(v1, vec![&b""[..], MDPW01, &[1]]);
        let v2: Vec<_> = worker_prefix(Version::V2, WorkerCommand::Final, false).collect();
        assert_eq!(v2, vec![MDPW02, &[4][..]]);
        let v2e: Vec<_> = worker_prefix(Version::V2, WorkerCommand::Heartbeat, true).collect();
        assert_eq!(v2e, vec![&b""[..], MDPW02, &[5]]);
    }

    #[test]
    fn service_names_are_bounded() {
        assert!(ServiceName::new(&[b'x'; 255]).is_ok());
        assert_eq!(
            ServiceName::new(&[b'x'; 256]),
            Err(NameError::TooLong { len: 256, max: 255 })
        );
        assert_eq!(ServiceName::new(b""), Err(NameError::Empty));
        assert_eq!(ServiceName::new(b"a\nb"), Err(NameError::BadByte(b'\n')));
        assert!("mmi.service".parse::<ServiceName>().unwrap().is_mmi());
        assert!(!"echo".parse::<ServiceName>().unwrap().is_mmi());
    }

    proptest::proptest! {
        #[test]
        fn parsing_worker_shaped_frames_never_panics(v2 in proptest::prelude::any::<bool>(), empty in proptest::prelude::any::<bool>(), cmd in 0u8..20, rest in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..12), 0..5)) {
            // The protocol and command frames right, the rest random: the
            // parser must still only ever answer Ok or Err.
            let mut m: Vec<Vec<u8>> = Vec::new();
            if empty || !v2 {
                m.push(Vec::new());
            }
            m.push(if v2 { MDPW02.to_vec() } else { MDPW01.to_vec() });
            m.push(vec![cmd]);
            m.extend(rest);
            if let Ok(p) = parse_worker(&m) {
                proptest::prop_assert_eq!(p.command.byte(p.version), Some(cmd));
            }
        }

        #[test]
        fn parsing_random_frames_never_panics(m in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..8), 0..7)) {
            let _ = parse_worker(&m);
        }
    }
}
