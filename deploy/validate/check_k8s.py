#!/usr/bin/env python3
"""Validate the rendered Kubernetes manifests (output of `kustomize build deploy/k8s`).

1. Schema: every object against the Kubernetes OpenAPI schema (kubernetes-validate, strict:
   unknown fields are errors). An object whose kind has no schema is an ERROR, not a warning.
   ServiceMonitor and PrometheusRule (prometheus-operator CRDs) are validated against their own
   CRD schemas instead: ajv validators compiled from the CRD openAPIV3Schema
   (@kubernetes-models/prometheus-operator) plus TypeScript excess-property checking of the same
   package's typings (unknown fields).
2. Cross references: selectors vs pod labels, probe/Service/NetworkPolicy ports vs container
   ports, ConfigMap/Secret references, HPA and PDB targets, StatefulSet headless Services,
   ServiceMonitor selection, per-pod endpoint lists vs StatefulSet replicas, env vars vs the
   contract, the brokers' DEFAULT_SERVICE (and a client's SERVICE) among the servers'
   SERVICES, security context, image pinning, termination grace vs SHUTDOWN_GRACE, CURVE keys
   only as mounted Secret files (never env values from a Secret), Grafana dashboard ConfigMaps.

usage: check_k8s.py BUILT.yaml [--k8s-version 1.30] [--node-tools DIR]
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import contract  # noqa: E402

errors = []


def err(msg):
    errors.append(msg)


def kn(o):
    return f"{o.get('kind')}/{o.get('metadata', {}).get('name')}"


# --------------------------------------------------------------------------------- schema
def schema_check(docs, version):
    import functools
    import kubernetes_validate
    from kubernetes_validate import utils
    from kubernetes_validate.utils import SchemaNotFoundError, ValidationError, InvalidSchemaError

    # validate() re-reads and re-parses the (large) schema files for every object: cache them.
    if not hasattr(utils.schema_contents, "cache_info"):
        utils.schema_contents = functools.lru_cache(maxsize=None)(utils.schema_contents)

    crds = []
    for o in docs:
        if o.get("apiVersion") == "monitoring.coreos.com/v1" and o.get("kind") in CRD_KINDS:
            crds.append(o)
            continue
        try:
            kubernetes_validate.validate(o, version, strict=True)
        except ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            err(f"schema: {kn(o)}: {path}: {e.message}")
        except (SchemaNotFoundError, InvalidSchemaError) as e:
            err(f"schema: {kn(o)}: no schema ({e.message}); unknown kinds are not allowed")
    return crds


# prometheus-operator kinds validated against their CRD (see the module docstring).
CRD_KINDS = ("ServiceMonitor", "PrometheusRule")


def crd_check(objects, node_tools):
    if not objects:
        return
    if not node_tools:
        err("schema: CRD objects present but no --node-tools dir to validate them with")
        return
    here = os.path.dirname(os.path.abspath(__file__))
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(objects, f)
        path = f.name
    try:
        r = subprocess.run(["node", os.path.join(here, "crd_validate.mjs"), path],
                           cwd=node_tools, capture_output=True, text=True)
        if r.returncode != 0:
            err("schema: CRD schema (ajv): " + (r.stdout + r.stderr).strip())
        # Unknown fields: TypeScript excess property checks against the CRD typings.
        ts = [f'import type {{ I{k} }} from '
              f'"@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/{k}";' for k in CRD_KINDS]
        for i, o in enumerate(objects):
            ts.append(f"export const doc{i}: I{o['kind']} = {json.dumps(o)};")
        tsfile = os.path.join(node_tools, "crds.check.ts")
        with open(tsfile, "w") as f:
            f.write("\n".join(ts) + "\n")
        r = subprocess.run([os.path.join(node_tools, "node_modules", ".bin", "tsc"), "--noEmit",
                            "--strict", "--skipLibCheck", "--target", "es2022", "--module", "nodenext",
                            "--moduleResolution", "nodenext", tsfile],
                           cwd=node_tools, capture_output=True, text=True)
        if r.returncode != 0:
            err("schema: CRD typings (unknown fields): " + (r.stdout + r.stderr).strip())
    finally:
        os.unlink(path)


# --------------------------------------------------------------------------------- helpers
def matches(selector, labels):
    """matchLabels/matchExpressions (or a plain Service selector dict) against labels."""
    if selector is None:
        return False
    if "matchLabels" in selector or "matchExpressions" in selector:
        ml = selector.get("matchLabels") or {}
        exprs = selector.get("matchExpressions") or []
    else:
        ml, exprs = selector, []
    if any(labels.get(k) != v for k, v in ml.items()):
        return False
    for e in exprs:
        k, op, vals = e["key"], e["operator"], e.get("values") or []
        if op == "In" and labels.get(k) not in vals:
            return False
        if op == "NotIn" and labels.get(k) in vals:
            return False
        if op == "Exists" and k not in labels:
            return False
        if op == "DoesNotExist" and k in labels:
            return False
    return True


def containers(pod_spec):
    return (pod_spec.get("initContainers") or []) + (pod_spec.get("containers") or [])


def port_exists(pod_spec, port, container=None):
    cs = [container] if container else containers(pod_spec)
    for c in cs:
        for p in c.get("ports") or []:
            if port == p.get("name") or port == p.get("containerPort"):
                return True
    return False


def env_of(c, by_name):
    """Environment of container c as name -> value (ConfigMap values resolved)."""
    env = {}
    for ef in c.get("envFrom") or []:
        ref = ef.get("configMapRef")
        if ref and ("ConfigMap", ref["name"]) in by_name:
            env.update(by_name[("ConfigMap", ref["name"])].get("data") or {})
    for e in c.get("env") or []:
        if "value" in e:
            env[e["name"]] = e["value"]
        elif "valueFrom" in e:
            ref = e["valueFrom"].get("configMapKeyRef")
            cm = by_name.get(("ConfigMap", ref["name"])) if ref else None
            env[e["name"]] = (cm.get("data") or {}).get(ref["key"]) if cm else None
    return env


# --------------------------------------------------------------------------------- cross refs
def crossref(docs):
    by_name = {(o["kind"], o["metadata"]["name"]): o for o in docs}
    namespaces = {o["metadata"]["name"] for o in docs if o["kind"] == "Namespace"}
    workloads = [o for o in docs if o["kind"] in ("Deployment", "StatefulSet", "DaemonSet")]
    services = [o for o in docs if o["kind"] == "Service"]

    for o in docs:
        ns = o["metadata"].get("namespace")
        if o["kind"] not in ("Namespace",) and ns not in namespaces:
            err(f"{kn(o)}: namespace {ns!r} is not defined in the build")

    def pod_labels(w):
        return w["spec"]["template"]["metadata"].get("labels") or {}

    role_envs = {}  # role -> [(where, env)]
    for w in workloads:
        spec = w["spec"]
        tmpl = spec["template"]
        pod = tmpl["spec"]
        role = pod_labels(w).get("app.kubernetes.io/name")
        if not matches(spec["selector"], pod_labels(w)):
            err(f"{kn(w)}: selector {spec['selector']} does not match its pod template labels")
        # other workloads' pods must not be selected too
        for other in workloads:
            if other is not w and matches(spec["selector"], pod_labels(other)):
                err(f"{kn(w)}: selector also matches the pods of {kn(other)}")
        if w["kind"] == "StatefulSet":
            svc = by_name.get(("Service", spec.get("serviceName")))
            if not svc:
                err(f"{kn(w)}: serviceName {spec.get('serviceName')!r} is not a Service")
            elif svc["spec"].get("clusterIP") != "None":
                err(f"{kn(w)}: serviceName {svc['metadata']['name']} is not headless")
            elif not matches(svc["spec"].get("selector"), pod_labels(w)):
                err(f"{kn(w)}: headless Service {svc['metadata']['name']} does not select its pods")
        sa = pod.get("serviceAccountName")
        if sa and ("ServiceAccount", sa) not in by_name:
            err(f"{kn(w)}: serviceAccountName {sa} does not exist")
        if pod.get("automountServiceAccountToken") is not False:
            err(f"{kn(w)}: automountServiceAccountToken must be false")
        psc = pod.get("securityContext") or {}
        if not (psc.get("runAsNonRoot") and psc.get("runAsUser") == 10001
                and (psc.get("seccompProfile") or {}).get("type") == "RuntimeDefault"):
            err(f"{kn(w)}: pod securityContext must set runAsNonRoot, runAsUser 10001, seccomp RuntimeDefault")
        vols = {v["name"] for v in pod.get("volumes") or []}
        for c in containers(pod):
            where = f"{kn(w)} container {c['name']}"
            img = c.get("image", "")
            if ":" not in img.split("/")[-1] and "@" not in img:
                err(f"{where}: image {img!r} has no tag")
            if img.endswith(":latest"):
                err(f"{where}: image {img!r} uses :latest")
            if c.get("imagePullPolicy") != "IfNotPresent":
                err(f"{where}: imagePullPolicy must be IfNotPresent (pinned tag)")
            sc = c.get("securityContext") or {}
            if not (sc.get("allowPrivilegeEscalation") is False and sc.get("readOnlyRootFilesystem") is True
                    and sc.get("runAsNonRoot") is True and "ALL" in ((sc.get("capabilities") or {}).get("drop") or [])):
                err(f"{where}: container securityContext is not restricted")
            res = c.get("resources") or {}
            for kind in ("requests", "limits"):
                for r in ("cpu", "memory"):
                    if r not in (res.get(kind) or {}):
                        err(f"{where}: resources.{kind}.{r} missing")
            for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                p = c.get(probe)
                if not p:
                    err(f"{where}: {probe} missing")
                    continue
                hg = p.get("httpGet")
                if not hg:
                    err(f"{where}: {probe} is not an httpGet probe")
                    continue
                if not port_exists(pod, hg["port"], c):
                    err(f"{where}: {probe} port {hg['port']!r} is not a container port")
                want = "/readyz" if probe == "readinessProbe" else "/healthz"
                if hg.get("path") != want:
                    err(f"{where}: {probe} path {hg.get('path')} (expected {want})")
                if role in contract.HTTP_PORTS:
                    ports = {p.get("name"): p.get("containerPort") for p in c.get("ports") or []}
                    num = ports.get(hg["port"], hg["port"])
                    if num != contract.HTTP_PORTS[role]:
                        err(f"{where}: {probe} targets port {num}, contract HTTP port is {contract.HTTP_PORTS[role]}")
            for vm in c.get("volumeMounts") or []:
                if vm["name"] not in vols:
                    err(f"{where}: volumeMount {vm['name']} has no volume")
            for ef in c.get("envFrom") or []:
                for kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
                    ref = ef.get(key)
                    if ref and not ref.get("optional") and (kind, ref["name"]) not in by_name:
                        err(f"{where}: envFrom {kind} {ref['name']} does not exist")
            for e in c.get("env") or []:
                vf = e.get("valueFrom") or {}
                for kind, key in (("ConfigMap", "configMapKeyRef"), ("Secret", "secretKeyRef")):
                    ref = vf.get(key)
                    if not ref:
                        continue
                    obj = by_name.get((kind, ref["name"]))
                    if obj is None:
                        if not ref.get("optional"):
                            err(f"{where}: env {e['name']}: {kind} {ref['name']} does not exist (and is not optional)")
                    elif ref["key"] not in ((obj.get("data") or {}) | (obj.get("stringData") or {})):
                        if not ref.get("optional"):
                            err(f"{where}: env {e['name']}: key {ref['key']} missing in {kind} {ref['name']}")
                if vf.get("secretKeyRef"):
                    err(f"{where}: env {e['name']} takes a Secret value; mount the Secret as files instead")
            check_curve_files(where, c, pod)
            # contract: env names and values
            if role in contract.SERVICES:
                env = env_of(c, by_name)
                role_envs.setdefault(role, []).append((where, env))
                for name in sorted(set(env) - contract.allowed_env(role)):
                    err(f"{where}: env {name} is not a {role} variable of the contract")
                for name in ("HTTP_ADDR", "OTEL_SERVICE_NAME", "SHUTDOWN_GRACE"):
                    if name not in env:
                        err(f"{where}: env {name} not set")
                if env.get("HTTP_ADDR") and not env["HTTP_ADDR"].endswith(f":{contract.HTTP_PORTS[role]}"):
                    err(f"{where}: HTTP_ADDR {env['HTTP_ADDR']} is not on port {contract.HTTP_PORTS[role]}")
                if env.get("OTEL_SERVICE_NAME") not in (None, role):
                    err(f"{where}: OTEL_SERVICE_NAME {env.get('OTEL_SERVICE_NAME')} != {role}")
                cmd = (c.get("command") or []) + (c.get("args") or [])
                want_cmd = ["client", "run"] if role == "client" else [role]
                if cmd != want_cmd:
                    err(f"{where}: command {cmd} (expected {want_cmd})")
                grace = pod.get("terminationGracePeriodSeconds", 30)
                try:
                    sg = contract.parse_duration(env.get("SHUTDOWN_GRACE", "10s"))
                    if grace <= sg:
                        err(f"{where}: terminationGracePeriodSeconds {grace} <= SHUTDOWN_GRACE {sg}s")
                except ValueError as e:
                    err(f"{where}: {e}")
                check_endpoints(where, role, env, docs, by_name)
    for problem in contract.unserved_services(role_envs):
        err(problem)

    # Services: selectors and target ports
    for s in services:
        sel = s["spec"].get("selector")
        if not sel:
            err(f"{kn(s)}: no selector")
            continue
        selected = [w for w in workloads if matches(sel, pod_labels(w))]
        if not selected:
            err(f"{kn(s)}: selector {sel} matches no workload's pods")
        for p in s["spec"].get("ports") or []:
            tp = p.get("targetPort", p["port"])
            for w in selected:
                if not port_exists(w["spec"]["template"]["spec"], tp):
                    err(f"{kn(s)}: port {p.get('name')} targetPort {tp!r} is not a container port of {kn(w)}")

    for h in (o for o in docs if o["kind"] == "HorizontalPodAutoscaler"):
        ref = h["spec"]["scaleTargetRef"]
        tgt = by_name.get((ref["kind"], ref["name"]))
        if not tgt:
            err(f"{kn(h)}: scaleTargetRef {ref['kind']}/{ref['name']} does not exist")
        else:
            if "replicas" in tgt["spec"]:
                err(f"{kn(h)}: {kn(tgt)} sets spec.replicas, which fights the HPA on every apply")
            for c in containers(tgt["spec"]["template"]["spec"]):
                if "cpu" not in ((c.get("resources") or {}).get("requests") or {}):
                    err(f"{kn(h)}: CPU utilization target needs cpu requests on {kn(tgt)}/{c['name']}")
        if h["spec"].get("minReplicas", 1) > h["spec"]["maxReplicas"]:
            err(f"{kn(h)}: minReplicas > maxReplicas")

    for p in (o for o in docs if o["kind"] == "PodDisruptionBudget"):
        sel = p["spec"]["selector"]
        sel_w = [w for w in workloads if matches(sel, pod_labels(w))]
        if len(sel_w) != 1:
            err(f"{kn(p)}: selector matches {len(sel_w)} workloads (want exactly 1)")
        for w in sel_w:
            reps = w["spec"].get("replicas")
            if reps is None:  # HPA-managed
                hpa = [h for h in docs if h["kind"] == "HorizontalPodAutoscaler"
                       and h["spec"]["scaleTargetRef"]["name"] == w["metadata"]["name"]]
                reps = hpa[0]["spec"].get("minReplicas", 1) if hpa else 1
            if isinstance(p["spec"].get("minAvailable"), int) and p["spec"]["minAvailable"] >= reps:
                err(f"{kn(p)}: minAvailable {p['spec']['minAvailable']} >= replicas {reps}: blocks every eviction")

    for n in (o for o in docs if o["kind"] == "NetworkPolicy"):
        ps = n["spec"]["podSelector"]
        targets = [w for w in workloads if matches(ps, pod_labels(w))] if ps else workloads
        if not targets:
            err(f"{kn(n)}: podSelector matches no workload")
        for rule in n["spec"].get("ingress") or []:
            for port in rule.get("ports") or []:
                for w in targets:
                    if not port_exists(w["spec"]["template"]["spec"], port["port"]):
                        err(f"{kn(n)}: ingress port {port['port']!r} is not a container port of {kn(w)}")
            for peer in rule.get("from") or []:
                if "podSelector" in peer and "namespaceSelector" not in peer:
                    if not any(matches(peer["podSelector"], pod_labels(w)) for w in workloads):
                        err(f"{kn(n)}: ingress from podSelector {peer['podSelector']} matches no workload")
        for rule in n["spec"].get("egress") or []:
            for peer in rule.get("to") or []:
                if "podSelector" in peer and "namespaceSelector" not in peer:
                    dst = [w for w in workloads if matches(peer["podSelector"], pod_labels(w))]
                    if not dst:
                        err(f"{kn(n)}: egress to podSelector {peer['podSelector']} matches no workload")
                    for port in rule.get("ports") or []:
                        for w in dst:
                            if not port_exists(w["spec"]["template"]["spec"], port["port"]):
                                err(f"{kn(n)}: egress port {port['port']!r} is not a container port of {kn(w)}")
    check_flows(docs, workloads)

    for m in (o for o in docs if o["kind"] == "ServiceMonitor"):
        sel = m["spec"]["selector"]
        chosen = [s for s in services if matches(sel, s["metadata"].get("labels") or {})]
        roles = sorted((s["metadata"].get("labels") or {}).get(m["spec"].get("jobLabel", ""), "?") for s in chosen)
        if roles != sorted(contract.SERVICES):
            err(f"{kn(m)}: selects Services of {roles}; want exactly one per service {sorted(contract.SERVICES)}")
        for ep in m["spec"]["endpoints"]:
            for s in chosen:
                if ep.get("port") not in [p.get("name") for p in s["spec"]["ports"]]:
                    err(f"{kn(m)}: endpoint port {ep.get('port')!r} is not a named port of {kn(s)}")
            if ep.get("path", "/metrics") != "/metrics":
                err(f"{kn(m)}: endpoint path {ep.get('path')} != /metrics")


def check_curve_files(where, c, pod):
    """CURVE_* values that are paths must be files of a mounted Secret volume."""
    vols = {v["name"]: v for v in pod.get("volumes") or []}
    for e in c.get("env") or []:
        value = e.get("value") or ""
        if not (e["name"].startswith("CURVE_") and value.startswith("/")):
            continue
        mount = next((m for m in c.get("volumeMounts") or []
                      if value.startswith(m["mountPath"].rstrip("/") + "/")), None)
        secret = (vols.get(mount["name"]) or {}).get("secret") if mount else None
        if not secret:
            err(f"{where}: env {e['name']}={value} is not a file of a mounted Secret volume")
            continue
        if not mount.get("readOnly"):
            err(f"{where}: Secret volume {mount['name']} is not mounted readOnly")
        rel = value[len(mount["mountPath"].rstrip("/")) + 1:]
        items = secret.get("items")
        if items is not None and rel not in [i["path"] for i in items]:
            err(f"{where}: env {e['name']}={value}: the volume {mount['name']} has no item {rel!r}")


def check_dashboards(docs):
    """ConfigMaps for the Grafana sidecar hold valid dashboards (JSON with a uid)."""
    for o in docs:
        if o["kind"] != "ConfigMap" or (o["metadata"].get("labels") or {}).get("grafana_dashboard") != "1":
            continue
        if not o.get("data"):
            err(f"{kn(o)}: grafana_dashboard ConfigMap holds no dashboard")
        for key, text in (o.get("data") or {}).items():
            try:
                d = json.loads(text)
            except ValueError as e:
                err(f"{kn(o)}: {key} is not JSON ({e})")
                continue
            if not key.endswith(".json") or not d.get("uid") or not d.get("panels"):
                err(f"{kn(o)}: {key} is not a dashboard (.json with a uid and panels)")


def check_endpoints(where, role, env, docs, by_name):
    """Connect-side endpoint lists: servers list every broker/proxy pod, clients the Services."""
    if role not in ("server", "client"):
        return
    want_port = {
        # Servers' workers are Majordomo workers on the brokers' frontends (design.md §7).
        "server": {"BROKER_ENDPOINTS": ("broker", 5555), "PROXY_ENDPOINTS": ("proxy", 5557)},
        "client": {"BROKER_ENDPOINTS": ("broker", 5555), "PROXY_ENDPOINTS": ("proxy", 5558)},
    }[role]
    for var, (target, port) in want_port.items():
        value = env.get(var)
        if not value:
            err(f"{where}: {var} not set")
            continue
        eps = [e.strip() for e in value.split(",") if e.strip()]
        hosts = []
        for ep in eps:
            m = re.fullmatch(r"tcp://([a-z0-9.-]+):(\d+)", ep)
            if not m:
                err(f"{where}: {var}: {ep!r} is not tcp://host:port")
                continue
            if int(m.group(2)) != port:
                err(f"{where}: {var}: {ep} should use port {port}")
            hosts.append(m.group(1))
        sts = by_name.get(("StatefulSet", target))
        if not sts:
            err(f"{where}: {var}: no StatefulSet {target}")
            continue
        ns = sts["metadata"]["namespace"]
        headless = sts["spec"]["serviceName"]
        # Namespace-relative names (completed by the pods' resolver search path), or names in
        # the namespace the objects are rendered into.
        def forms(name):
            return {name, f"{name}.{ns}", f"{name}.{ns}.svc", f"{name}.{ns}.svc.cluster.local"}

        if role == "server":
            want = [f"{target}-{i}.{headless}" for i in range(sts["spec"]["replicas"])]
            if len(hosts) != len(want) or any(h not in forms(w) for h, w in zip(hosts, want)):
                err(f"{where}: {var} must list every {target} pod ({want}, in namespace {ns}), got {hosts}")
        else:
            svc = by_name.get(("Service", target))
            if not svc or len(hosts) != 1 or hosts[0] not in forms(target):
                err(f"{where}: {var} must point at the ClusterIP Service {target}, got {hosts}")
            elif port not in [p["port"] for p in svc["spec"]["ports"]]:
                err(f"{where}: {var}: Service {target} does not expose port {port}")


def check_flows(docs, workloads):
    """The NetworkPolicies must allow exactly the architecture's flows between our pods."""
    def role_of(w):
        return w["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/name")

    pols = [n for n in docs if n["kind"] == "NetworkPolicy"]
    wl = {role_of(w): w for w in workloads}

    def port_num(w, port):
        for c in containers(w["spec"]["template"]["spec"]):
            for p in c.get("ports") or []:
                if port in (p.get("name"), p.get("containerPort")):
                    return p["containerPort"]
        return port

    def allowed(direction, src, dst, port):
        """Does some policy selecting (dst for ingress | src for egress) allow src->dst:port?"""
        me, peer = (dst, src) if direction == "ingress" else (src, dst)
        key, peers_key = ("ingress", "from") if direction == "ingress" else ("egress", "to")
        lbl = lambda r: wl[r]["spec"]["template"]["metadata"]["labels"]  # noqa: E731
        applies = [n for n in pols if matches(n["spec"]["podSelector"], lbl(me))
                   and direction.capitalize() in n["spec"].get("policyTypes", [])]
        if not applies:
            return True  # not isolated in that direction
        for n in applies:
            for rule in n["spec"].get(key) or []:
                peers = rule.get(peers_key)
                ok_peer = peers is None or any(
                    "podSelector" in p and "namespaceSelector" not in p and matches(p["podSelector"], lbl(peer))
                    for p in peers)
                ports = rule.get("ports")
                ok_port = ports is None or any(port_num(wl[dst], p["port"]) == port for p in ports)
                if ok_peer and ok_port:
                    return True
        return False

    # The broker's backend (5556) is for plain REP workers; none run here, so it stays closed.
    wanted = {("client", "broker", 5555), ("server", "broker", 5555),
              ("server", "proxy", 5557), ("client", "proxy", 5558)}
    for src in contract.SERVICES:
        for dst in contract.SERVICES:
            if src == dst or src not in wl or dst not in wl:
                continue
            ports = {p.get("containerPort") for c in containers(wl[dst]["spec"]["template"]["spec"])
                     for p in c.get("ports") or []}
            for port in sorted(ports):
                ok = allowed("egress", src, dst, port) and allowed("ingress", src, dst, port)
                if (src, dst, port) in wanted and not ok:
                    err(f"NetworkPolicy: flow {src} -> {dst}:{port} is required but blocked")
                if (src, dst, port) not in wanted and ok:
                    err(f"NetworkPolicy: flow {src} -> {dst}:{port} is not in the architecture but allowed")


def run_checks(docs, version, node_tools, crd=True):
    """All checks on parsed docs; returns the list of problems (used by selftest.py too)."""
    del errors[:]
    crds = schema_check(docs, version)
    if crd:
        crd_check(crds, node_tools)
    crossref(docs)
    check_dashboards(docs)
    return list(errors)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("built")
    ap.add_argument("--k8s-version", default="1.30")
    ap.add_argument("--node-tools")
    a = ap.parse_args()
    with open(a.built) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    if not docs:
        print("check_k8s: no objects in the build", file=sys.stderr)
        return 1
    run_checks(docs, a.k8s_version, a.node_tools)
    kinds = sorted({o["kind"] for o in docs})
    if errors:
        for e in errors:
            print(f"  FAIL {e}", file=sys.stderr)
        print(f"check_k8s: {len(errors)} problem(s) in {len(docs)} objects", file=sys.stderr)
        return 1
    print(f"check_k8s: {len(docs)} objects OK (schema {a.k8s_version} strict + CRD; kinds: {', '.join(kinds)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
