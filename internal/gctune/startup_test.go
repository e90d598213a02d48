package gctune

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync/atomic"
	"testing"
	"time"
)

// gcPercent reads the current GC target without writing it: reading it
// with SetGCPercent(-1) and writing it back would race with the goroutine
// under test and could undo its hand-over.
func gcPercent() int {
	s := []metrics.Sample{{Name: "/gc/gogc:percent"}}
	metrics.Read(s)
	return int(s[0].Value.Uint64())
}

// waitPercent calls each every 30 ms until GOGC is want, for up to 3 s
// when it is expected to get there, else for 1.2 s (past two of the
// settle checks) to show it does not.
func waitPercent(want int, expected bool, each func()) {
	deadline := time.Now().Add(3 * time.Second)
	if !expected {
		deadline = time.Now().Add(1200 * time.Millisecond)
	}
	for gcPercent() != want && time.Now().Before(deadline) {
		each()
		time.Sleep(30 * time.Millisecond)
	}
}

// sink keeps the test's allocations from being optimized away.
var sink []byte

func TestStartupPhases(t *testing.T) {
	tests := []struct {
		name         string
		settleTime   time.Duration
		settleWrites uint64
		settleRate   uint64
		settleGrace  time.Duration
		settleBurst  uint64
		alloc        bool // allocate after Ready, for a second
		write        bool // count writes after Ready
		wantSettled  bool // the process's target is back within 3 s
	}{
		{name: "time ends the settle phase", settleTime: 50 * time.Millisecond, settleRate: 1 << 40, wantSettled: true},
		{name: "load ends the settle phase", settleTime: time.Hour, settleRate: 8 << 20, alloc: true, wantSettled: true},
		{name: "load in the grace does not end it", settleTime: time.Hour, settleRate: 8 << 20, settleGrace: time.Hour, alloc: true},
		{name: "a slower allocation rate does not end it", settleTime: time.Hour, settleRate: 1 << 40, alloc: true},
		{name: "a quiet process settles only when its time is up", settleTime: time.Hour, settleRate: 1 << 40},
		{name: "writes end the settle phase, even in the grace", settleTime: time.Hour, settleWrites: 100, settleGrace: time.Hour, write: true, wantSettled: true},
		{name: "fewer writes do not end it", settleTime: time.Hour, settleWrites: 10000, write: true},
		// ~650 writes/s is ~65 per burst check; only the burst rule is on.
		{name: "a burst of writes ends the settle phase", settleTime: time.Hour, settleRate: 1 << 40, settleBurst: 40, write: true, wantSettled: true},
		{name: "a smaller burst does not end it", settleTime: time.Hour, settleRate: 1 << 40, settleBurst: 200, write: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			defer debug.SetGCPercent(debug.SetGCPercent(73))
			r := Startup{Percent: 30, SettlePercent: 10, SettleTime: tt.settleTime, SettleWrites: tt.settleWrites, SettleRate: tt.settleRate, SettleGrace: tt.settleGrace, SettleBurst: tt.settleBurst}.Begin()
			if p := gcPercent(); p != 30 {
				t.Fatalf("after Begin GOGC = %d, want 30", p)
			}
			r.Serving()
			if p := gcPercent(); p != 10 {
				t.Fatalf("serving: GOGC = %d, want 10", p)
			}
			var writes atomic.Uint64
			r.Ready(t.Context(), writes.Load)
			if p := gcPercent(); p != 10 {
				t.Fatalf("just ready: GOGC = %d, want 10 until settled", p)
			}
			// ~64 MB/s and ~650 writes/s (as the case says) for 1.2 s, past
			// two checks.
			waitPercent(73, tt.wantSettled, func() {
				if tt.alloc {
					for range 2 {
						sink = make([]byte, 1<<20)
					}
				}
				if tt.write {
					writes.Add(20) // ~650/s
				}
			})
			if got := gcPercent() == 73; got != tt.wantSettled {
				t.Fatalf("settled = %v (GOGC %d), want %v", got, gcPercent(), tt.wantSettled)
			}
			r.Stop()
			if p := gcPercent(); p != 73 {
				t.Fatalf("after Stop GOGC = %d, want the process's 73", p)
			}
		})
	}
}

