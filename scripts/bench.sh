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
#  - Alternating pairs (BENCH_PAIRS, default 3; 0 skips): Skiff's API
#    server alone and the upstream pair, each on a fresh server, the same
#    ConfigMap load and server-side apply, round by round. One SSA run of
#    1000 Deployments lasts ~1-2 s and varies ±20% here, so the report gives
#    each round, the ratio of the means, and each side's server CPU per
#    apply (the upstream side: kube-apiserver + etcd).
# Knobs: SKIFF_BIN, BENCH_N (ConfigMaps), BENCH_C (clients), BENCH_SSA_N
# (Deployments), BENCH_CRDS, BENCH_SETTLE (seconds before memory readings),
# BENCH_PAIRS.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${SKIFF_BIN:-$root/bin/skiff}
N=${BENCH_N:-3000}
C=${BENCH_C:-16}
SSA_N=${BENCH_SSA_N:-1000}
CRDS=${BENCH_CRDS:-20}
SETTLE=${BENCH_SETTLE:-15}
PAIRS=${BENCH_PAIRS:-3}
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
. "$root/scripts/server-lib.sh" # free_port, now_ms, wait_ready, start_skiff, stop_skiff
mem() { awk '/^(VmRSS|RssAnon|RssFile):/ {printf "%s=%d ", $1, $2/1024}' "/proc/$1/status" | sed 's/://g'; }
cpu_ticks() { local t=0 p; for p in "$@"; do t=$(( t + $(awk '{print $14+$15}' "/proc/$p/stat") )); done; echo "$t"; }
kb() { awk -v f="$2:" '$1 == f {print $2}' "/proc/$1/status"; } # pid field -> kB
mem_peak() { echo "$(mem "$1") VmHWM=$(( $(kb "$1" VmHWM) / 1024 ))"; } # mem plus the peak, MB
# run VAR cmd...: VAR=stdout of cmd, or "FAILED (exit N)" (and the run fails at the end).
run() {
  local _run_var=$1 _run_out _run_rc=0; shift
  _run_out=$("$@") || _run_rc=$?
  if [ $_run_rc -ne 0 ]; then _run_out="FAILED (exit $_run_rc): $*"; failed=1; log "$_run_out"; fi
  printf -v "$_run_var" '%s' "$_run_out"
}

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

