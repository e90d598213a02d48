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
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"

	"github.com/klauspost/compress/zstd"

	"github.com/skiff-sh/skiff/images/oci"
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
		tarball, err := oci.ImageTar(ref, arch, filepath.Base(path), data, links)
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
