package bolt

import (
	"bytes"
	"context"
	"sort"
	"sync"
	"sync/atomic"

	bolt "go.etcd.io/bbolt"

	"github.com/skiff-sh/skiff/server/storage"
)

// maxWatchBatch bounds the events handed to a watcher at once.
const maxWatchBatch = 1000

type watcher struct {
	b        *Backend
	key, end []byte
	prevKV   bool
	ch       chan storage.WatchBatch
	progress chan struct{}
	cancel   context.CancelFunc
	// parked is, while the watcher waits with everything published
	// delivered, the next revision it wants; once publish has woken it for
	// an event, minus that; else 0. eventsSince parks it (under the
	// backend's read lock); publish (under its write lock) either wakes it,
	// when the commit has an event for it, or moves parked past the commit;
	// the watcher unparks itself when it wakes.
	parked     atomic.Int64
	wake       chan struct{} // holds one wake-up for a parked watcher
	mu         sync.Mutex
	err        error
	closedOnce sync.Once
}

// Watch streams events for [key, end) from startRev.
func (b *Backend) Watch(ctx context.Context, key, end []byte, startRev int64, prevKV bool) (storage.Watcher, error) {
	if len(key) == 0 {
		return nil, storage.ErrInvalidKey
	}
	b.mu.RLock()
	cur, compact, closedErr := b.rev, b.compact, b.closedErr
	b.mu.RUnlock()
	if closedErr != nil {
		return nil, closedErr
	}
	if startRev <= 0 {
		startRev = cur + 1
	}
	// Stricter than reads (which may be served at the compacted revision):
	// the history needed to give events at the compacted revision their
	// previous versions is gone.
	if startRev <= compact {
		return nil, storage.ErrCompacted
	}
	ctx, cancel := context.WithCancel(ctx)
	w := &watcher{b: b, key: bytes.Clone(key), end: bytes.Clone(end), prevKV: prevKV, ch: make(chan storage.WatchBatch, 16),
		progress: make(chan struct{}, 1), wake: make(chan struct{}, 1), cancel: cancel}
	b.mu.Lock()
	b.watchers[w] = struct{}{}
	b.mu.Unlock()
	go w.run(ctx, startRev)
	return w, nil
}

// wakeUp makes the watcher's next wait return.
func (w *watcher) wakeUp() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// unpark takes the watcher out of publish's hands and returns the next
// revision it wants: next, or later if publish moved it past commits
// without an event for it.
func (w *watcher) unpark(next int64) int64 {
	p := w.parked.Swap(0)
	return max(next, p, -p)
}

// matchesAny reports whether a job of batch wrote an event at revision
// from or later for the watcher.
func (w *watcher) matchesAny(batch []*job, from int64) bool {
	for _, j := range batch {
		if !j.wrote || j.rev < from {
			continue
		}
		for _, ev := range j.events {
			if w.matches(ev.KV.Key) {
				return true
			}
		}
	}
	return false
}

func (w *watcher) Events() <-chan storage.WatchBatch { return w.ch }

func (w *watcher) RequestProgress() {
	select {
	case w.progress <- struct{}{}:
	default:
	}
}

func (w *watcher) Err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

func (w *watcher) Close() { w.cancel() }

func (w *watcher) matches(key []byte) bool {
	if len(w.end) == 0 {
		return bytes.Equal(key, w.key)
	}
	if bytes.Compare(key, w.key) < 0 {
		return false
	}
	return (len(w.end) == 1 && w.end[0] == 0) || bytes.Compare(key, w.end) < 0
}

func (w *watcher) run(ctx context.Context, next int64) {
	defer close(w.ch)
	defer func() {
		w.b.mu.Lock()
		delete(w.b.watchers, w)
		w.b.mu.Unlock()
	}()
	progressDue := false
	for {
		batch, n, wait, err := w.b.eventsSince(next, w)
		if err != nil {
			w.mu.Lock()
			w.err = err
			w.mu.Unlock()
			return
		}
		next = n
		if len(batch) > 0 {
			select {
			case w.ch <- storage.WatchBatch{Events: batch, Revision: next - 1}:
			case <-ctx.Done():
				return
			}
			continue
		}
		if wait == nil {
			continue
		}
		// Caught up: everything below next has been delivered.
		if progressDue {
			progressDue = false
			next = w.unpark(next)
			select {
			case w.ch <- storage.WatchBatch{Revision: next - 1}:
			case <-ctx.Done():
				return
			}
			continue
		}
		select {
		case <-wait:
		case <-w.progress:
			progressDue = true
		case <-ctx.Done():
			return
		}
		next = w.unpark(next)
	}
}

