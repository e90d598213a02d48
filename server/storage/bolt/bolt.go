// Package bolt is the default storage.Backend: a multi-version key-value
// store on a single bbolt file.
//
// Writes go through one writer goroutine that groups every transaction
// waiting at the time into one bbolt commit (group commit): each transaction
// still gets its own revision, but many share one fsync. A write is
// acknowledged only after its commit is durable. Committed events are kept in
// a bounded in-memory window for watchers; a watcher that falls behind the
// window reads the history from disk until it is compacted.
package bolt

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/skiff-sh/skiff/server/storage"
)

// Config configures a Backend.
type Config struct {
	// Path of the database file; its directory is created when missing.
	Path string
	// WatchWindow is the number of revisions kept in memory for watchers
	// (default 4096).
	WatchWindow int
	// MaxBatch bounds how many transactions share one commit (default 512).
	MaxBatch int
	// CommitDelay is how long the writer waits for more transactions
	// before a commit while writes are concurrent (default 1 ms; negative:
	// never; NoSync: never). Writes count as concurrent while commits have
	// averaged at least 1.25 transactions each (commitPacer), so a lone
	// writer does not wait, but for a dozen commits after a burst
	// (PostgreSQL's commit_delay, which waits only with commit_siblings
	// active). Under concurrent load it makes batches bigger: measured
	// with 16 server-side apply clients, half the fsyncs and ~7% less API
	// server CPU per write.
	CommitDelay time.Duration
	// NoSync skips fsync (tests only: acknowledged writes may be lost).
	NoSync bool
	// CompactBatch is how many revisions of history one transaction of a
	// compaction deletes (default 500; etcd's compaction-batch-limit is 1000).
	CompactBatch int
	// ReleaseInterval is how often the pages of the database file that
	// this process has mapped are unmapped again (ReleaseMapped; default
	// 30 s; negative: never).
	ReleaseInterval time.Duration
	// BusyReleaseInterval is how often they are unmapped while writes
	// commit (releaseDue; 2 s when ReleaseInterval is left to its
	// default too): a write maps the pages its transaction reads, and a
	// 1000-node cluster's writes mapped ~10 MB of the file a second.
	// Zero or more than ReleaseInterval: only every ReleaseInterval.
	BusyReleaseInterval time.Duration
	// ScanRelease: a read or a compaction that maps more than this many
	// bytes of the file (estimated from the fault windows its values lie
	// in) unmaps the file's pages as it goes (scanRelease; default 32 MiB;
	// negative: never).
	ScanRelease int64
	Logger      *slog.Logger
}

// Backend implements storage.Backend on bbolt.
type Backend struct {
	db     *bolt.DB
	cfg    Config
	log    *slog.Logger
	jobs   chan *job
	stop   chan struct{}
	done   chan struct{}
	closed sync.Once

	mu        sync.RWMutex
	rev       int64 // committed and published revision
	compact   int64
	ring      []revEvents // events of the last WatchWindow revisions, ascending
	watchers  map[*watcher]struct{}
	leases    map[int64]*lease
	closedErr error
	counts    []*countRange // count-only ranges kept up to date (count.go)
	countUses atomic.Int64

	compactMu sync.Mutex // one compaction deletes history at a time

	pace     commitPacer  // the writer's
	commits  atomic.Int64 // bbolt commits (tests)
	releases atomic.Int64 // releases of the mapping: ReleaseMapped and walks (tests)
}

type revEvents struct {
	rev    int64
	events []storage.Event
}

type lease struct {
	ttl    int64
	expiry time.Time
}

// job is one unit of work for the writer. fn runs inside the write
// transaction with the revision the job would write at; it reports whether it
// wrote (then the revision advances) and the events it produced. A job whose
// fn fails rolls back its batch, which is retried without it, so fn may run
// more than once and must only change the database; in-memory bookkeeping
// goes in after, which runs once the commit is durable.
type job struct {
	fn     func(tx *bolt.Tx, rev int64) (wrote bool, events []storage.Event, err error)
	after  func()
	err    error
	rev    int64
	wrote  bool
	done   chan struct{}
	events []storage.Event
}

var _ storage.Backend = (*Backend)(nil)

