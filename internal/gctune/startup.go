package gctune

import (
	"context"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"time"
)

// Startup sets a server's GC targets through its start-up. Go never moves
// objects: the long-lived heap ends up as dense as the collections that
// run while it is built let it be (each collection frees the slots the
// next long-lived objects fill), and what start-up leaves sparse stays
// resident for the life of the process. A server builds its long-lived
// heap in two phases: until it serves (registries among start-up
// garbage), and from then until it has settled (caches filled by their
// initial lists, the components started at ready). Startup collects
// more often in each, then hands over to the process's target or to Run.
type Startup struct {
	// Percent: GOGC until Serving.
	Percent int
	// SettlePercent: GOGC from Serving until settled.
	SettlePercent int
	// SettleTime: how long after Ready the settle target holds, unless
	// SettleAllocs bytes are allocated first (load arrived: the
	// configured target is the cheaper one then).
	SettleTime   time.Duration
	SettleAllocs uint64
	// Tune, when set, is Run once settled; otherwise the GOGC the process
	// had at Begin is restored.
	Tune *Config
}

// StartupRun is a Startup in progress.
type StartupRun struct {
	cfg     Startup
	restore int
	endOnce sync.Once
}

// Begin sets the start-up target.
func (s Startup) Begin() *StartupRun {
	return &StartupRun{cfg: s, restore: debug.SetGCPercent(s.Percent)}
}

// Serving: the server is built and starts serving.
func (r *StartupRun) Serving() { debug.SetGCPercent(r.cfg.SettlePercent) }

// Ready: the server answers. The settle target holds for SettleTime more,
// or until SettleAllocs have been allocated, then the configured target
// takes over (a goroutine waits for that; it ends with ctx).
func (r *StartupRun) Ready(ctx context.Context) {
	start, ok := heapAllocs()
	go func() {
		tick := time.NewTicker(500 * time.Millisecond)
		defer tick.Stop()
		deadline := time.NewTimer(r.cfg.SettleTime)
		defer deadline.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-deadline.C:
				r.end(ctx)
				return
			case <-tick.C:
				if now, ok2 := heapAllocs(); ok && ok2 && now-start > r.cfg.SettleAllocs {
					r.end(ctx)
					return
				}
			}
		}
	}()
}

// Stop restores the process's target if start-up has not ended: the
// server is returning. After the hand-over it does nothing.
func (r *StartupRun) Stop() {
	r.endOnce.Do(func() { debug.SetGCPercent(r.restore) })
}

// end hands over to the configured target and returns the free heap of
// start-up to the OS; only the first call does anything.
func (r *StartupRun) end(ctx context.Context) {
	r.endOnce.Do(func() {
		debug.SetGCPercent(r.restore)
		go debug.FreeOSMemory()
		if r.cfg.Tune != nil {
			Run(ctx, *r.cfg.Tune)
		}
	})
}

// heapAllocs is the cumulative count of bytes allocated.
func heapAllocs() (uint64, bool) {
	s := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0, false
	}
	return s[0].Value.Uint64(), true
}
