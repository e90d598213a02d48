// Package memtrim hands a long-running process's idle heap memory back to
// the OS. The Go runtime collects garbage only when the heap reaches its
// goal (or every two minutes), and its scavenger returns free pages only
// gradually and only above ~110% of that goal, so after a burst (start-up,
// a load spike, images imported, CRDs installed) a quiet process keeps
// tens of MB of anonymous memory it no longer uses. On a small edge machine
// that memory matters more than the few ms of CPU a forced collection of
// a quiet process costs, so Loop forces one (debug.FreeOSMemory) when the
// process is quiet and enough memory would come back. Under load it does
// nothing: the runtime's pacing is better there.
package memtrim

import (
	"context"
	"log/slog"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// Config tunes Loop.
type Config struct {
	// Interval between checks.
	Interval time.Duration
	// Threshold: trim when at least this much heap memory (free pages not
	// yet returned, plus garbage the next collection frees) would come
	// back.
	Threshold uint64
	// Quiet: trim only if the process allocated at most this much since
	// the previous check (0: no limit).
	Quiet uint64
	// Logger, if set, gets a debug line per trim.
	Logger *slog.Logger
	// AfterTrim, if set, runs after each trim. A collection reads the
	// binary's read-only metadata (stack maps, type information for every
	// goroutine and object it scans): a process that unmaps its clean file
	// pages (internal/textpages) does it again here, or the forced
	// collections would keep tens of MB of them mapped.
	AfterTrim func()
}

// Stats is what Loop reads from runtime/metrics.
type Stats struct {
	// Free is heap memory free and not yet returned to the OS.
	Free uint64
	// Objects is memory occupied by heap objects, live or not yet swept.
	Objects uint64
	// Live is the heap marked live by the last collection.
	Live uint64
	// Allocs is the cumulative count of bytes allocated.
	Allocs uint64
}

var metricNames = []string{
	"/memory/classes/heap/free:bytes",
	"/memory/classes/heap/objects:bytes",
	"/gc/heap/live:bytes",
	"/gc/heap/allocs:bytes",
}

// Read returns the current Stats; ok is false if the runtime does not
// provide one of them.
func Read() (s Stats, ok bool) {
	samples := make([]metrics.Sample, len(metricNames))
	for i, n := range metricNames {
		samples[i].Name = n
	}
	metrics.Read(samples)
	vals := make([]uint64, len(samples))
	for i, sm := range samples {
		if sm.Value.Kind() != metrics.KindUint64 {
			return Stats{}, false
		}
		vals[i] = sm.Value.Uint64()
	}
	return Stats{Free: vals[0], Objects: vals[1], Live: vals[2], Allocs: vals[3]}, true
}

// Reclaimable is what a collection followed by a full scavenge would
// return at most: the free pages plus the garbage among the objects.
func (s Stats) Reclaimable() uint64 {
	garbage := uint64(0)
	if s.Objects > s.Live {
		garbage = s.Objects - s.Live
	}
	return s.Free + garbage
}

// Due reports whether to trim now, given the stats of the previous check.
func (c Config) Due(prev, cur Stats) bool {
	if c.Quiet > 0 && cur.Allocs-prev.Allocs > c.Quiet {
		return false
	}
	return cur.Reclaimable() >= c.Threshold
}

// Loop checks every c.Interval until ctx ends and trims when Due.
func Loop(ctx context.Context, c Config) {
	prev, ok := Read()
	if !ok {
		return
	}
	t := time.NewTicker(c.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cur, _ := Read()
		if c.Due(prev, cur) {
			debug.FreeOSMemory()
			if c.AfterTrim != nil {
				c.AfterTrim()
			}
			if c.Logger != nil {
				c.Logger.Debug("returned idle heap memory to the OS", "reclaimable_mb", cur.Reclaimable()>>20)
			}
			// The next check counts allocations from after the trim.
			cur, _ = Read()
		}
		prev = cur
	}
}
