#!/usr/bin/env python3
"""Run every Grafana dashboard query against a Prometheus and fail on errors or empty results.

usage: dashboard_queries.py PROM_URL [options]
       dashboard_queries.py --dry-run            (no Prometheus needed)

Every panel target expr of the dashboards (default: grafana/dashboards/*.json) has its
template variables substituted the way Grafana would:
  $__rate_interval -> --rate-interval (1m)     $__interval -> --interval (15s)
  $__range -> --range (1h)                     $__range_s / $__range_ms, $__interval_ms
  label=~"$var" / label="$var"  -> label=~".*"  (All; or the regex given by --var var=REGEX)
and is run as an instant query (/api/v1/query). A query fails when Prometheus answers an
error (e.g. HTTP 400 parse error) or, unless --syntax-only, when it returns no series.

  --syntax-only   empty results are fine (use against an empty Prometheus to catch parse errors)
  --dry-run       only print the substituted expressions
  --time T        evaluation time (unix seconds; default now)
  --allow-empty R a regex on "panel title/refId" whose empty results are tolerated (repeatable)
"""
import argparse
import glob
import json
import os
import re
import sys
import urllib.error
import urllib.parse
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))


def duration_seconds(d):
    m = re.fullmatch(r"(\d+)(ms|s|m|h|d)", d)
    if not m:
        raise SystemExit(f"bad duration {d!r}")
    return int(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


def extract(dashboard_paths):
    """-> [(dashboard title, panel title, refId, expr, variable names)]"""
    out = []
    for path in dashboard_paths:
        with open(path) as f:
            dash = json.load(f)
        names = {v["name"] for v in (dash.get("templating") or {}).get("list") or []}
        panels = []
        for p in dash.get("panels") or []:
            panels.append(p)
            panels.extend(p.get("panels") or [])  # inside rows
        for p in panels:
            for t in p.get("targets") or []:
                if t.get("hide"):
                    continue
                expr = (t.get("expr") or "").strip()
                out.append((dash.get("title", path), p.get("title", "?"), t.get("refId", "?"), expr, names))
    return out


def substitute(expr, names, a, overrides):
    rs = duration_seconds(a.range)
    iv = duration_seconds(a.interval)
    builtins = {
        "__rate_interval": a.rate_interval, "__interval": a.interval, "__interval_ms": str(int(iv * 1000)),
        "__range": a.range, "__range_s": str(int(rs)), "__range_ms": str(int(rs * 1000)),
    }

    def var_re(name):
        return r"(?:\$%s\b|\$\{%s(?::\w+)?\}|\[\[%s\]\])" % (name, name, name)

    for name in sorted(names, key=len, reverse=True):
        value = overrides.get(name, ".*")
        # label="$var" / label=~"$var"  -> label=~"<regex>"
        expr = re.sub(r'(\w+)\s*=~?\s*"%s"' % var_re(name), lambda m: f'{m.group(1)}=~"{value}"', expr)
        # label!="$var" / label!~"$var" -> label!~"<regex>" (All: matches nothing)
        neg = overrides.get(name, "__no_value__")
        expr = re.sub(r'(\w+)\s*!~?\s*"%s"' % var_re(name), lambda m: f'{m.group(1)}!~"{neg}"', expr)
        # a variable inside a larger regex, e.g. instance=~"$instance|other"
        expr = re.sub(var_re(name), lambda m: value, expr)
    for name, value in builtins.items():
        expr = re.sub(var_re(name), lambda m, v=value: v, expr)
    left = re.findall(r"\$\{?\w+\}?", expr)
    return expr, left


def query(url, expr, at, timeout):
    params = {"query": expr}
    if at is not None:
        params["time"] = str(at)
    req = urllib.request.Request(url.rstrip("/") + "/api/v1/query",
                                 data=urllib.parse.urlencode(params).encode(),
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            body = json.load(r)
    except urllib.error.HTTPError as e:
        try:
            body = json.load(e)
        except ValueError:
            return None, f"HTTP {e.code}"
        return None, f"HTTP {e.code} {body.get('errorType')}: {body.get('error')}"
    except (urllib.error.URLError, OSError) as e:
        raise SystemExit(f"dashboard_queries: cannot reach {url}: {e}")
    if body.get("status") != "success":
        return None, f"{body.get('errorType')}: {body.get('error')}"
    return body["data"], None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("prom_url", nargs="?")
    ap.add_argument("--dashboard", action="append", help="dashboard JSON (repeatable)")
    ap.add_argument("--dry-run", action="store_true")
    ap.add_argument("--syntax-only", action="store_true")
    ap.add_argument("--rate-interval", default="1m")
    ap.add_argument("--interval", default="15s")
    ap.add_argument("--range", default="1h")
    ap.add_argument("--time", type=float)
    ap.add_argument("--timeout", type=float, default=10)
    ap.add_argument("--var", action="append", default=[], help="NAME=REGEX value for a template variable")
    ap.add_argument("--allow-empty", action="append", default=[])
    a = ap.parse_args()
    if not a.dry_run and not a.prom_url:
        ap.error("PROM_URL is required unless --dry-run")
    overrides = dict(v.split("=", 1) for v in a.var)
    paths = a.dashboard or sorted(glob.glob(os.path.join(ROOT, "grafana", "dashboards", "*.json")))
    if not paths:
        raise SystemExit("dashboard_queries: no dashboards found")
    items = extract(paths)
    failures, passed = [], 0
    for dash, panel, ref, expr, names in items:
        label = f"{panel}/{ref}"
        if not expr:
            failures.append(f"{dash} :: {label}: empty expr")
            continue
        q, left = substitute(expr, names, a, overrides)
        if left:
            failures.append(f"{dash} :: {label}: unsubstituted {left} in {q!r}")
            continue
        if a.dry_run:
            print(f"# {dash} :: {label}\n{q}\n")
            continue
        data, error = query(a.prom_url, q, a.time, a.timeout)
        if error:
            failures.append(f"{dash} :: {label}: ERROR {error}\n      {q}")
        elif not a.syntax_only and not data.get("result") and not any(re.search(r, label) for r in a.allow_empty):
            failures.append(f"{dash} :: {label}: NO DATA\n      {q}")
        else:
            passed += 1
    if a.dry_run:
        for f in failures:
            print(f"FAIL {f}", file=sys.stderr)
        return 1 if failures else 0
    mode = "syntax-only" if a.syntax_only else "data"
    for f in failures:
        print(f"  FAIL {f}", file=sys.stderr)
    print(f"dashboard_queries ({mode}, {a.prom_url}): {passed} passed, {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
