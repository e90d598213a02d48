package bolt

import (
	"bytes"
	"sort"
	"sync/atomic"

	"github.com/skiff-sh/skiff/server/storage"
)

// maxCountRanges bounds the count-only ranges whose counts are kept.
const maxCountRanges = 16

// countRange is the number of live keys in [key, end) at the published
// revision, kept up to date by publish.
//
// The API server counts the objects of each resource it has no watch cache
// for (events) once a minute (storage.Interface.Stats, a count-only range).
// etcd answers that from its in-memory key index; here the keys live only in
// the history, where counting reads every version of every key: at 30,000
// pods that faulted ~0.3 GB of the database file into memory each minute.
// So the first count of a range walks the history once and later ones are
// answered from the kept count.
type countRange struct {
	key, end []byte
	count    int64
	used     atomic.Int64 // when last asked for (Backend.countUses)
}

func (c *countRange) contains(key []byte) bool {
	if bytes.Compare(key, c.key) < 0 {
		return false
	}
	return len(c.end) == 1 && c.end[0] == 0 || bytes.Compare(key, c.end) < 0
}

// countable tells whether a range may be answered from, and kept in, the
// counts: count-only, over a range of keys (not one key), starting at a
// stored key (a paging start holds a NUL). cachedCount and keepCount
// check the revision.
func countable(key, end []byte, opts storage.RangeOptions) bool {
	return opts.CountOnly && len(end) > 0 && len(key) > 0 && bytes.IndexByte(key, 0) < 0
}

// cachedCount answers a countable range from the kept counts, if it has
// one for that range at the revision asked for.
func (b *Backend) cachedCount(key, end []byte, opts storage.RangeOptions) (storage.RangeResult, bool) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.closedErr != nil || opts.Revision > 0 && opts.Revision != b.rev {
		return storage.RangeResult{}, false
	}
	c := b.keptCount(key, end)
	if c == nil {
		return storage.RangeResult{}, false
	}
	c.used.Store(b.countUses.Add(1))
	return storage.RangeResult{Revision: b.rev, Count: c.count}, true
}

// keptCount is the kept count of [key, end), or nil; the caller holds b.mu.
func (b *Backend) keptCount(key, end []byte) *countRange {
	for _, c := range b.counts {
		if bytes.Equal(c.key, key) && bytes.Equal(c.end, end) {
			return c
		}
	}
	return nil
}

// keepCount keeps the count of a range read from the database at revision
// rev. Commits published since (a busy server commits every few
// milliseconds, more often than a walk takes) are applied from the
// in-memory window; if it no longer holds them all, or rev is not
// published yet, the count is not kept. When full, the least recently
// used count is replaced.
func (b *Backend) keepCount(key, end []byte, count, rev int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closedErr != nil || rev > b.rev || b.keptCount(key, end) != nil {
		return
	}
	c := &countRange{key: bytes.Clone(key), end: bytes.Clone(end), count: count}
	if rev < b.rev {
		i := sort.Search(len(b.ring), func(i int) bool { return b.ring[i].rev > rev })
		if i == len(b.ring) || b.ring[i].rev != rev+1 {
			return // the window does not reach back to rev
		}
		for _, re := range b.ring[i:] {
			countEvents([]*countRange{c}, re.events)
		}
	}
	c.used.Store(b.countUses.Add(1))
	if len(b.counts) < maxCountRanges {
		b.counts = append(b.counts, c)
		return
	}
	oldest := 0
	for i, o := range b.counts {
		if o.used.Load() < b.counts[oldest].used.Load() {
			oldest = i
		}
	}
	b.counts[oldest] = c
}

// countEvents applies the events of one revision to counts; the caller
// holds b.mu. A transaction may touch a key more than once (a
// delete range and a put): the first event tells whether the key existed
// before the revision and the last whether it exists after.
func countEvents(counts []*countRange, events []storage.Event) {
	if len(counts) == 0 {
		return
	}
	var firstAt, lastAt map[string]int
	if len(events) > 1 {
		firstAt, lastAt = make(map[string]int, len(events)), make(map[string]int, len(events))
		for i := len(events) - 1; i >= 0; i-- {
			firstAt[string(events[i].KV.Key)] = i
		}
		for i, ev := range events {
			lastAt[string(ev.KV.Key)] = i
		}
	}
	for i, ev := range events {
		first, final := true, true
		if firstAt != nil {
			first, final = firstAt[string(ev.KV.Key)] == i, lastAt[string(ev.KV.Key)] == i
		}
		var delta int64
		if first && (ev.Type == storage.EventDelete || ev.PrevKV != nil) {
			delta-- // the key existed before
		}
		if final && ev.Type == storage.EventPut {
			delta++ // and exists after
		}
		if delta == 0 {
			continue
		}
		for _, c := range counts {
			if c.contains(ev.KV.Key) {
				c.count += delta
			}
		}
	}
}
