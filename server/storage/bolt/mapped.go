package bolt

import (
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// bbolt reads the database through a read-only shared mapping of the whole
// file and writes with pwrite. Every page a transaction has read stays
// mapped, and counts in the process's RSS, until the mapping is replaced
// when the file grows: versions a compaction has since deleted, the free
// pages they left, leaves of objects nobody reads. A 30,000-pod run left
// ~450 MB of a 470 MB file mapped, most of it pages the server would not
// read again. ReleaseMapped unmaps them (madvise MADV_DONTNEED, as
// internal/textpages does for the executable): the pages stay in the page
// cache, which the kernel reclaims first when memory is short, and the next
// read of any of them is a minor fault. The data is never at risk: the
// mapping is read-only and shared, so dropping it discards nothing.

// ReleaseMapped unmaps the database file's pages from this process and
// returns how many bytes of the mapping it covered.
func (b *Backend) ReleaseMapped() (int64, error) {
	// An open read transaction holds bbolt's mapping lock, so the
	// mapping cannot be replaced (and its address reused) meanwhile.
	tx, err := b.db.Begin(false)
	if err != nil {
		return 0, fmt.Errorf("bolt: release mapped pages: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	// Every page below the transaction's size is inside the mapping (bbolt
	// maps at least as far as it allocates); pages past it that a newer
	// transaction has read go at the next call.
	start, size := b.db.Info().Data, tx.Size()
	if size <= 0 {
		return 0, nil
	}
	// The raw system call: the range is the file's mapping, not Go memory.
	if _, _, errno := unix.Syscall(unix.SYS_MADVISE, start, uintptr(size), unix.MADV_DONTNEED); errno != 0 {
		return 0, fmt.Errorf("bolt: madvise %#x+%d: %w", start, size, errno)
	}
	return size, nil
}

// releaseLoop calls ReleaseMapped every interval until the backend closes.
func (b *Backend) releaseLoop(interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-b.stop:
			return
		case <-t.C:
		}
		if _, err := b.ReleaseMapped(); err != nil {
			select {
			case <-b.stop: // closed meanwhile
				return
			default:
			}
			b.log.Warn("releasing the database's mapped pages failed; not trying again", "err", err)
			return
		}
	}
}
