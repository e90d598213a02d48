package bolt_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/skiff-sh/skiff/server/storage"
	"github.com/skiff-sh/skiff/server/storage/bolt"
)

// mappedKB sums the resident kB of this process's mappings of path.
func mappedKB(t *testing.T, path string) int {
	t.Helper()
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	kb, in := 0, false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		fields := strings.Fields(line)
		if len(fields) >= 5 && strings.Contains(fields[0], "-") && !strings.HasSuffix(fields[0], ":") {
			// A mapping's header: start-end perms offset dev inode [path].
			in = len(fields) >= 6 && strings.Join(fields[5:], " ") == path
			continue
		}
		if in && len(fields) >= 2 && fields[0] == "Rss:" {
			n, err := strconv.Atoi(fields[1])
			if err != nil {
				t.Fatal(err)
			}
			kb += n
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return kb
}

func TestReleaseMapped(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	be, err := bolt.Open(bolt.Config{Path: path, NoSync: true, ReleaseInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()
	ctx := context.Background()
	const n = 2000
	value := func(i int) []byte { return bytes.Repeat([]byte(fmt.Sprintf("value-%05d;", i)), 400) } // ~4.8 KB
	for i := range n {
		op := storage.Op{Type: storage.OpPut, Key: fmt.Appendf(nil, "/registry/things/%05d", i), Value: value(i)}
		if _, err := be.Txn(ctx, nil, []storage.Op{op}, nil); err != nil {
			t.Fatal(err)
		}
	}
	readAll := func() {
		t.Helper()
		res, err := be.Range(ctx, []byte("/registry/things/"), []byte("/registry/things0"), storage.RangeOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if len(res.KVs) != n {
			t.Fatalf("read %d keys, want %d", len(res.KVs), n)
		}
		for i, kv := range res.KVs {
			if !bytes.Equal(kv.Value, value(i)) {
				t.Fatalf("key %s: value changed", kv.Key)
			}
		}
	}
	readAll() // maps every leaf
	before := mappedKB(t, path)
	if before < 4096 {
		t.Fatalf("only %d kB of the database mapped after reading ~9 MB; the test cannot tell a release", before)
	}
	size, err := be.ReleaseMapped()
	if err != nil {
		t.Fatal(err)
	}
	if size < int64(n)*4096 {
		t.Errorf("ReleaseMapped covered %d bytes, want at least the data's %d", size, n*4096)
	}
	if after := mappedKB(t, path); after > before/10 {
		t.Errorf("%d kB mapped after ReleaseMapped, %d before: want at most a tenth", after, before)
	}
	readAll() // the data is intact and maps back in
	if again := mappedKB(t, path); again < before/2 {
		t.Errorf("%d kB mapped after reading everything again, want about %d", again, before)
	}
	// Writes after a release still land and read back.
	op := storage.Op{Type: storage.OpPut, Key: []byte("/registry/things/00000"), Value: []byte("new")}
	if _, err := be.Txn(ctx, nil, []storage.Op{op}, nil); err != nil {
		t.Fatal(err)
	}
	res, err := be.Range(ctx, []byte("/registry/things/00000"), nil, storage.RangeOptions{})
	if err != nil || len(res.KVs) != 1 || string(res.KVs[0].Value) != "new" {
		t.Fatalf("read after write: %+v, %v", res.KVs, err)
	}
}

// TestReleaseLoopStopsOnClose: the background release runs while the
// backend serves and ends with Close (go test -race covers the mapping's
// lock against concurrent reads and writes).
func TestReleaseLoopStopsOnClose(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	be, err := bolt.Open(bolt.Config{Path: path, NoSync: true, ReleaseInterval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i := range 200 {
		op := storage.Op{Type: storage.OpPut, Key: fmt.Appendf(nil, "/k/%03d", i), Value: bytes.Repeat([]byte{'x'}, 2048)}
		if _, err := be.Txn(ctx, nil, []storage.Op{op}, nil); err != nil {
			t.Fatal(err)
		}
		if _, err := be.Range(ctx, []byte("/k/"), []byte("/k0"), storage.RangeOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := be.Close(); err != nil {
		t.Fatal(err)
	}
}

// walkMapped opens a store with the given ScanRelease, writes it with
// fill (one transaction per batch of ops), unmaps the file, reads
// [key, end) with opts and returns the result and how much of the file
// that read left mapped.
func walkMapped(t *testing.T, scan int64, fill [][]storage.Op, key, end string, opts storage.RangeOptions) (storage.RangeResult, int) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "state.db")
	be, err := bolt.Open(bolt.Config{Path: path, NoSync: true, ReleaseInterval: -1, ScanRelease: scan})
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()
	ctx := context.Background()
	for _, ops := range fill {
		if _, err := be.Txn(ctx, nil, ops, nil); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := be.ReleaseMapped(); err != nil {
		t.Fatal(err)
	}
	res, err := be.Range(ctx, []byte(key), []byte(end), opts)
	if err != nil {
		t.Fatal(err)
	}
	return res, mappedKB(t, path)
}

// checkWalk fails the test unless the walk's i-th value is want(i) and
// it left between minKB and maxKB of the file mapped.
func checkWalk(t *testing.T, res storage.RangeResult, want func(i int) []byte, kb, minKB, maxKB int) {
	t.Helper()
	for i, kv := range res.KVs {
		if !bytes.Equal(kv.Value, want(i)) {
			t.Fatalf("key %s: value changed", kv.Key)
		}
	}
	if kb > maxKB || kb < minKB {
		t.Fatalf("%d kB of the file mapped after the walk, want %d..%d", kb, minKB, maxKB)
	}
	t.Logf("%d kB mapped", kb)
}

// TestScanRelease: a read that walks more of the history than ScanRelease
// unmaps the file's pages as it goes, so it leaves about that much mapped,
// not everything it walked (the same read without it is the control), and
// still returns every value intact.
func TestScanRelease(t *testing.T) {
	const n, versions, every = 1200, 4, 1 << 20                                                           // ~20 MB of history, released every 1 MB
	value := func(i, v int) []byte { return bytes.Repeat(fmt.Appendf(nil, "value-%05d-%d;", i, v), 300) } // ~4.5 KB
	var fill [][]storage.Op
	for v := range versions {
		for i := 0; i < n; i += 100 {
			var ops []storage.Op
			for j := i; j < i+100; j++ {
				ops = append(ops, storage.Op{Type: storage.OpPut, Key: fmt.Appendf(nil, "/registry/pods/%05d", j), Value: value(j, v)})
			}
			fill = append(fill, ops)
		}
	}
	tests := []struct {
		name  string
		scan  int64
		maxKB int
		minKB int
	}{
		{"released", every, 4 * every >> 10, 0},
		{"never (control)", -1, 1 << 30, 16 << 10},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res, kb := walkMapped(t, tc.scan, fill, "/registry/pods/", "/registry/pods0", storage.RangeOptions{Limit: 100})
			if len(res.KVs) != 100 || res.Count != n {
				t.Fatalf("page of 100: %d KVs, count %d", len(res.KVs), res.Count)
			}
			checkWalk(t, res, func(i int) []byte { return value(i, versions-1) }, kb, tc.minKB, tc.maxKB)
		})
	}
}

// TestScanReleaseScatteredLeaves: what a walk maps is the kernel's
// fault-around window (64 KiB) for every page it reads, so a small prefix
// whose leaves copy-on-write scattered among other data maps many times
// its own size. ScanRelease bounds what it maps, not what it reads: here
// the walk reads ~1.3 MB of values and the control maps far more than that.
func TestScanReleaseScatteredLeaves(t *testing.T) {
	const leases, rounds, every = 2000, 3, 1 << 20
	lease := func(i, r int) []byte { return fmt.Appendf(nil, "%0200d", i*rounds+r) }
	// Each commit renews one lease and adds an 8 KB object, so the
	// leases' leaves are rewritten among the objects' pages.
	var fill [][]storage.Op
	for r := range rounds {
		for i := range leases {
			fill = append(fill, []storage.Op{
				{Type: storage.OpPut, Key: fmt.Appendf(nil, "/registry/leases/%05d", i), Value: lease(i, r)},
				{Type: storage.OpPut, Key: fmt.Appendf(nil, "/registry/pods/%05d-%d", i, r), Value: bytes.Repeat([]byte{'p'}, 8<<10)},
			})
		}
	}
	tests := []struct {
		name         string
		scan         int64
		minKB, maxKB int
	}{
		{"released", every, 0, 2 * every >> 10},
		{"never (control)", -1, 8 << 10, 1 << 30},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res, kb := walkMapped(t, tc.scan, fill, "/registry/leases/", "/registry/leases0", storage.RangeOptions{})
			if len(res.KVs) != leases {
				t.Fatalf("leases: %d", len(res.KVs))
			}
			checkWalk(t, res, func(i int) []byte { return lease(i, rounds-1) }, kb, tc.minKB, tc.maxKB)
		})
	}
}