// eventsSince returns matching events with revisions >= from, the next
// revision to ask for, and, when nothing is pending, the channel that wakes
// the watcher, parked, when a commit has an event for it.
func (b *Backend) eventsSince(from int64, w *watcher) ([]storage.Event, int64, <-chan struct{}, error) {
	b.mu.RLock()
	if b.closedErr != nil {
		b.mu.RUnlock()
		return nil, from, nil, b.closedErr
	}
	published := b.rev
	if from > published {
		// Only this watcher's goroutine parks it, and publish, which moves
		// it, cannot run meanwhile.
		w.parked.Store(from)
		b.mu.RUnlock()
		return nil, from, w.wake, nil
	}
	if len(b.ring) > 0 && from >= b.ring[0].rev {
		i := sort.Search(len(b.ring), func(i int) bool { return b.ring[i].rev >= from })
		var out []storage.Event
		next := from
		for ; i < len(b.ring) && len(out) < maxWatchBatch; i++ {
			for _, ev := range b.ring[i].events {
				if w.matches(ev.KV.Key) {
					out = append(out, w.shape(ev))
				}
			}
			next = b.ring[i].rev + 1
		}
		if i == len(b.ring) {
			next = published + 1
		}
		b.mu.RUnlock()
		return out, next, nil, nil
	}
	upto := published
	if len(b.ring) > 0 {
		upto = b.ring[0].rev - 1
	}
	b.mu.RUnlock()
	return b.eventsFromDisk(from, upto, w)
}

func (w *watcher) shape(ev storage.Event) storage.Event {
	if !w.prevKV {
		ev.PrevKV = nil
	}
	return ev
}

// eventsFromDisk rebuilds events in [from, upto] from the write log.
func (b *Backend) eventsFromDisk(from, upto int64, w *watcher) ([]storage.Event, int64, <-chan struct{}, error) {
	var out []storage.Event
	next := from
	err := b.db.View(func(tx *bolt.Tx) error {
		if from <= getInt(tx.Bucket(bucketMeta).Get(metaCompact)) {
			return storage.ErrCompacted
		}
		hist := tx.Bucket(bucketHist)
		c := tx.Bucket(bucketLog).Cursor()
		for k, v := c.Seek(revBytes(from)); k != nil && len(out) < maxWatchBatch; k, v = c.Next() {
			rev := getInt(k)
			if rev > upto {
				break
			}
			entries, err := decodeLog(v)
			if err != nil {
				return err
			}
			for _, e := range entries {
				if !w.matches(e.key) {
					continue
				}
				raw := hist.Get(histKey(e.key, rev))
				if raw == nil {
					return storage.ErrCompacted
				}
				rec, err := decodeRecord(raw, false)
				if err != nil {
					return err
				}
				ev := storage.Event{Type: storage.EventPut, KV: rec.keyValue(e.key, rev, false)}
				if rec.tombstone {
					ev = storage.Event{Type: storage.EventDelete, KV: storage.KeyValue{Key: bytes.Clone(e.key), ModRevision: rev}}
				}
				if e.prevRev > 0 && (w.prevKV || rec.tombstone) {
					if praw := hist.Get(histKey(e.key, e.prevRev)); praw != nil {
						prec, err := decodeRecord(praw, false)
						if err != nil {
							return err
						}
						if !prec.tombstone {
							kv := prec.keyValue(e.key, e.prevRev, false)
							ev.PrevKV = &kv
						}
					}
				}
				out = append(out, w.shape(ev))
			}
			next = rev + 1
		}
		if len(out) < maxWatchBatch {
			next = upto + 1
		}
		return nil
	})
	return out, next, nil, err
}
