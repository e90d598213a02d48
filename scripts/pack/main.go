// Command pack fills embedded/assets for the skiff binary: it turns static
// Go programs into single-layer OCI image tarballs (oci-layout, index.json
// naming the image, manifest, config, one uncompressed layer), puts them
// and the helper binaries into one tar in the order given on the command
// line (bin/<name>, images/<name>.tar) compressed as a single zstd stream
// (embedded.BundlePath), and writes SHA256SUMS of every uncompressed
// payload. Programs sharing code compress together: put similar ones next
// to each other. The output is reproducible: fixed timestamps and modes.
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
	"flag"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/skiff-sh/skiff/embedded"
	"github.com/skiff-sh/skiff/images/oci"
)

// entry is one -bin or -image argument, in command-line order.
type entry struct{ kind, spec string }

type list struct {
	kind    string
	entries *[]entry
}

func (l list) String() string { return "" }
func (l list) Set(v string) error {
	*l.entries = append(*l.entries, entry{l.kind, v})
	return nil
}

func main() {
	out := flag.String("out", "embedded/assets", "assets directory")
	arch := flag.String("arch", runtime.GOARCH, "image architecture")
	var entries []entry
	flag.Var(list{"bin", &entries}, "bin", "name=path of a binary to carry (repeatable)")
	flag.Var(list{"image", &entries}, "image", "ref=path of a static program to wrap as an image whose entrypoint is /<basename> (repeatable)")
	flag.Parse()
	if err := run(*out, *arch, entries); err != nil {
		fmt.Fprintln(os.Stderr, "pack:", err)
		os.Exit(1)
	}
}

func run(out, arch string, entries []entry) error {
	var keys []string
	payloads := map[string][]byte{}
	for _, e := range entries {
		key, data, err := load(e, arch)
		if err != nil {
			return err
		}
		if _, dup := payloads[key]; dup {
			return fmt.Errorf("%s given twice", key)
		}
		keys = append(keys, key)
		payloads[key] = data
	}
	// Layouts of earlier versions.
	for _, d := range []string{"bin", "images"} {
		if err := os.RemoveAll(filepath.Join(out, d)); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(filepath.Join(out, filepath.Dir(strings.TrimPrefix(embedded.BundlePath, "assets/"))), 0o755); err != nil {
		return err
	}
	bundle, err := bundleOf(keys, payloads)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(out, strings.TrimPrefix(embedded.BundlePath, "assets/")), bundle, 0o644); err != nil {
		return err
	}
	sorted := slices.Sorted(maps.Keys(payloads))
	var b strings.Builder
	for _, k := range sorted {
		s := sha256.Sum256(payloads[k])
		fmt.Fprintf(&b, "%s  %s\n", hex.EncodeToString(s[:]), k)
	}
	return os.WriteFile(filepath.Join(out, "SHA256SUMS"), []byte(b.String()), 0o644)
}

// load reads one entry: its key in the bundle and its content.
func load(e entry, arch string) (string, []byte, error) {
	if e.kind == "bin" {
		name, path, ok := strings.Cut(e.spec, "=")
		if !ok || name == "" || strings.Contains(name, "/") {
			return "", nil, fmt.Errorf("-bin %q: want name=path", e.spec)
		}
		data, err := os.ReadFile(path)
		return "bin/" + name, data, err
	}
	ref, path, ok := strings.Cut(e.spec, "=")
	if !ok {
		return "", nil, fmt.Errorf("-image %q: want ref=path[,link...]", e.spec)
	}
	// path may end in ,link1,link2: names in /bin that run the program.
	parts := strings.Split(path, ",")
	path, links := parts[0], parts[1:]
	data, err := os.ReadFile(path)
	if err != nil {
		return "", nil, err
	}
	tarball, err := oci.ImageTar(ref, arch, filepath.Base(path), data, links)
	if err != nil {
		return "", nil, fmt.Errorf("image %s: %w", ref, err)
	}
	return "images/" + imageFileName(ref) + ".tar", tarball, nil
}

// bundleOf is the compressed tar of the payloads in keys order.
func bundleOf(keys []string, payloads map[string][]byte) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, k := range keys {
		hdr := &tar.Header{Name: k, Mode: 0o755, Size: int64(len(payloads[k])), Typeflag: tar.TypeReg, ModTime: time.Unix(0, 0), Format: tar.FormatPAX}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, err
		}
		if _, err := tw.Write(payloads[k]); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedBestCompression), zstd.WithWindowSize(embedded.BundleWindow), zstd.WithEncoderConcurrency(1))
	if err != nil {
		return nil, err
	}
	return enc.EncodeAll(buf.Bytes(), nil), nil
}

// imageFileName turns skiff.local/pause:3.10 into pause-3.10.
func imageFileName(ref string) string {
	base := ref[strings.LastIndex(ref, "/")+1:]
	return strings.ReplaceAll(base, ":", "-")
}
