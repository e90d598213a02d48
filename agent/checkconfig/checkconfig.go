// Package checkconfig checks that the running kernel has what a Skiff node
// needs (namespaces, cgroups with the memory/cpu/pids controllers, overlayfs,
// the network pieces for pods and VXLAN) and says how to fix what is
// missing, as `k3s check-config` does. It reads /proc and /sys only and
// changes nothing; the root is a parameter so tests can use a fake tree.
package checkconfig

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
)

// Status of one check.
type Status string

const (
	OK      Status = "ok"
	Missing Status = "missing"
	// Unknown means the kernel did not say (no /sys/module entry and no
	// kernel config to read); the feature may still be built in.
	Unknown Status = "unknown"
)

// Result is the outcome of one check.
type Result struct {
	Name     string
	Status   Status
	Required bool
	Detail   string
	Fix      string
}

// Failed reports whether a required check is missing.
func Failed(results []Result) bool {
	for _, r := range results {
		if r.Required && r.Status == Missing {
			return true
		}
	}
	return false
}

// Error summarises the missing required features in one message, or nil.
func Error(results []Result) error {
	var msgs []string
	for _, r := range results {
		if r.Required && r.Status == Missing {
			m := r.Name + " is missing"
			if r.Fix != "" {
				m += " (" + r.Fix + ")"
			}
			msgs = append(msgs, m)
		}
	}
	if len(msgs) == 0 {
		return nil
	}
	return fmt.Errorf("this kernel cannot run Skiff pods: %s", strings.Join(msgs, "; "))
}

// memoryCgroupFix is the usual cause on Raspberry Pi OS and some Arm boards.
const memoryCgroupFix = "enable the memory cgroup: add 'cgroup_memory=1 cgroup_enable=memory' to the kernel command line " +
	"(Raspberry Pi: /boot/firmware/cmdline.txt or /boot/cmdline.txt) and reboot"

// Check runs every check against the tree at root ("/" on a real host).
func Check(root fs.FS, kernelRelease string) []Result {
	c := checker{root: root, release: kernelRelease}
	c.loadKernelConfig()
	var rs []Result
	for _, ns := range []string{"mnt", "pid", "net", "ipc", "uts", "cgroup"} {
		r := Result{Name: ns + " namespace", Required: true, Status: OK}
		if !c.exists("proc/self/ns/" + ns) {
			r.Status, r.Fix = Missing, "a kernel built with CONFIG_NAMESPACES and this namespace type"
		}
		rs = append(rs, r)
	}
	rs = append(rs, c.cgroups()...)
	rs = append(rs, c.filesystem("overlay", "overlayfs", true, "CONFIG_OVERLAY_FS", "load it: modprobe overlay"))
	rs = append(rs,
		c.module("veth", "veth (pod network interfaces)", true, "CONFIG_VETH", "modprobe veth"),
		c.module("bridge", "bridge (pod network on the node)", true, "CONFIG_BRIDGE", "modprobe bridge"),
		c.module("vxlan", "vxlan (pod network across nodes)", false, "CONFIG_VXLAN", "modprobe vxlan; needed for multi-node clusters"),
		c.module("nf_tables", "nf_tables (Services, NAT)", true, "CONFIG_NF_TABLES", "modprobe nf_tables"),
		c.module("br_netfilter", "br_netfilter", false, "CONFIG_BRIDGE_NETFILTER", "modprobe br_netfilter"),
	)
	return rs
}

type checker struct {
	root    fs.FS
	release string
	// config is the kernel build configuration, when readable.
	config map[string]string
}

func (c *checker) exists(p string) bool {
	_, err := fs.Stat(c.root, p)
	return err == nil
}

func (c *checker) read(p string) string {
	b, err := fs.ReadFile(c.root, p)
	if err != nil {
		return ""
	}
	return string(b)
}

