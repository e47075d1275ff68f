//! Distributed tracing: one `client request` through broker and server, with
//! a `client subscribe` receiving its event through the proxy, is one trace
//! of six spans exported over OTLP/HTTP JSON to a collector run by the test.

use std::time::Duration;

use e2e::{
    describe,
    observability::{
        wait_proxy_subscriptions, wait_subscriptions_reach_servers, ExportedSpan, OtlpCollector,
        JSON_LOGS,
    },
    run_bin, stdout, with_timeout, Signal, Stack, CLIENT_TIMEOUT, GRACE,
};

const SERVER: u64 = 2;
const CLIENT: u64 = 3;
const PRODUCER: u64 = 4;
const CONSUMER: u64 = 5;

/// The six spans of the one request's trace, in this order: name,
/// service, index of the parent span here, span kind.
const SPANS: [(&str, &str, Option<usize>, u64); 6] = [
    ("send requests", "client", None, CLIENT),
    ("route requests", "broker", Some(0), SERVER),
    ("process requests", "server", Some(1), SERVER),
    ("publish requests.completed", "server", Some(2), PRODUCER),
    ("forward requests.completed", "proxy", Some(3), CONSUMER),
    ("receive requests.completed", "client", Some(3), CONSUMER),
];
const PUBLISH: usize = 3;
const RECEIVE: usize = 5;

/// The one span of `spans` with this name, service and parent, if exactly one.
fn find<'a>(
    spans: &'a [ExportedSpan],
    name: &str,
    service: &str,
    parent: Option<&ExportedSpan>,
) -> Option<&'a ExportedSpan> {
    let mut it = spans.iter().filter(|s| {
        s.name == name
            && s.service == service
            && parent.is_none_or(|p| s.parent_span_id == p.span_id && s.trace_id == p.trace_id)
    });
    let first = it.next()?;
    it.next().is_none().then_some(first)
}

/// The spans of [`SPANS`], once all have arrived.
fn assemble(spans: &[ExportedSpan]) -> Option<Vec<ExportedSpan>> {
    let mut trace: Vec<ExportedSpan> = Vec::new();
    for (name, service, parent, _) in SPANS {
        let span = find(spans, name, service, parent.map(|i| &trace[i]))?;
        trace.push(span.clone());
    }
    Some(trace)
}

fn summary(spans: &[ExportedSpan]) -> String {
    spans
        .iter()
        .map(|s| {
            format!(
                "  {:<30} service={:<7} kind={} trace={} span={} parent={} links={:?}",
                s.name, s.service, s.kind, s.trace_id, s.span_id, s.parent_span_id, s.links
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn one_request_is_one_trace_from_client_to_subscriber() {
    with_timeout(Duration::from_secs(60), || {
        let collector = OtlpCollector::start();
        let endpoint = collector.endpoint();
        let mut env: Vec<(&str, &str)> = JSON_LOGS.to_vec();
        env.extend([
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ]);
        let stack = Stack::builder()
            .servers(1)
            .env(&env)
            .server_args(&["--status-interval", "200ms"])
            .start();

        let mut args = vec!["subscribe", "requests", "--count", "1"];
        args.extend(["--proxy-endpoints", stack.xpub()]);
        let mut subscriber = e2e::spawn("client", &args, &env);
        wait_proxy_subscriptions(stack.proxy.http, "requests", 1.0);
        wait_subscriptions_reach_servers(&stack);

        let out = run_bin(
            "client",
            &["request", "hello", "--broker-endpoints", stack.frontend()],
            &env,
            CLIENT_TIMEOUT,
        );
        assert_eq!(e2e::succeeded(&out), "hello\n");
        let sub_out = subscriber.output(Duration::from_secs(15));
        assert!(sub_out.status.success(), "{}", describe(&sub_out));
        assert!(
            stdout(&sub_out).starts_with("requests.completed "),
            "{}",
            describe(&sub_out)
        );

        // The batch processor exports every few seconds and on shutdown:
        // SIGTERM flushes what the services hold.
        let mut procs = stack.into_procs();
        for p in &mut procs {
            p.kill(Signal::Term);
        }
        for p in &mut procs {
            let status = p.wait_exit(GRACE + Duration::from_secs(10));
            assert!(status.success(), "{} exited {status:?}", p.name());
        }

        let trace = collector
            .wait_for(Duration::from_secs(15), assemble)
            .unwrap_or_else(|| {
                panic!(
                    "the six spans of the request never arrived; {} exports, problems {:?}, spans:\n{}",
                    collector.posts(),
                    collector.problems(),
                    summary(&collector.spans())
                )
            });
        assert!(
            collector.problems().is_empty(),
            "{:?}",
            collector.problems()
        );

        let context = summary(&trace);
        let root = &trace[0];
        for s in &trace {
            assert_eq!(s.trace_id, root.trace_id, "one trace id\n{context}");
            assert_eq!(
                s.trace_id.len(),
                32,
                "hex trace id expected: {:?}\n{context}",
                s.trace_id
            );
            assert_eq!(
                s.attributes
                    .get("messaging.system")
                    .and_then(|v| v.as_str()),
                Some("zeromq"),
                "{}: attributes {:?}",
                s.name,
                s.attributes
            );
        }
        assert!(
            root.parent_span_id.is_empty(),
            "the client span is the root\n{context}"
        );
        for (s, (.., kind)) in trace.iter().zip(SPANS) {
            assert_eq!(s.kind, kind, "kind of {}\n{context}", s.name);
        }
        let (publish, receive) = (&trace[PUBLISH], &trace[RECEIVE]);
        assert!(
            receive
                .links
                .iter()
                .any(|(trace, span)| *span == publish.span_id && *trace == publish.trace_id),
            "the subscriber's span links to the producer span\n{context}"
        );
        let ids: std::collections::BTreeSet<&str> =
            trace.iter().map(|s| s.span_id.as_str()).collect();
        assert_eq!(ids.len(), 6, "six distinct spans\n{context}");
    });
}
