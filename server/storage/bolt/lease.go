package bolt

import (
	"bytes"
	"context"
	"encoding/binary"
	"math/rand/v2"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/skiff-sh/skiff/server/storage"
)

func decodeUvarint(b []byte) int64 {
	v, n := binary.Uvarint(b)
	if n <= 0 {
		return 0
	}
	return int64(v)
}

// LeaseGrant creates a lease. Its expiry lives in memory: after a restart
// every lease gets its full TTL again, as etcd does after a leader change.
func (b *Backend) LeaseGrant(ctx context.Context, id, ttl int64) (storage.LeaseInfo, error) {
	if ttl <= 0 {
		ttl = 1
	}
	j := &job{done: make(chan struct{})}
	j.fn = func(tx *bolt.Tx, _ int64) (bool, []storage.Event, error) {
		leases := tx.Bucket(bucketLease)
		if id == 0 {
			for id == 0 || leases.Get(revBytes(id)) != nil {
				id = rand.Int64()
			}
		} else if leases.Get(revBytes(id)) != nil {
			return false, nil, storage.ErrLeaseExists
		}
		return false, nil, leases.Put(revBytes(id), binary.AppendUvarint(nil, uint64(ttl)))
	}
	j.after = func() {
		b.mu.Lock()
		b.leases[id] = &lease{ttl: ttl, expiry: time.Now().Add(time.Duration(ttl) * time.Second)}
		b.mu.Unlock()
	}
	if _, err := b.submitJob(ctx, j); err != nil {
		return storage.LeaseInfo{}, err
	}
	return storage.LeaseInfo{ID: id, TTL: ttl, GrantedTTL: ttl}, nil
}

// LeaseRevoke deletes the lease and every key attached to it; it returns the
// revision after the deletion.
func (b *Backend) LeaseRevoke(ctx context.Context, id int64) (int64, error) {
	j := &job{done: make(chan struct{})}
	j.fn = func(tx *bolt.Tx, rev int64) (bool, []storage.Event, error) {
		prefix := revBytes(id)
		if tx.Bucket(bucketLease).Get(prefix) == nil {
			return false, nil, storage.ErrLeaseNotFound
		}
		var ops []storage.Op
		c := tx.Bucket(bucketLeaseKeys).Cursor()
		for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
			ops = append(ops, storage.Op{Type: storage.OpDelete, Key: bytes.Clone(k[8:])})
		}
		var events []storage.Event
		if len(ops) > 0 {
			_, ev, err := b.txn(tx, rev, nil, ops, nil)
			if err != nil {
				return false, nil, err
			}
			events = ev
		}
		if err := tx.Bucket(bucketLease).Delete(prefix); err != nil {
			return false, nil, err
		}
		return len(events) > 0, events, nil
	}
	j.after = func() {
		b.mu.Lock()
		delete(b.leases, id)
		b.mu.Unlock()
	}
	if _, err := b.submitJob(ctx, j); err != nil {
		return 0, err
	}
	return j.rev, nil
}

// LeaseKeepAlive renews a lease to its full TTL.
func (b *Backend) LeaseKeepAlive(_ context.Context, id int64) (storage.LeaseInfo, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	l, ok := b.leases[id]
	now := time.Now()
	if !ok || now.After(l.expiry) {
		// An expired lease is being revoked (expireLeases) and cannot be
		// renewed, as in etcd's lessor: its keys may already be gone
		// from the database while the lease is still in the map, until
		// the revocation's commit removes it.
		return storage.LeaseInfo{}, storage.ErrLeaseNotFound
	}
	l.expiry = now.Add(time.Duration(l.ttl) * time.Second)
	return storage.LeaseInfo{ID: id, TTL: l.ttl, GrantedTTL: l.ttl}, nil
}

// LeaseTimeToLive reports the remaining TTL and, optionally, the keys.
func (b *Backend) LeaseTimeToLive(_ context.Context, id int64, keys bool) (storage.LeaseInfo, error) {
	b.mu.RLock()
	l, ok := b.leases[id]
	var info storage.LeaseInfo
	if ok {
		info = storage.LeaseInfo{ID: id, GrantedTTL: l.ttl, TTL: int64(time.Until(l.expiry).Seconds())}
	}
	b.mu.RUnlock()
	if !ok {
		return storage.LeaseInfo{ID: id, TTL: -1}, storage.ErrLeaseNotFound
	}
	if keys {
		prefix := revBytes(id)
		_ = b.db.View(func(tx *bolt.Tx) error {
			c := tx.Bucket(bucketLeaseKeys).Cursor()
			for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
				info.Keys = append(info.Keys, bytes.Clone(k[8:]))
			}
			return nil
		})
	}
	return info, nil
}

// Leases lists the lease IDs.
func (b *Backend) Leases(context.Context) ([]int64, error) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	ids := make([]int64, 0, len(b.leases))
	for id := range b.leases {
		ids = append(ids, id)
	}
	return ids, nil
}

func (b *Backend) expireLeases() {
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-b.stop:
			return
		case now := <-t.C:
			var expired []int64
			b.mu.RLock()
			for id, l := range b.leases {
				if now.After(l.expiry) {
					expired = append(expired, id)
				}
			}
			b.mu.RUnlock()
			for _, id := range expired {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				if _, err := b.LeaseRevoke(ctx, id); err != nil && err != storage.ErrLeaseNotFound && err != storage.ErrClosed {
					b.log.Warn("lease expiry failed", "lease", id, "err", err)
				}
				cancel()
			}
		}
	}
}