# --- control loops with simulated nodes (optional) ---
# BENCH_SCHED=1 runs this after the API benchmarks, BENCH_SCHED=only runs
# just this (make bench-sched). schedbench (tests/bench/schedbench) runs an
# in-process node simulator fleet against a fresh server per measurement:
#  - idle: whole-server RssAnon/VmRSS with no nodes after BENCH_SETTLE s;
#  - throughput: pods bound/s, 1000 nodes / 10,000 pods and 5000 nodes /
#    10,000 pods (upstream scheduler_perf SchedulingBasic, which has no
#    kubelets: here the 5000 simulated nodes renew their Leases every 60 s
#    instead of kubelet's 10 s, whose 500 writes/s alone overload a 2-core
#    host);
#  - startup: 100 nodes, 20 pods/s for 60 s with churn, create -> Running;
#  - scale: 1000 nodes, 30,000 pods from Deployments: time to all Running,
#    API p99 of the tool's requests, the API call latency SLOs measured on
#    the server's side as upstream defines them, LIST of all pods, then server memory
#    right after and again BENCH_SCHED_SCALE_SETTLE s later (default 100:
#    the watch cache's 75 s event history has expired then), with the
#    peak; RssFile is the binary's and the bbolt file's mapped pages,
#    which the kernel can reclaim.
# Also per run: server CPU seconds (from /proc) and the host load average,
# since the host is shared. Servers get a --cluster-cidr with room for the
# fleet (the default /16 holds 256 node /24s) and a node monitor grace
# period of 5m: node-loss detection is not measured here, and a large fleet
# registering on a loaded host would otherwise go Unknown before its
# heartbeats start (the simulator starts them once every node is registered).
# Throughput and scale runs stop at their time budget and report what got
# done ("INCOMPLETE"). The scale run's budget (15 minutes) lets all 30,000
# pods get Running here (~9 minutes at ~57 pods/s), so the section takes
# ~20-25 minutes.
# Knobs: BENCH_SCHED_NODES, BENCH_SCHED_PODS, BENCH_SCHED_BIG_NODES,
# BENCH_SCHED_BIG_HEARTBEAT,
# BENCH_SCHED_STARTUP_NODES, BENCH_SCHED_RATE, BENCH_SCHED_DURATION,
# BENCH_SCHED_SCALE_NODES, BENCH_SCHED_SCALE_PODS, BENCH_SCHED_REPLICAS,
# BENCH_SCHED_TIMEOUT (throughput time budget per run),
# BENCH_SCHED_SCALE_TIMEOUT, BENCH_SCHED_SCALE_SETTLE, BENCH_SCHED_CIDR,
# BENCH_SCHED_GRACE.
SCHED=${BENCH_SCHED:-0}
start_skiff_sched() { # dir port -> SKIFF_PID (a server with a wide cluster CIDR)
  local dir=$1 port=$2
  "$bin" server --data-dir "$dir" --https-listen-port "$port" --bind-address 127.0.0.1 \
    --write-kubeconfig "$dir/kubeconfig.yaml" --disable-agent \
    --cluster-cidr "${BENCH_SCHED_CIDR:-10.128.0.0/9}" --node-monitor-grace-period "${BENCH_SCHED_GRACE:-5m}" >>"$dir.log" 2>&1 &
  SKIFF_PID=$!
  wait_ready "https://127.0.0.1:$port" "$SKIFF_PID" "$dir.log"
  until [ -f "$dir/kubeconfig.yaml" ]; do sleep 0.02; done
}
cpu_s() { awk -v t="$(getconf CLK_TCK)" '{printf "%.1f", ($14 + $15) / t}' "/proc/$1/stat" 2>/dev/null || echo nan; }
# sched_run name args...: schedbench on the running server; SCHED_OUT = its
# JSON line with the server's CPU seconds, memory and the load average added
# (and, if the server died meanwhile, its exit status and last error lines).
sched_run() {
  local name=$1 c0 c1 l0 res rc=0 memline="" died="" src=0; shift
  c0=$(cpu_s "$SKIFF_PID"); l0=$(cut -d' ' -f1-3 /proc/loadavg)
  res=$("$work/schedbench" -kubeconfig "$work/$name/kubeconfig.yaml" -label skiff "$@" 2> >(tee "$work/$name.tool.log" | grep -v 'level=WARN\|request.go' >&2)) || rc=$?
  c1=$(cpu_s "$SKIFF_PID")
  if kill -0 "$SKIFF_PID" 2>/dev/null; then
    memline=$(mem_peak "$SKIFF_PID")
  else
    wait "$SKIFF_PID" 2>/dev/null || src=$?
    died="exit status $src; $(grep -iE 'leaderelection lost|panic|fatal' "$work/$name.log" | tail -2 | tr '\n' ' ' || true)"
    SKIFF_PID=""; failed=1; log "sched $name: the server exited during the run ($died)"
  fi
  res=$(python3 - "$res" "$c0" "$c1" "$l0" "$(cut -d' ' -f1-3 /proc/loadavg)" "$memline" "$died" <<'PY'
import json, sys
out, c0, c1, l0, l1, mem, died = sys.argv[1:8]
try:
    r = json.loads(out.strip().splitlines()[-1])
except (ValueError, IndexError):
    r = {"unparsed": out}
r["server_cpu_s"] = round(float(c1) - float(c0), 1) if "nan" not in (c0, c1) else None
if mem:
    r["server_mb_after"] = dict(kv.split("=") for kv in mem.split())
if died:
    r["server_died"] = died
r["loadavg_before_after"] = l0 + " / " + l1
print(json.dumps(r))
PY
)
  if [ $rc -ne 0 ]; then res="FAILED (exit $rc): $res"; failed=1; log "schedbench $name: exit $rc"; fi
  SCHED_OUT=$res
}
stop_skiff_sched() { if [ -n "$SKIFF_PID" ]; then kill "$SKIFF_PID" 2>/dev/null || true; wait "$SKIFF_PID" 2>/dev/null || true; SKIFF_PID=""; fi; }
sched_bench() {
  local nodes=${BENCH_SCHED_NODES:-1000} pods=${BENCH_SCHED_PODS:-10000} big=${BENCH_SCHED_BIG_NODES:-5000}
  local snodes=${BENCH_SCHED_SCALE_NODES:-1000} spods=${BENCH_SCHED_SCALE_PODS:-30000}
  local tmo=${BENCH_SCHED_TIMEOUT:-90s} stmo=${BENCH_SCHED_SCALE_TIMEOUT:-900s} bighb=${BENCH_SCHED_BIG_HEARTBEAT:-60s}
  local port idle tp tp_big startup scale settled="" t0 report summary
  t0=$(date +%s)
  go build -o "$work/schedbench" "$root/tests/bench/schedbench"
  port=$(free_port)
  log "sched: idle server, then throughput ($nodes nodes, $pods pods)"
  start_skiff_sched "$work/sched-tp" "$port"
  sleep "$SETTLE"; idle="$(mem "$SKIFF_PID")"
  sched_run sched-tp -mode throughput -nodes "$nodes" -pods "$pods" -timeout "$tmo"; tp=$SCHED_OUT
  stop_skiff_sched; rm -rf "$work/sched-tp"
  log "sched: throughput ($big nodes, $pods pods, heartbeats every $bighb)"
  start_skiff_sched "$work/sched-big" "$port"
  sched_run sched-big -mode throughput -nodes "$big" -pods "$pods" -timeout "$tmo" -heartbeat "$bighb"; tp_big=$SCHED_OUT
  stop_skiff_sched; rm -rf "$work/sched-big"
  log "sched: pod startup latency (${BENCH_SCHED_RATE:-20} pods/s churn)"
  start_skiff_sched "$work/sched-startup" "$port"
  sched_run sched-startup -mode startup -nodes "${BENCH_SCHED_STARTUP_NODES:-100}" \
    -rate "${BENCH_SCHED_RATE:-20}" -duration "${BENCH_SCHED_DURATION:-60s}"; startup=$SCHED_OUT
  stop_skiff_sched; rm -rf "$work/sched-startup"
  log "sched: scale ($snodes nodes, $spods pods)"
  start_skiff_sched "$work/sched-scale" "$port"
  sched_run sched-scale -mode scale -nodes "$snodes" -pods "$spods" -replicas "${BENCH_SCHED_REPLICAS:-300}" -timeout "$stmo"; scale=$SCHED_OUT
  if [ -n "$SKIFF_PID" ]; then
    sleep "${BENCH_SCHED_SCALE_SETTLE:-100}"
    settled=$(mem_peak "$SKIFF_PID")
  fi
  stop_skiff_sched; rm -rf "$work/sched-scale"
  summary=$(python3 - "$idle" "$tp" "$tp_big" "$startup" "$scale" "$settled" "${BENCH_SCHED_SCALE_SETTLE:-100}" <<'PY'
import json, sys
idle = sys.argv[1]
settled = dict(kv.split("=") for kv in sys.argv[6].split())
settle_s = sys.argv[7]
def parse(s):
    failed = s.startswith("FAILED")
    if failed:
        s = s.split(": ", 1)[-1]
    try:
        r = json.loads(s)
    except ValueError:
        return None
    if failed:
        r["failed"] = True
    return r
tp, big, st, sc = (parse(a) for a in sys.argv[2:6])
def inc(r):
    s = " FAILED: %s;" % r.get("error", "see above") if r.get("failed") else ""
    if r.get("server_died"):
        s += " SERVER EXITED: %s;" % r["server_died"]
    return s + (" INCOMPLETE: " + r["incomplete"] + ";" if r.get("incomplete") else "")
def cpu(r, n):
    m = r.get("server")
    s = "server CPU %.0f s for the whole run" % (r.get("server_cpu_s") or 0)
    if m:
        s += ", %.0f s measured phase (%.1f ms/pod)" % (m["process_cpu_s"], 1000 * m["process_cpu_s"] / max(n, 1))
    s += ", load %s" % r["loadavg_before_after"]
    if m:
        s += "; scheduler algorithm %.1f ms/pod (filter %.1f, score %.1f), bind call %.0f ms, pod SLI %.0f ms; API writes %.0f ms avg, storage %.0f ms" % (
            m["sched_algorithm_avg_ms"], m["sched_filter_avg_ms"], m["sched_score_avg_ms"], m["sched_bind_avg_ms"], m["sched_pod_sli_avg_ms"],
            m["apiserver_write_avg_ms"], m["storage_write_avg_ms"])
    return s
def slo(r):
    # The API call latency SLOs as upstream measures them: server side,
    # the worst pair's p99 over 5-minute windows (schedbench's api_slo).
    cl = (r.get("api_slo") or {}).get("classes") or {}
    parts = ["%s %s p99 %.0f ms (%s, SLO %.0f s)" % (c, w["pair"], w["p99_ms"], "met" if w["met"] else "NOT met", w["slo_ms"] / 1000)
             for c, w in sorted(cl.items())]
    return "; server-side API SLOs, worst pair: " + ", ".join(parts) if parts else ""
mb = dict(kv.split("=") for kv in idle.split())
print("idle anonymous memory, no nodes: RssAnon %s MB (target <= 60 MB; upstream kube-apiserver + etcd alone: 207 MB)" % mb.get("RssAnon"))
for name, r in (("throughput", tp), ("throughput (SchedulingBasic shape)", big)):
    if r:
        print("%s %d nodes / %d pods:%s %.0f pods/s bound first->last, %.0f overall incl. creation (target >= 1000; upstream CI floor 270 at 5000 nodes); creates %.0f/s; create->bound p50 %.0f / p99 %.0f ms; nodes schedulable after %.0f s; %s" % (
            name, r["nodes"], r.get("pods", 0), inc(r), r.get("bound_per_s_first_to_last", 0), r.get("bound_per_s_overall", 0), r.get("creates_per_s", 0),
            r.get("create_to_bound_p50_ms", 0), r.get("create_to_bound_p99_ms", 0), r.get("nodes_ready_s", 0), cpu(r, r.get("bound", 0))) + slo(r))
if st:
    print("pod startup %d nodes, %.0f pods/s for %.0f s (churn):%s create->Running p50 %.0f / p99 %.0f ms (SLO p99 5 s; target <= 1 s); %s" % (
        st["nodes"], st.get("rate_per_s", 0), st.get("duration_s", 0), inc(st), st["create_to_running_p50_ms"], st["create_to_running_p99_ms"], cpu(st, st.get("pods", 0))))
if sc:
    m = sc.get("server_mb_after", {})
    running = ("%d of %d Running when it stopped" % (sc.get("running", 0), sc["pods"])) if sc.get("incomplete") else ("all Running in %.0f s" % sc.get("all_running_s", 0))
    later = ("; %s s later RssAnon %s MB, VmRSS %s MB (RssFile %s MB)" % (settle_s, settled.get("RssAnon"), settled.get("VmRSS"), settled.get("RssFile"))) if settled else ""
    print("scale %d nodes / %d pods:%s %s; API p99 of the tool's requests %.0f ms (client side, incl. its connection and CPU share); LIST all %d pods %.0f ms (JSON %.0f ms); server right after: RssAnon %s MB, VmRSS %s MB (RssFile %s MB)%s; peak VmHWM %s MB (target <= 1 GB); %s" % (
        sc["nodes"], sc["pods"], inc(sc), running, sc["api"]["p99_ms"], sc.get("listed_pods", 0), sc.get("list_all_pods_ms", 0),
        sc.get("list_all_pods_json_ms", 0), m.get("RssAnon"), m.get("VmRSS"), m.get("RssFile"), later, settled.get("VmHWM", m.get("VmHWM")), cpu(sc, sc["pods"])) + slo(sc))
PY
) || summary="(summary failed)"
  report="$out/sched-$(date +%Y%m%d-%H%M%S).txt"
  {
    echo "date: $(date -Is)  host: $(nproc) cores  binary: $bin  section: $(( $(date +%s) - t0 )) s"
    echo "sched idle MB (no nodes, settled ${SETTLE}s): $idle"
    echo "sched throughput:       $tp"
    echo "sched throughput big:   $tp_big"
    echo "sched startup:          $startup"
    echo "sched scale:            $scale"
    echo "sched scale settled MB (${BENCH_SCHED_SCALE_SETTLE:-100}s after): $settled"
    echo "$summary"
  } > "$report"
  echo
  echo "=== sched bench report: $report"
  cat "$report"
}
# --- node side (root; BENCH_AGENT=only: make bench-agent) ---
# agentbench (tests/bench/agentbench): cold start of `skiff server` to node
# Ready; pod startup p50/p99 (create -> Running via watch) for
# BENCH_AGENT_PODS pods at BENCH_AGENT_RATE pods/s on an agent-only node in
# its own network namespace, image present; PSS summed over skiff, its
# containerd and shims plus RssAnon per process, for the whole single-node
# cluster idle and the agent-only node with 0 and N pods; binary size, the
# downloadable artifact's size ($SKIFF_DIST, `make dist`; make bench-agent
# builds it) and its first-run extraction time, and the binary compressed
# as one zstd stream for comparison. Published baselines (k3s): agent 275 MB,
# server+agent 1.2-1.6 GB, artifact ~78 MB.
AGENT=${BENCH_AGENT:-0}
agent_bench() {
  [ "$(id -u)" = 0 ] || { log "agent bench needs root"; failed=1; return; }
  go build -o "$work/agentbench" "$root/tests/bench/agentbench"
  local report="$out/agent-$(date +%Y%m%d-%H%M%S).txt" res base
  # Measure a copy, as installed (cp, or the artifact's extraction): the
  # page cache of the Go linker's own output file maps differently, and
  # the same binary run from it showed ~10-15 MB more file-backed PSS.
  cp "$bin" "$work/skiff"; bin="$work/skiff"
  run res "$work/agentbench" -bin "$bin" -dist "${SKIFF_DIST:-}" -pods "${BENCH_AGENT_PODS:-30}" -rate "${BENCH_AGENT_RATE:-5}" -settle "${SETTLE}s"
  # A/B in the same run: upstream's one shim per pod (--shim-grouping pod).
  run base "$work/agentbench" -bin "$bin" -pods "${BENCH_AGENT_PODS:-30}" -rate "${BENCH_AGENT_RATE:-5}" -settle "${SETTLE}s" -shim-grouping pod
  { echo "date: $(date -Is)  host: $(nproc) cores  binary: $bin"; echo "--- one shim per node (default)"; echo "$res"
    echo "--- one shim per pod (upstream grouping, same binary)"; echo "$base"; } > "$report"
  echo; echo "=== agent bench report: $report"; cat "$report"
}
if [ "$AGENT" = only ]; then
  agent_bench
  if [ "$failed" -ne 0 ]; then echo "bench: some measurements FAILED (see above)" >&2; exit 1; fi
  exit 0
