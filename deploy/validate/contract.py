"""The contract of design.md (sections 2 and 4) as data, for the static checks."""

# Every metric name the services export (Prometheus names; histograms without suffix).
COUNTERS = {
    "mensageria_zmq_socket_events_total",
    "process_cpu_seconds_total",
    "mensageria_broker_requests_total",
    "mensageria_broker_replies_total",
    "mensageria_broker_dropped_total",
    "mensageria_broker_messages_total",
    "mensageria_broker_bytes_total",
    "mensageria_broker_workers_lost_total",
    "mensageria_broker_expired_in_queue_total",
    "mensageria_proxy_events_in_total",
    "mensageria_proxy_deliveries_total",
    "mensageria_proxy_bytes_total",
    "mensageria_server_requests_total",
    "mensageria_server_events_published_total",
    "mensageria_server_late_skipped_total",
    "mensageria_server_requeued_total",
    "mensageria_client_requests_total",
    "mensageria_client_retries_total",
    "mensageria_client_events_received_total",
    "mensageria_client_events_lost_total",
}
GAUGES = {
    "mensageria_build_info",
    "mensageria_zmq_peers",
    "process_resident_memory_bytes",
    "process_open_fds",
    "process_max_fds",
    "mensageria_broker_inflight_requests",
    "mensageria_broker_queue_depth",
    "mensageria_broker_workers",
    "mensageria_proxy_subscriptions",
}
HISTOGRAMS = {
    "mensageria_broker_request_duration_seconds",
    "mensageria_broker_queue_wait_seconds",
    "mensageria_server_request_duration_seconds",
    "mensageria_client_request_duration_seconds",
    "mensageria_client_event_lag_seconds",
}
# Series Prometheus itself adds to every target.
SCRAPE_SERIES = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}


def known_series_names():
    names = set(COUNTERS) | set(GAUGES) | SCRAPE_SERIES
    for h in HISTOGRAMS:
        names |= {h + "_bucket", h + "_sum", h + "_count"}
    return names


# Label values with a closed set (design.md §4 and the packaging brief).
STATUSES = ["ok", "error", "bad_request", "timeout", "unavailable", "overloaded"]
DROP_REASONS = ["late_reply", "malformed", "client_gone", "worker_protocol", "too_many_services",
                "partial_unsupported", "unknown_worker"]
WORKER_STATES = ["idle", "busy"]
SOCKETS = {
    "broker": ["frontend", "backend"],
    "proxy": ["xsub", "xpub"],
    "server": ["mdp", "rep", "pub"],
    "client": ["req", "sub"],
}
SOCKET_EVENTS = ["connected", "accepted", "disconnected", "handshake_failed", "handshake_succeeded"]
DIRECTIONS = ["in", "out"]

SERVICES = ["broker", "proxy", "server", "client"]
HTTP_PORTS = {"broker": 9101, "proxy": 9102, "server": 9103, "client": 9104}
ZMQ_PORTS = {"broker": {"frontend": 5555, "backend": 5556}, "proxy": {"xsub": 5557, "xpub": 5558}}

COMMON_ENV = {
    "HTTP_ADDR", "RUST_LOG", "LOG_FORMAT", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_SERVICE_NAME",
    "OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG", "SHUTDOWN_GRACE",
}
CURVE_ENV = {
    "CURVE_SERVER_SECRET", "CURVE_SERVER_PUBLIC", "CURVE_CLIENT_SECRET", "CURVE_CLIENT_PUBLIC",
    "CURVE_ALLOWED_CLIENTS",
}
# Transport/tuning options the binaries also read (`<bin> --help`), beyond design.md §2.
TRANSPORT_ENV = {
    "ZMQ_HEARTBEAT_IVL", "ZMQ_HEARTBEAT_TIMEOUT", "ZMQ_HEARTBEAT_TTL", "ZMQ_HWM", "ZMQ_LINGER",
    "ZMQ_MAXMSGSIZE", "ZMQ_RECONNECT_IVL", "ZMQ_RECONNECT_IVL_MAX",
}
# design.md §2, and §7 (services and dispatch).
ROLE_ENV = {
    "broker": {"FRONTEND_BIND", "BACKEND_BIND", "REQUEST_TIMEOUT", "MAX_INFLIGHT",
               "DEFAULT_SERVICE", "MAX_QUEUE", "WORKER_HEARTBEAT_IVL", "WORKER_LIVENESS"},
    "proxy": {"XSUB_BIND", "XPUB_BIND"},
    "server": {"BROKER_ENDPOINTS", "PROXY_ENDPOINTS", "WORKERS",
               "SERVICES", "CREDIT", "WORKER_HEARTBEAT_IVL", "WORKER_LIVENESS"},
    "client": {"BROKER_ENDPOINTS", "PROXY_ENDPOINTS", "RATE", "CONCURRENCY", "TIMEOUT", "RETRIES", "TOPICS",
               "SERVICE"},
}
# Role extras found in `<bin> --help` (not in design.md §2 or §7).
ROLE_ENV_EXTRA = {
    "broker": {"MAX_SERVICES", "NO_WORKER_GRACE"},
    "proxy": set(),
    "server": {"MAX_WORK", "STATUS_INTERVAL", "WORKER_PROTOCOL"},
    "client": {"PAYLOAD", "PLAIN", "BROKER_HTTP"},
}


