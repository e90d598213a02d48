package memtrim

import (
	"bytes"
	"context"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestDue(t *testing.T) {
	t.Parallel()
	const mb = 1 << 20
	c := Config{Threshold: 8 * mb, Quiet: 16 * mb}
	tests := []struct {
		name      string
		prev, cur Stats
		want      bool
	}{
		{"nothing to return", Stats{}, Stats{Free: 1 * mb, Objects: 20 * mb, Live: 19 * mb, Allocs: 1 * mb}, false},
		{"free pages", Stats{}, Stats{Free: 9 * mb, Objects: 20 * mb, Live: 20 * mb, Allocs: 1 * mb}, true},
		{"garbage", Stats{}, Stats{Free: 1 * mb, Objects: 30 * mb, Live: 20 * mb, Allocs: 1 * mb}, true},
		{"busy", Stats{Allocs: 100 * mb}, Stats{Free: 50 * mb, Objects: 30 * mb, Live: 20 * mb, Allocs: 200 * mb}, false},
		{"quiet since last check", Stats{Allocs: 100 * mb}, Stats{Free: 50 * mb, Allocs: 110 * mb}, true},
		// Live can exceed Objects right after a collection freed some.
		{"live above objects", Stats{}, Stats{Free: 2 * mb, Objects: 10 * mb, Live: 12 * mb}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := c.Due(tt.prev, tt.cur); got != tt.want {
				t.Errorf("Due(%+v, %+v) = %v, want %v", tt.prev, tt.cur, got, tt.want)
			}
		})
	}
	if (Config{Threshold: 8 * mb}).Due(Stats{}, Stats{Free: 9 * mb, Allocs: 1 << 40}) != true {
		t.Error("Quiet 0 must not limit")
	}
}

var sink [][]byte

// TestLoopReturnsGarbage: after a burst of garbage in a quiet process,
// Loop hands it back (not a benchmark: it checks the effect, not time).
func TestLoopReturnsGarbage(t *testing.T) {
	if _, ok := Read(); !ok {
		t.Fatal("runtime/metrics lacks a metric memtrim reads")
	}
	runtime.GC()
	for range 64 {
		sink = append(sink, make([]byte, 1<<20))
	}
	sink = nil
	before, _ := Read()
	if before.Reclaimable() < 16<<20 {
		t.Fatalf("setup: only %d MB reclaimable after dropping 64 MB", before.Reclaimable()>>20)
	}
	var logs syncBuffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go Loop(ctx, Config{Interval: 10 * time.Millisecond, Threshold: 8 << 20, Logger: log})
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(logs.String(), "returned idle heap memory") {
		if time.Now().After(deadline) {
			s, _ := Read()
			t.Fatalf("not trimmed: before %+v, now %+v", before, s)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if s, _ := Read(); s.Free >= 8<<20 {
		t.Errorf("after a trim %d MB free heap is still held", s.Free>>20)
	}
}