// TestStartupHandsOverOnce: a Stop after the hand-over leaves the target
// the tuner set.
func TestStartupHandsOverOnce(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(73))
	r := Startup{Percent: 30, SettlePercent: 10, SettleTime: time.Millisecond, SettleRate: 1 << 40, Tune: &Config{Min: 55, Max: 55, Budget: 1 << 40}}.Begin()
	r.Serving()
	r.Ready(t.Context(), nil)
	deadline := time.Now().Add(3 * time.Second)
	for gcPercent() != 55 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if p := gcPercent(); p != 55 {
		t.Fatalf("GOGC = %d once settled, want the tuner's 55", p)
	}
	r.Stop()
	if p := gcPercent(); p != 55 {
		t.Fatalf("GOGC = %d after Stop, want the tuner's 55 kept", p)
	}
}

// TestSettleAfterHandOver: Settle brings the settle target back over the
// tuner's, through collections, until its time is up or writes arrive;
// before the hand-over it does nothing.
func TestSettleAfterHandOver(t *testing.T) {
	tests := []struct {
		name         string
		settleTime   time.Duration
		settleWrites uint64
		write        bool // count ~650 writes/s while settling
		wantBack     bool // the tuner's target is back within 3 s
	}{
		{name: "time ends the settle", settleTime: 200 * time.Millisecond, wantBack: true},
		{name: "writes end the settle", settleTime: time.Hour, settleWrites: 100, write: true, wantBack: true},
		{name: "fewer writes do not end it", settleTime: time.Hour, settleWrites: 10000, write: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			defer debug.SetGCPercent(debug.SetGCPercent(73))
			r := Startup{Percent: 30, SettlePercent: 10, SettleTime: tt.settleTime, SettleWrites: tt.settleWrites, HoldPercent: 20,
				Tune: &Config{Min: 55, Max: 55, Budget: 1 << 40}}.Begin()
			r.Serving()
			r.Settle() // before the hand-over: nothing
			if p := gcPercent(); p != 10 {
				t.Fatalf("Settle in start-up: GOGC = %d, want start-up's 10", p)
			}
			var writes atomic.Uint64
			r.Ready(t.Context(), writes.Load)
			r.end(t.Context(), false) // hand over now, as start-up would once settled
			if p := gcPercent(); p != 55 {
				t.Fatalf("tuned: GOGC = %d, want 55", p)
			}
			r.Settle()
			if p := gcPercent(); p != 20 {
				t.Fatalf("settling: GOGC = %d, want HoldPercent 20", p)
			}
			// A collection runs the tuner; the settle target must hold.
			runtime.GC()
			time.Sleep(20 * time.Millisecond)
			if p := gcPercent(); p != 20 && tt.settleTime > time.Second {
				t.Fatalf("after a collection while settling: GOGC = %d, want 20", p)
			}
			waitPercent(55, tt.wantBack, func() {
				if tt.write {
					writes.Add(20)
				}
			})
			if got := gcPercent() == 55; got != tt.wantBack {
				t.Fatalf("tuner's target back = %v (GOGC %d), want %v", got, gcPercent(), tt.wantBack)
			}
		})
	}
}

// forcedGCs is the count of collections the program forced (runtime.GC,
// debug.FreeOSMemory).
func forcedGCs() uint64 {
	s := []metrics.Sample{{Name: "/gc/cycles/forced:gc-cycles"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// TestEndFreesMemoryOnlyWhenQuiet: the hand-over returns start-up's free
// heap to the OS (a forced collection) when time ended the settle phase,
// and not when load did.
func TestEndFreesMemoryOnlyWhenQuiet(t *testing.T) {
	for _, load := range []bool{false, true} {
		defer debug.SetGCPercent(debug.SetGCPercent(73))
		r := Startup{Percent: 30, SettlePercent: 10, SettleTime: time.Hour}.Begin()
		r.Serving()
		before := forcedGCs()
		r.end(t.Context(), load)
		if p := gcPercent(); p != 73 {
			t.Fatalf("load %v: GOGC = %d after the hand-over, want 73", load, p)
		}
		deadline := time.Now().Add(2 * time.Second)
		for forcedGCs() == before && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if forced := forcedGCs() > before; forced == load {
			t.Fatalf("load %v: forced collection = %v, want %v", load, forced, !load)
		}
	}
}
