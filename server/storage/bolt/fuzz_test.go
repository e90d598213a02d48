package bolt

import (
	"bytes"
	"testing"
)

// The decoders read bytes from the database file; a damaged file must give
// errors, never panics.
func FuzzDecodeRecord(f *testing.F) {
	f.Add(encodeRecord(record{create: 3, version: 2, lease: 7, value: []byte("v")}))
	f.Add(encodeRecord(record{tombstone: true}))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := decodeRecord(b, true)
		if err != nil {
			return
		}
		again, err := decodeRecord(encodeRecord(r), true)
		if err != nil || again.create != r.create || again.version != r.version || again.lease != r.lease || !bytes.Equal(again.value, r.value) {
			t.Fatalf("round trip: %+v vs %+v (%v)", r, again, err)
		}
	})
}

func FuzzDecodeLog(f *testing.F) {
	f.Add(encodeLog([]logEntry{{key: []byte("/a"), prevRev: 3}, {key: []byte("/b")}}))
	f.Add([]byte{0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		entries, err := decodeLog(b)
		if err != nil {
			return
		}
		again, err := decodeLog(encodeLog(entries))
		if err != nil || len(again) != len(entries) {
			t.Fatalf("round trip: %v", err)
		}
	})
}

func FuzzSplitHistKey(f *testing.F) {
	f.Add(histKey([]byte("/registry/pods/a"), 42))
	f.Fuzz(func(t *testing.T, b []byte) {
		k, rev, ok := splitHistKey(b)
		if ok && !bytes.Equal(histKey(k, rev), b) {
			t.Fatalf("split/join mismatch for %q", b)
		}
	})
}
