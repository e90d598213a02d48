package bolt

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/skiff-sh/skiff/server/storage"
)

// TestKeepAliveExpired: a lease past its expiry is not renewed even while
// it is still in the map (its revocation not yet committed), and a live
// one is.
func TestKeepAliveExpired(t *testing.T) {
	b, err := Open(Config{Path: filepath.Join(t.TempDir(), "state.db"), NoSync: true, ReleaseInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx := context.Background()
	live, err := b.LeaseGrant(ctx, 0, 60)
	if err != nil {
		t.Fatal(err)
	}
	expired, err := b.LeaseGrant(ctx, 0, 60)
	if err != nil {
		t.Fatal(err)
	}
	b.mu.Lock()
	b.leases[expired.ID].expiry = time.Now().Add(-time.Second)
	b.mu.Unlock()
	if _, err := b.LeaseKeepAlive(ctx, expired.ID); !errors.Is(err, storage.ErrLeaseNotFound) {
		t.Errorf("keepalive of an expired lease still in the map: %v, want ErrLeaseNotFound", err)
	}
	if info, err := b.LeaseKeepAlive(ctx, live.ID); err != nil || info.TTL != 60 {
		t.Errorf("keepalive of a live lease: %+v, %v", info, err)
	}
}
