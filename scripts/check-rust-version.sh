#!/usr/bin/env bash
# Checks that the workspace's `rust-version` (Cargo.toml) is at least the highest
# `rust-version` any locked dependency declares, so the MSRV we publish is one the
# lockfile can actually build with. Run by `make lint`.
#
#   scripts/check-rust-version.sh      # exit 0 = ok, 1 = rust-version too low
#
# Only the declared versions are compared (from `cargo metadata --locked`); no other
# toolchain is installed to try a build with.
set -euo pipefail
cd "$(dirname "$0")/.."
script=$(
  cat <<'PY'
import json, sys

def parse(v):
    # "1.88" means 1.88.0: pad to three parts so the two compare equal.
    parts = [int(x) for x in v.split(".")]
    return tuple(parts + [0] * (3 - len(parts)))

meta = json.load(sys.stdin)
members = set(meta["workspace_members"])
ours = {p["rust_version"] for p in meta["packages"] if p["id"] in members and p.get("rust_version")}
if len(ours) != 1:
    sys.exit(f"check-rust-version: workspace members declare {sorted(ours) or 'no'} rust-version; expected one (workspace.package.rust-version)")
declared = ours.pop()
deps = [(parse(p["rust_version"]), p["name"], p["version"]) for p in meta["packages"]
        if p["id"] not in members and p.get("rust_version")]
need = max(v for v, _, _ in deps)
need_s = ".".join(map(str, need))
who = ", ".join(f"{n} {v}" for r, n, v in sorted(deps) if r == need)
if parse(declared) < need:
    sys.exit(f"check-rust-version: Cargo.toml says rust-version = \"{declared}\", but the lockfile needs {need_s} ({who}); raise workspace.package.rust-version to \"{need_s}\"")
print(f"rust-version {declared} >= {need_s}, the highest a locked dependency needs ({who})")
PY
)
cargo metadata --format-version 1 --locked | python3 -c "$script"
