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

// bundle is an open payload stream.
type bundle struct {
	*tar.Reader
	close func()
}

func openBundle(fsys fs.FS) (*bundle, error) {
	f, err := fsys.Open(BundlePath)
	if err != nil {
		return nil, fmt.Errorf("embedded: %w", err)
	}
	dec, err := zstd.NewReader(f, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(4*BundleWindow))
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("embedded: %s: %w", BundlePath, err)
	}
	return &bundle{Reader: tar.NewReader(dec), close: func() { dec.Close(); f.Close() }}, nil
}

// seek advances to the entry named key.
func (b *bundle) seek(key string) error {
	for {
		hdr, err := b.Next()
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("embedded: %s has no %s", BundlePath, key)
		}
		if err != nil {
			return fmt.Errorf("embedded: read %s: %w", BundlePath, err)
		}
		if hdr.Name == key {
			return nil
		}
	}
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
	if len(need) == 0 {
		return names, nil
	}
	b, err := openBundle(fsys)
	if err != nil {
		return nil, err
	}
	defer b.close()
	for len(need) > 0 {
		hdr, err := b.Next()
		if errors.Is(err, io.EOF) {
			missing := slices.Sorted(maps.Keys(need))
			return nil, fmt.Errorf("embedded: %s has no %s", BundlePath, strings.Join(missing, ", "))
		}
		if err != nil {
			return nil, fmt.Errorf("embedded: read %s: %w", BundlePath, err)
		}
		sum, ok := need[hdr.Name]
		if !ok {
			continue
		}
		if err := extractOne(b, hdr.Name, filepath.Join(dir, path.Base(hdr.Name)), sum); err != nil {
			return nil, err
		}
		delete(need, hdr.Name)
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

// Image is an embedded OCI image tarball.
type Image struct {
	Name string // file name without .tar
	sum  string
	fsys fs.FS
	key  string
}

// Images lists the embedded image tarballs.
func Images() ([]Image, error) {
	return images(assets)
}

func images(fsys fs.FS) ([]Image, error) {
	want, err := sums(fsys)
	if err != nil {
		return nil, err
	}
	var out []Image
	for key, sum := range want {
		if path.Dir(key) != "images" {
			continue
		}
		out = append(out, Image{Name: strings.TrimSuffix(path.Base(key), ".tar"), sum: sum, fsys: fsys, key: key})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Open returns the uncompressed tarball. Its checksum is verified when the
// reader reaches the end: Read then fails instead of returning io.EOF if
// the content does not match the manifest.
func (im Image) Open() (io.ReadCloser, error) {
	b, err := openBundle(im.fsys)
	if err != nil {
		return nil, err
	}
	if err := b.seek(im.key); err != nil {
		b.close()
		return nil, err
	}
	return &checked{r: b, h: sha256.New(), want: im.sum, name: im.key, close: b.close}, nil
}

type checked struct {
	r io.Reader
	h interface {
		io.Writer
		Sum([]byte) []byte
	}
	want, name string
	close      func()
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

func (c *checked) Close() error { c.close(); return nil }
