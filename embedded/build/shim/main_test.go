package main

import (
	"errors"
	"path/filepath"
	"testing"
)

func TestListen(t *testing.T) {
	addr := "unix://" + filepath.Join(t.TempDir(), "s", "node")

	first, err := listen(addr)
	if err != nil {
		t.Fatalf("first listen: %v", err)
	}
	// A live shim serves the address: later containers join it.
	if _, err := listen(addr); !errors.Is(err, errRunning) {
		t.Fatalf("listen with a live shim = %v, want errRunning", err)
	}
	// The shim exited without removing its socket: the address is taken
	// over by a new shim.
	first.SetUnlinkOnClose(false)
	first.Close()
	second, err := listen(addr)
	if err != nil {
		t.Fatalf("listen over a stale socket: %v", err)
	}
	second.Close()
}