fi
if [ "$SCHED" = only ]; then
  sched_bench
  if [ "$failed" -ne 0 ]; then echo "bench: some measurements FAILED (see above)" >&2; exit 1; fi
  exit 0
fi

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
# The same loads on the API server alone, as the upstream pair runs: the
# full server's controller manager also turns every Deployment into a
# ReplicaSet and pods (several more writes per apply).
log "skiff API only (--disable-controller-manager --disable-scheduler): ConfigMap load, server-side apply"
start_skiff "$work/skiff-api" "$port" --disable-controller-manager --disable-scheduler
run api_load "$work/loadgen" -kubeconfig "$work/skiff-api/kubeconfig.yaml" -n "$N" -c "$C" -label skiff-api-only
run api_ssa "$work/loadgen" -kubeconfig "$work/skiff-api/kubeconfig.yaml" -mode ssa -n "$SSA_N" -c "$C" -label skiff-api-only
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

# Alternating pairs: "label round load-json ssa-json cpu-ticks-of-the-ssa-run" lines.
pairs=""
if [ -n "$up_ready" ] && [ "$PAIRS" -gt 0 ]; then
  for r in $(seq 1 "$PAIRS"); do
    log "pair $r/$PAIRS: skiff API only, then upstream: ConfigMap load ($N), server-side apply ($SSA_N)"
    start_skiff "$work/pair-skiff-$r" "$port" --disable-controller-manager --disable-scheduler
    run pair_load "$work/loadgen" -kubeconfig "$work/pair-skiff-$r/kubeconfig.yaml" -n "$N" -c "$C" -label skiff-api-only
    c0=$(cpu_ticks "$SKIFF_PID")
    run pair_ssa "$work/loadgen" -kubeconfig "$work/pair-skiff-$r/kubeconfig.yaml" -mode ssa -n "$SSA_N" -c "$C" -label skiff-api-only
    pairs+="skiff $r $pair_load $pair_ssa $(( $(cpu_ticks "$SKIFF_PID") - c0 ))"$'\n'
    stop_skiff
    start_upstream "$work/pair-upstream-$r"
    run pair_load "$work/loadgen" -kubeconfig "$work/pair-upstream-$r/admin.kubeconfig" -n "$N" -c "$C" -label upstream-kube-apiserver+etcd
    c0=$(cpu_ticks $UP_PIDS)
    run pair_ssa "$work/loadgen" -kubeconfig "$work/pair-upstream-$r/admin.kubeconfig" -mode ssa -n "$SSA_N" -c "$C" -label upstream-kube-apiserver+etcd
    pairs+="upstream $r $pair_load $pair_ssa $(( $(cpu_ticks $UP_PIDS) - c0 ))"$'\n'
    stop_upstream
  done
