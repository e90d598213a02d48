package server

import (
	"context"
	"log/slog"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// trimMemory returns freed heap memory to the OS when much of it is held
// without use. The Go scavenger releases free pages only gradually, so
// after a burst (start-up, a load spike, CRDs being installed and their
// OpenAPI re-merged) a server keeps tens of MB of anonymous memory it no
// longer needs for minutes. On a small edge machine that memory matters
// more than the few tens of ms of CPU a forced collection costs, and it is
// only spent when at least threshold bytes are idle.
func trimMemory(ctx context.Context, log *slog.Logger, interval time.Duration, threshold uint64) {
	samples := []metrics.Sample{{Name: "/memory/classes/heap/free:bytes"}}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		metrics.Read(samples)
		if samples[0].Value.Kind() != metrics.KindUint64 {
			return
		}
		if free := samples[0].Value.Uint64(); free >= threshold {
			debug.FreeOSMemory()
			log.Debug("returned idle heap memory to the OS", "free_mb", free>>20)
		}
	}
}
