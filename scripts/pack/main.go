// Command pack fills embedded/assets for the skiff binary: it compresses
// helper binaries with zstd, turns static Go programs into single-layer
// OCI image tarballs (oci-layout, index.json naming the image, manifest,
// config, one uncompressed layer), and writes SHA256SUMS of every
// uncompressed payload. The output is reproducible: fixed timestamps,
// sorted entries.
//
//	go run ./scripts/pack -out embedded/assets \
//	  -bin runc=/tmp/tools/runc \
//	  -image skiff.local/pause:3.10=/tmp/images/pause
package main

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/klauspost/compress/zstd"
)

type list []string

func (l *list) String() string     { return strings.Join(*l, ",") }
func (l *list) Set(v string) error { *l = append(*l, v); return nil }

func main() {
	out := flag.String("out", "embedded/assets", "assets directory")
	arch := flag.String("arch", runtime.GOARCH, "image architecture")
	var bins, imgs list
	flag.Var(&bins, "bin", "name=path of a binary to carry (repeatable)")
	flag.Var(&imgs, "image", "ref=path of a static program to wrap as an image whose entrypoint is /<basename> (repeatable)")
	flag.Parse()
	if err := run(*out, *arch, bins, imgs); err != nil {
		fmt.Fprintln(os.Stderr, "pack:", err)
		os.Exit(1)
	}
}

func run(out, arch string, bins, imgs []string) error {
	sums := map[string][]byte{}
	for _, d := range []string{"bin", "images"} {
		if err := os.RemoveAll(filepath.Join(out, d)); err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Join(out, d), 0o755); err != nil {
			return err
		}
	}
	for _, b := range bins {
		name, path, ok := strings.Cut(b, "=")
		if !ok {
			return fmt.Errorf("-bin %q: want name=path", b)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if err := writeZst(filepath.Join(out, "bin", name+".zst"), data); err != nil {
			return err
		}
		sums["bin/"+name] = data
	}
	for _, im := range imgs {
		ref, path, ok := strings.Cut(im, "=")
		if !ok {
			return fmt.Errorf("-image %q: want ref=path[,link...]", im)
		}
		parts := strings.Split(path, ",")
		path, links := parts[0], parts[1:]
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		// path may end in ,link1,link2: names in /bin that run the program.
		tarball, err := imageTar(ref, arch, filepath.Base(path), data, links)
		if err != nil {
			return fmt.Errorf("image %s: %w", ref, err)
		}
		name := imageFileName(ref)
		if err := writeZst(filepath.Join(out, "images", name+".tar.zst"), tarball); err != nil {
			return err
		}
		sums["images/"+name+".tar"] = tarball
	}
	keys := make([]string, 0, len(sums))
	for k := range sums {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		s := sha256.Sum256(sums[k])
		fmt.Fprintf(&b, "%s  %s\n", hex.EncodeToString(s[:]), k)
	}
	return os.WriteFile(filepath.Join(out, "SHA256SUMS"), []byte(b.String()), 0o644)
}

// imageFileName turns skiff.local/pause:3.10 into pause-3.10.
func imageFileName(ref string) string {
	base := ref[strings.LastIndex(ref, "/")+1:]
	return strings.ReplaceAll(base, ":", "-")
}

func writeZst(path string, data []byte) error {
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedBestCompression))
	if err != nil {
		return err
	}
	return os.WriteFile(path, enc.EncodeAll(data, nil), 0o644)
}

var epoch = time.Unix(0, 0).UTC()

type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations,omitempty"`
	Platform    map[string]string `json:"platform,omitempty"`
}

func digest(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

// imageTar builds an OCI image layout tarball holding one image whose
// only layer is the program at /<name>.
func imageTar(ref, arch, name string, program []byte, links []string) ([]byte, error) {
	var layer bytes.Buffer
	lw := tar.NewWriter(&layer)
	for _, d := range []string{"tmp/"} {
		if err := lw.WriteHeader(&tar.Header{Name: d, Typeflag: tar.TypeDir, Mode: 0o1777, ModTime: epoch, Format: tar.FormatPAX}); err != nil {
			return nil, err
		}
	}
	if err := lw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(program)), ModTime: epoch, Format: tar.FormatPAX}); err != nil {
		return nil, err
	}
	if _, err := lw.Write(program); err != nil {
		return nil, err
	}
	for _, l := range links {
		if err := lw.WriteHeader(&tar.Header{Name: "bin/", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: epoch, Format: tar.FormatPAX}); err != nil {
			return nil, err
		}
		if err := lw.WriteHeader(&tar.Header{Name: "bin/" + l, Typeflag: tar.TypeSymlink, Linkname: "/" + name, Mode: 0o777, ModTime: epoch, Format: tar.FormatPAX}); err != nil {
			return nil, err
		}
	}
	if err := lw.Close(); err != nil {
		return nil, err
	}
	layerDigest := digest(layer.Bytes())
	config, err := json.Marshal(map[string]any{
		"architecture": arch,
		"os":           "linux",
		"created":      epoch.Format(time.RFC3339),
		"config": map[string]any{
			"Entrypoint": []string{"/" + name},
			"Env":        []string{"PATH=/bin:/"},
			"WorkingDir": "/",
		},
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{layerDigest}},
	})
	if err != nil {
		return nil, err
	}
	manifest, err := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.manifest.v1+json",
		"config":        descriptor{MediaType: "application/vnd.oci.image.config.v1+json", Digest: digest(config), Size: int64(len(config))},
		"layers":        []descriptor{{MediaType: "application/vnd.oci.image.layer.v1.tar", Digest: layerDigest, Size: int64(layer.Len())}},
	})
	if err != nil {
		return nil, err
	}
	index, err := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.index.v1+json",
		"manifests": []descriptor{{
			MediaType: "application/vnd.oci.image.manifest.v1+json",
			Digest:    digest(manifest), Size: int64(len(manifest)),
			Annotations: map[string]string{
				"io.containerd.image.name":          ref,
				"org.opencontainers.image.ref.name": ref[strings.LastIndex(ref, ":")+1:],
			},
			Platform: map[string]string{"architecture": arch, "os": "linux"},
		}},
	})
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	tw := tar.NewWriter(&out)
	add := func(name string, data []byte) error {
		if err := tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(data)), ModTime: epoch, Format: tar.FormatPAX}); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	blob := func(b []byte) string { return "blobs/sha256/" + strings.TrimPrefix(digest(b), "sha256:") }
	for _, f := range []struct {
		name string
		data []byte
	}{
		{"oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)},
		{"index.json", index},
		{blob(manifest), manifest},
		{blob(config), config},
		{blob(layer.Bytes()), layer.Bytes()},
	} {
		if err := add(f.name, f.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}
