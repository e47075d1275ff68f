#!/usr/bin/env python3
"""Structural checks of the Grafana provisioning + dashboards and of the alert rules.

usage: check_observability.py REPO_ROOT [--compose-json FILE]

Grafana: provisioning files parse; every dashboard JSON is valid, has a uid, unique panel ids,
gridPos inside 24 columns with no overlaps, every panel/target/variable datasource uid is a
provisioned one, every target has an expr and a unique refId, every $var used is a defined
template variable (or a Grafana builtin $__*), range selectors use $__rate_interval/$__range,
and the overview dashboard covers what it must (rates, errors, timeouts, latency at client,
broker and server, in-flight, peers, events, fan-out, loss, lag, CPU, memory).
PromQL in dashboards and alert rules: every metric name and label is in the contract
(contract.py), and closed label values (status, reason, socket, direction, ...) are valid.
Alert rules: unique names, `for`, severity, summary/description; alerts_test.yml shows each
alert both firing and not firing.
"""
import argparse
import glob
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


# ----------------------------------------------------------------------------- PromQL lint
STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
SERIES = re.compile(r'(?<![\w:$])([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{([^}]*)\})?')
MATCHER = re.compile(r'([a-zA-Z_]\w*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')
WORD_ALT = re.compile(r'^[a-z0-9_.]+(\|[a-z0-9_.]+)*$')
PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset", "and", "or",
    "unless", "inf", "nan", "le",
}


def lint_promql(where, expr):
    spans = [m.span() for m in STRING.finditer(expr)]
    in_string = lambda i: any(a <= i < b for a, b in spans)  # noqa: E731
    names = []
    for m in SERIES.finditer(expr):
        if in_string(m.start()):
            continue
        name = m.group(1)
        after = expr[m.end(1):].lstrip()
        if after.startswith("(") or name in PROMQL_WORDS:
            continue  # function call or keyword
        # label names inside by (...)/without (...)/on (...) lists
        before = expr[:m.start()]
        if re.search(r'\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*$', before):
            continue
        if not (name.startswith("mensageria_") or name.startswith("process_") or name == "up"):
            if m.group(2) or re.fullmatch(r"[a-z_:]+_(total|seconds|bytes|bucket|count|sum|info)", name):
                err(f"{where}: unknown metric {name}")
            continue
        allowed = contract.labels_of(name)
        if allowed is None:
            err(f"{where}: metric {name} is not in the contract")
            continue
        names.append(name)
        for lm in MATCHER.finditer(m.group(3) or ""):
            label, op, value = lm.groups()
            if label not in allowed:
                err(f"{where}: {name} has no label {label!r} (has {sorted(allowed)})")
                continue
            if "$" in value or label not in contract.LABEL_VALUES:
                continue
            valid = contract.LABEL_VALUES[label]
            if op in ("=", "!="):
                vals = [value]
            elif WORD_ALT.match(value):
                vals = value.split("|")
            else:
                continue
            for v in vals:
                if v not in valid:
                    err(f"{where}: {name}{{{label}{op}\"{value}\"}}: {v!r} is not a known {label} ({sorted(valid)})")
    return names


# ----------------------------------------------------------------------------- Grafana
VAR = re.compile(r'\$(\w+)|\$\{(\w+)(?::[\w]+)?\}|\[\[(\w+)\]\]')


