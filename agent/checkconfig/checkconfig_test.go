package checkconfig

import (
	"bytes"
	"compress/gzip"
	"strings"
	"testing"
	"testing/fstest"
)

func gz(s string) []byte {
	var b bytes.Buffer
	w := gzip.NewWriter(&b)
	w.Write([]byte(s))
	w.Close()
	return b.Bytes()
}

func healthy() fstest.MapFS {
	fsys := fstest.MapFS{
		"proc/filesystems":                 {Data: []byte("nodev\tcgroup2\nnodev\toverlay\n")},
		"sys/fs/cgroup/cgroup.controllers": {Data: []byte("cpuset cpu io memory hugetlb pids rdma\n")},
	}
	for _, ns := range []string{"mnt", "pid", "net", "ipc", "uts", "cgroup"} {
		fsys["proc/self/ns/"+ns] = &fstest.MapFile{}
	}
	for _, m := range []string{"veth", "bridge", "vxlan", "nf_tables", "br_netfilter"} {
		fsys["sys/module/"+m] = &fstest.MapFile{Mode: 0o755 | 1<<31}
	}
	return fsys
}

func status(rs []Result, name string) Status {
	for _, r := range rs {
		if strings.HasPrefix(r.Name, name) {
			return r.Status
		}
	}
	return ""
}

func TestCheck(t *testing.T) {
	tests := []struct {
		name    string
		mutate  func(fstest.MapFS)
		release string
		want    map[string]Status
		failed  bool
		errHas  string
	}{
		{name: "healthy cgroup v2 host", mutate: func(fstest.MapFS) {}, want: map[string]Status{"memory cgroup": OK, "overlayfs": OK, "vxlan": OK}},
		{
			name: "raspberry pi without memory cgroup (v1)",
			mutate: func(f fstest.MapFS) {
				delete(f, "sys/fs/cgroup/cgroup.controllers")
				f["proc/cgroups"] = &fstest.MapFile{Data: []byte("#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpu\t2\t1\t1\nmemory\t0\t1\t0\npids\t3\t1\t1\n")}
			},
			want:   map[string]Status{"memory cgroup": Missing, "cpu cgroup": OK},
			failed: true, errHas: "cgroup_memory=1 cgroup_enable=memory",
		},
		{
			name:   "no network namespace",
			mutate: func(f fstest.MapFS) { delete(f, "proc/self/ns/net") },
			want:   map[string]Status{"net namespace": Missing}, failed: true, errHas: "net namespace is missing",
		},
		{
			name: "modules told by kernel config",
			mutate: func(f fstest.MapFS) {
				for _, m := range []string{"veth", "bridge", "vxlan", "nf_tables", "br_netfilter"} {
					delete(f, "sys/module/"+m)
				}
				f["proc/config.gz"] = &fstest.MapFile{Data: gz("CONFIG_VETH=y\nCONFIG_BRIDGE=m\nCONFIG_NF_TABLES=y\n# CONFIG_VXLAN is not set\n")}
			},
			want: map[string]Status{"veth": OK, "bridge": OK, "nf_tables": OK, "vxlan": Missing, "br_netfilter": Missing},
		},
		{
			name: "loadable module in modules.dep",
			mutate: func(f fstest.MapFS) {
				delete(f, "sys/module/vxlan")
				f["lib/modules/6.1.0/modules.dep"] = &fstest.MapFile{Data: []byte("kernel/drivers/net/vxlan/vxlan.ko: kernel/net/ipv4/udp_tunnel.ko\n")}
			},
			release: "6.1.0",
			want:    map[string]Status{"vxlan": OK},
		},
		{
			name:   "cannot tell",
			mutate: func(f fstest.MapFS) { delete(f, "sys/module/nf_tables") },
			want:   map[string]Status{"nf_tables": Unknown},
		},
		{
			name: "overlay missing",
			mutate: func(f fstest.MapFS) {
				f["proc/filesystems"] = &fstest.MapFile{Data: []byte("nodev\tcgroup2\n")}
				f["proc/config.gz"] = &fstest.MapFile{Data: gz("CONFIG_VETH=y\n")}
			},
			want: map[string]Status{"overlayfs": Missing}, failed: true, errHas: "modprobe overlay",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fsys := healthy()
			tc.mutate(fsys)
			rs := Check(fsys, tc.release)
			for name, want := range tc.want {
				if got := status(rs, name); got != want {
					t.Errorf("%s: %q, want %q", name, got, want)
				}
			}
			if Failed(rs) != tc.failed {
				t.Errorf("Failed() = %v, want %v", Failed(rs), tc.failed)
			}
			err := Error(rs)
			if (err != nil) != tc.failed || (tc.errHas != "" && !strings.Contains(err.Error(), tc.errHas)) {
				t.Errorf("Error() = %v, want containing %q", err, tc.errHas)
			}
			var out bytes.Buffer
			if err := Format(&out, rs); err != nil || !strings.Contains(out.String(), "required") {
				t.Errorf("Format: %v %q", err, out.String())
			}
		})
	}
}

func TestHostRuns(t *testing.T) {
	// The real host: whatever it has, every check gives a status.
	for _, r := range Host() {
		if r.Status != OK && r.Status != Missing && r.Status != Unknown {
			t.Fatalf("%s: status %q", r.Name, r.Status)
		}
	}
}
