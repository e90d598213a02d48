// Package textpages keeps the part of the executable a long-running skiff
// process maps down to what it uses. The binary is ~180 MB of code and
// read-only data; start-up (package initialisation of every dependency,
// flag parsing, building the API server) touches tens of MB of it once,
// and the kernel maps 16 neighbouring pages on every fault ("fault
// around"). Those clean file pages then stay mapped, and count in the
// process's RSS and PSS, for as long as it runs, although it never uses
// them again. Release unmaps them (madvise MADV_DONTNEED on the
// executable's read-only mappings): the pages stay in the page cache, free
// for the kernel to reclaim, and the next use of any of them is a minor
// fault. Anonymous memory and writable mappings are never touched.
package textpages

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Mapping is one mapping of the executable.
type Mapping struct {
	Start, End uintptr
	Perms      string
}

// Mappings lists the read-only (code and constant data) mappings of the
// file exe in a /proc/PID/maps listing.
func Mappings(maps []byte, exe string) ([]Mapping, error) {
	var out []Mapping
	sc := bufio.NewScanner(strings.NewReader(string(maps)))
	for sc.Scan() {
		// start-end perms offset dev inode path
		f := strings.Fields(sc.Text())
		if len(f) < 6 {
			continue
		}
		path := strings.Join(f[5:], " ")
		if path != exe && path != exe+" (deleted)" {
			continue
		}
		perms := f[1]
		// Private and not writable: r-xp (code), r--p (read-only data).
		if len(perms) != 4 || perms[0] != 'r' || perms[1] != '-' || perms[3] != 'p' {
			continue
		}
		lo, hi, ok := strings.Cut(f[0], "-")
		if !ok {
			return nil, fmt.Errorf("textpages: malformed maps line %q", sc.Text())
		}
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil || end <= start {
			return nil, fmt.Errorf("textpages: malformed maps line %q", sc.Text())
		}
		out = append(out, Mapping{Start: uintptr(start), End: uintptr(end), Perms: perms})
	}
	return out, sc.Err()
}

// Release unmaps this process's read-only mappings of its executable and
// returns how many bytes of address space it covered.
func Release() (int64, error) {
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		return 0, fmt.Errorf("textpages: %w", err)
	}
	exe = strings.TrimSuffix(exe, " (deleted)")
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		return 0, fmt.Errorf("textpages: %w", err)
	}
	ms, err := Mappings(maps, exe)
	if err != nil {
		return 0, err
	}
	var n int64
	for _, m := range ms {
		// The raw system call: the range is not Go memory.
		if _, _, errno := unix.Syscall(unix.SYS_MADVISE, m.Start, m.End-m.Start, unix.MADV_DONTNEED); errno != 0 {
			return n, fmt.Errorf("textpages: madvise %x-%x: %w", m.Start, m.End, errno)
		}
		n += int64(m.End - m.Start)
	}
	return n, nil
}

// Loop calls Release every interval until ctx ends: what start-up touched
// goes at the first tick, and what a burst of work touched since goes at
// the next. The working set faults back in at the cost of a minor fault
// per 16 pages.
func Loop(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if _, err := Release(); err != nil {
			return
		}
	}
}
