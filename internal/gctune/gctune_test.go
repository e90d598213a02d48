package gctune

import (
	"context"
	"runtime"
	"runtime/debug"
	"testing"
	"time"
)

func TestPercent(t *testing.T) {
	const mb = 1 << 20
	c := Config{Min: 50, Max: 100, Budget: 256 * mb}
	for _, tc := range []struct {
		live uint64
		want int
	}{
		{0, 100},
		{40 * mb, 100},
		{256 * mb, 100},
		{300 * mb, 85},  // 85.3 rounded down to a step
		{400 * mb, 60},  // 64
		{512 * mb, 50},  // exactly Min
		{2048 * mb, 50}, // 12.5, clamped
	} {
		if got := c.Percent(tc.live); got != tc.want {
			t.Errorf("Percent(%d MB) = %d, want %d", tc.live/mb, got, tc.want)
		}
	}
	small := Config{Min: 50, Max: 100, Budget: 64 * mb} // a 512 MB board
	if got := small.Percent(100 * mb); got != 60 {
		t.Errorf("64 MB budget, 100 MB live: %d, want 60", got)
	}
}

func TestParseLimit(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want uint64
	}{
		{"max\n", 0},
		{"9223372036854771712\n", 0}, // cgroup v1 "unlimited"
		{"536870912\n", 512 << 20},
		{"garbage", 0},
	} {
		if got := parseLimit([]byte(tc.in)); got != tc.want {
			t.Errorf("parseLimit(%q) = %d, want %d", tc.in, got, tc.want)
		}
	}
}

func TestDefaultBudget(t *testing.T) {
	b := DefaultBudget()
	if b == 0 || b > 256<<20 {
		t.Fatalf("DefaultBudget() = %d, want (0, 256 MB]", b)
	}
	if mem := memTotal(); mem == 0 {
		t.Fatal("memTotal read nothing from /proc/meminfo")
	} else if b > mem/8 {
		t.Fatalf("budget %d above an eighth of the RAM %d", b, mem)
	}
}

// TestRunFollowsTheLiveHeap: the tuner sets GOGC at once, lowers it after
// a collection that finds a large live heap, and raises it again after
// one that finds it gone, so it re-arms itself after every cycle.
func TestRunFollowsTheLiveHeap(t *testing.T) {
	prev := debug.SetGCPercent(100)
	defer debug.SetGCPercent(prev)
	changes := make(chan int, 16)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	Run(ctx, Config{Min: 10, Max: 90, Budget: 16 << 20, OnChange: func(p int) { changes <- p }})

	next := func(what string, ok func(int) bool) int {
		t.Helper()
		deadline := time.After(20 * time.Second)
		for {
			runtime.GC()
			select {
			case p := <-changes:
				if ok(p) {
					return p
				}
			case <-deadline:
				t.Fatalf("no GOGC change %s", what)
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	next("at start", func(p int) bool { return p == 90 })
	live := make([]byte, 64<<20) // 16 MB budget / 64+ MB live: GOGC < 25
	for i := range live {
		live[i] = byte(i)
	}
	low := next("after a 64 MB live heap", func(p int) bool { return p < 25 })
	if got := debug.SetGCPercent(low); got != low {
		t.Fatalf("runtime GOGC %d, tuner reported %d", got, low)
	}
	runtime.KeepAlive(live)
	next("after the live heap went", func(p int) bool { return p == 90 })
}
