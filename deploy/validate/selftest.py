#!/usr/bin/env python3
"""Self-test of the validators: each mutation below breaks one rule, and the matching checker
(check_k8s.py, check_compose.py, check_observability.py) must reject it. Guards against a
checker silently going blind after an edit.

usage: selftest.py --node-tools DIR --compose DOCKER_COMPOSE_BINARY --k8s RENDERED.yaml
  (RENDERED.yaml: the overlay using every component, deploy/k8s/overlays/example, rendered)
"""
import argparse
import copy
import json
import os
import shutil
import subprocess
import sys
import tempfile

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
import check_k8s  # noqa: E402


def find(docs, kind, name):
    return next(o for o in docs if o["kind"] == kind and o["metadata"]["name"] == name)


def pod(docs, kind, name):
    return find(docs, kind, name)["spec"]["template"]["spec"]


K8S = {
    "Service targetPort not a container port":
        lambda d: find(d, "Service", "broker")["spec"]["ports"][0].__setitem__("targetPort", "frontdoor"),
    "server BROKER_ENDPOINTS misses a broker":
        lambda d: find(d, "ConfigMap", "mensageria-server")["data"].__setitem__(
            "BROKER_ENDPOINTS", "tcp://broker-0.broker-headless:5555,tcp://broker-1.broker-headless:5555"),
    "server BROKER_ENDPOINTS on the brokers' backend port":
        lambda d: find(d, "ConfigMap", "mensageria-server")["data"].__setitem__(
            "BROKER_ENDPOINTS", ",".join(f"tcp://broker-{i}.broker-headless:5556" for i in range(3))),
    "server BROKER_ENDPOINTS in another namespace":
        lambda d: find(d, "ConfigMap", "mensageria-server")["data"].__setitem__(
            "BROKER_ENDPOINTS", ",".join(f"tcp://broker-{i}.broker-headless.mensageria.svc.cluster.local:5555"
                                         for i in range(3))),
    "CURVE key from a Secret env value":
        lambda d: pod(d, "Deployment", "client")["containers"][0]["env"].append(
            {"name": "CURVE_CLIENT_SECRET",
             "valueFrom": {"secretKeyRef": {"name": "mensageria-curve", "key": "curve_client_secret"}}}),
    "CURVE key file not in the mounted Secret":
        lambda d: next(v for v in pod(d, "StatefulSet", "broker")["volumes"] if v["name"] == "curve")
        ["secret"]["items"].pop(),
    "PrometheusRule unknown field (CRD typings)":
        lambda d: find(d, "PrometheusRule", "mensageria")["spec"]["groups"][0].__setitem__("rulez", []),
    "PrometheusRule bad interval (CRD schema)":
        lambda d: find(d, "PrometheusRule", "mensageria")["spec"]["groups"][0].__setitem__("interval", "1 minute"),
    "dashboard ConfigMap not JSON":
        lambda d: find(d, "ConfigMap", "mensageria-dashboards")["data"].__setitem__("mensageria-overview.json", "{"),
    "NetworkPolicy blocks server->proxy":
        lambda d: find(d, "NetworkPolicy", "server")["spec"]["egress"].pop(),
    "NetworkPolicy allows client->broker backend": lambda d: (
        find(d, "NetworkPolicy", "broker")["spec"]["ingress"][0]["ports"].append({"protocol": "TCP", "port": "backend"}),
        find(d, "NetworkPolicy", "client")["spec"]["egress"][0]["ports"].append({"protocol": "TCP", "port": 5556})),
    "NetworkPolicy allows server->broker backend": lambda d: (
        find(d, "NetworkPolicy", "broker")["spec"]["ingress"][1]["ports"].append({"protocol": "TCP", "port": "backend"}),
        find(d, "NetworkPolicy", "server")["spec"]["egress"][0]["ports"].append({"protocol": "TCP", "port": 5556})),
    "broker DEFAULT_SERVICE no server registers":
        lambda d: find(d, "ConfigMap", "mensageria-broker")["data"].__setitem__("DEFAULT_SERVICE", "work"),
    "unknown kind (no schema)":
        lambda d: d.append({"apiVersion": "example.com/v1", "kind": "Widget",
                            "metadata": {"name": "w", "namespace": "mensageria"}}),
    "unknown field (strict schema)":
        lambda d: pod(d, "Deployment", "server")["containers"][0].__setitem__("livenessprobe", {}),
    "ServiceMonitor unknown field (CRD typings)":
        lambda d: find(d, "ServiceMonitor", "mensageria")["spec"]["endpoints"][0].__setitem__("intervl", "1s"),
    "ServiceMonitor bad interval (CRD schema)":
        lambda d: find(d, "ServiceMonitor", "mensageria")["spec"]["endpoints"][0].__setitem__("interval", "15 s"),
    "probe on a missing port":
        lambda d: pod(d, "StatefulSet", "proxy")["containers"][0]["readinessProbe"]["httpGet"].__setitem__("port", "metrics"),
    "missing ConfigMap":
        lambda d: d.remove(find(d, "ConfigMap", "mensageria-client")),
    "HPA target missing":
        lambda d: find(d, "HorizontalPodAutoscaler", "server")["spec"]["scaleTargetRef"].__setitem__("name", "servers"),
    "PDB selects nothing":
        lambda d: find(d, "PodDisruptionBudget", "proxy")["spec"]["selector"]["matchLabels"].__setitem__(
            "app.kubernetes.io/name", "proxies"),
    "grace below SHUTDOWN_GRACE":
        lambda d: pod(d, "StatefulSet", "broker").__setitem__("terminationGracePeriodSeconds", 5),
    "env var outside the contract":
        lambda d: find(d, "ConfigMap", "mensageria-broker")["data"].__setitem__("FRONTEND_ADDR", "x"),
    "image :latest":
        lambda d: pod(d, "Deployment", "client")["containers"][0].__setitem__("image", "mensageria:latest"),
    "runs as root":
        lambda d: pod(d, "Deployment", "client")["securityContext"].__setitem__("runAsUser", 0),
}

