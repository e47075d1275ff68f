#!/usr/bin/env bash
# Writes a CURVE server key pair and a client key pair to secrets/ (for
# docker-compose.curve.yml), plus the allow-list holding the client's public
# key. Refuses to overwrite existing keys.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-secrets}
if [[ -e "$out/curve_server_secret" ]]; then
  echo "$out/ already holds keys; remove it first to make new ones" >&2
  exit 1
fi
keygen() { cargo run -q --release --bin broker -- keygen; }
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
