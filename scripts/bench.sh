#!/usr/bin/env bash
# Benchmarks for `make bench`. Results go to bench-results/ (not asserted);
# the report is printed at the end.
#  - API load: loadgen (16 clients, 3000 ConfigMaps): creates/s, create and
#    watch-seen p50/p99, LIST of 3000.
#  - Server-side apply: loadgen -mode ssa (16 clients, 1000 Deployments
#    applied, then all re-applied with changes): creates/s and updates/s.
#  - Idle memory of the server process after start (RssAnon, RssFile, VmRSS).
#  - Time from process start to /readyz ok, cold (empty data dir) and warm.
#  - Memory growth with 20 CRDs: on a fresh server, settled, crdload installs
#    20 distinct CRDs (structural schemas, printer columns), waits for each
#    to be Established and in discovery and creates and lists one object of
#    each; RssAnon/VmRSS before and after settling again.
#  - With ../shared/bench and its built tools, the upstream kube-apiserver +
#    etcd pair is measured in the same run with the same tools, and
#    skiff/upstream ratios are reported.
# Knobs: SKIFF_BIN, BENCH_N (ConfigMaps), BENCH_C (clients), BENCH_SSA_N
# (Deployments), BENCH_CRDS, BENCH_SETTLE (seconds before memory readings).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${SKIFF_BIN:-$root/bin/skiff}
N=${BENCH_N:-3000}
C=${BENCH_C:-16}
SSA_N=${BENCH_SSA_N:-1000}
CRDS=${BENCH_CRDS:-20}
SETTLE=${BENCH_SETTLE:-15}
out=$root/bench-results
shared=$root/../shared/bench
baseline=${BASELINE_DIR:-$HOME/.cache/skiff-baseline}/bin
[ -x "$bin" ] || { echo "bench: $bin not built (make build)" >&2; exit 1; }
mkdir -p "$out"
work=$(mktemp -d)
SKIFF_PID="" UP_DIR="" failed=0
cleanup() {
  if [ -n "$SKIFF_PID" ]; then kill "$SKIFF_PID" 2>/dev/null || true; wait "$SKIFF_PID" 2>/dev/null || true; fi
  if [ -n "$UP_DIR" ]; then bash "$shared/upstream-apiserver.sh" stop "$UP_DIR" || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
go build -o "$work/loadgen" "$root/tests/bench/loadgen"
go build -o "$work/crdload" "$root/tests/bench/crdload"

log() { echo "bench: $*" >&2; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
mem() { awk '/^(VmRSS|RssAnon|RssFile):/ {printf "%s=%d ", $1, $2/1024}' "/proc/$1/status" | sed 's/://g'; }
kb() { awk -v f="$2:" '$1 == f {print $2}' "/proc/$1/status"; } # pid field -> kB
now_ms() { date +%s%3N; }
# run VAR cmd...: VAR=stdout of cmd, or "FAILED (exit N)" (and the run fails at the end).
run() {
  local _run_var=$1 _run_out _run_rc=0; shift
  _run_out=$("$@") || _run_rc=$?
  if [ $_run_rc -ne 0 ]; then _run_out="FAILED (exit $_run_rc): $*"; failed=1; log "$_run_out"; fi
  printf -v "$_run_var" '%s' "$_run_out"
}
wait_ready() { # url pid log: polls /readyz for up to 120 s while pid lives
  local deadline=$(( $(date +%s) + 120 ))
  until curl -sfk "$1/readyz" >/dev/null 2>&1; do
    if ! kill -0 "$2" 2>/dev/null || [ "$(date +%s)" -ge "$deadline" ]; then
      log "server at $1 not ready; log tail:"; tail -20 "$3" >&2; return 1
    fi
    sleep 0.02
  done
}

start_skiff() { # dir port -> SKIFF_PID, READY_MS; waits for /readyz and the kubeconfig
  local dir=$1 port=$2 t0
  t0=$(now_ms)
  "$bin" server --data-dir "$dir" --https-listen-port "$port" --bind-address 127.0.0.1 \
    --write-kubeconfig "$dir/kubeconfig.yaml" --disable-agent >>"$dir.log" 2>&1 &
  SKIFF_PID=$!
  wait_ready "https://127.0.0.1:$port" "$SKIFF_PID" "$dir.log"
  READY_MS=$(( $(now_ms) - t0 ))
  until [ -f "$dir/kubeconfig.yaml" ]; do sleep 0.02; done
}
stop_skiff() { kill "$SKIFF_PID"; wait "$SKIFF_PID" 2>/dev/null || true; SKIFF_PID=""; }

start_upstream() { # dir -> UP_DIR, UP_PIDS, UP_READY_MS
  local dir=$1 port t0
  port=$(free_port); t0=$(now_ms)
  UP_DIR=$dir
  bash "$shared/upstream-apiserver.sh" start etcd "$dir" "$port" >/dev/null
  UP_PIDS=$(cat "$dir/pids")
  wait_ready "https://127.0.0.1:$port" "$(echo $UP_PIDS | awk '{print $NF}')" "$dir/kas.log"
  UP_READY_MS=$(( $(now_ms) - t0 ))
}
stop_upstream() { bash "$shared/upstream-apiserver.sh" stop "$UP_DIR"; UP_DIR=""; }

# crd_growth label kubeconfig pid...: settled memory of each pid before and
# after installing $CRDS CRDs, as "JSON; [comm] RssAnon a -> b MB (+d), VmRSS ...".
crd_growth() {
  local label=$1 kc=$2; shift 2
  local p before=() res line=""
  for p in "$@"; do before+=("$(kb "$p" RssAnon) $(kb "$p" VmRSS)"); done
  run res "$work/crdload" -kubeconfig "$kc" -n "$CRDS" -label "$label"
  if [ "${res#FAILED}" = "$res" ]; then sleep "$SETTLE"; fi
  local i=0
  for p in "$@"; do
    line="$line [$(cat "/proc/$p/comm")] $(awk -v b="${before[$i]}" -v a="$(kb "$p" RssAnon) $(kb "$p" VmRSS)" 'BEGIN {
      split(b, x, " "); split(a, y, " ")
      printf "RssAnon %.1f -> %.1f MB (%+.1f), VmRSS %.1f -> %.1f MB (%+.1f)", x[1]/1024, y[1]/1024, (y[1]-x[1])/1024, x[2]/1024, y[2]/1024, (y[2]-x[2])/1024 }')"
    i=$((i + 1))
  done
  CRD_RESULT="$res;$line"
}

# --- skiff ---
port=$(free_port)
log "skiff: cold start, idle memory"
start_skiff "$work/skiff" "$port"; cold=$READY_MS
sleep 10; skiff_idle=$(mem "$SKIFF_PID")
stop_skiff
log "skiff: warm start, ConfigMap load ($N), server-side apply ($SSA_N)"
start_skiff "$work/skiff" "$port"; warm=$READY_MS
run skiff_load "$work/loadgen" -kubeconfig "$work/skiff/kubeconfig.yaml" -n "$N" -c "$C" -label skiff
run skiff_ssa "$work/loadgen" -kubeconfig "$work/skiff/kubeconfig.yaml" -mode ssa -n "$SSA_N" -c "$C" -label skiff
skiff_after=$(mem "$SKIFF_PID")
stop_skiff
log "skiff: $CRDS CRDs on a fresh server"
start_skiff "$work/skiff-crd" "$port"
sleep 10
crd_growth skiff "$work/skiff-crd/kubeconfig.yaml" "$SKIFF_PID"; skiff_crd=$CRD_RESULT
stop_skiff

# --- upstream kube-apiserver + etcd ---
up_load="" up_ssa="" up_idle="" up_ready="" up_after="" up_crd=""
if [ -x "$baseline/kube-apiserver" ] && [ -x "$baseline/etcd" ] && [ -d "$shared" ]; then
  log "upstream: start, idle memory, ConfigMap load ($N), server-side apply ($SSA_N)"
  start_upstream "$work/upstream"; up_ready=$UP_READY_MS
  sleep 10
  up_idle=""; for p in $UP_PIDS; do up_idle="$up_idle [$(cat /proc/$p/comm)] $(mem $p)"; done
  run up_load "$work/loadgen" -kubeconfig "$work/upstream/admin.kubeconfig" -n "$N" -c "$C" -label upstream-kube-apiserver+etcd
  run up_ssa "$work/loadgen" -kubeconfig "$work/upstream/admin.kubeconfig" -mode ssa -n "$SSA_N" -c "$C" -label upstream-kube-apiserver+etcd
  up_after=""; for p in $UP_PIDS; do up_after="$up_after [$(cat /proc/$p/comm)] $(mem $p)"; done
  stop_upstream
  log "upstream: $CRDS CRDs on a fresh server"
  start_upstream "$work/upstream-crd"
  sleep 10
  crd_growth upstream "$work/upstream-crd/admin.kubeconfig" $UP_PIDS; up_crd=$CRD_RESULT
  stop_upstream
else
  log "upstream baseline not built (bash ../shared/bench/build-baseline.sh apibench etcd kas); measuring skiff only"
fi

ratios=""
if [ -n "$up_load" ]; then
  ratios=$(python3 - "$skiff_load" "$up_load" "$skiff_ssa" "$up_ssa" <<'PY'
import json, sys
def parse(s):
    try:
        return json.loads(s)
    except ValueError:
        return None
s, u, ss, us = (parse(a) for a in sys.argv[1:5])
if s and u:
    print("creates/s ratio skiff/upstream: %.2fx; create p99 %.1f vs %.1f ms; watch p99 %.1f vs %.1f ms; LIST %.1f vs %.1f ms" % (
        s["creates_per_s"]/u["creates_per_s"], s["create_p99_ms"], u["create_p99_ms"], s["watch_seen_p99_ms"], u["watch_seen_p99_ms"], s["list_ms"], u["list_ms"]))
if ss and us:
    print("ssa ratio skiff/upstream: creates/s %.2fx, updates/s %.2fx (target >= 2x); create p99 %.1f vs %.1f ms; update p99 %.1f vs %.1f ms; LIST %.1f vs %.1f ms" % (
        ss["creates_per_s"]/us["creates_per_s"], ss["updates_per_s"]/us["updates_per_s"], ss["create_p99_ms"], us["create_p99_ms"],
        ss["update_p99_ms"], us["update_p99_ms"], ss["list_ms"], us["list_ms"]))
PY
)
fi
size=$(stat -c %s "$bin")
report="$out/api-$(date +%Y%m%d-%H%M%S).txt"
{
  echo "date: $(date -Is)  host: $(nproc) cores  binary: $bin ($((size/1024/1024)) MiB)"
  echo "skiff load:      $skiff_load"
  echo "skiff ssa:       $skiff_ssa"
  echo "skiff ready:     cold ${cold} ms, warm ${warm} ms"
  echo "skiff idle MB:   $skiff_idle"
  echo "skiff after load MB: $skiff_after"
  echo "skiff $CRDS CRDs (settled ${SETTLE}s; target <= 20 MB growth): $skiff_crd"
  if [ -n "$up_ready" ]; then
    echo "upstream load:   $up_load"
    echo "upstream ssa:    $up_ssa"
    echo "upstream ready:  ${up_ready} ms (etcd + kube-apiserver start to /readyz)"
    echo "upstream idle MB:$up_idle"
    echo "upstream after load MB:$up_after"
    echo "upstream $CRDS CRDs (settled ${SETTLE}s): $up_crd"
  fi
  if [ -n "$ratios" ]; then echo "$ratios"; fi
} > "$report"
echo
echo "=== bench report: $report"
cat "$report"
if [ "$failed" -ne 0 ]; then echo "bench: some measurements FAILED (see above)" >&2; exit 1; fi
