// Package storagetest is the conformance suite every storage.Backend must
// pass (bbolt today, embedded etcd later): revision ordering, transactions,
// multi-version reads, watch resume, compaction, leases and recovery after
// reopening.
package storagetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/skiff-sh/skiff/server/storage"
)

// Opener opens the backend stored in dir (creating it when empty). Opening
// the same dir again after Close must see everything acknowledged before.
type Opener func(t *testing.T, dir string) storage.Backend

// Run runs the whole suite.
func Run(t *testing.T, open Opener) {
	tests := []struct {
		name string
		fn   func(*testing.T, Opener)
	}{
		{"RevisionsAdvanceByOne", testRevisions},
		{"TxnCompares", testTxnCompares},
		{"RangeAtRevision", testRangeAtRevision},
		{"RangeLimitCount", testRangeLimitCount},
		{"CountFollowsWrites", testCountFollowsWrites},
		{"FutureRevision", testFutureRevision},
		{"WatchResume", testWatchResume},
		{"WatchPrevKVAndDelete", testWatchPrevKV},
		{"WatchProgress", testWatchProgress},
		{"Compaction", testCompaction},
		{"Leases", testLeases},
		{"ConcurrentWriters", testConcurrentWriters},
		{"Reopen", testReopen},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, open) })
	}
}

func put(t *testing.T, be storage.Backend, key, val string) int64 {
	t.Helper()
	res, err := be.Txn(context.Background(), nil, []storage.Op{{Type: storage.OpPut, Key: []byte(key), Value: []byte(val)}}, nil)
	if err != nil {
		t.Fatalf("put %s: %v", key, err)
	}
	return res.Revision
}

func del(t *testing.T, be storage.Backend, key string) int64 {
	t.Helper()
	res, err := be.Txn(context.Background(), nil, []storage.Op{{Type: storage.OpDelete, Key: []byte(key)}}, nil)
	if err != nil {
		t.Fatalf("delete %s: %v", key, err)
	}
	return res.Revision
}

func get(t *testing.T, be storage.Backend, key string, rev int64) *storage.KeyValue {
	t.Helper()
	res, err := be.Range(context.Background(), []byte(key), nil, storage.RangeOptions{Revision: rev})
	if err != nil {
		t.Fatalf("get %s@%d: %v", key, rev, err)
	}
	if len(res.KVs) == 0 {
		return nil
	}
	return &res.KVs[0]
}

func testRevisions(t *testing.T, open Opener) {
	be := open(t, t.TempDir())
	r0 := be.CurrentRevision()
	if r0 < 1 {
		t.Fatalf("a new store starts at revision >= 1, got %d", r0)
	}
	r1 := put(t, be, "/a", "1")
	r2 := put(t, be, "/a", "2")
	r3 := del(t, be, "/a")
	if r1 != r0+1 || r2 != r1+1 || r3 != r2+1 {
		t.Fatalf("revisions %d %d %d after %d", r1, r2, r3, r0)
	}
	// A write that writes nothing does not advance the revision.
	res, err := be.Txn(context.Background(), nil, []storage.Op{{Type: storage.OpDelete, Key: []byte("/missing")}}, nil)
	if err != nil || res.Revision != r3 {
		t.Fatalf("empty delete: rev %d err %v, want %d", res.Revision, err, r3)
	}
	r4 := put(t, be, "/a", "3")
	kv := get(t, be, "/a", 0)
	if kv.CreateRevision != r4 || kv.Version != 1 || kv.ModRevision != r4 {
		t.Fatalf("recreated key: %+v", kv)
	}
	r5 := put(t, be, "/a", "4")
	kv = get(t, be, "/a", 0)
	if kv.CreateRevision != r4 || kv.Version != 2 || kv.ModRevision != r5 || string(kv.Value) != "4" {
		t.Fatalf("updated key: %+v", kv)
	}
}

