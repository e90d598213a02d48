// Package killall stops everything a Skiff agent left running on a host:
// the processes in its pods' cgroup tree, the containerd shims serving its
// runtime socket, and the mounts under its data and run directories. It
// is `skiff killall` (k3s-killall.sh's job) and test clean-up; the agent
// itself deliberately leaves pods running across its restarts.
package killall

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
)

// Config says what belongs to the agent.
type Config struct {
	// CgroupRoot is the agent's pod cgroup parent (/skiff).
	CgroupRoot string
	// RunDir and DataDir are the agent's directories; shims whose socket
	// lies under RunDir and mounts under either are the agent's.
	RunDir, DataDir string
	// Bridge, when set, is the pod bridge to delete (in this network
	// namespace).
	Bridge string
}

// Run kills and unmounts; it returns what it could not do.
func Run(c Config) error {
	pids := map[int]bool{}
	for _, p := range cgroupPIDs(c.CgroupRoot) {
		pids[p] = true
	}
	for _, p := range shimPIDs(c.RunDir) {
		pids[p] = true
	}
	for p := range pids {
		_ = syscall.Kill(p, syscall.SIGKILL)
	}
	deadline := time.Now().Add(5 * time.Second)
	for p := range pids {
		for time.Now().Before(deadline) && alive(p) {
			time.Sleep(20 * time.Millisecond)
		}
	}
	var errs []error
	if c.Bridge != "" {
		if err := removeDeadNetns("/var/run/netns"); err != nil {
			errs = append(errs, err)
		}
		if link, err := netlink.LinkByName(c.Bridge); err == nil {
			if err := netlink.LinkDel(link); err != nil {
				errs = append(errs, fmt.Errorf("delete %s: %w", c.Bridge, err))
			}
		}
	}
	for _, dir := range []string{c.RunDir, c.DataDir} {
		if dir == "" {
			continue
		}
		if err := unmountUnder(dir); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func alive(pid int) bool {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// A zombie (state Z) is dead for our purposes.
	f := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+1:]))
	return len(f) > 0 && f[0] != "Z"
}

// cgroupPIDs lists the processes under root in every cgroup hierarchy.
func cgroupPIDs(root string) []int {
	if root == "" || root == "/" {
		return nil
	}
	var out []int
	seen := map[int]bool{}
	bases := []string{"/sys/fs/cgroup"}
	if entries, err := os.ReadDir("/sys/fs/cgroup"); err == nil {
		for _, e := range entries {
			bases = append(bases, filepath.Join("/sys/fs/cgroup", e.Name()))
		}
	}
	for _, b := range bases {
		_ = filepath.WalkDir(filepath.Join(b, root), func(p string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() || d.Name() != "cgroup.procs" {
				return nil
			}
			data, err := os.ReadFile(p)
			if err != nil {
				return nil
			}
			for _, f := range strings.Fields(string(data)) {
				if pid, err := strconv.Atoi(f); err == nil && !seen[pid] {
					seen[pid] = true
					out = append(out, pid)
				}
			}
			return nil
		})
	}
	return out
}

// shimPIDs finds containerd-shim-runc-v2 processes talking to a socket
// under runDir.
func shimPIDs(runDir string) []int {
	if runDir == "" {
		return nil
	}
	entries, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmd, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil {
			continue
		}
		args := strings.Split(string(cmd), "\x00")
		if len(args) == 0 || filepath.Base(args[0]) != "containerd-shim-runc-v2" {
			continue
		}
		for i, a := range args {
			if a == "-address" && i+1 < len(args) && strings.HasPrefix(args[i+1], runDir+"/") {
				out = append(out, pid)
			}
		}
	}
	return out
}

// unmountUnder detaches every mount point below dir, deepest first.
func unmountUnder(dir string) error {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	defer f.Close()
	var points []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescape(fields[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			points = append(points, mp)
		}
	}
	sort.Slice(points, func(i, j int) bool { return len(points[i]) > len(points[j]) })
	var errs []error
	for _, p := range points {
		if err := syscall.Unmount(p, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", p, err))
		}
	}
	return errors.Join(errs...)
}

// unescape undoes mountinfo's octal escapes (\040 for space).
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// removeDeadNetns unmounts and removes the pod network namespaces (cni-*)
// that no process lives in any more: what killed sandboxes leave behind.
// Namespaces of live pods (of any runtime) are left alone.
func removeDeadNetns(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	live := map[uint64]bool{}
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		if _, err := strconv.Atoi(p.Name()); err != nil {
			continue
		}
		var st syscall.Stat_t
		if syscall.Stat("/proc/"+p.Name()+"/ns/net", &st) == nil {
			live[st.Ino] = true
		}
	}
	var errs []error
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), "cni-") {
			continue
		}
		p := filepath.Join(dir, e.Name())
		var st syscall.Stat_t
		if syscall.Stat(p, &st) == nil && live[st.Ino] {
			continue
		}
		// A namespace file may be mounted more than once: unmount them all.
		for i := 0; i < 8; i++ {
			if err := syscall.Unmount(p, syscall.MNT_DETACH); err != nil {
				break
			}
		}
		// EBUSY: still a mount point in another mount namespace (a
		// process's private copy); it goes when that namespace does.
		if err := os.Remove(p); err != nil && !errors.Is(err, syscall.EBUSY) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
