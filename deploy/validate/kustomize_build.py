#!/usr/bin/env python3
"""Last-resort `kustomize build` for a plain base, used by static.sh only when neither
`kustomize` nor `kubectl kustomize` is installed.

Supports exactly what deploy/k8s/base uses: `resources` (files, or directories holding a
kustomization), `namespace` and `images` (newName/newTag/digest). Any other kustomization
field is an error, so the fallback can never silently render something different.

usage: kustomize_build.py DIR > built.yaml
"""
import os
import sys

import yaml

SUPPORTED = {"apiVersion", "kind", "namespace", "resources", "images"}
CLUSTER_SCOPED = {
    "Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "PersistentVolume",
    "StorageClass", "PriorityClass", "ValidatingWebhookConfiguration", "MutatingWebhookConfiguration",
    "APIService", "IngressClass", "RuntimeClass",
}


def load_kustomization(d):
    for name in ("kustomization.yaml", "kustomization.yml", "Kustomization"):
        p = os.path.join(d, name)
        if os.path.exists(p):
            with open(p) as f:
                return yaml.safe_load(f) or {}
    raise SystemExit(f"kustomize_build: no kustomization in {d}")


def containers(pod_spec):
    return (pod_spec.get("initContainers") or []) + (pod_spec.get("containers") or [])


def pod_specs(o):
    spec = o.get("spec") or {}
    if o["kind"] == "Pod":
        yield spec
    elif o["kind"] == "CronJob":
        yield spec["jobTemplate"]["spec"]["template"]["spec"]
    elif "template" in spec:
        yield spec["template"]["spec"]


def set_image(c, images):
    img = c.get("image", "")
    name, _, rest = img.partition("@")
    digest = rest or None
    base, tag = name, None
    if ":" in name.split("/")[-1]:
        base, tag = name.rsplit(":", 1)
    for rule in images:
        if rule["name"] != base:
            continue
        base = rule.get("newName", base)
        if "digest" in rule:
            c["image"] = f"{base}@{rule['digest']}"
            return
        tag = rule.get("newTag", tag)
    c["image"] = base + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")


def build(d):
    k = load_kustomization(d)
    unknown = set(k) - SUPPORTED
    if unknown:
        raise SystemExit(f"kustomize_build: unsupported kustomization fields {sorted(unknown)} in {d}; "
                         "install kustomize or kubectl")
    docs = []
    for r in k.get("resources") or []:
        p = os.path.join(d, r)
        if os.path.isdir(p):
            docs.extend(build(p))
        else:
            with open(p) as f:
                docs.extend(x for x in yaml.safe_load_all(f) if x)
    ns = k.get("namespace")
    for o in docs:
        if ns and o["kind"] not in CLUSTER_SCOPED:
            o.setdefault("metadata", {})["namespace"] = ns
        for ps in pod_specs(o):
            for c in containers(ps):
                set_image(c, k.get("images") or [])
    return docs


def main():
    docs = build(sys.argv[1])
    seen = set()
    for o in docs:
        key = (o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"])
        if key in seen:
            raise SystemExit(f"kustomize_build: duplicate resource {key}")
        seen.add(key)
    yaml.safe_dump_all(docs, sys.stdout, sort_keys=False)


if __name__ == "__main__":
    main()
