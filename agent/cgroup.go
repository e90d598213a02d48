package agent

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// ensureCgroupRoot creates the cgroup Skiff's pods live under (name,
// directly below the hierarchy root) in every mounted hierarchy, so the
// kubelet's kubepods tree never mixes with a host's own containers, and
// returns its path for the kubelet's cgroupRoot.
func ensureCgroupRoot(name string) (string, error) {
	const base = "/sys/fs/cgroup"
	if _, err := os.Stat(filepath.Join(base, "cgroup.controllers")); err == nil {
		// cgroup v2: one hierarchy; let the new group use the controllers.
		if err := os.MkdirAll(filepath.Join(base, name), 0o755); err != nil {
			return "", fmt.Errorf("cgroup %s: %w", name, err)
		}
		ctrls, err := os.ReadFile(filepath.Join(base, "cgroup.controllers"))
		if err != nil {
			return "", err
		}
		var enable []string
		for _, c := range strings.Fields(string(ctrls)) {
			enable = append(enable, "+"+c)
		}
		if len(enable) > 0 {
			_ = os.WriteFile(filepath.Join(base, "cgroup.subtree_control"), []byte(strings.Join(enable, " ")), 0o644)
		}
		return "/" + name, nil
	}
	entries, err := os.ReadDir(base)
	if err != nil {
		return "", fmt.Errorf("cgroup: %w", err)
	}
	var errs []error
	for _, e := range entries {
		if !e.IsDir() || e.Name() == "unified" {
			continue
		}
		p := filepath.Join(base, e.Name())
		if _, err := os.Stat(filepath.Join(p, "cgroup.procs")); err != nil {
			continue // a symlink alias (cpu,cpuacct) or not a hierarchy
		}
		if err := os.MkdirAll(filepath.Join(p, name), 0o755); err != nil {
			errs = append(errs, err)
		}
		if e.Name() == "cpuset" {
			// A new cpuset group starts with no CPUs or memory nodes.
			for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
				if v, err := os.ReadFile(filepath.Join(p, f)); err == nil {
					_ = os.WriteFile(filepath.Join(p, name, f), v, 0o644)
				}
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return "", fmt.Errorf("cgroup %s: %w", name, err)
	}
	return "/" + name, nil
}