// Open opens (or creates) the database.
func Open(cfg Config) (*Backend, error) {
	if cfg.WatchWindow <= 0 {
		cfg.WatchWindow = 4096
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = 512
	}
	if cfg.CommitDelay == 0 {
		cfg.CommitDelay = time.Millisecond
	}
	if cfg.NoSync {
		cfg.CommitDelay = -1 // no fsync to share
	}
	if cfg.CompactBatch <= 0 {
		cfg.CompactBatch = 500
	}
	if cfg.ReleaseInterval == 0 {
		cfg.ReleaseInterval = 30 * time.Second
		if cfg.BusyReleaseInterval == 0 {
			cfg.BusyReleaseInterval = 2 * time.Second
		}
	}
	if cfg.ScanRelease == 0 {
		cfg.ScanRelease = 32 << 20
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if err := os.MkdirAll(filepath.Dir(cfg.Path), 0o700); err != nil {
		return nil, fmt.Errorf("bolt: create directory: %w", err)
	}
	db, err := bolt.Open(cfg.Path, 0o600, &bolt.Options{
		Timeout:        5 * time.Second,
		NoSync:         cfg.NoSync,
		NoFreelistSync: true,
		FreelistType:   bolt.FreelistMapType,
	})
	if err != nil {
		return nil, fmt.Errorf("bolt: open %s: %w", cfg.Path, err)
	}
	b := &Backend{
		db:       db,
		cfg:      cfg,
		log:      cfg.Logger,
		jobs:     make(chan *job, cfg.MaxBatch),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
		watchers: map[*watcher]struct{}{},
		leases:   map[int64]*lease{},
		pace:     commitPacer{avg: 256},
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucketMeta, bucketHist, bucketLog, bucketLease, bucketLeaseKeys} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		meta := tx.Bucket(bucketMeta)
		b.rev = getInt(meta.Get(metaRev))
		if b.rev == 0 {
			// Like etcd, a new store starts at revision 1.
			b.rev = 1
			if err := meta.Put(metaRev, revBytes(1)); err != nil {
				return err
			}
		}
		b.compact = getInt(meta.Get(metaCompact))
		now := time.Now()
		return tx.Bucket(bucketLease).ForEach(func(k, v []byte) error {
			ttl := decodeUvarint(v)
			b.leases[getInt(k)] = &lease{ttl: ttl, expiry: now.Add(time.Duration(ttl) * time.Second)}
			return nil
		})
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("bolt: initialise %s: %w", cfg.Path, err)
	}
	go b.writer()
	go b.expireLeases()
	go b.resumeCompaction()
	if cfg.ReleaseInterval > 0 {
		go b.releaseLoop(cfg.ReleaseInterval, cfg.BusyReleaseInterval)
	}
	return b, nil
}

// Close stops the writer and closes the database. Pending writes fail.
func (b *Backend) Close() error {
	var err error
	b.closed.Do(func() {
		close(b.stop)
		<-b.done
		b.mu.Lock()
		b.closedErr = storage.ErrClosed
		for w := range b.watchers {
			w.wakeUp()
		}
		b.mu.Unlock()
		err = b.db.Close()
	})
	return err
}

// CurrentRevision returns the last durable revision.
func (b *Backend) CurrentRevision() int64 {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return b.rev
}

// CompactRevision returns the compacted revision.
func (b *Backend) CompactRevision() int64 {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return b.compact
}

// DBSize is the size of the database file.
func (b *Backend) DBSize() int64 {
	var size int64
	_ = b.db.View(func(tx *bolt.Tx) error { size = tx.Size(); return nil })
	return size
}

// submit hands a job to the writer and waits for its commit.
func (b *Backend) submit(ctx context.Context, fn func(tx *bolt.Tx, rev int64) (bool, []storage.Event, error)) (*job, error) {
	return b.submitJob(ctx, &job{fn: fn, done: make(chan struct{})})
}

