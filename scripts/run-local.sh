#!/usr/bin/env bash
# Starts the four services as local processes with their default ports and
# waits; Ctrl-C (or SIGTERM) stops them all, each by PID, gracefully.
set -euo pipefail
bin=${1:-target/release}
for b in broker proxy server client; do
  [[ -x "$bin/$b" ]] || { echo "missing $bin/$b: run 'make release' first" >&2; exit 1; }
done

pids=()
stop() {
  trap - INT TERM EXIT
  echo; echo "Stopping ${pids[*]}…"
  kill -TERM "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
  echo "All stopped."
}
trap stop INT TERM EXIT

start() { # name, then the command
  local name=$1; shift
  # setsid: Ctrl-C reaches only this script, which then sends each service
  # one SIGTERM (a second signal would make a service exit without draining).
  # The log prefixer ignores SIGINT so the services' shutdown lines still show.
  # Process substitution keeps $! the service's own PID (not a pipe's).
  setsid "$@" > >(trap '' INT; sed -u "s/^/[$name] /") 2>&1 &
  pids+=("$!")
}

start broker "$bin/broker"
start proxy  "$bin/proxy"
start server "$bin/server"
start client "$bin/client" run

# Wait until every service answers its readiness probe.
for port in 9101 9102 9103 9104; do
  for _ in $(seq 1 100); do
    HTTP_ADDR=127.0.0.1:$port "$bin/broker" healthcheck 2>/dev/null && break
    sleep 0.1
  done
done
cat <<MSG

mensageria is running:
  broker  tcp://127.0.0.1:5555 (clients)  tcp://127.0.0.1:5556 (workers)  http://127.0.0.1:9101/metrics
  proxy   tcp://127.0.0.1:5557 (publishers) tcp://127.0.0.1:5558 (subscribers) http://127.0.0.1:9102/metrics
  server  http://127.0.0.1:9103/metrics     client http://127.0.0.1:9104/metrics
Try, from another terminal:  $bin/client request hello
Ctrl-C stops everything.
MSG
wait
