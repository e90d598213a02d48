# Shell helpers shared by scripts/bench.sh and scripts/pgo-profile.sh
# (sourced, not run): start a skiff server on loopback and wait for it.
# The caller sets $bin (the skiff binary) and defines log().
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now_ms() { date +%s%3N; }
wait_ready() { # url pid log: polls /readyz for up to 120 s while pid lives
  local deadline=$(( $(date +%s) + 120 ))
  until curl -sfk "$1/readyz" >/dev/null 2>&1; do
    if ! kill -0 "$2" 2>/dev/null || [ "$(date +%s)" -ge "$deadline" ]; then
      log "server at $1 not ready; log tail:"; tail -20 "$3" >&2; return 1
    fi
    sleep 0.02
  done
}
start_skiff() { # dir port [server flags] -> SKIFF_PID, READY_MS; waits for /readyz and the kubeconfig
  local dir=$1 port=$2 t0
  shift 2
  t0=$(now_ms)
  "$bin" server --data-dir "$dir" --https-listen-port "$port" --bind-address 127.0.0.1 \
    --write-kubeconfig "$dir/kubeconfig.yaml" --disable-agent "$@" >>"$dir.log" 2>&1 &
  SKIFF_PID=$!
  wait_ready "https://127.0.0.1:$port" "$SKIFF_PID" "$dir.log"
  READY_MS=$(( $(now_ms) - t0 ))
  until [ -f "$dir/kubeconfig.yaml" ]; do sleep 0.02; done
}
stop_skiff() { kill "$SKIFF_PID"; wait "$SKIFF_PID" 2>/dev/null || true; SKIFF_PID=""; }