func (b *Backend) submitJob(ctx context.Context, j *job) (*job, error) {
	select {
	case b.jobs <- j:
	case <-b.stop:
		return nil, storage.ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	// Once queued the job will be committed or failed; wait for the outcome
	// even if ctx ends, so a caller never mistakes a durable write for a
	// failed one. A job queued after the writer stopped (the select above
	// chooses at random when stop is closed too) is never run.
	select {
	case <-j.done:
	case <-b.done:
		select {
		case <-j.done:
		default:
			return nil, storage.ErrClosed
		}
	}
	return j, j.err
}

func (b *Backend) writer() {
	defer close(b.done)
	batch := make([]*job, 0, b.cfg.MaxBatch)
	for {
		batch = batch[:0]
		select {
		case j := <-b.jobs:
			batch = append(batch, j)
		case <-b.stop:
			b.failPending()
			return
		}
	drain:
		for len(batch) < b.cfg.MaxBatch {
			select {
			case j := <-b.jobs:
				batch = append(batch, j)
			default:
				break drain
			}
		}
		if b.cfg.CommitDelay > 0 && b.pace.concurrent() && len(batch) < b.cfg.MaxBatch {
			delay := time.NewTimer(b.cfg.CommitDelay)
		wait:
			for len(batch) < b.cfg.MaxBatch {
				select {
				case j := <-b.jobs:
					batch = append(batch, j)
				case <-delay.C:
					break wait
				}
			}
			delay.Stop()
		}
		b.pace.committed(len(batch))
		b.commit(batch)
	}
}

// commitPacer tells the writer whether writes are concurrent, from a
// moving average of transactions per commit (avg, in 1/256ths).
type commitPacer struct{ avg int }

// concurrentAvg is the average from which writes count as concurrent: 1.25
// transactions per commit.
const concurrentAvg = 320

func (p *commitPacer) concurrent() bool { return p.avg >= concurrentAvg }

// committed counts a commit of n transactions, weighing it 1/8: after
// commits of 2-3 transactions, a lone writer's commits bring the average
// under concurrentAvg within 12 commits (~40 after the largest batches).
func (p *commitPacer) committed(n int) { p.avg += (256*min(n, 64) - p.avg) / 8 }

func (b *Backend) failPending() {
	for {
		select {
		case j := <-b.jobs:
			j.err = storage.ErrClosed
			close(j.done)
		default:
			return
		}
	}
}

// errJobFailed aborts a batch transaction so that a failed job's partial
// writes are rolled back; the batch is then retried without that job.
var errJobFailed = errors.New("bolt: job failed")

func (b *Backend) commit(batch []*job) {
	b.mu.RLock()
	start := b.rev
	b.mu.RUnlock()
	for {
		rev := start
		var failed *job
		err := b.db.Update(func(tx *bolt.Tx) error {
			for _, j := range batch {
				wrote, events, err := j.fn(tx, rev+1)
				if err != nil {
					// bbolt has no savepoints: roll the whole batch back.
					j.err, failed = err, j
					return errJobFailed
				}
				if wrote {
					rev++
				}
				j.wrote, j.events, j.rev = wrote, events, rev
			}
			if rev != start {
				return tx.Bucket(bucketMeta).Put(metaRev, revBytes(rev))
			}
			return nil
		})
		if failed != nil {
			close(failed.done)
			batch = slices.DeleteFunc(batch, func(j *job) bool { return j == failed })
			if len(batch) == 0 {
				return
			}
			continue
		}
		if err != nil {
			b.log.Error("storage commit failed", "err", err, "transactions", len(batch))
			for _, j := range batch {
				j.err = fmt.Errorf("bolt: commit: %w", err)
				j.wrote, j.events = false, nil
				close(j.done)
			}
			return
		}
		b.commits.Add(1)
		for _, j := range batch {
			if j.after != nil {
				j.after()
			}
		}
		b.publish(batch, rev)
		for _, j := range batch {
			close(j.done)
		}
		return
	}
}

// publish makes committed events visible to watchers.
func (b *Backend) publish(batch []*job, rev int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, j := range batch {
		if j.wrote {
			b.ring = append(b.ring, revEvents{rev: j.rev, events: j.events})
			countEvents(b.counts, j.events)
		}
	}
	if over := len(b.ring) - b.cfg.WatchWindow; over > 0 {
		// Copy down so the backing array does not grow without bound.
		n := copy(b.ring, b.ring[over:])
		for i := n; i < len(b.ring); i++ {
			b.ring[i] = revEvents{}
		}
		b.ring = b.ring[:n]
	}
	if rev == b.rev {
		return
	}
	b.rev = rev
	// As etcd's watchableStore notifies only the watchers an event is for:
	// a commit wakes the parked watchers with a matching event and moves
	// the others past it, instead of every watcher of every resource
	// waking to scan the ring for nothing.
	for w := range b.watchers {
		from := w.parked.Load()
		if from <= 0 {
			continue // running or already woken: it reads the ring itself
		}
		if w.matchesAny(batch, from) {
			w.parked.CompareAndSwap(from, -from) // woken: not to be moved on
			w.wakeUp()
		} else if rev >= from {
			w.parked.CompareAndSwap(from, rev+1)
		}
	}
}

// Range reads keys at a revision.
func (b *Backend) Range(ctx context.Context, key, end []byte, opts storage.RangeOptions) (storage.RangeResult, error) {
	if err := ctx.Err(); err != nil {
		return storage.RangeResult{}, err
	}
	count := countable(key, end, opts)
	if count {
		if res, ok := b.cachedCount(key, end, opts); ok {
			return res, nil
		}
	}
	var res storage.RangeResult
	err := b.db.View(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		cur, compact := getInt(meta.Get(metaRev)), getInt(meta.Get(metaCompact))
		var err error
		res, err = rangeTx(tx, key, end, opts, cur, compact, b.scanRelease())
		return err
	})
	if count && err == nil && (opts.Revision <= 0 || opts.Revision == res.Revision) {
		b.keepCount(key, end, res.Count, res.Revision)
	}
	return res, err
}

