package registries

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		yaml    string
		wantErr string
	}{
		{name: "empty", yaml: ""},
		{name: "mirror and auth", yaml: `
mirrors:
  docker.io:
    endpoint: ["https://mirror.example.com", "http://10.0.0.1:5000"]
configs:
  mirror.example.com:
    auth: {username: u, password: p}
    tls: {ca_file: /ca.pem}
`},
		{name: "unknown field", yaml: "mirrors: {}\nsomething: 1\n", wantErr: "unknown field"},
		{name: "endpoint not a URL", yaml: "mirrors:\n  docker.io:\n    endpoint: [mirror.example.com]\n", wantErr: "not an http(s) URL"},
		{name: "ftp endpoint", yaml: "mirrors:\n  docker.io:\n    endpoint: [\"ftp://x\"]\n", wantErr: "not an http(s) URL"},
		{name: "cert without key", yaml: "configs:\n  r.example:\n    tls: {cert_file: /c.pem}\n", wantErr: "go together"},
		{name: "path as mirror name", yaml: "mirrors:\n  docker.io/library:\n    endpoint: [\"https://m\"]\n", wantErr: "not a registry host"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.yaml))
			if tt.wantErr == "" && err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestLoadMissingFile(t *testing.T) {
	f, err := Load(filepath.Join(t.TempDir(), "none.yaml"))
	if err != nil || len(f.Mirrors) != 0 || len(f.Configs) != 0 {
		t.Fatalf("missing file: %+v, %v", f, err)
	}
}

func TestWriteHostsAndAuths(t *testing.T) {
	f, err := Parse([]byte(`
mirrors:
  docker.io:
    endpoint: ["https://mirror.example.com"]
  "*":
    endpoint: ["http://cache.local:5000"]
configs:
  mirror.example.com:
    auth: {username: u, password: p}
    tls: {ca_file: /ca.pem, cert_file: /c.pem, key_file: /k.pem}
  "https://private.example:8443":
    tls: {insecure_skip_verify: true}
  plain.example:
    auth: {auth: dXNlcjpwYXNz}
`))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	// A stale file from an earlier configuration disappears.
	if err := os.MkdirAll(filepath.Join(dir, "old.example"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := f.WriteHosts(dir); err != nil {
		t.Fatal(err)
	}
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join(dir, name, "hosts.toml"))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return string(b)
	}
	docker := read("docker.io")
	for _, want := range []string{`server = "https://registry-1.docker.io"`, `[host."https://mirror.example.com"]`, `ca = "/ca.pem"`, `client = [["/c.pem", "/k.pem"]]`, `capabilities = ["pull", "resolve"]`} {
		if !strings.Contains(docker, want) {
			t.Errorf("docker.io hosts.toml lacks %q:\n%s", want, docker)
		}
	}
	if def := read("_default"); strings.Contains(def, "server =") || !strings.Contains(def, `[host."http://cache.local:5000"]`) {
		t.Errorf("_default hosts.toml:\n%s", def)
	}
	if p := read("private.example:8443"); !strings.Contains(p, `server = "https://private.example:8443"`) || !strings.Contains(p, "skip_verify = true") {
		t.Errorf("private hosts.toml:\n%s", p)
	}
	if _, err := os.Stat(filepath.Join(dir, "old.example")); !os.IsNotExist(err) {
		t.Errorf("stale registry directory kept")
	}
	if _, err := os.Stat(filepath.Join(dir, "plain.example")); !os.IsNotExist(err) {
		t.Errorf("a registry with only credentials needs no hosts.toml")
	}
	auths := f.Auths()
	if len(auths) != 2 || auths["mirror.example.com"].Username != "u" || auths["plain.example"].Auth != "dXNlcjpwYXNz" {
		t.Errorf("auths %+v", auths)
	}
}