fi
pair_report=""
if [ -n "$pairs" ]; then
  pair_report=$(PAIRS_DATA="$pairs" SSA_N="$SSA_N" TICK="$(getconf CLK_TCK)" python3 - <<'PY'
import json, os
n, tick = int(os.environ["SSA_N"]), float(os.environ["TICK"])
rows = {"skiff": [], "upstream": []}
for line in os.environ["PAIRS_DATA"].splitlines():
    f = line.split(" ", 2)
    if len(f) < 3:
        continue
    try:
        dec = json.JSONDecoder()
        load, i = dec.raw_decode(f[2])
        rest = f[2][i:].lstrip()
        ssa, j = dec.raw_decode(rest)
        ticks = int(rest[j:].strip())
    except ValueError:
        print("pair %s %s: FAILED: %s" % (f[0], f[1], f[2][:200]))
        continue
    rows[f[0]].append({"round": int(f[1]), "load": load["creates_per_s"], "first": ssa["creates_per_s"], "first_p99": ssa["create_p99_ms"],
                       "re": ssa["updates_per_s"], "re_p99": ssa["update_p99_ms"], "cpu_ms": ticks / tick * 1000 / (2 * n)})
for side in ("skiff", "upstream"):
    for r in rows[side]:
        print("pair %d %-8s ConfigMap creates/s %6.0f  SSA first applies/s %5.0f (p99 %5.1f ms)  re-applies/s %5.0f (p99 %5.1f ms)  server CPU %.2f ms/apply" % (
            r["round"], side, r["load"], r["first"], r["first_p99"], r["re"], r["re_p99"], r["cpu_ms"]))
if rows["skiff"] and rows["upstream"]:
    m = {side: {k: sum(r[k] for r in rs) / len(rs) for k in ("load", "first", "re", "cpu_ms")} for side, rs in rows.items()}
    s, u = m["skiff"], m["upstream"]
    print("pairs (%d rounds), skiff API only/upstream, ratio of means: SSA first applies %.2fx, re-applies %.2fx (target >= 2x); ConfigMap creates %.2fx; server CPU per apply %.2f vs %.2f ms (%.2fx less)" % (
        min(len(rows["skiff"]), len(rows["upstream"])), s["first"] / u["first"], s["re"] / u["re"], s["load"] / u["load"], s["cpu_ms"], u["cpu_ms"], u["cpu_ms"] / s["cpu_ms"]))
PY
)
fi

