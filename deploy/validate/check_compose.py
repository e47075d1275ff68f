#!/usr/bin/env python3
"""Check docker-compose.yml as normalised by the real Compose parser, and prometheus.yml
against it.

usage: check_compose.py COMPOSE.json PROMETHEUS.yml
  COMPOSE.json: `docker compose --profile '*' config --format json` (every profile enabled)

Checks: every `depends_on` with condition service_healthy points at a service that has a
healthcheck; every service has a healthcheck; images pinned to a version tag; the four
mensageria services use only contract env vars, the contract HTTP port, `<role> healthcheck`
as healthcheck, connect endpoints on the right compose service/port, the broker's
DEFAULT_SERVICE (and the client's SERVICE) among the servers' SERVICES, client runs
`client run`, server has 2 replicas; required published ports and named volumes; jaeger only in the
`tracing` profile; Prometheus scrapes each service as job=<service> on its HTTP port, and
loads the alert rules that compose mounts.
"""
import json
import os
import re
import sys

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import contract  # noqa: E402

errors = []


def err(msg):
    errors.append(msg)


def role_of(name, svc):
    cmd = svc.get("command") or []
    return cmd[0] if cmd and cmd[0] in contract.SERVICES else None


def published(svc):
    return {int(p["published"]) for p in svc.get("ports") or [] if p.get("published")}


