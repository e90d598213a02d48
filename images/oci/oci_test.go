package oci_test

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/skiff-sh/skiff/images/oci"
)

type entry struct {
	hdr  *tar.Header
	data []byte
}

func readTar(t *testing.T, b []byte) []entry {
	t.Helper()
	var out []entry
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, entry{h, data})
	}
}

type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations"`
	Platform    map[string]string `json:"platform"`
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

func TestImageTar(t *testing.T) {
	program := []byte("\x7fELF pretend static program")
	tests := []struct {
		name, ref, arch, prog string
		links                 []string
		refName               string
	}{
		{name: "pause", ref: "docker.io/library/pause:3.10", arch: "amd64", prog: "pause", refName: "3.10"},
		{name: "with links", ref: "docker.io/skiff/demo:v1", arch: "arm64", prog: "demo", links: []string{"sh", "sleep"}, refName: "v1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := oci.ImageTar(tt.ref, tt.arch, tt.prog, program, tt.links)
			if err != nil {
				t.Fatal(err)
			}
			again, err := oci.ImageTar(tt.ref, tt.arch, tt.prog, program, tt.links)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(out, again) {
				t.Fatal("ImageTar is not reproducible")
			}

			entries := readTar(t, out)
			files := map[string][]byte{}
			var names []string
			for _, e := range entries {
				if e.hdr.Typeflag != tar.TypeReg || e.hdr.Mode != 0o644 || !e.hdr.ModTime.Equal(time.Unix(0, 0)) {
					t.Errorf("%s: type %c mode %o mtime %v", e.hdr.Name, e.hdr.Typeflag, e.hdr.Mode, e.hdr.ModTime)
				}
				if _, dup := files[e.hdr.Name]; dup {
					t.Errorf("duplicate entry %s", e.hdr.Name)
				}
				files[e.hdr.Name] = e.data
				names = append(names, e.hdr.Name)
			}
			if len(names) != 5 || names[0] != "oci-layout" || names[1] != "index.json" {
				t.Fatalf("entries %v, want oci-layout, index.json and three blobs", names)
			}
			var layout struct{ ImageLayoutVersion string }
			if err := json.Unmarshal(files["oci-layout"], &layout); err != nil || layout.ImageLayoutVersion != "1.0.0" {
				t.Fatalf("oci-layout %s (%v)", files["oci-layout"], err)
			}
			for _, n := range names[2:] {
				if !strings.HasPrefix(n, "blobs/sha256/") {
					t.Fatalf("unexpected entry %s", n)
				}
				if got := "blobs/sha256/" + strings.TrimPrefix(sha(files[n]), "sha256:"); got != n {
					t.Errorf("blob %s has digest %s", n, got)
				}
			}
			blob := func(d descriptor) []byte {
				t.Helper()
				data, ok := files["blobs/sha256/"+strings.TrimPrefix(d.Digest, "sha256:")]
				if !ok || !strings.HasPrefix(d.Digest, "sha256:") {
					t.Fatalf("no blob for %s", d.Digest)
				}
				if int64(len(data)) != d.Size {
					t.Fatalf("%s: size %d, descriptor says %d", d.Digest, len(data), d.Size)
				}
				return data
			}

			var index struct {
				SchemaVersion int          `json:"schemaVersion"`
				MediaType     string       `json:"mediaType"`
				Manifests     []descriptor `json:"manifests"`
			}
			if err := json.Unmarshal(files["index.json"], &index); err != nil {
				t.Fatal(err)
			}
			if index.SchemaVersion != 2 || len(index.Manifests) != 1 {
				t.Fatalf("index %+v", index)
			}
			md := index.Manifests[0]
			if md.MediaType != "application/vnd.oci.image.manifest.v1+json" {
				t.Fatalf("manifest media type %q", md.MediaType)
			}
			if got := md.Annotations["io.containerd.image.name"]; got != tt.ref {
				t.Fatalf("io.containerd.image.name %q, want %q", got, tt.ref)
			}
			if got := md.Annotations["org.opencontainers.image.ref.name"]; got != tt.refName {
				t.Fatalf("org.opencontainers.image.ref.name %q, want %q", got, tt.refName)
			}
			if md.Platform["architecture"] != tt.arch || md.Platform["os"] != "linux" {
				t.Fatalf("platform %v", md.Platform)
			}

			var manifest struct {
				SchemaVersion int          `json:"schemaVersion"`
				Config        descriptor   `json:"config"`
				Layers        []descriptor `json:"layers"`
			}
			if err := json.Unmarshal(blob(md), &manifest); err != nil {
				t.Fatal(err)
			}
			if manifest.SchemaVersion != 2 || len(manifest.Layers) != 1 {
				t.Fatalf("manifest %+v", manifest)
			}
			if manifest.Config.MediaType != "application/vnd.oci.image.config.v1+json" ||
				manifest.Layers[0].MediaType != "application/vnd.oci.image.layer.v1.tar" {
				t.Fatalf("media types %q %q", manifest.Config.MediaType, manifest.Layers[0].MediaType)
			}
			var config struct {
				Architecture string `json:"architecture"`
				OS           string `json:"os"`
				Config       struct {
					Entrypoint []string
					Env        []string
				} `json:"config"`
				RootFS struct {
					Type    string   `json:"type"`
					DiffIDs []string `json:"diff_ids"`
				} `json:"rootfs"`
			}
			if err := json.Unmarshal(blob(manifest.Config), &config); err != nil {
				t.Fatal(err)
			}
			if config.Architecture != tt.arch || config.OS != "linux" {
				t.Fatalf("config platform %s/%s", config.OS, config.Architecture)
			}
			if !slices.Equal(config.Config.Entrypoint, []string{"/" + tt.prog}) {
				t.Fatalf("entrypoint %v", config.Config.Entrypoint)
			}
			layer := blob(manifest.Layers[0])
			if config.RootFS.Type != "layers" || !slices.Equal(config.RootFS.DiffIDs, []string{sha(layer)}) {
				t.Fatalf("rootfs %+v, want diff_ids [%s]", config.RootFS, sha(layer))
			}
			if manifest.Layers[0].Digest != sha(layer) {
				t.Fatal("uncompressed layer: digest must equal its diff_id")
			}

			var gotLinks []string
			sawProgram, sawTmp := false, false
			for _, e := range readTar(t, layer) {
				h := e.hdr
				if !h.ModTime.Equal(time.Unix(0, 0)) {
					t.Errorf("layer %s mtime %v", h.Name, h.ModTime)
				}
				switch {
				case h.Name == tt.prog:
					sawProgram = true
					if h.Typeflag != tar.TypeReg || h.Mode != 0o755 || !bytes.Equal(e.data, program) {
						t.Errorf("program entry type %c mode %o", h.Typeflag, h.Mode)
					}
				case h.Name == "tmp/":
					sawTmp = true
					if h.Typeflag != tar.TypeDir || h.Mode != 0o1777 {
						t.Errorf("tmp/ type %c mode %o", h.Typeflag, h.Mode)
					}
				case h.Name == "bin/":
					if h.Typeflag != tar.TypeDir {
						t.Errorf("bin/ is not a directory")
					}
				case strings.HasPrefix(h.Name, "bin/"):
					if h.Typeflag != tar.TypeSymlink || h.Linkname != "/"+tt.prog {
						t.Errorf("%s: type %c -> %q, want a symlink to /%s", h.Name, h.Typeflag, h.Linkname, tt.prog)
					}
					gotLinks = append(gotLinks, strings.TrimPrefix(h.Name, "bin/"))
				default:
					t.Errorf("unexpected layer entry %s", h.Name)
				}
			}
			if !sawProgram || !sawTmp {
				t.Fatalf("layer lacks the program (%v) or tmp/ (%v)", sawProgram, sawTmp)
			}
			if !slices.Equal(gotLinks, tt.links) {
				t.Fatalf("links %v, want %v", gotLinks, tt.links)
			}
		})
	}
}

func TestImageTarDiffers(t *testing.T) {
	base, err := oci.ImageTar("example.com/a:1", "amd64", "a", []byte("x"), nil)
	if err != nil {
		t.Fatal(err)
	}
	for name, f := range map[string]func() ([]byte, error){
		"ref":     func() ([]byte, error) { return oci.ImageTar("example.com/a:2", "amd64", "a", []byte("x"), nil) },
		"arch":    func() ([]byte, error) { return oci.ImageTar("example.com/a:1", "arm64", "a", []byte("x"), nil) },
		"program": func() ([]byte, error) { return oci.ImageTar("example.com/a:1", "amd64", "a", []byte("y"), nil) },
		"links": func() ([]byte, error) {
			return oci.ImageTar("example.com/a:1", "amd64", "a", []byte("x"), []string{"sh"})
		},
	} {
		out, err := f()
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Equal(out, base) {
			t.Errorf("changing the %s does not change the tarball", name)
		}
	}
}
