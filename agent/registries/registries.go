// Package registries turns k3s-style registries.yaml (mirrors, per-registry
// TLS and credentials, in <config-dir>/registries.yaml) into what Skiff's
// containerd reads: one hosts.toml per registry under a certs.d directory
// (mirrors and TLS) and registry credentials for the CRI plugin's config.
//
//	mirrors:
//	  docker.io:
//	    endpoint: ["https://mirror.example.com"]
//	configs:
//	  "mirror.example.com":
//	    auth: {username: u, password: p}
//	    tls: {ca_file: /etc/ssl/mirror-ca.pem, insecure_skip_verify: false}
package registries

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"sigs.k8s.io/yaml"
)

// File is registries.yaml.
type File struct {
	Mirrors map[string]Mirror `json:"mirrors"`
	Configs map[string]Config `json:"configs"`
}

// Mirror lists the endpoints tried for a registry, in order.
type Mirror struct {
	Endpoints []string `json:"endpoint"`
}

// Config is one registry host's credentials and TLS settings.
type Config struct {
	Auth *Auth `json:"auth"`
	TLS  *TLS  `json:"tls"`
}

// Auth is a registry login.
type Auth struct {
	Username      string `json:"username"`
	Password      string `json:"password"`
	Auth          string `json:"auth"`
	IdentityToken string `json:"identity_token"`
}

// TLS is how to trust a registry and present a client certificate.
type TLS struct {
	CAFile             string `json:"ca_file"`
	CertFile           string `json:"cert_file"`
	KeyFile            string `json:"key_file"`
	InsecureSkipVerify bool   `json:"insecure_skip_verify"`
}

// Load reads path; a missing file is an empty configuration.
func Load(path string) (*File, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return &File{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("registries: %w", err)
	}
	return Parse(data)
}

// Parse parses and checks registries.yaml.
func Parse(data []byte) (*File, error) {
	var f File
	if err := yaml.UnmarshalStrict(data, &f); err != nil {
		return nil, fmt.Errorf("registries.yaml: %w", err)
	}
	for reg, m := range f.Mirrors {
		if reg == "" || strings.ContainsAny(reg, "/ ") && reg != "*" {
			return nil, fmt.Errorf("registries.yaml: mirrors: %q is not a registry host", reg)
		}
		for _, e := range m.Endpoints {
			u, err := url.Parse(e)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				return nil, fmt.Errorf("registries.yaml: mirrors.%s: endpoint %q is not an http(s) URL", reg, e)
			}
		}
	}
	for host, c := range f.Configs {
		if host == "" || strings.Contains(host, "/") && !strings.Contains(host, "://") {
			return nil, fmt.Errorf("registries.yaml: configs: %q is not a registry host", host)
		}
		if c.TLS != nil && (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
			return nil, fmt.Errorf("registries.yaml: configs.%s.tls: cert_file and key_file go together", host)
		}
	}
	return &f, nil
}

// hostOf strips a scheme from a configs key or endpoint.
func hostOf(s string) string {
	if u, err := url.Parse(s); err == nil && u.Host != "" {
		return u.Host
	}
	return s
}

// Auths returns credentials by registry host for the CRI plugin.
func (f *File) Auths() map[string]Auth {
	out := map[string]Auth{}
	for host, c := range f.Configs {
		if c.Auth != nil {
			out[hostOf(host)] = *c.Auth
		}
	}
	return out
}

// WriteHosts replaces dir's content with one <registry>/hosts.toml per
// mirrored or configured registry.
func (f *File) WriteHosts(dir string) error {
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("registries: %w", err)
	}
	files := map[string]string{}
	for reg, m := range f.Mirrors {
		name := reg
		if reg == "*" {
			name = "_default"
		}
		var b strings.Builder
		if reg != "*" {
			fmt.Fprintf(&b, "server = %s\n", strconv.Quote(defaultServer(reg)))
		}
		for _, e := range m.Endpoints {
			fmt.Fprintf(&b, "\n[host.%s]\n  capabilities = [\"pull\", \"resolve\"]\n", strconv.Quote(e))
			writeTLS(&b, f.Configs, e)
		}
		files[name] = b.String()
	}
	for host, c := range f.Configs {
		h := hostOf(host)
		if _, mirrored := files[h]; mirrored || c.TLS == nil {
			continue
		}
		var b strings.Builder
		server := "https://" + h
		if strings.Contains(host, "://") {
			server = host
		}
		fmt.Fprintf(&b, "server = %s\n\n[host.%s]\n  capabilities = [\"pull\", \"resolve\", \"push\"]\n", strconv.Quote(server), strconv.Quote(server))
		writeTLS(&b, f.Configs, server)
		files[h] = b.String()
	}
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if err := os.MkdirAll(filepath.Join(dir, n), 0o755); err != nil {
			return fmt.Errorf("registries: %w", err)
		}
		if err := os.WriteFile(filepath.Join(dir, n, "hosts.toml"), []byte(files[n]), 0o644); err != nil {
			return fmt.Errorf("registries: %w", err)
		}
	}
	return nil
}

func defaultServer(reg string) string {
	if reg == "docker.io" {
		return "https://registry-1.docker.io"
	}
	return "https://" + reg
}

func writeTLS(b *strings.Builder, configs map[string]Config, endpoint string) {
	c, ok := configs[hostOf(endpoint)]
	if !ok {
		c, ok = configs[endpoint]
	}
	if !ok || c.TLS == nil {
		return
	}
	if c.TLS.CAFile != "" {
		fmt.Fprintf(b, "  ca = %s\n", strconv.Quote(c.TLS.CAFile))
	}
	if c.TLS.CertFile != "" {
		fmt.Fprintf(b, "  client = [[%s, %s]]\n", strconv.Quote(c.TLS.CertFile), strconv.Quote(c.TLS.KeyFile))
	}
	if c.TLS.InsecureSkipVerify {
		b.WriteString("  skip_verify = true\n")
	}
}