func rangeTx(tx *bolt.Tx, key, end []byte, opts storage.RangeOptions, cur, compact int64, scan *scanRelease) (storage.RangeResult, error) {
	res := storage.RangeResult{Revision: cur}
	rev := opts.Revision
	if rev <= 0 {
		rev = cur
	}
	if rev > cur {
		return res, storage.ErrFutureRev
	}
	if rev < compact {
		return res, storage.ErrCompacted
	}
	if len(key) == 0 {
		return res, storage.ErrInvalidKey
	}
	c := tx.Bucket(bucketHist).Cursor()
	// Stored keys never contain NUL, but range starts may (a paging client
	// continues at lastKey+"\x00"); seek to the part before the NUL and skip
	// the keys below the start.
	seek := key
	if i := bytes.IndexByte(key, 0); i >= 0 {
		if len(end) == 0 {
			return res, nil
		}
		seek = key[:i]
	}
	if len(end) == 0 {
		k, r, rec, ok, err := latestAt(c, key, rev)
		if err != nil {
			return res, err
		}
		if ok && !rec.tombstone {
			res.Count = 1
			if !opts.CountOnly {
				res.KVs = []storage.KeyValue{rec.keyValue(k, r, opts.KeysOnly)}
			}
		}
		return res, nil
	}
	all := len(end) == 1 && end[0] == 0
	var (
		curKey  []byte
		best    record
		bestRev int64
		have    bool
	)
	emit := func() {
		if !have || best.tombstone {
			return
		}
		res.Count++
		if opts.CountOnly {
			return
		}
		if opts.Limit > 0 && int64(len(res.KVs)) >= opts.Limit {
			res.More = true
			return
		}
		res.KVs = append(res.KVs, best.keyValue(curKey, bestRev, opts.KeysOnly))
	}
	for hk, v := c.Seek(histKey(seek, 0)); hk != nil; hk, v = c.Next() {
		k, r, ok := splitHistKey(hk)
		if !ok {
			return res, fmt.Errorf("bolt: corrupt history key %q", hk)
		}
		scan.add(v)
		if len(seek) != len(key) && bytes.Compare(k, key) < 0 {
			continue
		}
		if !all && bytes.Compare(k, end) >= 0 {
			break
		}
		if !bytes.Equal(k, curKey) {
			emit()
			curKey, have = k, false
		}
		if r > rev {
			continue
		}
		rec, err := decodeRecord(v, false)
		if err != nil {
			return res, err
		}
		best, bestRev, have = rec, r, true
	}
	emit()
	return res, nil
}

// latestAt finds the newest version of key at or below rev.
func latestAt(c *bolt.Cursor, key []byte, rev int64) ([]byte, int64, record, bool, error) {
	k, v := c.Seek(histKey(key, rev+1))
	if k == nil {
		k, v = c.Last()
	} else {
		k, v = c.Prev()
	}
	if k == nil {
		return nil, 0, record{}, false, nil
	}
	uk, r, ok := splitHistKey(k)
	if !ok || !bytes.Equal(uk, key) {
		return nil, 0, record{}, false, nil
	}
	rec, err := decodeRecord(v, false)
	if err != nil {
		return nil, 0, record{}, false, err
	}
	return uk, r, rec, true, nil
}