COMPOSE = {
    "service_healthy dependency without healthcheck":
        lambda c: c["services"]["broker"].pop("healthcheck"),
    "unpinned image":
        lambda c: c["services"]["grafana"].__setitem__("image", "grafana/grafana:latest"),
    "env var outside the contract":
        lambda c: c["services"]["client"]["environment"].__setitem__("BROKER_URL", "x"),
    "server without 2 replicas":
        lambda c: c["services"]["server"]["deploy"].__setitem__("replicas", 1),
    "healthcheck without start_interval":
        lambda c: c["services"]["proxy"]["healthcheck"].pop("start_interval"),
    "broker with the default descriptor limit":
        lambda c: c["services"]["broker"].pop("ulimits"),
    "client talks to the backend port":
        lambda c: c["services"]["client"]["environment"].__setitem__("BROKER_ENDPOINTS", "tcp://broker:5556"),
    "server registers on the backend port":
        lambda c: c["services"]["server"]["environment"].__setitem__("BROKER_ENDPOINTS", "tcp://broker:5556"),
    "client calls a service no server registers":
        lambda c: c["services"]["client"]["environment"].__setitem__("SERVICE", "work"),
}


def dash_target(d, i):
    return [p for p in d["panels"] if p["type"] != "row"][i]["targets"][0]


