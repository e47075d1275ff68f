//! CURVE end to end over the real binaries: broker and proxy hold the server
//! key pair and an allow-list; servers and clients hold client keys. An
//! authorised client gets replies and events; a wrong key or no key gets
//! nothing and the refusal is counted; the ops endpoints leak neither keys
//! nor payloads.

use std::time::Duration;

use e2e::{
    assert_failed, describe,
    faults::{
        assert_all_healthy, keygen, socket_events, wait_socket_events, ClientRun, KeyPair,
        SummaryFile,
    },
    http_get, run_bin, stdout, with_timeout, Signal, Stack, GRACE,
};

const SECRET_PAYLOAD: &str = "PAYLOAD-c0ffee-7e57-do-not-leak";

fn client_env(server: &KeyPair, me: &KeyPair) -> Vec<(&'static str, String)> {
    vec![
        ("CURVE_SERVER_PUBLIC", server.public.clone()),
        ("CURVE_CLIENT_PUBLIC", me.public.clone()),
        ("CURVE_CLIENT_SECRET", me.secret.clone()),
    ]
}

fn as_env<'a>(v: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    v.iter().map(|(k, s)| (*k, s.as_str())).collect()
}

#[test]
fn curve_admits_only_allowed_keys_end_to_end_and_ops_endpoints_leak_nothing() {
    with_timeout(Duration::from_secs(100), || {
        let server_keys = keygen();
        let worker = keygen();
        let user = keygen();
        let stranger = keygen();
        let allowed = format!("{},{}", worker.public, user.public);
        let bind_env = [
            ("CURVE_SERVER_SECRET", server_keys.secret.as_str()),
            ("CURVE_ALLOWED_CLIENTS", allowed.as_str()),
        ];
        let worker_env = client_env(&server_keys, &worker);
        let stack = Stack::builder()
            .servers(1)
            .bind_env(&bind_env)
            .server_env(&as_env(&worker_env))
            .start();
        let (b, p) = (stack.broker.http, stack.proxy.http);
        let (fe, xpub) = (stack.frontend().to_owned(), stack.xpub().to_owned());
        let user_env = client_env(&server_keys, &user);
        let stranger_env = client_env(&server_keys, &stranger);

        // Authorised: a request, steady load, and a subscriber.
        let request = |payload: &str, extra: &[&str], env: &[(&str, &str)]| {
            let mut args = vec!["request", payload, "--broker-endpoints", &fe];
            args.extend(extra);
            run_bin("client", &args, env, Duration::from_secs(30))
        };
        let ok = request(SECRET_PAYLOAD, &["--timeout", "2s"], &as_env(&user_env));
        assert_eq!(e2e::succeeded(&ok), format!("{SECRET_PAYLOAD}\n"));
        let totals = SummaryFile::new();
        let subscribe = ["requests", "--count", "3"];
        let mut subscriber = totals.subscribe(&xpub, &subscribe, &as_env(&user_env));
        let payload = format!("work 1ms {SECRET_PAYLOAD}");
        let mut flags = vec!["--rate", "50", "--concurrency", "1000"];
        flags.extend(["--payload", &payload]);
        let load = ClientRun::ready(&stack, &flags, &as_env(&user_env));
        let out = subscriber.output(Duration::from_secs(30));
        assert_eq!(
            e2e::succeeded(&out).lines().count(),
            3,
            "{}",
            describe(&out)
        );
        let t = totals.read();
        assert_eq!((t.received, t.lost), (3, 0), "{}", describe(&out));
        load.wait_stats("authorised load to succeed", Duration::from_secs(20), |s| {
            s.ok() >= 20.0 && s.received("requests") >= 20.0
        });

        // A wrong key (not on the allow-list) and no key: nothing, counted.
        let mut refusals = Vec::new();
        for (who, env, event) in [
            ("wrong key", as_env(&stranger_env), "auth_failed"),
            ("no key", Vec::new(), "handshake_failed"),
        ] {
            let (fe_before, xpub_before) = (
                socket_events(b, "frontend", event),
                socket_events(p, "xpub", event),
            );
            let out = request("let me in", &["--timeout", "500ms", "--retries", "0"], &env);
            assert_failed(&out, 1, "request failed (timeout)", who);
            assert_eq!(stdout(&out), "", "{who} got a reply: {}", describe(&out));
            let totals = SummaryFile::new();
            let out = totals
                .subscribe(&xpub, &["--duration", "2s"], &env)
                .output(Duration::from_secs(30));
            assert_eq!(e2e::succeeded(&out), "", "{who} got events");
            assert_eq!(totals.read().received, 0, "{who}: {}", describe(&out));
            // Both count the refusal as `event`.
            let fe_after = wait_socket_events(b, "frontend", event, fe_before);
            let xpub_after = wait_socket_events(p, "xpub", event, xpub_before);
            refusals.push(format!(
                "{who}: frontend {event} +{}, xpub {event} +{}",
                fe_after - fe_before,
                xpub_after - xpub_before
            ));
        }
        // Refused peers never counted as peers; the authorised ones still work.
        let registrations = stack.servers[0].registrations() as f64;
        e2e::wait_workers(b, &[], registrations, e2e::START_TIMEOUT);
        let again = load.stats().ok();
        load.wait_stats("authorised load to go on", Duration::from_secs(20), |s| {
            s.ok() >= again + 20.0
        });

        // The ops endpoints of every service: no key material, no payload.
        let owners = ["server", "worker", "client", "stranger"];
        let key_pairs = owners.iter().zip([&server_keys, &worker, &user, &stranger]);
        let mut secrets = vec![("payload".to_owned(), SECRET_PAYLOAD)];
        for (who, keys) in key_pairs {
            secrets.push((format!("{who} public key"), &keys.public));
            secrets.push((format!("{who} secret key"), &keys.secret));
        }
        let services = [
            ("broker", b),
            ("proxy", p),
            ("server", stack.servers[0].http),
            ("client run", load.http),
        ];
        let mut scanned = 0;
        for (service, addr) in services {
            for path in ["/metrics", "/readyz", "/healthz"] {
                let (code, body) = http_get(addr, path).expect("ops endpoint answers");
                assert!(code == 200, "{service} {path}: HTTP {code}");
                for (what, needle) in &secrets {
                    assert!(!body.contains(needle), "{service} {path} shows the {what}");
                }
                scanned += body.len();
            }
        }
        // Logs must not show secret keys either.
        for proc in [
            &stack.broker.proc,
            &stack.proxy.proc,
            &stack.servers[0].proc,
            &load.proc,
        ] {
            let logs = proc.stderr_lines().join("\n");
            for (what, needle) in secrets.iter().filter(|(w, _)| w.contains("secret")) {
                assert!(!logs.contains(needle), "{} logs the {what}", proc.name());
            }
        }
        assert_all_healthy(&services);
        let mut load = load;
        load.proc.kill(Signal::Term);
        assert!(load
            .proc
            .wait_exit(GRACE + Duration::from_secs(5))
            .success());
        eprintln!(
            "RESULT curve: authorised request + 3 events ok; {}; ops bodies scanned: {scanned} \
             bytes, no key or payload",
            refusals.join("; ")
        );
    });
}

/// `CURVE_ALLOWED_CLIENTS` is a comma-separated list of Z85 keys, or a path
/// to a file; a list whose first key starts with `/` (Z85 keys may) is still
/// a list, not a path (it made the services exit 2 before 2d38ed6).
#[test]
fn allow_list_starting_with_a_slash_key_is_not_taken_for_a_path() {
    with_timeout(Duration::from_secs(60), || {
        let slashy = (0..10_000)
            .map(|_| mensageria::curve::keygen().expect("libzmq with CURVE").0)
            .find(|k| k.starts_with('/'))
            .expect("a public key starting with `/` within 10000 tries");
        let other = keygen();
        let server = keygen();
        let list = format!("{slashy},{}", other.public);
        let broker = e2e::Launcher::default()
            .broker(
                &[],
                &[
                    ("CURVE_SERVER_SECRET", server.secret.as_str()),
                    ("CURVE_ALLOWED_CLIENTS", list.as_str()),
                ],
            )
            .unwrap();
        e2e::wait_ready(broker.http, Duration::from_secs(20));
    });
}
