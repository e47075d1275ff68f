//! `client run`'s request metrics agree with the broker's when requests take
//! longer than the interval between sends (the concurrency cap is reached):
//! every reply the broker forwards `ok` is counted `ok` by the client.

use std::time::Duration;

use e2e::{faults::ClientRun, metrics_text, observability::families, with_timeout, Stack};

#[test]
fn client_run_counts_every_reply_when_requests_are_slower_than_the_rate() {
    with_timeout(Duration::from_secs(60), || {
        let stack = Stack::start(1);
        // 100 ms of work per request, a send due every 20 ms, at most 2
        // outstanding: the client is at its cap and behind its schedule all
        // the time, and runs at 20 requests/s.
        let mut flags = vec!["--rate", "50", "--concurrency", "2"];
        flags.extend(["--payload", "work 100ms"]);
        let client = ClientRun::ready(&stack, &flags, &[]);
        let counts = || {
            let b = families(&metrics_text(stack.broker.http));
            let c = families(&metrics_text(client.http));
            let rep = "mensageria_broker_replies_total";
            let broker_ok = b[rep].sum(rep, &[("status", "ok")]);
            let req = "mensageria_client_requests_total";
            let client_ok = c[req].sum(req, &[("status", "ok")]);
            let client_all = c[req].sum(req, &[]);
            let ret = "mensageria_client_retries_total";
            let retries = c[ret].sum(ret, &[]);
            (broker_ok, client_ok, client_all, retries)
        };
        let mut last = (0.0, 0.0, 0.0, 0.0);
        let done = e2e::poll_until(Duration::from_secs(15), || {
            last = counts();
            (last.1 >= 20.0).then_some(())
        });
        let (broker_ok, client_ok, client_all, retries) = last;
        assert!(
            done.is_some(),
            "client run counted {client_ok} ok replies in 15 s while the broker forwarded \
             {broker_ok} ok replies to it ({client_all} requests finished, {retries} retries)"
        );
        assert_eq!(
            client_all, client_ok,
            "every finished request is ok: {last:?}"
        );
        assert_eq!(retries, 0.0, "no request needed a retry: {last:?}");
        // At most the two outstanding requests are counted by the broker and
        // not yet by the client.
        assert!(broker_ok - client_ok <= 2.0, "{last:?}");
    });
}