func (c *checker) loadKernelConfig() {
	var data []byte
	if b, err := fs.ReadFile(c.root, "proc/config.gz"); err == nil {
		if zr, err := gzip.NewReader(bytes.NewReader(b)); err == nil {
			data, _ = io.ReadAll(zr)
		}
	}
	if data == nil && c.release != "" {
		data, _ = fs.ReadFile(c.root, "boot/config-"+c.release)
	}
	if data == nil {
		return
	}
	c.config = map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok && strings.HasPrefix(k, "CONFIG_") {
			c.config[k] = v
		}
	}
}

// builtin reports whether a module is compiled into the kernel or
// loaded: (true, true) yes, (false, true) definitely not, (_, false)
// cannot tell.
func (c *checker) builtin(module, option string) (present, known bool) {
	if c.exists("sys/module/" + module) {
		return true, true
	}
	if strings.Contains(c.read("proc/modules"), module+" ") {
		return true, true
	}
	if c.release != "" {
		dir := "lib/modules/" + c.release
		if strings.Contains(c.read(dir+"/modules.builtin"), "/"+module+".ko") {
			return true, true
		}
		if strings.Contains(c.read(dir+"/modules.dep"), "/"+module+".ko") {
			return true, true // loadable on demand
		}
	}
	if c.config != nil {
		v := c.config[option]
		return v == "y" || v == "m", true
	}
	return false, false
}

func (c *checker) module(module, name string, required bool, option, fix string) Result {
	r := Result{Name: name, Required: required, Status: OK}
	present, known := c.builtin(module, option)
	switch {
	case present:
	case !known:
		r.Status, r.Detail = Unknown, "no /sys/module/"+module+", modules list or kernel config to tell; it may be built in"
	default:
		r.Status, r.Fix = Missing, fix+" (kernel option "+option+")"
	}
	return r
}

func (c *checker) filesystem(fsName, name string, required bool, option, fix string) Result {
	r := Result{Name: name, Required: required, Status: OK}
	if strings.Contains(c.read("proc/filesystems"), "\t"+fsName+"\n") {
		return r
	}
	return c.module(fsName, name, required, option, fix)
}

// cgroups checks the unified (v2) hierarchy's controllers, or v1's
// enabled column in /proc/cgroups.
func (c *checker) cgroups() []Result {
	want := []string{"cpu", "memory", "pids"}
	enabled := map[string]bool{}
	mode := ""
	if ctrl := c.read("sys/fs/cgroup/cgroup.controllers"); ctrl != "" {
		mode = "cgroup v2"
		for _, f := range strings.Fields(ctrl) {
			enabled[f] = true
		}
	} else if table := c.read("proc/cgroups"); table != "" {
		mode = "cgroup v1"
		for _, line := range strings.Split(table, "\n") {
			f := strings.Fields(line)
			if len(f) == 4 && !strings.HasPrefix(f[0], "#") && f[3] == "1" {
				enabled[f[0]] = true
			}
		}
	}
	if mode == "" {
		return []Result{{Name: "cgroups", Required: true, Status: Missing, Fix: "mount cgroup2 at /sys/fs/cgroup (systemd does this by default)"}}
	}
	var rs []Result
	for _, ctl := range want {
		r := Result{Name: ctl + " cgroup controller", Required: true, Status: OK, Detail: mode}
		if !enabled[ctl] {
			r.Status = Missing
			r.Fix = "enable the " + ctl + " controller"
			if ctl == "memory" {
				r.Fix = memoryCgroupFix
			}
		}
		rs = append(rs, r)
	}
	return rs
}

// Host checks the machine this process runs on.
func Host() []Result {
	release := ""
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		release = strings.TrimSpace(string(b))
	}
	return Check(os.DirFS("/"), release)
}

// Format writes one line per result and the fixes of missing ones.
func Format(w io.Writer, results []Result) error {
	var errs []error
	for _, r := range results {
		req := "optional"
		if r.Required {
			req = "required"
		}
		line := fmt.Sprintf("%-36s %-8s %s", r.Name, r.Status, req)
		if r.Detail != "" {
			line += "  (" + r.Detail + ")"
		}
		if r.Status == Missing && r.Fix != "" {
			line += "\n    fix: " + r.Fix
		}
		_, err := fmt.Fprintln(w, line)
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
