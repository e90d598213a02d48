// Package storage defines Skiff's revisioned key-value store: the etcd data
// model (one cluster-wide, monotonically increasing revision that every write
// advances and that becomes each object's resourceVersion; multi-version reads;
// conditional transactions; watches that resume from a revision; compaction).
//
// Backends (bbolt today, embedded etcd later) implement Backend and must pass
// the conformance suite in storage/storagetest. The Kubernetes API layer does
// not call Backend directly: package etcdapi serves a Backend through the etcd
// v3 KV/Watch/Lease API, so the upstream Kubernetes etcd3 storage runs on it
// unchanged.
package storage

import (
	"context"
	"errors"
)

// Errors returned by backends. They mirror etcd's so that the etcd API layer
// can translate them to the gRPC errors the etcd client expects.
var (
	// ErrCompacted: the requested revision has been compacted away.
	ErrCompacted = errors.New("mvcc: required revision has been compacted")
	// ErrFutureRev: the requested revision is newer than the current revision.
	ErrFutureRev = errors.New("mvcc: required revision is a future revision")
	// ErrLeaseNotFound: the lease does not exist (or expired).
	ErrLeaseNotFound = errors.New("lease not found")
	// ErrLeaseExists: a lease with the requested ID already exists.
	ErrLeaseExists = errors.New("lease already exists")
	// ErrInvalidKey: the key is empty or contains a NUL byte.
	ErrInvalidKey = errors.New("invalid key")
	// ErrDuplicateKey: a transaction writes the same key twice.
	ErrDuplicateKey = errors.New("duplicate key given in txn request")
	// ErrClosed: the backend was closed.
	ErrClosed = errors.New("storage closed")
)

// KeyValue is one version of a key.
type KeyValue struct {
	Key            []byte
	Value          []byte
	CreateRevision int64 // revision of the write that created the key (since its last deletion)
	ModRevision    int64 // revision of the write that produced this version
	Version        int64 // number of writes since creation (1 on create)
	Lease          int64 // lease the key is attached to, 0 for none
}

// EventType tells a put from a delete.
type EventType int

// Event types.
const (
	EventPut EventType = iota
	EventDelete
)

// Event is one change, as seen by a watcher. For deletes KV carries the key
// and the deletion revision as ModRevision; PrevKV is the version it replaced.
type Event struct {
	Type   EventType
	KV     KeyValue
	PrevKV *KeyValue
}

// RangeOptions select what a Range returns.
type RangeOptions struct {
	Revision  int64 // read at this revision; 0 means the current one
	Limit     int64 // at most this many keys; 0 means no limit
	CountOnly bool  // return only the count
	KeysOnly  bool  // omit values
}

// RangeResult is the answer to a Range.
type RangeResult struct {
	KVs      []KeyValue
	Count    int64 // number of keys in the range, regardless of Limit
	More     bool  // there are more keys than returned
	Revision int64 // revision the read was served at (the store's current revision)
}

// CompareTarget is the field of a key a Compare looks at.
type CompareTarget int

// Compare targets.
const (
	CompareVersion CompareTarget = iota
	CompareCreate
	CompareMod
	CompareValue
	CompareLease
)

// CompareResult is the relation a Compare requires.
type CompareResult int

// Compare relations.
const (
	CompareEqual CompareResult = iota
	CompareGreater
	CompareLess
	CompareNotEqual
)

// Compare is one guard of a transaction. A missing key has zero
// version/create/mod/lease and an empty value.
type Compare struct {
	Key    []byte
	Target CompareTarget
	Result CompareResult
	Int    int64 // for version, create, mod and lease targets
	Value  []byte
}

// OpType is the kind of a transaction operation.
type OpType int

// Operation types.
const (
	OpRange OpType = iota
	OpPut
	OpDelete
)

// Op is one operation of a transaction. End, when set, makes the op cover
// [Key, End); an End of "\x00" means "every key >= Key".
type Op struct {
	Type   OpType
	Key    []byte
	End    []byte
	Value  []byte // OpPut
	Lease  int64  // OpPut
	PrevKV bool   // OpPut/OpDelete: return the replaced version
	Range  RangeOptions
}

// OpResult is the outcome of one Op.
type OpResult struct {
	Range   *RangeResult // OpRange
	PrevKVs []KeyValue   // OpPut/OpDelete with PrevKV
	Deleted int64        // OpDelete
}

// TxnResult is the outcome of a transaction.
type TxnResult struct {
	Succeeded bool
	Revision  int64 // the store revision after the transaction
	Results   []OpResult
}

// LeaseInfo describes a lease.
type LeaseInfo struct {
	ID         int64
	TTL        int64 // remaining seconds
	GrantedTTL int64
	Keys       [][]byte
}

// WatchBatch is what a watcher delivers: events in revision order, and the
// revision up to which the watch has seen every change. A batch without
// events is a progress notification.
type WatchBatch struct {
	Events   []Event
	Revision int64
}

// Watcher delivers events of one watch in revision order.
type Watcher interface {
	// Events yields batches; it is closed when the watch ends.
	Events() <-chan WatchBatch
	// RequestProgress asks for a progress notification once the watch has
	// delivered everything committed so far.
	RequestProgress()
	// Err tells why the channel was closed (nil after a normal Close or
	// context cancellation).
	Err() error
	// Close stops the watch.
	Close()
}

// Backend is a revisioned key-value store with watch.
//
// Every successful write transaction advances the revision by exactly one; a
// transaction that writes nothing leaves it unchanged. A write is only
// acknowledged once it is durable.
type Backend interface {
	// Range reads [key, end) (or just key when end is empty) at a revision.
	Range(ctx context.Context, key, end []byte, opts RangeOptions) (RangeResult, error)
	// Txn evaluates the compares and atomically applies success or failure ops.
	Txn(ctx context.Context, cmps []Compare, success, failure []Op) (TxnResult, error)
	// Watch streams changes to [key, end) starting at startRev (0: after the
	// current revision). A startRev at or below the compacted revision fails
	// with ErrCompacted.
	Watch(ctx context.Context, key, end []byte, startRev int64, prevKV bool) (Watcher, error)
	// Compact discards versions older than rev that are superseded.
	Compact(ctx context.Context, rev int64) error
	// CurrentRevision is the revision of the last durable write.
	CurrentRevision() int64
	// CompactRevision is the revision up to which history was compacted.
	CompactRevision() int64

	// LeaseGrant creates a lease (id 0: pick one). Keys attached to a lease
	// are deleted when it expires or is revoked.
	LeaseGrant(ctx context.Context, id, ttl int64) (LeaseInfo, error)
	LeaseRevoke(ctx context.Context, id int64) (int64, error)
	LeaseKeepAlive(ctx context.Context, id int64) (LeaseInfo, error)
	LeaseTimeToLive(ctx context.Context, id int64, keys bool) (LeaseInfo, error)
	Leases(ctx context.Context) ([]int64, error)

	// DBSize reports the size of the backing database in bytes.
	DBSize() int64
	Close() error
}

// PrefixEnd returns the range end that selects every key with the prefix.
func PrefixEnd(prefix []byte) []byte {
	end := append([]byte(nil), prefix...)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return []byte{0}
}