func testTxnCompares(t *testing.T, open Opener) {
	be := open(t, t.TempDir())
	ctx := context.Background()
	create := func(key, val string) storage.TxnResult {
		res, err := be.Txn(ctx, []storage.Compare{{Key: []byte(key), Target: storage.CompareMod, Result: storage.CompareEqual, Int: 0}},
			[]storage.Op{{Type: storage.OpPut, Key: []byte(key), Value: []byte(val)}},
			[]storage.Op{{Type: storage.OpRange, Key: []byte(key)}})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	if res := create("/k", "v1"); !res.Succeeded {
		t.Fatal("create of a missing key failed")
	}
	res := create("/k", "v2")
	if res.Succeeded || len(res.Results) != 1 || string(res.Results[0].Range.KVs[0].Value) != "v1" {
		t.Fatalf("create of an existing key: %+v", res)
	}
	mod := get(t, be, "/k", 0).ModRevision
	update := func(expect int64, val string) bool {
		res, err := be.Txn(ctx, []storage.Compare{{Key: []byte("/k"), Target: storage.CompareMod, Result: storage.CompareEqual, Int: expect}},
			[]storage.Op{{Type: storage.OpPut, Key: []byte("/k"), Value: []byte(val), PrevKV: true}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		return res.Succeeded
	}
	if update(mod-1, "stale") {
		t.Fatal("update with a stale mod revision succeeded")
	}
	if !update(mod, "v3") {
		t.Fatal("update with the current mod revision failed")
	}
	if got := string(get(t, be, "/k", 0).Value); got != "v3" {
		t.Fatalf("value %q", got)
	}
	// Value and version compares.
	res, err := be.Txn(ctx, []storage.Compare{
		{Key: []byte("/k"), Target: storage.CompareValue, Result: storage.CompareEqual, Value: []byte("v3")},
		{Key: []byte("/k"), Target: storage.CompareVersion, Result: storage.CompareGreater, Int: 1},
	}, []storage.Op{{Type: storage.OpDelete, Key: []byte("/k")}}, nil)
	if err != nil || !res.Succeeded || res.Results[0].Deleted != 1 {
		t.Fatalf("compare-and-delete: %+v %v", res, err)
	}
	// Duplicate keys in one transaction are refused.
	if _, err := be.Txn(ctx, nil, []storage.Op{{Type: storage.OpPut, Key: []byte("/d"), Value: []byte("1")}, {Type: storage.OpPut, Key: []byte("/d"), Value: []byte("2")}}, nil); err == nil {
		t.Fatal("duplicate keys accepted")
	}
	// Invalid keys are refused and nothing is written.
	rev := be.CurrentRevision()
	if _, err := be.Txn(ctx, nil, []storage.Op{{Type: storage.OpPut, Key: []byte("bad\x00key"), Value: []byte("1")}}, nil); !errors.Is(err, storage.ErrInvalidKey) {
		t.Fatalf("NUL key: %v", err)
	}
	if be.CurrentRevision() != rev {
		t.Fatal("refused write advanced the revision")
	}
}

func testRangeAtRevision(t *testing.T, open Opener) {
	be := open(t, t.TempDir())
	r1 := put(t, be, "/p/a", "a1")
	r2 := put(t, be, "/p/b", "b1")
	r3 := put(t, be, "/p/a", "a2")
	r4 := del(t, be, "/p/b")
	check := func(rev int64, want string) {
		t.Helper()
		res, err := be.Range(context.Background(), []byte("/p/"), storage.PrefixEnd([]byte("/p/")), storage.RangeOptions{Revision: rev})
		if err != nil {
			t.Fatal(err)
		}
		var got bytes.Buffer
		for _, kv := range res.KVs {
			fmt.Fprintf(&got, "%s=%s ", kv.Key, kv.Value)
		}
		if got.String() != want {
			t.Fatalf("range at %d: %q, want %q", rev, got.String(), want)
		}
	}
	check(r1, "/p/a=a1 ")
	check(r2, "/p/a=a1 /p/b=b1 ")
	check(r3, "/p/a=a2 /p/b=b1 ")
	check(r4, "/p/a=a2 ")
	check(0, "/p/a=a2 ")
	// Keys outside the prefix are not returned; the "\x00" end selects all keys >= start.
	put(t, be, "/q", "q")
	res, err := be.Range(context.Background(), []byte("/p/b"), []byte{0}, storage.RangeOptions{})
	if err != nil || len(res.KVs) != 1 || string(res.KVs[0].Key) != "/q" {
		t.Fatalf("open-ended range: %+v %v", res, err)
	}
	// A start key that is not stored (as paging clients send) starts after it.
	res, err = be.Range(context.Background(), []byte("/p/a\x00"), storage.PrefixEnd([]byte("/p/")), storage.RangeOptions{Revision: r3})
	if err != nil || len(res.KVs) != 1 || string(res.KVs[0].Key) != "/p/b" {
		t.Fatalf("range from a continue key: %+v %v", res, err)
	}
}

func testRangeLimitCount(t *testing.T, open Opener) {
	be := open(t, t.TempDir())
	for i := range 10 {
		put(t, be, fmt.Sprintf("/l/%02d", i), "v")
	}
	res, err := be.Range(context.Background(), []byte("/l/"), storage.PrefixEnd([]byte("/l/")), storage.RangeOptions{Limit: 3})
	if err != nil || len(res.KVs) != 3 || !res.More || res.Count != 10 || string(res.KVs[2].Key) != "/l/02" {
		t.Fatalf("limited range: n=%d more=%v count=%d err=%v", len(res.KVs), res.More, res.Count, err)
	}
	res, err = be.Range(context.Background(), []byte("/l/"), storage.PrefixEnd([]byte("/l/")), storage.RangeOptions{CountOnly: true})
	if err != nil || len(res.KVs) != 0 || res.Count != 10 {
		t.Fatalf("count only: %+v %v", res, err)
	}
	res, err = be.Range(context.Background(), []byte("/l/"), storage.PrefixEnd([]byte("/l/")), storage.RangeOptions{KeysOnly: true})
	if err != nil || len(res.KVs) != 10 || res.KVs[0].Value != nil {
		t.Fatalf("keys only: %+v %v", res, err)
	}
}

// testCountFollowsWrites asks for the same counts again and again while
// writes change them (a backend may keep counts it was asked for before):
// creates, updates, deletes of present and absent keys, a delete range, a
// lease expiring, a reopen, and counts at earlier revisions.
func testCountFollowsWrites(t *testing.T, open Opener) {
	ctx := context.Background()
	dir := t.TempDir()
	be := open(t, dir)
	type span struct{ key, end string }
	spans := []span{
		{"/c/", "/c0"},           // one resource's prefix
		{"/c/a/", "/c/a0"},       // one namespace in it
		{"/c/b", "/c/c"},         // a range inside it
		{"/c/", "\x00"},          // from a key to the end of the keyspace
		{"/c/a/k03", "/c/a/k06"}, // a few keys
	}
	live := map[string]bool{}
	want := func(sp span) int64 {
		var n int64
		for k := range live {
			if k >= sp.key && (sp.end == "\x00" || k < sp.end) {
				n++
			}
		}
		return n
	}
	type at struct {
		rev   int64
		count []int64
	}
	var history []at
	check := func(step string) {
		t.Helper()
		var counts []int64
		var rev int64
		for _, sp := range spans {
			for range 2 { // the second ask may be answered from a kept count
				res, err := be.Range(ctx, []byte(sp.key), []byte(sp.end), storage.RangeOptions{CountOnly: true})
				if err != nil {
					t.Fatalf("%s: count [%s, %q): %v", step, sp.key, sp.end, err)
				}
				if res.Count != want(sp) || len(res.KVs) != 0 {
					t.Fatalf("%s: count [%s, %q) = %d (%d KVs), want %d", step, sp.key, sp.end, res.Count, len(res.KVs), want(sp))
				}
				rev = res.Revision
			}
			counts = append(counts, want(sp))
		}
		history = append(history, at{rev, counts})
	}
	check("empty")
	for i := range 10 {
		for _, ns := range []string{"a", "b"} {
			k := fmt.Sprintf("/c/%s/k%02d", ns, i)
			put(t, be, k, "v1")
			live[k] = true
		}
	}
	put(t, be, "/d/outside", "v") // in the range to the end only
	live["/d/outside"] = true
	check("after creates")
	put(t, be, "/c/a/k01", "v2")
	put(t, be, "/c/b/k02", "v2")
	check("after updates")
	del(t, be, "/c/a/k04")
	delete(live, "/c/a/k04")
	del(t, be, "/c/a/absent")
	check("after deletes")
	if _, err := be.Txn(ctx, nil, []storage.Op{{Type: storage.OpDelete, Key: []byte("/c/b/k05"), End: []byte("/c/b/k08")}}, nil); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"/c/b/k05", "/c/b/k06", "/c/b/k07"} {
		delete(live, k)
	}
	check("after a delete range")
	if _, err := be.Txn(ctx, nil, []storage.Op{
		{Type: storage.OpPut, Key: []byte("/c/a/k04"), Value: []byte("again")},
		{Type: storage.OpPut, Key: []byte("/c/a/k05"), Value: []byte("v3")},
		{Type: storage.OpDelete, Key: []byte("/c/a/k06")},
	}, nil); err != nil {
		t.Fatal(err)
	}
	live["/c/a/k04"] = true
	delete(live, "/c/a/k06")
	check("after a transaction of three writes")
	l, err := be.LeaseGrant(ctx, 0, 1)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"/c/a/t1", "/c/b/t2"} {
		if _, err := be.Txn(ctx, nil, []storage.Op{{Type: storage.OpPut, Key: []byte(k), Value: []byte("v"), Lease: l.ID}}, nil); err != nil {
			t.Fatal(err)
		}
		live[k] = true
	}
	check("after puts with a lease")
	if _, err := be.LeaseRevoke(ctx, l.ID); err != nil {
		t.Fatal(err)
	}
	delete(live, "/c/a/t1")
	delete(live, "/c/b/t2")
	check("after the lease is revoked")
	if err := be.Close(); err != nil {
		t.Fatal(err)
	}
	be = open(t, dir)
	check("after a reopen")
	put(t, be, "/c/a/new", "v")
	live["/c/a/new"] = true
	check("after a create after the reopen")
	for _, h := range history {
		for i, sp := range spans {
			res, err := be.Range(ctx, []byte(sp.key), []byte(sp.end), storage.RangeOptions{CountOnly: true, Revision: h.rev})
			if err != nil || res.Count != h.count[i] {
				t.Fatalf("count [%s, %q) at revision %d = %d (%v), want %d", sp.key, sp.end, h.rev, res.Count, err, h.count[i])
			}
		}
	}
}

func testFutureRevision(t *testing.T, open Opener) {
	be := open(t, t.TempDir())
	cur := put(t, be, "/f", "1")
	_, err := be.Range(context.Background(), []byte("/f"), nil, storage.RangeOptions{Revision: cur + 5})
	if !errors.Is(err, storage.ErrFutureRev) {
		t.Fatalf("range at a future revision: %v", err)
	}
}

func collect(t *testing.T, w storage.Watcher, n int) []storage.Event {
	t.Helper()
	var out []storage.Event
	timeout := time.After(10 * time.Second)
	for len(out) < n {
		select {
		case b, ok := <-w.Events():
			if !ok {
				t.Fatalf("watch closed after %d events: %v", len(out), w.Err())
			}
			out = append(out, b.Events...)
		case <-timeout:
			t.Fatalf("got %d of %d events", len(out), n)
		}
	}
	return out
}

func testWatchResume(t *testing.T, open Opener) {
	be := open(t, t.TempDir())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var revs []int64
	for i := range 20 {
		revs = append(revs, put(t, be, fmt.Sprintf("/w/%d", i%4), fmt.Sprint(i)))
		put(t, be, "/other", fmt.Sprint(i))
	}
	// Resume from the middle of the history: exactly the later events, in order.
	w, err := be.Watch(ctx, []byte("/w/"), storage.PrefixEnd([]byte("/w/")), revs[10], false)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	evs := collect(t, w, 10)
	for i, ev := range evs {
		if ev.KV.ModRevision != revs[10+i] || string(ev.KV.Value) != fmt.Sprint(10+i) {
			t.Fatalf("event %d: rev %d value %s, want rev %d", i, ev.KV.ModRevision, ev.KV.Value, revs[10+i])
		}
	}
	// Live events follow.
	r := put(t, be, "/w/live", "x")
	if evs := collect(t, w, 1); evs[0].KV.ModRevision != r {
		t.Fatalf("live event at %d, want %d", evs[0].KV.ModRevision, r)
	}
}

func testWatchPrevKV(t *testing.T, open Opener) {
	be := open(t, t.TempDir())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w, err := be.Watch(ctx, []byte("/x"), nil, 0, true)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	put(t, be, "/x", "1")
	put(t, be, "/x", "2")
	d := del(t, be, "/x")
	evs := collect(t, w, 3)
	if evs[0].Type != storage.EventPut || evs[0].PrevKV != nil {
		t.Fatalf("create event: %+v", evs[0])
	}
	if evs[1].PrevKV == nil || string(evs[1].PrevKV.Value) != "1" {
		t.Fatalf("update event prevKV: %+v", evs[1])
	}
	if evs[2].Type != storage.EventDelete || evs[2].KV.ModRevision != d || evs[2].PrevKV == nil || string(evs[2].PrevKV.Value) != "2" {
		t.Fatalf("delete event: %+v", evs[2])
	}
}

func testWatchProgress(t *testing.T, open Opener) {
	be := open(t, t.TempDir())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w, err := be.Watch(ctx, []byte("/quiet"), nil, 0, false)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	r := put(t, be, "/noisy", "1")
	w.RequestProgress()
	select {
	case b := <-w.Events():
		if len(b.Events) != 0 || b.Revision != r {
			t.Fatalf("progress notification %+v, want revision %d", b, r)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no progress notification")
	}
}

func testCompaction(t *testing.T, open Opener) {
	be := open(t, t.TempDir())
	ctx := context.Background()
	r1 := put(t, be, "/c", "1")
	r2 := put(t, be, "/c", "2")
	put(t, be, "/gone", "x")
	r4 := del(t, be, "/gone")
	r5 := put(t, be, "/c", "3")
	if err := be.Compact(ctx, r4); err != nil {
		t.Fatal(err)
	}
	if be.CompactRevision() != r4 {
		t.Fatalf("compact revision %d", be.CompactRevision())
	}
	if _, err := be.Range(ctx, []byte("/c"), nil, storage.RangeOptions{Revision: r1}); !errors.Is(err, storage.ErrCompacted) {
		t.Fatalf("read below the compaction: %v", err)
	}
	if kv := get(t, be, "/c", r4); kv == nil || string(kv.Value) != "2" || kv.ModRevision != r2 {
		t.Fatalf("read at the compaction revision: %+v", kv)
	}
	if kv := get(t, be, "/c", r5); string(kv.Value) != "3" {
		t.Fatalf("read after compaction: %+v", kv)
	}
	if _, err := be.Watch(ctx, []byte("/c"), nil, r2, false); !errors.Is(err, storage.ErrCompacted) {
		t.Fatalf("watch from a compacted revision: %v", err)
	}
	if err := be.Compact(ctx, r4); !errors.Is(err, storage.ErrCompacted) {
		t.Fatalf("compacting twice: %v", err)
	}
	if err := be.Compact(ctx, r5+10); !errors.Is(err, storage.ErrFutureRev) {
		t.Fatalf("compacting the future: %v", err)
	}
	// A transaction that fails part-way (its range op reads a compacted
	// revision after its put) leaves nothing behind.
	before := be.CurrentRevision()
	_, err := be.Txn(ctx, nil, []storage.Op{
		{Type: storage.OpPut, Key: []byte("/partial"), Value: []byte("x")},
		{Type: storage.OpRange, Key: []byte("/c"), Range: storage.RangeOptions{Revision: r1}},
	}, nil)
	if !errors.Is(err, storage.ErrCompacted) {
		t.Fatalf("transaction reading a compacted revision: %v", err)
	}
	if get(t, be, "/partial", 0) != nil || be.CurrentRevision() != before {
		t.Fatal("a failed transaction left a partial write")
	}
	if r := put(t, be, "/after-failure", "ok"); r != before+1 {
		t.Fatalf("revision after a failed transaction: %d, want %d", r, before+1)
	}
	// Compaction keeps the store bounded: repeated updates of one key with
	// compaction in between do not accumulate versions.
	for range 5 {
		var last int64
		for i := range 200 {
			last = put(t, be, "/churn", fmt.Sprint(i))
		}
		if err := be.Compact(ctx, last); err != nil {
			t.Fatal(err)
		}
	}
	if kv := get(t, be, "/churn", 0); string(kv.Value) != "199" {
		t.Fatalf("churned key: %+v", kv)
	}
}

func testLeases(t *testing.T, open Opener) {
	be := open(t, t.TempDir())
	ctx := context.Background()
	l, err := be.LeaseGrant(ctx, 0, 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := be.Txn(ctx, nil, []storage.Op{{Type: storage.OpPut, Key: []byte("/ttl"), Value: []byte("v"), Lease: l.ID}}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := be.Txn(ctx, nil, []storage.Op{{Type: storage.OpPut, Key: []byte("/nolease"), Value: []byte("v"), Lease: 12345}}, nil); !errors.Is(err, storage.ErrLeaseNotFound) {
		t.Fatalf("put with an unknown lease: %v", err)
	}
	info, err := be.LeaseTimeToLive(ctx, l.ID, true)
	if err != nil || len(info.Keys) != 1 {
		t.Fatalf("time to live: %+v %v", info, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for get(t, be, "/ttl", 0) != nil {
		if time.Now().After(deadline) {
			t.Fatal("key of an expired lease still present")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if _, err := be.LeaseKeepAlive(ctx, l.ID); !errors.Is(err, storage.ErrLeaseNotFound) {
		t.Fatalf("keepalive of an expired lease: %v", err)
	}
}

func testConcurrentWriters(t *testing.T, open Opener) {
	be := open(t, t.TempDir())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	start := be.CurrentRevision()
	w, err := be.Watch(ctx, []byte("/cw/"), storage.PrefixEnd([]byte("/cw/")), start+1, false)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	const writers, each = 16, 50
	var mu sync.Mutex
	acked := map[int64]string{}
	var wg sync.WaitGroup
	for i := range writers {
		wg.Go(func() {
			for j := range each {
				k := fmt.Sprintf("/cw/%d/%d", i, j)
				res, err := be.Txn(ctx, nil, []storage.Op{{Type: storage.OpPut, Key: []byte(k), Value: []byte(k)}}, nil)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				acked[res.Revision] = k
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(acked) != writers*each {
		t.Fatalf("%d distinct revisions for %d writes", len(acked), writers*each)
	}
	evs := collect(t, w, writers*each)
	for i, ev := range evs {
		if ev.KV.ModRevision != start+1+int64(i) || acked[ev.KV.ModRevision] != string(ev.KV.Key) {
			t.Fatalf("event %d: rev %d key %s", i, ev.KV.ModRevision, ev.KV.Key)
		}
	}
}

func testReopen(t *testing.T, open Opener) {
	dir := t.TempDir()
	be := open(t, dir)
	var last int64
	for i := range 50 {
		last = put(t, be, fmt.Sprintf("/r/%d", i), fmt.Sprint(i))
	}
	del(t, be, "/r/7")
	last++
	if err := be.Close(); err != nil {
		t.Fatal(err)
	}
	be = open(t, dir)
	if be.CurrentRevision() != last {
		t.Fatalf("revision after reopen %d, want %d", be.CurrentRevision(), last)
	}
	res, err := be.Range(context.Background(), []byte("/r/"), storage.PrefixEnd([]byte("/r/")), storage.RangeOptions{})
	if err != nil || len(res.KVs) != 49 {
		t.Fatalf("after reopen: %d keys, %v", len(res.KVs), err)
	}
	// The history survives too: a watch can resume from before the restart.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w, err := be.Watch(ctx, []byte("/r/"), storage.PrefixEnd([]byte("/r/")), last-1, true)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	evs := collect(t, w, 2)
	if evs[1].Type != storage.EventDelete || string(evs[1].KV.Key) != "/r/7" || evs[1].PrevKV == nil {
		t.Fatalf("replayed delete after reopen: %+v", evs[1])
	}
	if r := put(t, be, "/r/new", "x"); r != last+1 {
		t.Fatalf("first write after reopen at %d, want %d", r, last+1)
	}
}
