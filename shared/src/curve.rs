//! CURVE encryption and authentication for every ZeroMQ socket.
//!
//! Binding sides (broker, proxy) hold the *server* key pair; connecting sides
//! (server, client) hold a *client* key pair and the server's public key. A
//! ZAP handler on the binding side admits only client public keys on the
//! allow-list. Keys are Z85 text (40 characters), given directly or as a
//! path to a file holding one (a value starting with `/` or `.` that is not
//! itself a key).

use std::collections::HashSet;

use clap::Args;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// The Z85 alphabet (ZeroMQ RFC 32).
const Z85: &str =
    "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";

/// A CURVE key (32 bytes), or nothing when the option was given empty.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Key(pub Option<[u8; 32]>);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material (secret keys live in these too).
        f.write_str(if self.0.is_some() {
            "Key(<set>)"
        } else {
            "Key(<unset>)"
        })
    }
}

/// Decodes a 40-character Z85 key.
///
/// # Errors
/// If the text is not exactly 40 characters of the Z85 alphabet.
pub fn decode_key(text: &str) -> Result<[u8; 32], String> {
    let text = text.trim();
    if !is_z85_key(text) {
        return Err("expected a 40-character Z85 CURVE key (see the `keygen` subcommand)".into());
    }
    let bytes = zmq::z85_decode(text).map_err(|e| format!("invalid Z85 key: {e}"))?;
    bytes
        .try_into()
        .map_err(|_| "a Z85 key must decode to 32 bytes".to_owned())
}

fn is_z85_key(s: &str) -> bool {
    s.len() == 40 && s.chars().all(|c| Z85.contains(c))
}

/// A value that starts like a path (`/` or `.`, no commas or spaces) and is
/// not itself a Z85 key is read from that file. Z85 keys may start with `/`
/// or `.` too, so keys, and lists of keys, win.
fn read_value(s: &str) -> Result<String, String> {
    let s = s.trim();
    let looks_like_path = (s.starts_with('/') || s.starts_with('.'))
        && !s.contains(|c: char| c == ',' || c.is_whitespace());
    if looks_like_path && !is_z85_key(s) {
        std::fs::read_to_string(s).map_err(|e| format!("cannot read key file {s:?}: {e}"))
    } else {
        Ok(s.to_owned())
    }
}

/// Clap parser for a key option: empty means unset.
///
/// # Errors
/// See [`decode_key`]; also an unreadable key file.
pub fn parse_key(s: &str) -> Result<Key, String> {
    let v = read_value(s)?;
    if v.trim().is_empty() {
        return Ok(Key(None));
    }
    decode_key(&v).map(|k| Key(Some(k)))
}

/// Clap parser for a comma-, space- or newline-separated list of public keys.
///
/// # Errors
/// If any entry is not a valid key.
pub fn parse_key_list(s: &str) -> Result<KeyList, String> {
    let v = read_value(s)?;
    v.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|k| !k.is_empty())
        .map(decode_key)
        .collect::<Result<HashSet<_>, _>>()
        .map(KeyList)
}

/// A set of client public keys.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyList(pub HashSet<[u8; 32]>);

/// Connect-side keys: (server public, client public, client secret).
pub type ClientKeys = ([u8; 32], [u8; 32], [u8; 32]);

/// CURVE options (all optional; off when no keys are given).
#[derive(Debug, Clone, Default, Args)]
pub struct CurveArgs {
    /// Server secret key: makes every *bound* socket a CURVE server.
    #[arg(long, env = "CURVE_SERVER_SECRET", value_parser = parse_key, default_value = "", hide_default_value = true)]
    pub curve_server_secret: Key,
    /// The servers' public key, which connecting sockets authenticate.
    #[arg(long, env = "CURVE_SERVER_PUBLIC", value_parser = parse_key, default_value = "", hide_default_value = true)]
    pub curve_server_public: Key,
    /// Client secret key for connecting sockets.
    #[arg(long, env = "CURVE_CLIENT_SECRET", value_parser = parse_key, default_value = "", hide_default_value = true)]
    pub curve_client_secret: Key,
    /// Client public key for connecting sockets.
    #[arg(long, env = "CURVE_CLIENT_PUBLIC", value_parser = parse_key, default_value = "", hide_default_value = true)]
    pub curve_client_public: Key,
    /// Client public keys allowed to connect to bound sockets (comma-separated, or a file); empty: any client with the server's key exchange.
    #[arg(long, env = "CURVE_ALLOWED_CLIENTS", value_parser = parse_key_list, default_value = "", hide_default_value = true)]
    pub curve_allowed_clients: KeyList,
}

