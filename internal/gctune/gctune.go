// Package gctune adapts a long-running process's GC target (GOGC) to its
// live heap after every collection. A GC cycle's cost is proportional to
// the live heap it marks and the number of cycles to the allocation rate
// divided by GOGC% of the live heap, so the GC's share of CPU falls with
// GOGC while the heap's headroom (GOGC% of the live heap) grows with it.
// Measured on the server under the API benchmark (2 cores): GOGC 50 spent
// 14-17% of its CPU in the GC, GOGC 100 7-9%, and the same work took ~20%
// less CPU; the headroom is the price. The tuner runs at the highest GOGC
// (Max) whose headroom stays within a budget, and never below Min: a
// small heap (an edge cluster's hundreds of objects) gets the cheaper
// collections, a large one (tens of thousands of pods) keeps the tighter
// target, and idle memory is internal/memtrim's business either way.
package gctune

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"sync"
	"sync/atomic"
)

// Config bounds the GC target.
type Config struct {
	// Min and Max bound GOGC (percent).
	Min, Max int
	// Budget is the most heap headroom (bytes the heap may grow past its
	// live set before the next collection) the tuner raises GOGC for.
	Budget uint64
	// OnChange, if set, is called with each new GOGC the tuner sets.
	OnChange func(percent int)
}

// step rounds GOGC down to a multiple of it, so that a live heap moving by
// a few MB does not reset the target after every collection.
const step = 5

// Percent is the GOGC for a live heap: the largest multiple of step in
// [Min, Max] whose headroom (live*GOGC/100) fits Budget.
func (c Config) Percent(live uint64) int {
	p := c.Max
	if live > 0 && c.Budget < live*uint64(c.Max)/100 {
		p = int(c.Budget * 100 / live)
	}
	p -= p % step
	return max(c.Min, min(p, c.Max))
}

// DefaultBudget is the headroom budget for a machine: an eighth of its
// memory (the smaller of the RAM and the process's cgroup limit), at most
// 256 MB. A 512 MB board gets 64 MB, which keeps a ~100 MB server heap
// near GOGC 60; a large machine stops raising GOGC at a 256 MB headroom,
// so a server holding tens of thousands of pods stays at Min.
func DefaultBudget() uint64 {
	const most = 256 << 20
	mem := memTotal()
	if lim := cgroupLimit(); lim > 0 && (mem == 0 || lim < mem) {
		mem = lim
	}
	if mem == 0 {
		return most
	}
	return min(mem/8, most)
}

// Run sets GOGC for the live heap now and after every collection until
// ctx ends; the last value it set stays.
func Run(ctx context.Context, c Config) { run(ctx, c) }

func run(ctx context.Context, c Config) *tuner {
	t := &tuner{cfg: c, last: -1}
	t.adjust()
	t.arm()
	go func() {
		<-ctx.Done()
		t.stopped.Store(true)
	}()
	return t
}

type tuner struct {
	cfg     Config
	stopped atomic.Bool

	mu    sync.Mutex
	last  int // the GOGC set; -1 before the first
	tuned int // the target for the live heap (Config.Percent)
	hold  int // a target that overrides tuned while set (StartupRun.Settle); 0: none
}

// sentinel is unreachable as soon as arm returns: the next collection
// finds it and queues its finalizer, which adjusts and re-arms. It holds a
// pointer so that it is never a tiny allocation, whose finalizer waits for
// the other objects sharing its block.
type sentinel struct{ t *tuner }

func (t *tuner) arm() {
	runtime.SetFinalizer(&sentinel{t: t}, func(*sentinel) {
		if t.stopped.Load() {
			return
		}
		t.adjust()
		t.arm()
	})
}

// adjust runs in run, then on the finalizer goroutine after each
// collection.
func (t *tuner) adjust() {
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.tuned = t.cfg.Percent(s[0].Value.Uint64())
	t.apply()
}

// setHold sets the target that overrides the tuned one; 0 lifts it.
func (t *tuner) setHold(p int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.hold = p
	t.apply()
}

// apply sets the target in force, the hold or else the tuned one, if it
// changed; t.mu is held.
func (t *tuner) apply() {
	p := t.tuned
	if t.hold > 0 {
		p = t.hold
	}
	if p == t.last {
		return
	}
	t.last = p
	debug.SetGCPercent(p)
	if t.cfg.OnChange != nil {
		t.cfg.OnChange(p)
	}
}

func memTotal() uint64 {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// MemTotal:       24592968 kB
		if f := bytes.Fields(sc.Bytes()); len(f) >= 2 && string(f[0]) == "MemTotal:" {
			kb, err := strconv.ParseUint(string(f[1]), 10, 64)
			if err != nil {
				return 0
			}
			return kb << 10
		}
	}
	return 0
}

// cgroupLimit is the memory limit of the process's cgroup (v2
// memory.max, else v1 memory.limit_in_bytes), 0 when there is none.
// Only the cgroup mounted at /sys/fs/cgroup is read: that is the
// process's own inside a container, and the host's root (no limit) on a
// host, where the machine's RAM bounds it anyway.
func cgroupLimit() uint64 {
	for _, p := range []string{"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"} {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		return parseLimit(b)
	}
	return 0
}

// parseLimit reads a cgroup memory limit file: "max" (v2) and v1's
// "unlimited" (a page-rounded MaxInt64) are no limit.
func parseLimit(b []byte) uint64 {
	s := string(bytes.TrimSpace(b))
	if s == "max" {
		return 0
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil || v >= 1<<62 {
		return 0
	}
	return v
}
