#!/usr/bin/env bash
# Writes a CURVE server key pair and a client key pair to secrets/ (for
# docker-compose.curve.yml, or the Kubernetes Secret of deploy/k8s/components/curve),
# plus the allow-list holding the client's public key. Refuses to overwrite existing keys.
#
# `keygen` runs from the workspace with cargo when cargo is installed, otherwise from the
# image (`docker run --rm $MENSAGERIA_IMAGE client keygen`; build it first with `make up`
# or `docker compose build`). MENSAGERIA_KEYGEN=cargo|docker forces one.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-secrets}
image=${MENSAGERIA_IMAGE:-mensageria:0.1.0}
if [[ -e "$out/curve_server_secret" ]]; then
  echo "$out/ already holds keys; remove it first to make new ones" >&2
  exit 1
fi
how=${MENSAGERIA_KEYGEN:-}
if [[ -z "$how" ]]; then
  if command -v cargo >/dev/null; then how=cargo; else how=docker; fi
fi
case "$how" in
  cargo) keygen() { cargo run -q --bin client -- keygen; } ;;
  docker)
    if ! command -v docker >/dev/null; then
      echo "curve-keys: neither cargo nor docker is installed; install one of them" >&2
      exit 1
    fi
    if ! docker image inspect "$image" >/dev/null 2>&1; then
      echo "curve-keys: the image $image is not built; run \`docker compose build\` first (or set MENSAGERIA_IMAGE)" >&2
      exit 1
    fi
    keygen() { docker run --rm --network none "$image" client keygen; }
    ;;
  *)
    echo "curve-keys: MENSAGERIA_KEYGEN must be cargo or docker, not $how" >&2
    exit 1
    ;;
esac
field() { sed -n "s/^$1=//p"; }
mkdir -p "$out"
chmod 700 "$out"
server=$(keygen)
client=$(keygen)
umask 022 # the container user must read the mounted files; the directory guards them
field secret <<<"$server" >"$out/curve_server_secret"
field public <<<"$server" >"$out/curve_server_public"
field secret <<<"$client" >"$out/curve_client_secret"
field public <<<"$client" >"$out/curve_client_public"
cp "$out/curve_client_public" "$out/curve_allowed_clients"
echo "CURVE keys written to $out/ (server pair, client pair, allow-list)."