def allowed_env(role):
    return COMMON_ENV | CURVE_ENV | TRANSPORT_ENV | ROLE_ENV[role] | ROLE_ENV_EXTRA[role]


# design.md §7: the broker's DEFAULT_SERVICE and the servers' SERVICES when unset.
DEFAULT_SERVICE = "echo"


def unserved_services(envs):
    """Services that requests of a deployment go to but no server registers.

    envs: role -> list of (where, env) for every container of that role. Requests go to the
    brokers' DEFAULT_SERVICE (plain requests, and ours without SERVICE) and to the clients'
    SERVICE; the servers register SERVICES. Returns one message per unserved service."""
    served = {s.strip() for _, env in envs.get("server", [])
              for s in (env.get("SERVICES", DEFAULT_SERVICE) or "").split(",")}
    wanted = [(where, "DEFAULT_SERVICE", env.get("DEFAULT_SERVICE", DEFAULT_SERVICE))
              for where, env in envs.get("broker", [])]
    wanted += [(where, "SERVICE", env["SERVICE"]) for where, env in envs.get("client", []) if env.get("SERVICE")]
    return [f"{where}: {var}={name!r} is not among the servers' SERVICES {sorted(served)} "
            "(its requests would get `unavailable`)"
            for where, var, name in wanted if name not in served]


def parse_duration(text):
    """'250ms', '10s', '1m' -> seconds (float)."""
    import re
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h)", str(text).strip())
    if not m:
        raise ValueError(f"not a duration: {text!r}")
    return float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[m.group(2)]


# Labels each metric carries (besides the scrape labels job/instance and `le` on buckets).
METRIC_LABELS = {
    "mensageria_build_info": {"service", "version"},
    "mensageria_zmq_peers": {"socket"},
    "mensageria_zmq_socket_events_total": {"socket", "event"},
    "process_resident_memory_bytes": set(),
    "process_open_fds": set(),
    "process_max_fds": set(),
    "process_cpu_seconds_total": set(),
    "mensageria_broker_requests_total": {"service"},
    "mensageria_broker_replies_total": {"service", "status"},
    "mensageria_broker_request_duration_seconds": {"service"},
    "mensageria_broker_queue_depth": {"service"},
    "mensageria_broker_queue_wait_seconds": {"service"},
    "mensageria_broker_workers": {"service", "state"},
    "mensageria_broker_workers_lost_total": {"service"},
    "mensageria_broker_expired_in_queue_total": {"service"},
    "mensageria_broker_inflight_requests": set(),
    "mensageria_broker_dropped_total": {"reason"},
    "mensageria_broker_messages_total": {"socket", "direction"},
    "mensageria_broker_bytes_total": {"socket", "direction"},
    "mensageria_proxy_events_in_total": {"topic"},
    "mensageria_proxy_deliveries_total": {"topic"},
    "mensageria_proxy_subscriptions": {"topic"},
    "mensageria_proxy_bytes_total": {"direction"},
    "mensageria_server_requests_total": {"status"},
    "mensageria_server_request_duration_seconds": set(),
    "mensageria_server_events_published_total": {"topic"},
    "mensageria_server_late_skipped_total": set(),
    "mensageria_server_requeued_total": set(),
    "mensageria_client_requests_total": {"status"},
    "mensageria_client_retries_total": set(),
    "mensageria_client_request_duration_seconds": set(),
    "mensageria_client_events_received_total": {"topic"},
    "mensageria_client_events_lost_total": set(),
    "mensageria_client_event_lag_seconds": set(),
    "up": set(),
}
# Closed value sets, checked on equality and simple alternation matchers (`a|b`).
LABEL_VALUES = {
    "status": set(STATUSES),
    "reason": set(DROP_REASONS),
    "socket": {s for ss in SOCKETS.values() for s in ss},
    "direction": set(DIRECTIONS),
    "state": set(WORKER_STATES),
    "service": set(SERVICES),
    "job": set(SERVICES),
}
SCRAPE_LABELS = {"job", "instance"}


def labels_of(series_name):
    """Allowed labels for a series name (handles histogram suffixes)."""
    for h in HISTOGRAMS:
        if series_name == h + "_bucket":
            return METRIC_LABELS[h] | SCRAPE_LABELS | {"le"}
        if series_name in (h + "_sum", h + "_count"):
            return METRIC_LABELS[h] | SCRAPE_LABELS
    if series_name in METRIC_LABELS:
        return METRIC_LABELS[series_name] | SCRAPE_LABELS
    return None