OBS_DASH = {
    "unknown label value": lambda d: dash_target(d, 0).__setitem__(
        "expr", 'sum(mensageria_zmq_peers{socket="frontnd"})'),
    "unknown label": lambda d: dash_target(d, 0).__setitem__("expr", 'sum(mensageria_zmq_peers{sockt="frontend"})'),
    "unknown metric": lambda d: dash_target(d, 0).__setitem__("expr", "sum(mensageria_zmq_peer)"),
    "undefined variable": lambda d: dash_target(d, 0).__setitem__(
        "expr", 'sum(mensageria_zmq_peers{instance=~"$pod"})'),
    "unprovisioned datasource": lambda d: dash_target(d, 0).__setitem__("datasource", {"type": "prometheus", "uid": "x"}),
    "overlapping panels": lambda d: d["panels"][2]["gridPos"].__setitem__("x", d["panels"][1]["gridPos"]["x"]),
    "duplicate panel id": lambda d: d["panels"][2].__setitem__("id", d["panels"][1]["id"]),
    "fixed rate window": lambda d: dash_target(d, 0).__setitem__(
        "expr", "sum(rate(mensageria_client_requests_total[5m]))"),
}
OBS_RULES = {
    "alert without a firing test": lambda tests: [
        t.__setitem__("alert_rule_test", [a for a in t.get("alert_rule_test", []) if a["alertname"] != "MensageriaEventsLost"])
        for t in tests["tests"]],
}


def rejects(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    return r.returncode != 0, (r.stdout + r.stderr).strip()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--node-tools", required=True)
    ap.add_argument("--compose", required=True)
    ap.add_argument("--k8s", required=True)
    a = ap.parse_args()
    py = sys.executable
    missed = []
    total = 0
    with tempfile.TemporaryDirectory() as tmp:
        # --- k8s
        # In-process (the schema cache makes this fast); the node/tsc CRD step only for the
        # CRD mutations.
        with open(a.k8s) as f:
            base = [d for d in yaml.safe_load_all(f) if d]
        if check_k8s.run_checks(copy.deepcopy(base), "1.30", a.node_tools):
            missed.append("k8s: the unmutated render does not pass")
        for name, mutate in K8S.items():
            docs = copy.deepcopy(base)
            mutate(docs)
            total += 1
            if not check_k8s.run_checks(docs, "1.30", a.node_tools, crd=name.startswith(("ServiceMonitor", "PrometheusRule"))):
                missed.append(f"k8s: {name}")
        # --- compose
        cfg = json.loads(subprocess.run([a.compose, "--profile", "*", "config", "--format", "json"], cwd=ROOT,
                                        check=True, capture_output=True, text=True).stdout)
        path = os.path.join(tmp, "compose.json")
        for name, mutate in COMPOSE.items():
            c = copy.deepcopy(cfg)
            mutate(c)
            with open(path, "w") as f:
                json.dump(c, f)
            total += 1
            ok, _ = rejects([py, os.path.join(HERE, "check_compose.py"), path,
                             os.path.join(ROOT, "deploy", "prometheus", "prometheus.yml")])
            if not ok:
                missed.append(f"compose: {name}")
        # --- grafana + rules (on a copy of the tree)
        root = os.path.join(tmp, "repo")
        shutil.copytree(os.path.join(ROOT, "grafana"), os.path.join(root, "grafana"))
        shutil.copytree(os.path.join(ROOT, "deploy", "prometheus"), os.path.join(root, "deploy", "prometheus"))
        dpath = os.path.join(root, "grafana", "dashboards", "mensageria-overview.json")
        tpath = os.path.join(root, "deploy", "prometheus", "alerts_test.yml")
        with open(dpath) as f:
            dash = json.load(f)
        with open(tpath) as f:
            tests = yaml.safe_load(f)
        cmd = [py, os.path.join(HERE, "check_observability.py"), root]
        for name, mutate in OBS_DASH.items():
            d = copy.deepcopy(dash)
            mutate(d)
            with open(dpath, "w") as f:
                json.dump(d, f)
            total += 1
            if not rejects(cmd)[0]:
                missed.append(f"grafana: {name}")
        with open(dpath, "w") as f:
            json.dump(dash, f)
        for name, mutate in OBS_RULES.items():
            t = copy.deepcopy(tests)
            mutate(t)
            with open(tpath, "w") as f:
                yaml.safe_dump(t, f)
            total += 1
            if not rejects(cmd)[0]:
                missed.append(f"rules: {name}")
    for m in missed:
        print(f"  NOT DETECTED: {m}", file=sys.stderr)
    print(f"selftest: {total - len(missed)} of {total} mutations rejected")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
