package textpages

import (
	"bufio"
	"os"
	"strconv"
	"strings"
	"testing"
)

func TestMappings(t *testing.T) {
	t.Parallel()
	const exe = "/usr/bin/skiff"
	maps := `00400000-04ed9000 r-xp 00000000 fd:01 123 /usr/bin/skiff
04ed9000-0b04b000 r--p 04ad9000 fd:01 123 /usr/bin/skiff
0b04b000-0b1e3000 rw-p 0ac4b000 fd:01 123 /usr/bin/skiff
0b1e3000-0b300000 rw-p 00000000 00:00 0
7f00000000-7f00001000 r-xp 00000000 fd:01 456 /usr/bin/skiff-other
7f00002000-7f00003000 r--s 00000000 fd:01 123 /usr/bin/skiff
7f00004000-7f00005000 r-xp 00000000 00:00 0 [vdso]
7f00006000-7f00007000 r-xp 00000000 fd:01 123 /usr/bin/skiff (deleted)
`
	got, err := Mappings([]byte(maps), exe)
	if err != nil {
		t.Fatal(err)
	}
	want := []Mapping{{0x400000, 0x4ed9000, "r-xp"}, {0x4ed9000, 0xb04b000, "r--p"}, {0x7f00006000, 0x7f00007000, "r-xp"}}
	if len(got) != len(want) {
		t.Fatalf("Mappings = %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("Mappings[%d] = %+v, want %+v", i, got[i], want[i])
		}
	}
	for _, bad := range []string{"zz-04ed9000 r-xp 0 fd:01 1 /usr/bin/skiff", "04ed9000 r-xp 0 fd:01 1 /usr/bin/skiff", "0500-0400 r-xp 0 fd:01 1 /usr/bin/skiff"} {
		if _, err := Mappings([]byte(bad), exe); err == nil {
			t.Errorf("Mappings(%q) succeeded", bad)
		}
	}
}

// exeRss sums the resident kB of this process's mappings of its executable.
func exeRss(t *testing.T) int {
	t.Helper()
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	ours, total := false, 0
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		switch {
		case len(fs) >= 6 && strings.Contains(fs[0], "-") && !strings.HasSuffix(fs[0], ":"):
			ours = strings.Join(fs[5:], " ") == exe && fs[1][1] == '-'
		case len(fs) >= 2 && fs[0] == "Rss:" && ours:
			n, _ := strconv.Atoi(fs[1])
			total += n
		}
	}
	return total
}

// TestRelease: on the real kernel, releasing drops the executable's
// resident read-only pages, and the process keeps running the code it
// unmapped.
func TestRelease(t *testing.T) {
	if _, err := os.Stat("/proc/self/smaps"); err != nil {
		t.Skip("no /proc/self/smaps on this system")
	}
	before := exeRss(t)
	n, err := Release()
	if err != nil {
		t.Fatal(err)
	}
	after := exeRss(t)
	if n <= 0 {
		t.Fatalf("Release covered %d bytes", n)
	}
	// Reading smaps faults its own code back in (16 pages a fault), a
	// large share of a small test binary; the rest stays out.
	if before == 0 || after >= before {
		t.Fatalf("resident executable pages %d kB before, %d kB after Release", before, after)
	}
	// Code and constant data that were unmapped still work.
	if got := strconv.Itoa(12345) + strings.ToUpper("ok"); got != "12345OK" {
		t.Fatalf("got %q", got)
	}
	t.Logf("executable resident: %d kB -> %d kB (%d MB of mappings released)", before, after, n>>20)
}