impl CurveArgs {
    /// Whether bound sockets use CURVE.
    pub fn is_server(&self) -> bool {
        self.curve_server_secret.0.is_some()
    }

    /// The connect-side keys: (server public, client public, client secret),
    /// when configured.
    ///
    /// # Errors
    /// If only some of the three are given.
    pub fn client_keys(&self) -> Result<Option<ClientKeys>, String> {
        match (self.curve_server_public.0, self.curve_client_public.0, self.curve_client_secret.0) {
            (Some(s), Some(p), Some(k)) => Ok(Some((s, p, k))),
            // The server's public key alone is harmless on a service that only
            // binds (it may share one Secret with the connecting services).
            (_, None, None) => Ok(None),
            _ => Err("CURVE client needs CURVE_SERVER_PUBLIC, CURVE_CLIENT_PUBLIC and CURVE_CLIENT_SECRET together".into()),
        }
    }

    /// Makes `s` a CURVE server (before bind).
    ///
    /// # Errors
    /// If libzmq refuses an option (e.g. built without CURVE).
    pub fn apply_server(&self, s: &zmq::Socket) -> zmq::Result<()> {
        if let Some(secret) = self.curve_server_secret.0 {
            s.set_zap_domain("mensageria")?;
            s.set_curve_server(true)?;
            s.set_curve_secretkey(&secret)?;
        }
        Ok(())
    }

    /// Makes `s` a CURVE client (before connect).
    ///
    /// # Errors
    /// If the keys are incomplete or libzmq refuses an option.
    pub fn apply_client(&self, s: &zmq::Socket) -> Result<(), String> {
        if let Some((server, public, secret)) = self.client_keys()? {
            let set = || -> zmq::Result<()> {
                s.set_curve_serverkey(&server)?;
                s.set_curve_publickey(&public)?;
                s.set_curve_secretkey(&secret)
            };
            set().map_err(|e| format!("set CURVE client keys: {e}"))?;
        }
        Ok(())
    }
}

/// A fresh key pair as `(public, secret)` Z85 strings.
///
/// # Errors
/// If libzmq has no CURVE support.
pub fn keygen() -> Result<(String, String), String> {
    if zmq::has("curve") != Some(true) {
        return Err("this libzmq was built without CURVE support".into());
    }
    let pair = zmq::CurveKeyPair::new().map_err(|e| e.to_string())?;
    let enc = |k: &[u8]| zmq::z85_encode(k).map_err(|e| e.to_string());
    Ok((enc(&pair.public_key)?, enc(&pair.secret_key)?))
}

