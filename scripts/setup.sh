#!/usr/bin/env bash
# Installs what the build (`setup.sh build`), the tests (`setup.sh test`, the
# default) or the benchmarks (`setup.sh bench`) need and is missing.
# `make build`/`release`/`run` call it with `build`, `make test` and `.ci/run`
# with `test`, `make bench`/`bench-smoke` with `bench`. Installs Debian packages with
# apt-get when run as root; otherwise, or off Debian, it stops at once and
# prints the exact command to run.
#
# build: a C and C++ compiler and make. zmq-sys compiles libzmq (C++) and
#        libsodium (C, autotools `configure` + make) from source.
# test:  the build's tools, plus
#        - cargo-nextest: `make test` runs the suites with it (per-test time
#          limits, .config/nextest.toml);
#        - prometheus (/usr/bin/prometheus): the observability tests scrape the
#          real services with a real Prometheus and run every dashboard query;
#        - python3 with PyYAML: the observability tests read the Compose file
#          and check the dashboards with deploy/validate/*.py;
#        - kill(1) (procps): the end-to-end suites signal the services by PID.
# bench: the build's tools, plus nats-server (Debian's): the NATS reference
#        `make bench` runs beside the full system.
set -euo pipefail

mode=${1:-test}
case "$mode" in
  build | test | bench) ;;
  *) echo "usage: $0 [build|test|bench]" >&2; exit 2 ;;
esac

command -v cargo >/dev/null || {
  echo "cargo is missing: install Rust with rustup (https://rustup.rs), then re-run." >&2
  exit 1
}

# Debian packages for what is missing.
pkgs=()
have() { type -P "$1" >/dev/null; }
have cc || pkgs+=(gcc)
have c++ || pkgs+=(g++)
have make || pkgs+=(make)
if [[ $mode == test ]]; then
  [[ -x /usr/bin/prometheus ]] || pkgs+=(prometheus)
  have python3 || pkgs+=(python3)
  { have python3 && python3 -c 'import yaml' 2>/dev/null; } || pkgs+=(python3-yaml)
  have kill || pkgs+=(procps)
fi
if [[ $mode == bench ]]; then
  [[ -x /usr/sbin/nats-server ]] || have nats-server || pkgs+=(nats-server)
fi

if ((${#pkgs[@]})); then
  install="apt-get update && apt-get install -y --no-install-recommends ${pkgs[*]}"
  # Debian starts the packaged Prometheus as a service; the tests start their own.
  quiet_prometheus="systemctl disable --now prometheus prometheus-node-exporter"
  [[ " ${pkgs[*]} " == *" prometheus "* ]] && install+=" && { $quiet_prometheus || true; }"
  # Likewise nats-server: the benchmark starts its own on a free loopback port.
  quiet_nats="systemctl disable --now nats-server"
  [[ " ${pkgs[*]} " == *" nats-server "* ]] && install+=" && { $quiet_nats || true; }"
  if ! have apt-get; then
    echo "Missing: ${pkgs[*]} (Debian package names). This is not a Debian/apt system:" >&2
    echo "install the equivalents with your package manager (Prometheus as /usr/bin/prometheus)," >&2
    echo "then re-run." >&2
    exit 1
  fi
  if ((EUID != 0)); then
    echo "Missing: ${pkgs[*]}. Install them (as root), then re-run:" >&2
    echo "  sudo sh -c '$install'" >&2
    exit 1
  fi
  echo "setup: installing ${pkgs[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${pkgs[@]}"
  if [[ " ${pkgs[*]} " == *" prometheus "* ]] && have systemctl; then
    $quiet_prometheus >/dev/null 2>&1 || true
  fi
  if [[ " ${pkgs[*]} " == *" nats-server "* ]] && have systemctl; then
    $quiet_nats >/dev/null 2>&1 || true
  fi
fi

if [[ $mode == test ]] && ! cargo nextest --version >/dev/null 2>&1; then
  echo "setup: installing cargo-nextest (cargo install, a few minutes)" >&2
  cargo install --locked cargo-nextest
fi
