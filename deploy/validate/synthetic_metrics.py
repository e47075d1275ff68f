#!/usr/bin/env python3
"""Write contract-shaped synthetic scrape data (OpenMetrics text) for every metric of
design.md §4, as Prometheus would have scraped it from broker, proxy, 2 servers and a client
at a 15s interval, for backfilling with
  promtool tsdb create-blocks-from openmetrics FILE DATA_DIR
so dashboard_queries.py can check, without the real services, that every dashboard query
returns data when the metrics look like the contract says (names, labels, label values).

usage: synthetic_metrics.py OUT.om --end UNIX_SECONDS [--minutes 20]
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import contract  # noqa: E402

TARGETS = [("broker", "broker:9101"), ("proxy", "proxy:9102"), ("server", "10.0.0.11:9103"),
           ("server", "10.0.0.12:9103"), ("client", "client:9104")]
BUCKETS = ["0.001", "0.005", "0.01", "0.05", "0.1", "0.5", "1", "5", "+Inf"]
CUMULATIVE = [0.05, 0.4, 0.7, 0.9, 0.95, 0.99, 0.995, 1.0, 1.0]
TOPICS = ["requests", "server"]
BROKER_SERVICES = ["echo", "billing"]


def fmt_labels(labels):
    return "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--end", type=int, required=True)
    ap.add_argument("--minutes", type=int, default=20)
    a = ap.parse_args()
    step = 15
    times = list(range(a.end - a.minutes * 60, a.end + 1, step))
    t0 = times[0]
    series = []  # (name, labels, fn(t) -> value)

    def counter(name, labels, per_s):
        series.append((name, labels, lambda t, r=per_s: round(r * (t - t0), 3)))

    def gauge(name, labels, value):
        series.append((name, labels, lambda t, v=value: v))

    def histogram(name, labels, per_s, mean):
        for le, frac in zip(BUCKETS, CUMULATIVE):
            counter(name + "_bucket", {**labels, "le": le}, per_s * frac)
        counter(name + "_count", labels, per_s)
        counter(name + "_sum", labels, per_s * mean)

    for role, inst in TARGETS:
        base = {"job": role, "instance": inst}
        gauge("up", base, 1)
        gauge("mensageria_build_info", {**base, "service": role, "version": "0.1.0"}, 1)
        for i, sock in enumerate(contract.SOCKETS[role]):
            gauge("mensageria_zmq_peers", {**base, "socket": sock}, 1 + i)
            for ev in ("connected", "accepted", "disconnected"):
                counter("mensageria_zmq_socket_events_total", {**base, "socket": sock, "event": ev}, 0.01)
        gauge("process_resident_memory_bytes", base, 12_000_000)
        gauge("process_open_fds", base, 40)
        gauge("process_max_fds", base, 65536)
        counter("process_cpu_seconds_total", base, 0.05)
        if role == "broker":
            for svc in BROKER_SERVICES:
                sb = {**base, "service": svc}
                counter("mensageria_broker_requests_total", sb, 50)
                for st in contract.STATUSES:
                    counter("mensageria_broker_replies_total", {**sb, "status": st}, 47 if st == "ok" else 0.5)
                histogram("mensageria_broker_request_duration_seconds", sb, 50, 0.004)
                gauge("mensageria_broker_queue_depth", sb, 3)
                histogram("mensageria_broker_queue_wait_seconds", sb, 50, 0.001)
                for state in contract.WORKER_STATES:
                    gauge("mensageria_broker_workers", {**sb, "state": state}, 2)
                counter("mensageria_broker_workers_lost_total", sb, 0.01)
                counter("mensageria_broker_expired_in_queue_total", sb, 0.1)
            gauge("mensageria_broker_inflight_requests", base, 12)
            for r in contract.DROP_REASONS:
                counter("mensageria_broker_dropped_total", {**base, "reason": r}, 0.1)
            for sock in contract.SOCKETS["broker"]:
                for d in contract.DIRECTIONS:
                    counter("mensageria_broker_messages_total", {**base, "socket": sock, "direction": d}, 100)
                    counter("mensageria_broker_bytes_total", {**base, "socket": sock, "direction": d}, 12_000)
        elif role == "proxy":
            for tp in TOPICS:
                counter("mensageria_proxy_events_in_total", {**base, "topic": tp}, 50)
                counter("mensageria_proxy_deliveries_total", {**base, "topic": tp}, 100)
                gauge("mensageria_proxy_subscriptions", {**base, "topic": tp}, 2)
            for d in contract.DIRECTIONS:
                counter("mensageria_proxy_bytes_total", {**base, "direction": d}, 8_000)
        elif role == "server":
            for st in contract.STATUSES:
                counter("mensageria_server_requests_total", {**base, "status": st}, 45 if st == "ok" else 0.5)
            histogram("mensageria_server_request_duration_seconds", base, 50, 0.001)
            for tp in TOPICS:
                counter("mensageria_server_events_published_total", {**base, "topic": tp}, 25)
            counter("mensageria_server_late_skipped_total", base, 0.05)
            counter("mensageria_server_requeued_total", base, 0.05)
        elif role == "client":
            for st in contract.STATUSES:
                counter("mensageria_client_requests_total", {**base, "status": st}, 95 if st == "ok" else 1)
            counter("mensageria_client_retries_total", base, 2)
            histogram("mensageria_client_request_duration_seconds", base, 100, 0.005)
            for tp in TOPICS:
                counter("mensageria_client_events_received_total", {**base, "topic": tp}, 50)
            counter("mensageria_client_events_lost_total", base, 0.05)
            histogram("mensageria_client_event_lag_seconds", base, 100, 0.002)

    missing = contract.known_series_names() - contract.SCRAPE_SERIES - {s[0] for s in series}
    if missing:
        raise SystemExit(f"synthetic_metrics: no data generated for {sorted(missing)}")
    # One metric family after another (OpenMetrics), each series' samples in time order.
    series.sort(key=lambda s: s[0])
    with open(a.out, "w") as f:
        for name, labels, fn in series:
            lab = fmt_labels(labels)
            for t in times:
                f.write(f"{name}{lab} {fn(t)} {t}\n")
        f.write("# EOF\n")
    print(f"synthetic_metrics: {len(series)} series x {len(times)} samples -> {a.out}")


if __name__ == "__main__":
    main()
