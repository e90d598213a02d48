#!/usr/bin/env bash
# Benchmarks for `make bench`. Results go to bench-results/ (not asserted).
#  - API load: loadgen (16 clients, 3000 ConfigMaps): creates/s, create and
#    watch-seen p50/p99, LIST of 3000.
#  - Idle memory of the server process after start (RssAnon, RssFile, VmRSS).
#  - Time from process start to /readyz ok, cold (empty data dir) and warm.
#  - With ../shared/bench and its built tools, the upstream kube-apiserver +
#    etcd pair is measured in the same run with the same load generator.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${SKIFF_BIN:-$root/bin/skiff}
N=${BENCH_N:-3000}
C=${BENCH_C:-16}
out=$root/bench-results
mkdir -p "$out"
work=$(mktemp -d)
trap 'pkill -f "$work" 2>/dev/null || true; rm -rf "$work"' EXIT
go build -o "$work/loadgen" "$root/tests/bench/loadgen"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
mem() { awk '/^(VmRSS|RssAnon|RssFile):/ {printf "%s=%d ", $1, $2/1024}' "/proc/$1/status" | sed 's/://g'; }
now_ms() { date +%s%3N; }

start_skiff() { # dir port -> pid; waits for /readyz
  local dir=$1 port=$2 t0
  t0=$(now_ms)
  "$bin" server --data-dir "$dir" --https-listen-port "$port" --bind-address 127.0.0.1 \
    --write-kubeconfig "$dir/kubeconfig.yaml" --disable-agent >>"$dir.log" 2>&1 &
  SKIFF_PID=$!
  until curl -sfk "https://127.0.0.1:$port/readyz" >/dev/null 2>&1; do sleep 0.02; done
  READY_MS=$(( $(now_ms) - t0 ))
  until [ -f "$dir/kubeconfig.yaml" ]; do sleep 0.02; done
}

port=$(free_port)
start_skiff "$work/skiff" "$port"; cold=$READY_MS
sleep 10; skiff_idle=$(mem $SKIFF_PID)
kill $SKIFF_PID; wait $SKIFF_PID 2>/dev/null || true
start_skiff "$work/skiff" "$port"; warm=$READY_MS
skiff_load=$("$work/loadgen" -kubeconfig "$work/skiff/kubeconfig.yaml" -n "$N" -c "$C" -label skiff)
skiff_after=$(mem $SKIFF_PID)
kill $SKIFF_PID; wait $SKIFF_PID 2>/dev/null || true

up_load="" up_idle="" up_ready=""
shared=$root/../shared/bench
if [ -x "$HOME/.cache/skiff-baseline/bin/kube-apiserver" ] && [ -x "$HOME/.cache/skiff-baseline/bin/etcd" ] && [ -d "$shared" ]; then
  t0=$(now_ms)
  bash "$shared/upstream-apiserver.sh" start etcd "$work/upstream" 7443 >/dev/null
  until curl -sfk https://127.0.0.1:7443/readyz >/dev/null 2>&1; do sleep 0.05; done
  up_ready=$(( $(now_ms) - t0 ))
  sleep 10
  pids=$(cat "$work/upstream/pids")
  up_idle=""; for p in $pids; do up_idle="$up_idle [$(cat /proc/$p/comm)] $(mem $p)"; done
  up_load=$("$work/loadgen" -kubeconfig "$work/upstream/admin.kubeconfig" -n "$N" -c "$C" -label upstream-kube-apiserver+etcd)
  bash "$shared/upstream-apiserver.sh" stop "$work/upstream"
else
  echo "upstream baseline not built (bash ../shared/bench/build-baseline.sh apibench etcd kas); measuring skiff only" >&2
fi

ratio=""
if [ -n "$up_load" ]; then
  ratio=$(python3 - "$skiff_load" "$up_load" <<'PY'
import json,sys
s,u=json.loads(sys.argv[1]),json.loads(sys.argv[2])
print("creates/s ratio skiff/upstream: %.2fx; create p99 %.1f vs %.1f ms; watch p99 %.1f vs %.1f ms; LIST %.1f vs %.1f ms" % (
  s["creates_per_s"]/u["creates_per_s"], s["create_p99_ms"], u["create_p99_ms"], s["watch_seen_p99_ms"], u["watch_seen_p99_ms"], s["list_ms"], u["list_ms"]))
PY
)
fi
size=$(stat -c %s "$bin")
report="$out/api-$(date +%Y%m%d-%H%M%S).txt"
{
  echo "date: $(date -Is)  host: $(nproc) cores  binary: $bin ($((size/1024/1024)) MiB)"
  echo "skiff load:      $skiff_load"
  echo "skiff ready:     cold ${cold} ms, warm ${warm} ms"
  echo "skiff idle MB:   $skiff_idle"
  echo "skiff after load MB: $skiff_after"
  [ -n "$up_load" ] && echo "upstream load:   $up_load"
  [ -n "$up_ready" ] && echo "upstream ready:  ${up_ready} ms (etcd + kube-apiserver start to /readyz)"
  [ -n "$up_idle" ] && echo "upstream idle MB:$up_idle"
  [ -n "$ratio" ] && echo "$ratio"
} | tee "$report"