// Txn runs a transaction through the writer.
func (b *Backend) Txn(ctx context.Context, cmps []storage.Compare, success, failure []storage.Op) (storage.TxnResult, error) {
	if err := validateTxn(cmps, success, failure); err != nil {
		return storage.TxnResult{}, err
	}
	var res storage.TxnResult
	j, err := b.submit(ctx, func(tx *bolt.Tx, rev int64) (bool, []storage.Event, error) {
		r, events, err := b.txn(tx, rev, cmps, success, failure)
		res = r
		return len(events) > 0, events, err
	})
	if err != nil {
		return storage.TxnResult{}, err
	}
	res.Revision = j.rev
	return res, nil
}

func validateTxn(cmps []storage.Compare, success, failure []storage.Op) error {
	for _, c := range cmps {
		if len(c.Key) == 0 || len(c.Key) > maxKeySize || bytes.IndexByte(c.Key, 0) >= 0 {
			return storage.ErrInvalidKey
		}
	}
	for _, ops := range [][]storage.Op{success, failure} {
		seen := map[string]bool{}
		for _, op := range ops {
			if len(op.Key) == 0 || len(op.Key) > maxKeySize || bytes.IndexByte(op.Key, 0) >= 0 {
				return storage.ErrInvalidKey
			}
			if op.Type == storage.OpRange {
				continue
			}
			if seen[string(op.Key)] {
				return fmt.Errorf("%w: %q", storage.ErrDuplicateKey, op.Key)
			}
			seen[string(op.Key)] = true
		}
	}
	return nil
}

func (b *Backend) txn(tx *bolt.Tx, rev int64, cmps []storage.Compare, success, failure []storage.Op) (storage.TxnResult, []storage.Event, error) {
	res := storage.TxnResult{Succeeded: true}
	hist := tx.Bucket(bucketHist)
	for _, cmp := range cmps {
		ok, err := evalCompare(hist.Cursor(), cmp, rev-1)
		if err != nil {
			return res, nil, err
		}
		if !ok {
			res.Succeeded = false
			break
		}
	}
	ops := success
	if !res.Succeeded {
		ops = failure
	}
	// Validate leases before writing anything.
	b.mu.RLock()
	for _, op := range ops {
		if op.Type == storage.OpPut && op.Lease != 0 {
			if _, ok := b.leases[op.Lease]; !ok {
				b.mu.RUnlock()
				return res, nil, storage.ErrLeaseNotFound
			}
		}
	}
	b.mu.RUnlock()
	compact := getInt(tx.Bucket(bucketMeta).Get(metaCompact))

	var events []storage.Event
	var logEntries []logEntry
	for _, op := range ops {
		var r storage.OpResult
		switch op.Type {
		case storage.OpRange:
			rr, err := rangeTx(tx, op.Key, op.End, op.Range, rev-1, compact, nil)
			if err != nil {
				return res, nil, err
			}
			r.Range = &rr
		case storage.OpPut:
			k, pr, prev, ok, err := latestAt(hist.Cursor(), op.Key, rev-1)
			if err != nil {
				return res, nil, err
			}
			rec := record{create: rev, version: 1, lease: op.Lease, value: op.Value}
			var prevKV *storage.KeyValue
			var prevRev int64
			if ok {
				prevRev = pr
				if !prev.tombstone {
					rec.create, rec.version = prev.create, prev.version+1
					kv := prev.keyValue(k, pr, false)
					prevKV = &kv
				}
			}
			if err := hist.Put(histKey(op.Key, rev), encodeRecord(rec)); err != nil {
				return res, nil, err
			}
			if err := updateLeaseKey(tx, op.Key, prevKV, op.Lease); err != nil {
				return res, nil, err
			}
			logEntries = append(logEntries, logEntry{key: bytes.Clone(op.Key), prevRev: prevRev})
			kv := rec.keyValue(op.Key, rev, false)
			events = append(events, storage.Event{Type: storage.EventPut, KV: kv, PrevKV: prevKV})
			if op.PrevKV && prevKV != nil {
				r.PrevKVs = []storage.KeyValue{*prevKV}
			}
		case storage.OpDelete:
			rr, err := rangeTx(tx, op.Key, op.End, storage.RangeOptions{}, rev-1, compact, nil)
			if err != nil {
				return res, nil, err
			}
			for _, prev := range rr.KVs {
				if err := hist.Put(histKey(prev.Key, rev), encodeRecord(record{tombstone: true})); err != nil {
					return res, nil, err
				}
				p := prev
				if err := updateLeaseKey(tx, prev.Key, &p, 0); err != nil {
					return res, nil, err
				}
				logEntries = append(logEntries, logEntry{key: prev.Key, prevRev: prev.ModRevision})
				events = append(events, storage.Event{
					Type:   storage.EventDelete,
					KV:     storage.KeyValue{Key: prev.Key, ModRevision: rev},
					PrevKV: &p,
				})
				r.Deleted++
				if op.PrevKV {
					r.PrevKVs = append(r.PrevKVs, prev)
				}
			}
		}
		res.Results = append(res.Results, r)
	}
	if len(logEntries) > 0 {
		if err := tx.Bucket(bucketLog).Put(revBytes(rev), encodeLog(logEntries)); err != nil {
			return res, nil, err
		}
	}
	return res, events, nil
}