/// The `keygen` subcommand: prints a key pair as environment assignments.
pub fn keygen_command() -> std::process::ExitCode {
    match keygen() {
        Ok((public, secret)) => {
            println!("# CURVE key pair. Keep the secret key secret.");
            println!("public={public}");
            println!("secret={secret}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Runs the ZAP handler (RFC 27) for `ctx` until `cancel`: admits CURVE
/// clients whose public key is on `allowed` (any, when `allowed` is empty).
/// Denials surface as `auth_failed` socket events on the bound socket.
///
/// # Errors
/// If the handler socket cannot be bound.
pub fn run_zap(
    ctx: &zmq::Context,
    allowed: KeyList,
    cancel: CancellationToken,
    ready: std::sync::mpsc::Sender<zmq::Result<()>>,
) -> zmq::Result<()> {
    let bound = ctx.socket(zmq::REP).and_then(|s| {
        s.set_linger(0)?;
        s.bind("inproc://zeromq.zap.01")?;
        Ok(s)
    });
    let s = match bound {
        Ok(s) => {
            let _ = ready.send(Ok(()));
            s
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            return Err(e);
        }
    };
    if allowed.0.is_empty() {
        warn!("CURVE is on without CURVE_ALLOWED_CLIENTS: any client key is accepted (encryption only).");
    } else {
        info!(clients = allowed.0.len(), "CURVE authentication on.");
    }
    while !cancel.is_cancelled() {
        if s.poll(zmq::POLLIN, 100)? == 0 {
            continue;
        }
        let Ok(req) = s.recv_multipart(zmq::DONTWAIT) else {
            continue;
        };
        let (status, text) = zap_decision(&req, &allowed);
        let request_id = req.get(1).cloned().unwrap_or_default();
        if status != "200" {
            debug!(address = %String::from_utf8_lossy(req.get(3).map_or(&[][..], |a| a)), reason = text, "Client refused.");
        }
        s.send_multipart(
            [
                b"1.0".to_vec(),
                request_id,
                status.as_bytes().to_vec(),
                text.as_bytes().to_vec(),
                vec![],
                vec![],
            ],
            0,
        )?;
    }
    Ok(())
}

/// The ZAP verdict for one request: status code and text.
pub fn zap_decision(req: &[Vec<u8>], allowed: &KeyList) -> (&'static str, &'static str) {
    // [version, request id, domain, address, identity, mechanism, credentials…]
    if req.len() < 6 || req[0] != b"1.0" {
        return ("500", "malformed ZAP request");
    }
    if req[5] != b"CURVE" {
        return ("400", "CURVE required");
    }
    let Some(key) = req.get(6).and_then(|k| <[u8; 32]>::try_from(&k[..]).ok()) else {
        return ("400", "missing client key");
    };
    if allowed.0.is_empty() || allowed.0.contains(&key) {
        ("200", "OK")
    } else {
        ("400", "client key not allowed")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The libzmq the build links (by default built from source by zmq-sys,
    /// with libsodium) must support CURVE; a build without it would only fail
    /// at run time, when a service is given keys.
    #[test]
    fn linked_libzmq_has_curve() {
        assert_eq!(
            zmq::has("curve"),
            Some(true),
            "libzmq {:?} was built without CURVE (libsodium)",
            zmq::version()
        );
    }

    #[test]
    fn keys_round_trip_and_bad_keys_are_refused() {
        let (public, secret) = keygen().expect("libzmq has CURVE");
        assert_eq!(public.len(), 40);
        assert!(parse_key(&public).unwrap().0.is_some());
        assert!(parse_key(&secret).unwrap().0.is_some());
        assert_eq!(parse_key("").unwrap(), Key(None));
        for bad in ["short", &"x".repeat(41), &"~".repeat(40)] {
            assert!(parse_key(bad).is_err(), "{bad}");
        }
        assert!(parse_key("/nonexistent/key")
            .unwrap_err()
            .contains("cannot read"));
        let list = parse_key_list(&format!("{public}, {public}\n")).unwrap();
        assert_eq!(list.0.len(), 1);
        // Keys, and lists of keys, that start like paths are still keys.
        let slashy = format!("/{}", &public[1..]);
        assert!(parse_key(&slashy).unwrap().0.is_some());
        let slashy_list = parse_key_list(&format!("{slashy},{public}")).unwrap();
        assert_eq!(slashy_list.0.len(), 2);
        // A path to a file holding a key.
        let file = std::env::temp_dir().join(format!("mensageria-key-{}", std::process::id()));
        std::fs::write(&file, format!("{public}\n")).unwrap();
        assert_eq!(parse_key(file.to_str().unwrap()), parse_key(&public));
        std::fs::remove_file(&file).unwrap();
        assert!(
            !format!("{:?}", parse_key(&secret).unwrap()).contains(&secret),
            "Debug must not leak keys"
        );
    }

    #[test]
    fn client_keys_must_come_together() {
        let (p, _) = keygen().unwrap();
        let a = CurveArgs {
            curve_server_public: parse_key(&p).unwrap(),
            ..Default::default()
        };
        assert_eq!(
            a.client_keys(),
            Ok(None),
            "server public alone: nothing to connect with"
        );
        let b = CurveArgs {
            curve_client_public: parse_key(&p).unwrap(),
            ..Default::default()
        };
        assert!(b.client_keys().is_err());
        assert_eq!(CurveArgs::default().client_keys(), Ok(None));
    }

    #[test]
    fn zap_decisions() {
        let key = [7u8; 32];
        let allowed = KeyList([key].into_iter().collect());
        let req = |mech: &[u8], cred: &[u8]| {
            vec![
                b"1.0".to_vec(),
                b"1".to_vec(),
                b"d".to_vec(),
                b"a".to_vec(),
                b"".to_vec(),
                mech.to_vec(),
                cred.to_vec(),
            ]
        };
        assert_eq!(zap_decision(&req(b"CURVE", &key), &allowed).0, "200");
        assert_eq!(zap_decision(&req(b"CURVE", &[8; 32]), &allowed).0, "400");
        assert_eq!(zap_decision(&req(b"NULL", b""), &allowed).0, "400");
        assert_eq!(
            zap_decision(&req(b"CURVE", &[8; 32]), &KeyList::default()).0,
            "200"
        );
        assert_eq!(zap_decision(&[b"2.0".to_vec()], &allowed).0, "500");
    }
}