ratios=""
if [ -n "$up_load" ]; then
  ratios=$(python3 - "$skiff_load" "$up_load" "$skiff_ssa" "$up_ssa" "$api_load" "$api_ssa" <<'PY'
import json, sys
def parse(s):
    try:
        return json.loads(s)
    except ValueError:
        return None
s, u, ss, us, a, aa = (parse(x) for x in sys.argv[1:7])
for label, s, ss in (("skiff", s, ss), ("skiff API only", a, aa)):
    if s and u:
        print("%s/upstream creates/s ratio: %.2fx; create p99 %.1f vs %.1f ms; watch p99 %.1f vs %.1f ms; LIST %.1f vs %.1f ms" % (
            label, s["creates_per_s"]/u["creates_per_s"], s["create_p99_ms"], u["create_p99_ms"], s["watch_seen_p99_ms"], u["watch_seen_p99_ms"], s["list_ms"], u["list_ms"]))
    if ss and us:
        print("%s/upstream ssa ratio: creates/s %.2fx, updates/s %.2fx (target >= 2x); create p99 %.1f vs %.1f ms; update p99 %.1f vs %.1f ms; LIST %.1f vs %.1f ms" % (
            label, ss["creates_per_s"]/us["creates_per_s"], ss["updates_per_s"]/us["updates_per_s"], ss["create_p99_ms"], us["create_p99_ms"],
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
  echo "skiff API only load: $api_load"
  echo "skiff API only ssa:  $api_ssa"
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
  if [ -n "$pair_report" ]; then echo "$pair_report"; fi
} > "$report"
echo
echo "=== bench report: $report"
cat "$report"
if [ "$SCHED" = 1 ]; then sched_bench; fi
if [ "$failed" -ne 0 ]; then echo "bench: some measurements FAILED (see above)" >&2; exit 1; fi
