#!/usr/bin/env bash
# Starts the four services as local processes with their default ports and
# waits; Ctrl-C (or SIGTERM) stops them all, each by PID, gracefully.
# Each service writes a ready record (READY_FILE, docs/design.md §2) once it
# is ready; the script waits for those, then prints where everything is.
set -euo pipefail
bin=${1:-target/release}
for b in broker proxy server client; do
  [[ -x "$bin/$b" ]] || { echo "missing $bin/$b: run 'make release' first" >&2; exit 1; }
done

ready_dir=$(mktemp -d "${TMPDIR:-/tmp}/mensageria-run.XXXXXX")
pids=()
names=()
stop() {
  trap - INT TERM EXIT
  if ((${#pids[@]})); then
    echo; echo "Stopping ${pids[*]}…"
    kill -TERM "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
    echo "All stopped."
  fi
  rm -rf "$ready_dir"
}
trap stop INT TERM EXIT

start() { # name, then the command
  local name=$1; shift
  # setsid: Ctrl-C reaches only this script, which then sends each service
  # one SIGTERM (a second signal would make a service exit without draining).
  # The log prefixer ignores SIGINT so the services' shutdown lines still show.
  # Process substitution keeps $! the service's own PID (not a pipe's).
  READY_FILE="$ready_dir/$name.json" setsid "$@" > >(trap '' INT; sed -u "s/^/[$name] /") 2>&1 &
  pids+=("$!")
  names+=("$name")
}

start broker "$bin/broker"
start proxy  "$bin/proxy"
start server "$bin/server"
start client "$bin/client" run

# Wait until every service has written its ready record (every readiness
# check holds: sockets bound, peers connected), or give up at a deadline.
deadline=$((SECONDS + 30))
for i in "${!names[@]}"; do
  until [[ -e "$ready_dir/${names[$i]}.json" ]]; do
    if ! kill -0 "${pids[$i]}" 2>/dev/null; then
      echo "${names[$i]} exited before it was ready (its log is above)" >&2; exit 1
    fi
    if ((SECONDS >= deadline)); then
      echo "${names[$i]} not ready within 30 s (its /readyz says which check fails)" >&2; exit 1
    fi
    sleep 0.1
  done
done

echo
echo "mensageria is running:"
files=()
for n in "${names[@]}"; do files+=("$ready_dir/$n.json"); done
python3 - "${files[@]}" <<'PY' 2>/dev/null || cat "${files[@]}"
import json, sys
for path in sys.argv[1:]:
    r = json.load(open(path))
    ends = [f"{s} {e}" for s, es in r["bound"].items() for e in es]
    ends += [f"{s} → {e}" for s, es in r["connected"].items() for e in es]
    print(f"  {r['service']:<7} pid {r['pid']:<8} http://{r['http_addr']}/metrics")
    for e in ends:
        print(f"            {e}")
PY
cat <<MSG
Try, from another terminal:  $bin/client request hello
Ctrl-C stops everything.
MSG
wait
