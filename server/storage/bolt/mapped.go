package bolt

import (
	"bytes"
	"fmt"
	"log/slog"
	"math"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unsafe"

	bolt "go.etcd.io/bbolt"
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
	b.releases.Add(1)
	return releaseMapping(b.db)
}

// releaseMapping unmaps the database file's mapping; the caller holds a
// transaction open. The mapping's bounds come from the kernel, not from
// the database's page count: bbolt opens a file shorter than its header
// says (a partial copy), and a range past the mapping could reach other
// memory.
func releaseMapping(db *bolt.DB) (int64, error) {
	start := db.Info().Data
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		return 0, fmt.Errorf("bolt: release mapped pages: %w", err)
	}
	end, err := mappingEnd(maps, start)
	if err != nil {
		return 0, fmt.Errorf("bolt: release mapped pages: %w", err)
	}
	// The raw system call: the range is the file's mapping, not Go memory.
	if _, _, errno := unix.Syscall(unix.SYS_MADVISE, start, end-start, unix.MADV_DONTNEED); errno != 0 {
		return 0, fmt.Errorf("bolt: madvise %#x-%#x: %w", start, end, errno)
	}
	return int64(end - start), nil
}

// scanRelease unmaps the file's pages while a read or a compaction
// reaches much of the file: the watch cache's consistency check lists
// every object of a resource from storage every 5-7.5 minutes, and a
// compaction deletes versions all over the history. What such a walk maps
// is not what it reads: a read fault maps the file's cached pages in the
// whole aligned 64 KiB window around the page (the kernel's fault-around),
// and after months of copy-on-write a prefix's leaves lie scattered among
// other pages. Walking the 1,000 leases of a 30,000-pod run (~0.5 MB of
// current values, and their versions since the last compaction) mapped
// 351 MB of a 420 MB file. So the walk counts the windows
// its values lie in and unmaps the whole mapping every `every` bytes of
// them. Other readers that were using the pages map them back at a minor
// fault per window. A nil scanRelease never releases.
type scanRelease struct {
	db       *bolt.DB
	every    int64   // estimated bytes mapped between releases
	window   uintptr // bytes a read fault maps (faultWindow)
	last     uintptr // the last window counted, as address/window
	mapped   int64   // estimate since the last release
	releases *atomic.Int64
	log      *slog.Logger
}

// faultAround is the kernel's default fault_around_bytes.
const faultAround = 64 << 10

// faultWindow is how much of a file mapping one read fault maps: the
// fault-around window, or one page where pages are larger (a 64 KiB-page
// arm64 kernel maps just the page).
func faultWindow() uintptr { return max(faultAround, uintptr(os.Getpagesize())) }

func (b *Backend) scanRelease() *scanRelease {
	if b.cfg.ScanRelease <= 0 {
		return nil
	}
	return &scanRelease{db: b.db, every: b.cfg.ScanRelease, window: faultWindow(), releases: &b.releases, log: b.log}
}

// add counts v, a value the walk found in the mapping: each fault window
// v spans, other than the window counted last, adds a window to the
// estimate. The caller's transaction is still open (a read, or the
// compaction's write, which cannot replace the mapping until it commits).
func (s *scanRelease) add(v []byte) {
	if s == nil || len(v) == 0 {
		return
	}
	p := uintptr(unsafe.Pointer(unsafe.SliceData(v)))
	lo, hi := p/s.window, (p+uintptr(len(v))-1)/s.window
	n := int64(hi - lo + 1)
	if lo == s.last {
		n--
	}
	s.last = hi
	if s.mapped += n * int64(s.window); s.mapped < s.every {
		return
	}
	s.mapped, s.last = 0, 0
	if _, err := releaseMapping(s.db); err != nil {
		s.log.Warn("releasing the database's mapped pages during a walk failed", "err", err)
		s.every = math.MaxInt64 // not again in this walk
		return
	}
	s.releases.Add(1)
}

// mappingEnd returns the end of the shared, read-only file mapping that
// starts at start in a /proc/PID/maps listing. (The mapping is as long as
// bbolt chose to map, which can be more than the database's pages: the
// kernel also maps cached pages around each one read.)
func mappingEnd(maps []byte, start uintptr) (uintptr, error) {
	for line := range bytes.Lines(maps) {
		// start-end perms offset dev inode path
		f := strings.Fields(string(line))
		if len(f) < 6 {
			continue
		}
		lo, hi, ok := strings.Cut(f[0], "-")
		if !ok {
			continue
		}
		s, err := strconv.ParseUint(lo, 16, 64)
		if err != nil || uintptr(s) != start {
			continue
		}
		e, err := strconv.ParseUint(hi, 16, 64)
		if err != nil || e <= s {
			return 0, fmt.Errorf("malformed maps line %q", line)
		}
		if f[1] != "r--s" {
			return 0, fmt.Errorf("mapping at %#x is %s, not a read-only shared file mapping", start, f[1])
		}
		return uintptr(e), nil
	}
	return 0, fmt.Errorf("no mapping starts at %#x", start)
}

// releaseDue reports whether releaseLoop releases now: every interval,
// and every busy interval while the revision moves (writes commit). What
// a write maps is mostly read once: the leaf of a key it checks or
// replaces (a pod's name lands anywhere in the key order) and the pages
// around it that the fault maps too; the branch pages every write reads
// fault back in at a minor fault per window after each release.
func releaseDue(sinceLast, interval, busy time.Duration, revMoved bool) bool {
	if sinceLast >= interval {
		return true
	}
	return revMoved && busy > 0 && sinceLast >= busy
}

// releaseLoop calls ReleaseMapped when releaseDue until the backend
// closes.
func (b *Backend) releaseLoop(interval, busy time.Duration) {
	tick := interval
	if busy > 0 && busy < interval {
		tick = busy
	}
	last, lastRev := time.Now(), b.CurrentRevision()
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		var now time.Time
		select {
		case <-b.stop:
			return
		case now = <-t.C:
		}
		// Half a tick of slack: ticks arrive a little late or early.
		rev := b.CurrentRevision()
		if !releaseDue(now.Sub(last)+tick/2, interval, busy, rev != lastRev) {
			continue
		}
		last, lastRev = now, rev
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