def main():
    compose_json, prom_path = sys.argv[1], sys.argv[2]
    with open(compose_json) as f:
        cfg = json.load(f)
    services = cfg.get("services") or {}
    role_envs = {}  # role -> [(where, env)]

    for name, svc in sorted(services.items()):
        hc = svc.get("healthcheck")
        if not hc or hc.get("disable") or not hc.get("test"):
            err(f"service {name}: no healthcheck")
        elif not hc.get("start_interval"):
            err(f"service {name}: healthcheck without start_interval (healthy only after `interval`)")
        for dep, spec in (svc.get("depends_on") or {}).items():
            if dep not in services:
                err(f"service {name}: depends_on unknown service {dep}")
                continue
            if spec.get("condition") == "service_healthy":
                dhc = services[dep].get("healthcheck")
                if not dhc or dhc.get("disable") or not dhc.get("test"):
                    err(f"service {name}: depends_on {dep} (service_healthy) but {dep} has no healthcheck")
            elif spec.get("condition") != "service_completed_successfully":
                err(f"service {name}: depends_on {dep} with condition {spec.get('condition')} (want service_healthy)")
            if services[dep].get("profiles") and not svc.get("profiles"):
                err(f"service {name}: depends on {dep}, which only runs in profiles {services[dep]['profiles']}")
        image = svc.get("image", "")
        tag = image.rsplit(":", 1)[1] if ":" in image.split("/")[-1] else ""
        if not tag or tag == "latest":
            err(f"service {name}: image {image!r} is not pinned to a version tag")

        role = role_of(name, svc)
        if role is None:
            continue
        if role != name:
            err(f"service {name}: runs {role}; service names must equal the role (DNS names, job names)")
        env = svc.get("environment") or {}
        role_envs.setdefault(role, []).append((f"service {name}", env))
        for var in sorted(set(env) - contract.allowed_env(role)):
            err(f"service {name}: env {var} is not a {role} variable of the contract")
        port = contract.HTTP_PORTS[role]
        if not str(env.get("HTTP_ADDR", "")).endswith(f":{port}"):
            err(f"service {name}: HTTP_ADDR {env.get('HTTP_ADDR')!r} is not on contract port {port}")
        if env.get("OTEL_SERVICE_NAME") != role:
            err(f"service {name}: OTEL_SERVICE_NAME should be {role}")
        if "OTEL_EXPORTER_OTLP_ENDPOINT" not in env:
            err(f"service {name}: OTEL_EXPORTER_OTLP_ENDPOINT is not passed through")
        nofile = (svc.get("ulimits") or {}).get("nofile") or {}
        if min(nofile.get("soft", 0), nofile.get("hard", 0)) < 4096:
            err(f"service {name}: ulimits.nofile {nofile or 'unset'} (every ZeroMQ peer is a descriptor; want >= 4096)")
        want_test = ["CMD", role, "healthcheck"]
        if (svc.get("healthcheck") or {}).get("test") != want_test:
            err(f"service {name}: healthcheck test should be {want_test}")
        want_cmd = ["client", "run"] if role == "client" else [role]
        if svc.get("command") != want_cmd:
            err(f"service {name}: command {svc.get('command')} (expected {want_cmd})")
        if not svc.get("build") and "mensageria" not in image:
            err(f"service {name}: neither builds nor uses the mensageria image")
        eps = {"server": {"BROKER_ENDPOINTS": "tcp://broker:5555", "PROXY_ENDPOINTS": "tcp://proxy:5557"},
               "client": {"BROKER_ENDPOINTS": "tcp://broker:5555", "PROXY_ENDPOINTS": "tcp://proxy:5558"}}
        for var, want in eps.get(role, {}).items():
            if env.get(var) != want:
                err(f"service {name}: {var}={env.get(var)!r} (expected {want})")
            for dep in ("broker", "proxy"):
                if dep not in (svc.get("depends_on") or {}):
                    err(f"service {name}: should depend on {dep} (service_healthy)")
        if role == "server" and ((svc.get("deploy") or {}).get("replicas") or 1) != 2:
            err("service server: deploy.replicas should be 2")
        if role == "server" and published(svc):
            err("service server: publishes ports, which breaks replicas > 1")

    for problem in contract.unserved_services(role_envs):
        err(problem)

    want_ports = {"grafana": 3000, "prometheus": 9090, "broker": 5555, "proxy": 5558}
    for name, port in want_ports.items():
        if name in services and port not in published(services[name]):
            err(f"service {name}: port {port} is not published")
    for name in ("broker", "proxy", "server", "client", "prometheus", "grafana"):
        if name not in services:
            err(f"service {name} missing")
    vols = cfg.get("volumes") or {}
    for name, target in (("prometheus", "/prometheus"), ("grafana", "/var/lib/grafana")):
        mounts = [v for v in (services.get(name) or {}).get("volumes") or [] if v.get("target") == target]
        if not mounts or mounts[0].get("type") != "volume" or mounts[0].get("source") not in vols:
            err(f"service {name}: {target} is not a named volume")
    if "jaeger" in services:
        if services["jaeger"].get("profiles") != ["tracing"]:
            err("service jaeger: should only run in the `tracing` profile")
    else:
        err("service jaeger (profile tracing) missing: run config with --profile '*'")
    graf_env = (services.get("grafana") or {}).get("environment") or {}
    if str(graf_env.get("GF_AUTH_ANONYMOUS_ENABLED")).lower() != "true" or graf_env.get("GF_AUTH_ANONYMOUS_ORG_ROLE") != "Viewer":
        err("service grafana: anonymous Viewer access not enabled")
    graf_targets = {v.get("target") for v in (services.get("grafana") or {}).get("volumes") or []}
    if "/etc/grafana/provisioning" not in graf_targets:
        err("service grafana: ./grafana/provisioning not mounted on /etc/grafana/provisioning")

    # prometheus.yml vs compose
    with open(prom_path) as f:
        prom = yaml.safe_load(f)
    prom_mounts = {v.get("target"): v.get("source") for v in (services.get("prometheus") or {}).get("volumes") or []}
    cfg_target = next((t for t, s in prom_mounts.items() if s and s.endswith("prometheus.yml")), None)
    if not cfg_target:
        err("service prometheus: prometheus.yml not mounted")
    else:
        for rf in prom.get("rule_files") or []:
            path = rf if rf.startswith("/") else os.path.join(os.path.dirname(cfg_target), rf)
            if path not in prom_mounts:
                err(f"prometheus.yml: rule file {rf} ({path}) is not mounted into the prometheus container")
    jobs = {j["job_name"]: j for j in prom.get("scrape_configs") or []}
    for role in contract.SERVICES:
        j = jobs.get(role)
        if not j:
            err(f"prometheus.yml: no job named {role} (dashboards and alerts use job=<service>)")
            continue
        port = contract.HTTP_PORTS[role]
        targets = [t for sc in j.get("static_configs") or [] for t in sc.get("targets") or []]
        for sd in j.get("dns_sd_configs") or []:
            targets += [f"{n}:{sd.get('port')}" for n in sd.get("names") or []]
            if sd.get("type", "SRV") != "A":
                err(f"prometheus.yml: job {role}: dns_sd type should be A for compose DNS")
        if not targets:
            err(f"prometheus.yml: job {role} has no targets")
        for t in targets:
            m = re.fullmatch(r"([a-z0-9_.-]+):(\d+)", t)
            if not m or m.group(1) not in services or int(m.group(2)) != port:
                err(f"prometheus.yml: job {role}: target {t} is not a compose service on port {port}")
        replicas = ((services.get(role) or {}).get("deploy") or {}).get("replicas") or 1
        if replicas > 1 and not j.get("dns_sd_configs"):
            err(f"prometheus.yml: job {role}: {replicas} replicas need dns_sd_configs (one target per replica)")
        if j.get("metrics_path", "/metrics") != "/metrics":
            err(f"prometheus.yml: job {role}: metrics_path should be /metrics")

    if errors:
        for e in errors:
            print(f"  FAIL {e}", file=sys.stderr)
        print(f"check_compose: {len(errors)} problem(s)", file=sys.stderr)
        return 1
    print(f"check_compose: {len(services)} services OK (healthchecks, depends_on, contract env, ports, volumes, scrape jobs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