func updateLeaseKey(tx *bolt.Tx, key []byte, prev *storage.KeyValue, newLease int64) error {
	lk := tx.Bucket(bucketLeaseKeys)
	if prev != nil && prev.Lease != 0 && prev.Lease != newLease {
		if err := lk.Delete(append(revBytes(prev.Lease), key...)); err != nil {
			return err
		}
	}
	if newLease != 0 {
		return lk.Put(append(revBytes(newLease), key...), nil)
	}
	return nil
}

func evalCompare(c *bolt.Cursor, cmp storage.Compare, rev int64) (bool, error) {
	_, mod, rec, ok, err := latestAt(c, cmp.Key, rev)
	if err != nil {
		return false, err
	}
	if !ok || rec.tombstone {
		rec, mod = record{}, 0
	}
	var r int
	switch cmp.Target {
	case storage.CompareValue:
		r = bytes.Compare(rec.value, cmp.Value)
	default:
		var v int64
		switch cmp.Target {
		case storage.CompareVersion:
			v = rec.version
		case storage.CompareCreate:
			v = rec.create
		case storage.CompareMod:
			v = mod
		case storage.CompareLease:
			v = rec.lease
		}
		switch {
		case v < cmp.Int:
			r = -1
		case v > cmp.Int:
			r = 1
		}
	}
	switch cmp.Result {
	case storage.CompareEqual:
		return r == 0, nil
	case storage.CompareNotEqual:
		return r != 0, nil
	case storage.CompareGreater:
		return r > 0, nil
	case storage.CompareLess:
		return r < 0, nil
	}
	return false, fmt.Errorf("bolt: unknown compare result %d", cmp.Result)
}

// Compact removes versions superseded at or before rev, and the write log
// before rev. Reads at rev and later are unaffected. Reads and watches
// before rev fail as compacted from the moment the deletion starts; it
// returns once the history is deleted, or once a stop or ctx interrupts
// the deletion, which the next compaction or Open then finishes.
func (b *Backend) Compact(ctx context.Context, rev int64) error {
	cur, compact := b.CurrentRevision(), b.CompactRevision()
	if rev > cur {
		return storage.ErrFutureRev
	}
	if rev <= compact {
		return storage.ErrCompacted
	}
	// First the compaction itself, one small write: from its commit on,
	// reads and watches before rev fail as compacted.
	_, err := b.submit(ctx, func(tx *bolt.Tx, _ int64) (bool, []storage.Event, error) {
		meta := tx.Bucket(bucketMeta)
		old := getInt(meta.Get(metaCompact))
		if rev <= old {
			return false, nil, storage.ErrCompacted
		}
		if meta.Get(metaCompactDone) == nil {
			// A store from before compactions were deleted in
			// batches: everything up to its compacted revision is gone.
			if err := meta.Put(metaCompactDone, revBytes(old)); err != nil {
				return false, nil, err
			}
		}
		return false, nil, meta.Put(metaCompact, revBytes(rev))
	})
	if err != nil {
		return err
	}
	b.mu.Lock()
	if rev > b.compact {
		b.compact = rev
	}
	b.mu.Unlock()
	// Then the history it made unreachable, in batches. The compaction
	// has taken effect whether or not they finish.
	b.deleteCompacted(ctx)
	return nil
}

