package bolt

import (
	"context"
	"path/filepath"
	"testing"
	"time"
	"unsafe"

	"github.com/skiff-sh/skiff/server/storage"
)

func TestMappingEnd(t *testing.T) {
	const maps = `00400000-04ed9000 r-xp 00000000 fd:01 123 /usr/bin/skiff
7f3f45400000-7f3f46400000 r--s 00000000 fe:00 99 /var/lib/skiff/server/db/state.db
7f3f46400000-7f3f46600000 rw-p 00000000 00:00 0
7f3f46600000-7f3f46700000 rw-s 00000000 fe:00 98 /some/shared/file
7f3f46700000-7f3f46600000 r--s 00000000 fe:00 97 /backwards
`
	tests := []struct {
		start   uintptr
		want    uintptr
		wantErr bool
	}{
		{start: 0x7f3f45400000, want: 0x7f3f46400000},
		{start: 0x7f3f46400000, wantErr: true}, // anonymous, writable
		{start: 0x7f3f46600000, wantErr: true}, // writable shared mapping
		{start: 0x7f3f46700000, wantErr: true}, // end before start
		{start: 0x400000, wantErr: true},       // private code
		{start: 0x1000, wantErr: true},         // no such mapping
	}
	for _, tt := range tests {
		got, err := mappingEnd([]byte(maps), tt.start)
		if (err != nil) != tt.wantErr || (!tt.wantErr && got != tt.want) {
			t.Errorf("mappingEnd(%#x) = %#x, %v; want %#x, error %v", tt.start, got, err, tt.want, tt.wantErr)
		}
	}
}

// TestScanReleaseWindows: the estimate counts each fault window a value
// lies in once, however many values share it, and a window again only
// after the walk has left it; it releases the mapping when it reaches
// every and starts over.
func TestScanReleaseWindows(t *testing.T) {
	b, err := Open(Config{Path: filepath.Join(t.TempDir(), "state.db"), NoSync: true, ReleaseInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	const w = 1 << 12 // a small window, so that a buffer spans many
	buf := make([]byte, 16*w)
	// at returns n bytes from offset off of the first window-aligned
	// part of buf.
	base := int((w - uintptr(unsafe.Pointer(&buf[0]))%w) % w)
	at := func(off, n int) []byte { return buf[base+off : base+off+n] }
	tests := []struct {
		name     string
		values   [][]byte
		mapped   int64
		releases int64
	}{
		{"one value", [][]byte{at(10, 20)}, w, 0},
		{"values in one window", [][]byte{at(0, 10), at(100, 10), at(w-10, 10)}, w, 0},
		{"a value across three windows", [][]byte{at(w-1, w+2)}, 3 * w, 0},
		{"the next value in the last window", [][]byte{at(w-1, w+2), at(2*w+5, 1)}, 3 * w, 0},
		{"back and forth", [][]byte{at(0, 1), at(w, 1), at(0, 1)}, 3 * w, 0},
		{"empty values", [][]byte{at(0, 0), at(w, 0)}, 0, 0},
		{"release at every", [][]byte{at(0, 1), at(w, 1), at(2*w, 1), at(3*w, 1), at(4*w, 1)}, w, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := b.releases.Load()
			s := &scanRelease{db: b.db, every: 4 * w, window: w, releases: &b.releases, log: b.log}
			for _, v := range tt.values {
				s.add(v)
			}
			if s.mapped != tt.mapped || b.releases.Load()-before != tt.releases {
				t.Errorf("estimate %d, releases %d; want %d, %d", s.mapped, b.releases.Load()-before, tt.mapped, tt.releases)
			}
		})
	}
	var nilScan *scanRelease
	nilScan.add(at(0, 1)) // a nil scanRelease counts nothing
}

func TestReleaseDue(t *testing.T) {
	const interval, busy = 30 * time.Second, 2 * time.Second
	tests := []struct {
		name     string
		since    time.Duration
		interval time.Duration
		busy     time.Duration
		revMoved bool
		wantDue  bool
	}{
		{"idle, before the interval", 10 * time.Second, interval, busy, false, false},
		{"idle, at the interval", interval, interval, busy, false, true},
		{"writes, before the busy interval", time.Second, interval, busy, true, false},
		{"writes, at the busy interval", busy, interval, busy, true, true},
		{"writes, no busy interval", 10 * time.Second, interval, 0, true, false},
		{"writes, no busy interval, at the interval", interval, interval, 0, true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := releaseDue(tt.since, tt.interval, tt.busy, tt.revMoved); got != tt.wantDue {
				t.Errorf("releaseDue(%v, %v, %v, %v) = %v, want %v", tt.since, tt.interval, tt.busy, tt.revMoved, got, tt.wantDue)
			}
		})
	}
}

// TestReleaseLoopFollowsWrites runs the loop with a long interval and a
// short busy one: it releases soon after a write and not while idle.
func TestReleaseLoopFollowsWrites(t *testing.T) {
	const busy = 20 * time.Millisecond
	b, err := Open(Config{Path: filepath.Join(t.TempDir(), "state.db"), NoSync: true, ReleaseInterval: time.Hour, BusyReleaseInterval: busy})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	time.Sleep(10 * busy)
	if n := b.releases.Load(); n != 0 {
		t.Fatalf("%d releases without a write, want none before the hour", n)
	}
	op := storage.Op{Type: storage.OpPut, Key: []byte("/registry/things/a"), Value: []byte("v")}
	if _, err := b.Txn(context.Background(), nil, []storage.Op{op}, nil); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for b.releases.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no release within 5 s of a write")
		}
		time.Sleep(busy / 2)
	}
	time.Sleep(3 * busy) // a release already underway may still land
	n := b.releases.Load()
	time.Sleep(10 * busy)
	if m := b.releases.Load(); m != n {
		t.Errorf("%d more releases without writes, want none", m-n)
	}
}
