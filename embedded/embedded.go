package embedded

import (
	"archive/tar"
	"bufio"
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/klauspost/compress/zstd"
)

//go:embed assets
var assets embed.FS

// ErrNoAssets means the binary was built without its runtime assets
// (`go build` instead of `make`).
var ErrNoAssets = errors.New("this skiff binary was built without its runtime assets (runc, shim, CNI plugins, images); build it with `make`")

// Sums reads the manifest of payload checksums (name → hex sha256 of the
// uncompressed payload), keyed by its path in the bundle.
func Sums() (map[string]string, error) {
	return sums(assets)
}

func sums(fsys fs.FS) (map[string]string, error) {
	data, err := fs.ReadFile(fsys, "assets/SHA256SUMS")
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ErrNoAssets
	}
	if err != nil {
		return nil, err
	}
	return parseSums(data)
}

// parseSums parses sha256sum(1) output: "<hex>  <name>" per line.
func parseSums(data []byte) (map[string]string, error) {
	out := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		sum, name, ok := strings.Cut(line, "  ")
		if !ok || len(sum) != 64 || name == "" || strings.Contains(name, "..") {
			return nil, fmt.Errorf("embedded: SHA256SUMS line %d: malformed %q", n, line)
		}
		if _, err := hex.DecodeString(sum); err != nil {
			return nil, fmt.Errorf("embedded: SHA256SUMS line %d: %w", n, err)
		}
		out[name] = strings.ToLower(sum)
	}
	return out, sc.Err()
}

// Version names this set of assets: a short hash of the manifest. Binaries
// are extracted under a directory of that name, so an upgrade never runs
// an older runc.
func Version() (string, error) {
	data, err := fs.ReadFile(assets, "assets/SHA256SUMS")
	if errors.Is(err, fs.ErrNotExist) {
		return "", ErrNoAssets
	}
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:6]), nil
}

// BundlePath is the one compressed stream that holds every payload: a tar
// of bin/<name> and images/<name>.tar entries, zstd-compressed as a whole
// with a 16 MiB window. The helper programs are Go binaries sharing much
// code, so one stream is about 40% smaller than compressing each alone.
const BundlePath = "assets/bundle.tar.zst"

// BundleWindow is the zstd window the bundle is written with; decoding
// needs this much memory.
const BundleWindow = 16 << 20

// walkBundle reads the bundle once and calls fn with each entry named in
// need (key → manifest sha256), in bundle order, until all were seen; an
// entry of need the bundle lacks is an error. One zstd decoder per call.
func walkBundle(fsys fs.FS, need map[string]string, fn func(key, sum string, r io.Reader) error) error {
	if len(need) == 0 {
		return nil
	}
	f, err := fsys.Open(BundlePath)
	if err != nil {
		return fmt.Errorf("embedded: %w", err)
	}
	defer f.Close()
	dec, err := zstd.NewReader(f, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(4*BundleWindow))
	if err != nil {
		return fmt.Errorf("embedded: %s: %w", BundlePath, err)
	}
	defer dec.Close()
	tr := tar.NewReader(dec)
	left := maps.Clone(need)
	for len(left) > 0 {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("embedded: %s has no %s", BundlePath, strings.Join(slices.Sorted(maps.Keys(left)), ", "))
		}
		if err != nil {
			return fmt.Errorf("embedded: read %s: %w", BundlePath, err)
		}
		sum, ok := left[hdr.Name]
		if !ok {
			continue
		}
		delete(left, hdr.Name)
		if err := fn(hdr.Name, sum, tr); err != nil {
			return err
		}
	}
	return nil
}

// ExtractBinaries writes every bin/ payload into dir (created 0755) and
// returns their names. A file already there with the right checksum is
// kept; anything else is replaced atomically after its content was
// checked against the manifest.
func ExtractBinaries(dir string) ([]string, error) {
	return extract(assets, "bin", dir)
}

func extract(fsys fs.FS, sub, dir string) ([]string, error) {
	want, err := sums(fsys)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("embedded: %w", err)
	}
	var names []string
	need := map[string]string{}
	for key, sum := range want {
		if path.Dir(key) != sub {
			continue
		}
		name := path.Base(key)
		names = append(names, name)
		dst := filepath.Join(dir, name)
		if fileSum(dst) == sum {
			if err := os.Chmod(dst, 0o755); err != nil {
				return nil, fmt.Errorf("embedded: %w", err)
			}
			continue
		}
		need[key] = sum
	}
	sort.Strings(names)
	err = walkBundle(fsys, need, func(key, sum string, r io.Reader) error {
		return extractOne(r, key, filepath.Join(dir, path.Base(key)), sum)
	})
	if err != nil {
		return nil, err
	}
	return names, nil
}

func fileSum(p string) string {
	f, err := os.Open(p)
	if err != nil {
		return ""
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return ""
	}
	return hex.EncodeToString(h.Sum(nil))
}

func extractOne(src io.Reader, key, dst, sum string) error {
	tmp, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".*")
	if err != nil {
		return fmt.Errorf("embedded: %w", err)
	}
	defer os.Remove(tmp.Name())
	h := sha256.New()
	if _, err := io.Copy(io.MultiWriter(tmp, h), src); err != nil {
		tmp.Close()
		return fmt.Errorf("embedded: decompress %s: %w", key, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("embedded: %w", err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != sum {
		return fmt.Errorf("embedded: %s: checksum %s, manifest says %s", key, got, sum)
	}
	if err := os.Chmod(tmp.Name(), 0o755); err != nil {
		return fmt.Errorf("embedded: %w", err)
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return fmt.Errorf("embedded: %w", err)
	}
	return nil
}

// ForEachImage calls fn with each embedded image tarball, in one pass over
// the bundle (one decoder, the bundle read once). A tarball whose content
// does not match the manifest fails: fn's reader returns the error instead
// of io.EOF, and ForEachImage returns it even if fn stopped reading early.
func ForEachImage(fn func(name string, tarball io.Reader) error) error {
	return forEachImage(assets, fn)
}

func forEachImage(fsys fs.FS, fn func(name string, tarball io.Reader) error) error {
	want, err := sums(fsys)
	if err != nil {
		return err
	}
	need := map[string]string{}
	for key, sum := range want {
		if path.Dir(key) == "images" {
			need[key] = sum
		}
	}
	return walkBundle(fsys, need, func(key, sum string, r io.Reader) error {
		c := &checked{r: r, h: sha256.New(), want: sum, name: key}
		if err := fn(strings.TrimSuffix(path.Base(key), ".tar"), c); err != nil {
			return err
		}
		// Check what fn left unread too.
		_, err := io.Copy(io.Discard, c)
		return err
	})
}

type checked struct {
	r io.Reader
	h interface {
		io.Writer
		Sum([]byte) []byte
	}
	want, name string
}

func (c *checked) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.h.Write(p[:n])
	if errors.Is(err, io.EOF) {
		if got := hex.EncodeToString(c.h.Sum(nil)); got != c.want {
			return n, fmt.Errorf("embedded: %s: checksum %s, manifest says %s", c.name, got, c.want)
		}
	}
	return n, err
}