// deleteCompacted deletes the history that compactions made unreachable,
// CompactBatch revisions of the write log per transaction, like etcd's
// compaction-batch-limit. Each batch is a job of its own, so writes wait
// behind one batch at a time instead of the whole compaction: deleting
// the ~140,000 versions a 30,000-pod run leaves took ~1 s as one
// transaction on an idle host, and every write queued for that long.
// What is left when the store closes or ctx ends meanwhile is deleted by
// the next compaction or after the next Open (resumeCompaction).
func (b *Backend) deleteCompacted(ctx context.Context) {
	b.compactMu.Lock()
	defer b.compactMu.Unlock()
	// The batches read the history's leaves through the mapping, and a
	// compaction of many (~300 after a 30,000-pod run) touches leaves all
	// over the file: unmap them as it goes, too.
	scan := b.scanRelease()
	for {
		var finished bool
		_, err := b.submit(ctx, func(tx *bolt.Tx, _ int64) (bool, []storage.Event, error) {
			var err error
			finished, err = compactBatch(tx, b.cfg.CompactBatch, scan)
			return false, nil, err
		})
		if err != nil {
			if !errors.Is(err, storage.ErrClosed) && ctx.Err() == nil {
				b.log.Warn("deleting compacted history failed; the next compaction retries", "err", err)
			}
			return
		}
		if finished {
			break
		}
	}
	// The batches read most of the file's leaves; unmap them now rather
	// than at the next ReleaseMapped tick.
	if _, err := b.ReleaseMapped(); err != nil {
		b.log.Debug("releasing mapped pages after a compaction", "err", err)
	}
}

// resumeCompaction finishes, after Open, deleting what a compaction
// interrupted by a stop left.
func (b *Backend) resumeCompaction() {
	var pending bool
	_ = b.db.View(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		done := meta.Get(metaCompactDone)
		pending = done != nil && getInt(done) < getInt(meta.Get(metaCompact))
		return nil
	})
	if pending {
		// Close ends it: a job submitted after stop fails ErrClosed.
		b.deleteCompacted(context.Background())
	}
}

// compactBatch deletes, for up to limit revisions of the write log from
// where the last batch stopped (metaCompactDone) to the compacted revision
// (metaCompact), the versions those revisions superseded, the tombstones
// they wrote, and their log entries. It reports whether it reached the
// compacted revision. The entry at the compacted revision itself keeps its
// tombstone and log entry, which reads and watches at that revision need;
// the next compaction deletes them.
func compactBatch(tx *bolt.Tx, limit int, scan *scanRelease) (finished bool, err error) {
	hist, logb, meta := tx.Bucket(bucketHist), tx.Bucket(bucketLog), tx.Bucket(bucketMeta)
	doneB := meta.Get(metaCompactDone)
	if doneB == nil {
		return true, nil
	}
	from, to := getInt(doneB), getInt(meta.Get(metaCompact))
	if from >= to {
		return true, nil
	}
	next := to
	c, hc := logb.Cursor(), hist.Cursor()
	var done [][]byte
	n := 0
	for k, v := c.Seek(revBytes(from)); k != nil && getInt(k) <= to; k, v = c.Next() {
		r := getInt(k)
		if n >= limit && r < to {
			// The entry at to itself always goes with the batch
			// before it: finishing records to as done.
			next = r
			break
		}
		n++
		entries, err := decodeLog(v)
		if err != nil {
			return false, err
		}
		scan.add(v)
		for _, e := range entries {
			if e.prevRev > 0 {
				if err := deleteVersion(hc, histKey(e.key, e.prevRev), false, scan); err != nil {
					return false, err
				}
			}
			if r < to {
				if err := deleteVersion(hc, histKey(e.key, r), true, scan); err != nil {
					return false, err
				}
			}
		}
		if r < to {
			done = append(done, bytes.Clone(k))
		}
	}
	for _, k := range done {
		if err := logb.Delete(k); err != nil {
			return false, err
		}
	}
	return next >= to, meta.Put(metaCompactDone, revBytes(next))
}

// deleteVersion deletes the history entry hk if there is one (with
// onlyTombstone, only if it is a tombstone), and counts the value it found
// for scan.
func deleteVersion(c *bolt.Cursor, hk []byte, onlyTombstone bool, scan *scanRelease) error {
	k, v := c.Seek(hk)
	if !bytes.Equal(k, hk) {
		return nil
	}
	scan.add(v)
	if onlyTombstone && (len(v) == 0 || v[0] != flagTombstone) {
		return nil
	}
	return c.Delete()
}
