package gctune

import (
	"context"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"sync/atomic"
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
// Later, StartupRun.Settle brings the settle target back while the
// server builds more long-lived state.
type Startup struct {
	// Percent: GOGC until Serving.
	Percent int
	// SettlePercent: GOGC from Serving until settled.
	SettlePercent int
	// SettleTime: how long after Ready the settle target holds, unless
	// load arrives first. The configured target is the cheaper one under
	// load, and a load that starts at ready is a common case (an install
	// script, a Helm chart applied right after boot, a benchmark).
	// Checked every half second, load is either
	//  - more than SettleWrites writes per second (the count Ready was
	//    given; from the first check), or
	//  - more than SettleRate bytes allocated per second, from
	//    SettleGrace after Ready (the grace skips the allocation burst of
	//    the components that start at ready, which write little);
	// and, checked every burstCheck (100 ms), more than SettleBurst writes
	// since the last such check (0: no burst rule). A heavy load is then
	// seen within ~0.1 s instead of up to a half-second check or two,
	// while the settle target makes each of its collections ~10 times as
	// frequent.
	SettleTime   time.Duration
	SettleWrites uint64
	SettleRate   uint64
	SettleGrace  time.Duration
	SettleBurst  uint64
	// HoldPercent: GOGC while Settle holds, after the hand-over (0: the
	// SettlePercent). Settle's state is built among its requests' garbage
	// (a CRD's first requests allocate ~100 times its state), so each
	// point of GOGC below the tuner's costs more CPU than in start-up.
	HoldPercent int
	// Tune, when set, is Run once settled; otherwise the GOGC the process
	// had at Begin is restored.
	Tune *Config
}

// StartupRun is a Startup in progress, and after it the tuner it handed
// over to.
type StartupRun struct {
	cfg     Startup
	restore int
	endOnce sync.Once

	// Set by Ready.
	ctx    context.Context
	writes func() uint64
	// tuner is set at the hand-over when Startup.Tune is.
	tuner atomic.Pointer[tuner]

	mu          sync.Mutex
	settling    bool      // a settle goroutine runs
	settleUntil time.Time // when it ends, unless load ends it first
}

// Begin sets the start-up target.
func (s Startup) Begin() *StartupRun {
	return &StartupRun{cfg: s, restore: debug.SetGCPercent(s.Percent)}
}

// Serving: the server is built and starts serving.
func (r *StartupRun) Serving() { debug.SetGCPercent(r.cfg.SettlePercent) }

// settleCheck is how often the settle phase measures the load;
// burstCheck how often it looks for a burst of writes (Startup.SettleBurst).
const (
	settleCheck = 500 * time.Millisecond
	burstCheck  = 100 * time.Millisecond
)

// Ready: the server answers. The settle target holds for SettleTime more,
// or until load arrives (Startup.SettleWrites, SettleRate, SettleBurst), then the
// configured target takes over (a goroutine waits for that; it ends with
// ctx). writes, if not nil, is a cumulative count of the server's writes.
func (r *StartupRun) Ready(ctx context.Context, writes func() uint64) {
	ready := time.Now()
	if writes == nil {
		writes = func() uint64 { return 0 }
	}
	r.ctx, r.writes = ctx, writes
	go func() {
		tick := time.NewTicker(burstCheck)
		defer tick.Stop()
		deadline := time.NewTimer(r.cfg.SettleTime)
		defer deadline.Stop()
		lastAllocs, allocsOK := heapAllocs()
		lastWrites, lastAt := writes(), ready
		burstWrites := lastWrites
		for {
			select {
			case <-ctx.Done():
				return
			case <-deadline.C:
				r.end(ctx, false)
				return
			case now := <-tick.C:
				w := writes()
				if r.cfg.SettleBurst > 0 && w-burstWrites > r.cfg.SettleBurst {
					r.end(ctx, true)
					return
				}
				burstWrites = w
				d := now.Sub(lastAt)
				if d < settleCheck-burstCheck/2 {
					continue
				}
				allocs, ok := heapAllocs()
				if exceeds(w-lastWrites, d, r.cfg.SettleWrites) ||
					ok && allocsOK && lastAt.Sub(ready) >= r.cfg.SettleGrace && exceeds(allocs-lastAllocs, d, r.cfg.SettleRate) {
					r.end(ctx, true)
					return
				}
				lastAllocs, allocsOK, lastWrites, lastAt = allocs, ok, w, now
			}
		}
	}()
}

// exceeds reports whether n over d is more than rate per second; a zero
// rate never is.
func exceeds(n uint64, d time.Duration, rate uint64) bool {
	return rate > 0 && d > 0 && float64(n) > float64(rate)*d.Seconds()
}

// Stop restores the process's target if start-up has not ended: the
// server is returning. After the hand-over it does nothing.
func (r *StartupRun) Stop() {
	r.endOnce.Do(func() { debug.SetGCPercent(r.restore) })
}

// end hands over to the configured target and, unless load ended the
// settle phase, returns the free heap of start-up to the OS (under load
// that forced collection would be one more, and the heap would fault the
// pages back in at once; memtrim returns them once the server is quiet).
// Only the first call does anything.
func (r *StartupRun) end(ctx context.Context, load bool) {
	r.endOnce.Do(func() {
		debug.SetGCPercent(r.restore)
		if !load {
			go debug.FreeOSMemory()
		}
		if r.cfg.Tune != nil {
			r.tuner.Store(run(ctx, *r.cfg.Tune))
		}
	})
}

// Settle: the server builds long-lived state again, outside start-up (a
// CustomResourceDefinition served: its schemas, validators, storage and
// watch cache), which the tuner's target would leave as sparse as
// start-up's would be without the settle phase. Startup.HoldPercent holds
// from now until SettleTime after the last call, unless load arrives
// first: more than SettleWrites writes per second (the allocation rate is
// no measure here, building the state is what allocates). Then the
// tuner's target is back. Before the hand-over
// (start-up is settling anyway) and without a tuner (the process's GOGC
// is the user's) Settle does nothing.
func (r *StartupRun) Settle() {
	t := r.tuner.Load()
	if t == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.settleUntil = time.Now().Add(r.cfg.SettleTime)
	if r.settling {
		return
	}
	r.settling = true
	p := r.cfg.HoldPercent
	if p == 0 {
		p = r.cfg.SettlePercent
	}
	t.setHold(p)
	go r.settle(t)
}

// settle lifts the settle target when its time is up or load arrives.
func (r *StartupRun) settle(t *tuner) {
	tick := time.NewTicker(settleCheck)
	defer tick.Stop()
	lastWrites, lastAt := r.writes(), time.Now()
	for {
		select {
		case <-r.ctx.Done():
			return
		case now := <-tick.C:
			w := r.writes()
			r.mu.Lock()
			done := !now.Before(r.settleUntil) || exceeds(w-lastWrites, now.Sub(lastAt), r.cfg.SettleWrites)
			if done {
				r.settling = false
				t.setHold(0)
			}
			r.mu.Unlock()
			if done {
				return
			}
			lastWrites, lastAt = w, now
		}
	}
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
