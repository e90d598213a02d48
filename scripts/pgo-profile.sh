#!/usr/bin/env bash
# Regenerates cmd/skiff/default.pgo, the CPU profile that `go build`
# uses for profile-guided optimization of the skiff binary (-pgo=auto
# picks up default.pgo in the main package's directory; see
# docs/ARCHITECTURE.md, "Build"). It profiles the built binary
# ($SKIFF_BIN, default bin/skiff) under the loads the benchmarks measure,
# each on a fresh server with --disable-agent, through the API server's
# /debug/pprof (profiling=true):
#  - server-side apply of Deployments, API server alone (loadgen -mode ssa),
#    twice, as it is the heaviest request path;
#  - ConfigMap creates, API server alone (loadgen);
#  - the whole server (controllers, scheduler) binding pods to 1000
#    simulated nodes (schedbench -mode throughput), profiled three times
#    as long, from when the nodes are schedulable: with the binding phase
#    profiled for a third of that (10 s), the built binary bound pods
#    ~11% slower than without PGO (4 runs each, 1000 nodes / 5000 pods),
#    while the API loads gained; with 30 s, neither loses;
#  - start-up, from process start ($SKIFF_STARTUP_CPU_PROFILE).
# The profiles are merged with `go tool pprof -proto`. Regenerate after
# large changes to the request path; a stale profile only loses some of
# the gain (the compiler matches it by function name).
# Knobs: SKIFF_BIN, PGO_SECONDS (per load, default 10), PGO_OUT.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${SKIFF_BIN:-$root/bin/skiff}
secs=${PGO_SECONDS:-10}
out=${PGO_OUT:-$root/cmd/skiff/default.pgo}
[ -x "$bin" ] || { echo "pgo-profile: $bin not built (make build)" >&2; exit 1; }
work=$(mktemp -d)
SKIFF_PID="" LOAD_PID=""
stop() {
  if [ -n "$LOAD_PID" ]; then # the load loop, then the run it is in
    pkill -P "$LOAD_PID" 2>/dev/null || true; kill "$LOAD_PID" 2>/dev/null || true; wait "$LOAD_PID" 2>/dev/null || true
  fi
  if [ -n "$SKIFF_PID" ]; then stop_skiff || true; fi
  LOAD_PID=""
}
trap 'stop; rm -rf "$work"' EXIT
go build -o "$work/loadgen" "$root/tests/bench/loadgen"
go build -o "$work/schedbench" "$root/tests/bench/schedbench"
log() { echo "pgo-profile: $*" >&2; }
. "$root/scripts/server-lib.sh" # start_skiff, stop_skiff, free_port
start() { # dir [server flags]: a server on a free port, its profiling endpoints on
  local dir=$1
  shift
  start_skiff "$dir" "$(free_port)" --kube-apiserver-arg profiling=true "$@"
}

profile() { # dir file [seconds]: CPU profile of the running server ($secs seconds by default)
  KUBECONFIG="$1/kubeconfig.yaml" "$bin" kubectl get --raw "/debug/pprof/profile?seconds=${3:-$secs}" >"$2"
  [ -s "$2" ] || { log "empty profile $2"; return 1; }
}
api_load() { # name loadgen-args...: profile the API server alone under a repeated loadgen run
  local name=$1 dir=$work/$1
  shift
  log "$name"
  start "$dir" --disable-controller-manager --disable-scheduler
  sleep 3 # past the start-up GC phase
  (while :; do "$work/loadgen" -kubeconfig "$dir/kubeconfig.yaml" -c 16 -label pgo "$@" >/dev/null || exit 1; done) &
  LOAD_PID=$!
  sleep 1
  profile "$dir" "$work/$name.pprof"
  stop
}

api_load ssa1 -mode ssa -n 1000
api_load ssa2 -mode ssa -n 1000
api_load create -n 3000

log "scheduler: 1000 simulated nodes, pods bound"
start "$work/sched"
"$work/schedbench" -kubeconfig "$work/sched/kubeconfig.yaml" -mode throughput -nodes 1000 -pods 10000 >/dev/null 2>"$work/sched.err" &
LOAD_PID=$!
deadline=$(( $(date +%s) + 300 ))
until grep -q "nodes schedulable" "$work/sched.err"; do
  if ! kill -0 "$LOAD_PID" 2>/dev/null || [ "$(date +%s)" -ge "$deadline" ]; then
    log "schedbench did not get its nodes schedulable:"; tail -5 "$work/sched.err" >&2; exit 1
  fi
  sleep 0.2
done
profile "$work/sched" "$work/sched.pprof" $(( 3 * secs ))
stop

log "start-up"
SKIFF_STARTUP_CPU_PROFILE=$work/start.pprof SKIFF_STARTUP_CPU_PROFILE_SECONDS=3 start "$work/start"
sleep 4 # the start-up profile covers the first 3 s
stop
[ -s "$work/start.pprof" ] || { log "no start-up profile"; exit 1; }

go tool pprof -proto "$work"/ssa1.pprof "$work"/ssa2.pprof "$work"/create.pprof "$work"/sched.pprof "$work"/start.pprof >"$work/merged.pgo"
mv "$work/merged.pgo" "$out"
log "wrote $out ($(wc -c <"$out") bytes)"
