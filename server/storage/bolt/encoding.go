package bolt

import (
	"bytes"
	"encoding/binary"
	"fmt"

	"github.com/skiff-sh/skiff/server/storage"
)

// On-disk layout (all integers big-endian unless varint):
//
//	meta:      "rev" -> current revision, "compact" -> compacted revision,
//	           "compactdone" -> revision up to which its history is deleted
//	hist:      key 0x00 rev(8) -> record (one entry per version of a key)
//	log:       rev(8) -> sequence of (uvarint len, key, uvarint prevRev)
//	lease:     id(8) -> uvarint granted TTL
//	leasekeys: id(8) key -> empty
//
// A record is: flags(1: 0 put, 1 tombstone) uvarint create, uvarint version,
// uvarint lease, value bytes.
var (
	bucketMeta      = []byte("meta")
	bucketHist      = []byte("hist")
	bucketLog       = []byte("log")
	bucketLease     = []byte("lease")
	bucketLeaseKeys = []byte("leasekeys")

	metaRev     = []byte("rev")
	metaCompact = []byte("compact")
	// metaCompactDone: the revision up to which compacted history is
	// deleted (compactBatch); absent in stores written before batches.
	metaCompactDone = []byte("compactdone")
)

const (
	flagPut       = 0
	flagTombstone = 1
	// maxKeySize keeps hist keys under bbolt's 32 KiB key limit.
	maxKeySize = 32*1024 - 16
)

func revBytes(rev int64) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, uint64(rev))
	return b
}

func histKey(key []byte, rev int64) []byte {
	b := make([]byte, len(key)+9)
	copy(b, key)
	b[len(key)] = 0
	binary.BigEndian.PutUint64(b[len(key)+1:], uint64(rev))
	return b
}

// splitHistKey splits a hist key into the user key and revision.
func splitHistKey(hk []byte) ([]byte, int64, bool) {
	if len(hk) < 9 || hk[len(hk)-9] != 0 {
		return nil, 0, false
	}
	return hk[:len(hk)-9], int64(binary.BigEndian.Uint64(hk[len(hk)-8:])), true
}

type record struct {
	tombstone bool
	create    int64
	version   int64
	lease     int64
	value     []byte
}

func encodeRecord(r record) []byte {
	b := make([]byte, 0, 1+3*binary.MaxVarintLen64+len(r.value))
	if r.tombstone {
		b = append(b, flagTombstone)
	} else {
		b = append(b, flagPut)
	}
	b = binary.AppendUvarint(b, uint64(r.create))
	b = binary.AppendUvarint(b, uint64(r.version))
	b = binary.AppendUvarint(b, uint64(r.lease))
	return append(b, r.value...)
}

// decodeRecord decodes a record; the value aliases b unless copyValue.
func decodeRecord(b []byte, copyValue bool) (record, error) {
	var r record
	if len(b) < 1 {
		return r, fmt.Errorf("bolt: short record")
	}
	r.tombstone = b[0] == flagTombstone
	b = b[1:]
	var vals [3]uint64
	for i := range vals {
		v, n := binary.Uvarint(b)
		if n <= 0 {
			return r, fmt.Errorf("bolt: corrupt record header")
		}
		vals[i] = v
		b = b[n:]
	}
	r.create, r.version, r.lease = int64(vals[0]), int64(vals[1]), int64(vals[2])
	if copyValue {
		r.value = bytes.Clone(b)
	} else {
		r.value = b
	}
	return r, nil
}

func (r record) keyValue(key []byte, rev int64, keysOnly bool) storage.KeyValue {
	kv := storage.KeyValue{
		Key:            bytes.Clone(key),
		CreateRevision: r.create,
		ModRevision:    rev,
		Version:        r.version,
		Lease:          r.lease,
	}
	if !keysOnly {
		kv.Value = bytes.Clone(r.value)
	}
	return kv
}

type logEntry struct {
	key     []byte
	prevRev int64
}

func encodeLog(entries []logEntry) []byte {
	var b []byte
	for _, e := range entries {
		b = binary.AppendUvarint(b, uint64(len(e.key)))
		b = append(b, e.key...)
		b = binary.AppendUvarint(b, uint64(e.prevRev))
	}
	return b
}

func decodeLog(b []byte) ([]logEntry, error) {
	var out []logEntry
	for len(b) > 0 {
		l, n := binary.Uvarint(b)
		if n <= 0 || uint64(len(b)-n) < l {
			return nil, fmt.Errorf("bolt: corrupt log entry")
		}
		b = b[n:]
		key := bytes.Clone(b[:l])
		b = b[l:]
		p, n := binary.Uvarint(b)
		if n <= 0 {
			return nil, fmt.Errorf("bolt: corrupt log entry")
		}
		b = b[n:]
		out = append(out, logEntry{key: key, prevRev: int64(p)})
	}
	return out, nil
}

func getInt(b []byte) int64 {
	if len(b) != 8 {
		return 0
	}
	return int64(binary.BigEndian.Uint64(b))
}