def strings_in(obj):
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from strings_in(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from strings_in(v)


def provisioned_datasources(root):
    uids = {}
    files = sorted(glob.glob(os.path.join(root, "grafana/provisioning/datasources/*.y*ml")))
    if not files:
        err("grafana: no datasource provisioning file")
    for p in files:
        with open(p) as f:
            doc = yaml.safe_load(f) or {}
        if doc.get("apiVersion") != 1:
            err(f"{p}: apiVersion must be 1")
        for ds in doc.get("datasources") or []:
            for k in ("name", "type", "uid", "url"):
                if not ds.get(k):
                    err(f"{p}: datasource without {k}")
            uids[ds.get("uid")] = ds.get("type")
    return uids


def dashboard_providers(root):
    paths = []
    files = sorted(glob.glob(os.path.join(root, "grafana/provisioning/dashboards/*.y*ml")))
    if not files:
        err("grafana: no dashboard provider file")
    for p in files:
        with open(p) as f:
            doc = yaml.safe_load(f) or {}
        if doc.get("apiVersion") != 1:
            err(f"{p}: apiVersion must be 1")
        for prov in doc.get("providers") or []:
            if prov.get("type", "file") != "file" or not (prov.get("options") or {}).get("path"):
                err(f"{p}: provider {prov.get('name')} is not a file provider with options.path")
            else:
                paths.append(prov["options"]["path"])
    return paths


def check_datasource_ref(where, ds, uids, var_names):
    if ds is None:
        return
    if isinstance(ds, str):
        err(f"{where}: datasource given by name {ds!r}; use {{type, uid}}")
        return
    uid = ds.get("uid")
    if uid in ("-- Grafana --", "grafana"):
        return
    m = VAR.fullmatch(uid or "")
    if m:
        if (m.group(1) or m.group(2) or m.group(3)) not in var_names:
            err(f"{where}: datasource variable {uid} not defined")
        return
    if uid not in uids:
        err(f"{where}: datasource uid {uid!r} is not provisioned ({sorted(uids)})")
    elif ds.get("type") and ds["type"] != uids[uid]:
        err(f"{where}: datasource type {ds['type']} != provisioned {uids[uid]}")


def check_dashboard(path, uids):
    where0 = os.path.relpath(path)
    try:
        with open(path) as f:
            dash = json.load(f)
    except ValueError as e:
        err(f"{where0}: invalid JSON: {e}")
        return []
    for k in ("uid", "title", "panels", "schemaVersion"):
        if k not in dash:
            err(f"{where0}: missing {k}")
    variables = (dash.get("templating") or {}).get("list") or []
    var_names = {v.get("name") for v in variables}
    for v in variables:
        check_datasource_ref(f"{where0} variable {v.get('name')}", v.get("datasource"), uids, var_names)
        q = v.get("query")
        qs = q.get("query") if isinstance(q, dict) else q
        if v.get("type") == "query" and not qs:
            err(f"{where0}: variable {v.get('name')} has no query")
        if qs:
            inner = re.sub(r"^label_values\((.*),\s*\w+\)$", r"\1", qs.strip())
            inner = re.sub(r"^label_values\((\w+)\)$", r"\1", inner)
            lint_promql(f"{where0} variable {v.get('name')}", inner)

    ids, boxes, exprs = {}, [], []
    all_panels = []
    for p in dash.get("panels") or []:
        all_panels.append((p, True))
        for sub in p.get("panels") or []:
            all_panels.append((sub, False))  # inside a collapsed row: own layout
    for p, top in all_panels:
        pid = p.get("id")
        where = f"{where0} panel {pid} {p.get('title')!r}"
        if not isinstance(pid, int):
            err(f"{where}: id must be an integer")
        elif pid in ids:
            err(f"{where}: duplicate id (also {ids[pid]!r})")
        else:
            ids[pid] = p.get("title")
        if not p.get("title"):
            err(f"{where}: no title")
        g = p.get("gridPos") or {}
        if not all(isinstance(g.get(k), int) for k in ("x", "y", "w", "h")):
            err(f"{where}: gridPos needs integer x, y, w, h")
        elif g["x"] < 0 or g["y"] < 0 or g["w"] < 1 or g["h"] < 1 or g["x"] + g["w"] > 24:
            err(f"{where}: gridPos {g} outside the 24-column grid")
        elif top:
            boxes.append((g, where))
        if p.get("type") == "row":
            continue
        check_datasource_ref(where, p.get("datasource"), uids, var_names)
        targets = p.get("targets") or []
        if not targets:
            err(f"{where}: no targets")
        refs = set()
        for t in targets:
            tw = f"{where} target {t.get('refId')}"
            if t.get("refId") in refs or not t.get("refId"):
                err(f"{tw}: missing or duplicate refId")
            refs.add(t.get("refId"))
            check_datasource_ref(tw, t.get("datasource") or p.get("datasource"), uids, var_names)
            expr = (t.get("expr") or "").strip()
            if not expr:
                err(f"{tw}: no expr")
                continue
            exprs.append(expr)
            lint_promql(tw, expr)
            for rng in re.findall(r"\[([^\]]+)\]", expr):
                if rng not in ("$__rate_interval", "$__range", "$__interval"):
                    err(f"{tw}: range [{rng}] should be [$__rate_interval] (or $__range)")
    for i, (a, wa) in enumerate(boxes):
        for b, wb in boxes[i + 1:]:
            if a["x"] < b["x"] + b["w"] and b["x"] < a["x"] + a["w"] and a["y"] < b["y"] + b["h"] and b["y"] < a["y"] + a["h"]:
                err(f"{wa} overlaps {wb}")
    used = set()
    for s in strings_in({"panels": dash.get("panels"), "templating": dash.get("templating"),
                         "title": dash.get("title")}):
        for m in VAR.finditer(s):
            used.add(m.group(1) or m.group(2) or m.group(3))
    for name in sorted(used):
        if not name.startswith("__") and name not in var_names:
            err(f"{where0}: ${name} is used but not a template variable ({sorted(var_names)})")
    for name in sorted(var_names - used):
        err(f"{where0}: template variable ${name} is defined but never used")
    return exprs


REQUIRED_IN_OVERVIEW = [
    ("client request rate", r"rate\(mensageria_client_requests_total"),
    ("broker request rate", r"rate\(mensageria_broker_requests_total"),
    ("server request rate", r"rate\(mensageria_server_requests_total"),
    ("error ratio", r'mensageria_broker_replies_total\{status=~"error'),
    ("timeout ratio", r'mensageria_broker_replies_total\{status="timeout"'),
    ("client latency p50", r"histogram_quantile\(0\.5, [^\n]*mensageria_client_request_duration_seconds_bucket"),
    ("client latency p95", r"histogram_quantile\(0\.95, [^\n]*mensageria_client_request_duration_seconds_bucket"),
    ("client latency p99", r"histogram_quantile\(0\.99, [^\n]*mensageria_client_request_duration_seconds_bucket"),
    ("broker latency p99", r"histogram_quantile\(0\.99, [^\n]*mensageria_broker_request_duration_seconds_bucket"),
    ("server latency p99", r"histogram_quantile\(0\.99, [^\n]*mensageria_server_request_duration_seconds_bucket"),
    ("in-flight", r"mensageria_broker_inflight_requests"),
    ("connected clients", r'mensageria_zmq_peers\{socket="frontend"'),
    ("connected workers", r'mensageria_zmq_peers\{socket="backend"'),
    ("connected publishers", r'mensageria_zmq_peers\{socket="xsub"'),
    ("connected subscribers", r'mensageria_zmq_peers\{socket="xpub"'),
    ("events in", r"rate\(mensageria_proxy_events_in_total"),
    ("deliveries", r"rate\(mensageria_proxy_deliveries_total"),
    ("fan-out", r"mensageria_proxy_deliveries_total[^\n]*\n/\n[^\n]*mensageria_proxy_events_in_total"),
    ("events lost", r"mensageria_client_events_lost_total"),
    ("event lag p99", r"histogram_quantile\(0\.99, [^\n]*mensageria_client_event_lag_seconds_bucket"),
    ("cpu", r"rate\(process_cpu_seconds_total"),
    ("memory", r"process_resident_memory_bytes"),
]


# ----------------------------------------------------------------------------- alert rules
def check_rules(rules_path, tests_path):
    with open(rules_path) as f:
        doc = yaml.safe_load(f)
    names = []
    for g in doc.get("groups") or []:
        for r in g.get("rules") or []:
            if "alert" not in r:
                lint_promql(f"{rules_path} record {r.get('record')}", r.get("expr", ""))
                continue
            name = r["alert"]
            where = f"{os.path.relpath(rules_path)} alert {name}"
            if name in names:
                err(f"{where}: duplicate alert name")
            names.append(name)
            if not r.get("for"):
                err(f"{where}: no `for:` duration")
            if (r.get("labels") or {}).get("severity") not in ("critical", "warning", "info"):
                err(f"{where}: severity label must be critical, warning or info")
            for a in ("summary", "description"):
                if not (r.get("annotations") or {}).get(a):
                    err(f"{where}: no {a} annotation")
            lint_promql(where, r["expr"])
    with open(tests_path) as f:
        tests = yaml.safe_load(f)
    fires, quiet = set(), set()
    for t in tests.get("tests") or []:
        for a in t.get("alert_rule_test") or []:
            (fires if a.get("exp_alerts") else quiet).add(a.get("alertname"))
    for name in names:
        if name not in fires:
            err(f"{os.path.relpath(tests_path)}: no test where {name} fires")
        if name not in quiet:
            err(f"{os.path.relpath(tests_path)}: no test where {name} stays quiet")
    for name in sorted((fires | quiet) - set(names)):
        err(f"{os.path.relpath(tests_path)}: tests unknown alert {name}")
    return names


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("root")
    ap.add_argument("--compose-json")
    a = ap.parse_args()
    root = a.root
    uids = provisioned_datasources(root)
    provider_paths = dashboard_providers(root)
    dashboards = sorted(glob.glob(os.path.join(root, "grafana/dashboards/*.json")))
    if not dashboards:
        err("grafana: no dashboards")
    n_exprs = 0
    for d in dashboards:
        exprs = check_dashboard(d, uids)
        n_exprs += len(exprs)
        if os.path.basename(d) == "mensageria-overview.json":
            text = "\n".join(exprs)
            for what, pattern in REQUIRED_IN_OVERVIEW:
                if not re.search(pattern, text):
                    err(f"{os.path.relpath(d)}: nothing shows {what} (/{pattern}/)")
    if a.compose_json:
        with open(a.compose_json) as f:
            graf = json.load(f)["services"].get("grafana") or {}
        mounts = {v.get("target"): v.get("source") for v in graf.get("volumes") or []}
        for pp in provider_paths:
            src = mounts.get(pp)
            if not src or os.path.realpath(src) != os.path.realpath(os.path.join(root, "grafana/dashboards")):
                err(f"grafana: provider path {pp} is not where compose mounts ./grafana/dashboards")
        if os.path.realpath(mounts.get("/etc/grafana/provisioning") or "") != os.path.realpath(os.path.join(root, "grafana/provisioning")):
            err("grafana: ./grafana/provisioning is not mounted on /etc/grafana/provisioning")
    alerts = check_rules(os.path.join(root, "deploy/prometheus/alerts.yml"),
                         os.path.join(root, "deploy/prometheus/alerts_test.yml"))
    if errors:
        for e in errors:
            print(f"  FAIL {e}", file=sys.stderr)
        print(f"check_observability: {len(errors)} problem(s)", file=sys.stderr)
        return 1
    print(f"check_observability: {len(dashboards)} dashboard(s), {n_exprs} queries, {len(alerts)} alerts OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
