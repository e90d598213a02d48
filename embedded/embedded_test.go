package embedded

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/klauspost/compress/zstd"
)

func sumOf(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func compress(t *testing.T, b []byte) []byte {
	t.Helper()
	enc, err := zstd.NewWriter(nil, zstd.WithWindowSize(BundleWindow))
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	return enc.EncodeAll(b, nil)
}

// tarOf makes a tar of the payloads in key order.
func tarOf(t *testing.T, payloads map[string][]byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, k := range slices.Sorted(maps.Keys(payloads)) {
		if err := tw.WriteHeader(&tar.Header{Name: k, Mode: 0o644, Size: int64(len(payloads[k])), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(payloads[k]); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestParseSums(t *testing.T) {
	a, b := sumOf([]byte("a")), sumOf([]byte("b"))
	tests := []struct {
		name    string
		in      string
		want    map[string]string
		wantErr string
	}{
		{name: "empty", in: "", want: map[string]string{}},
		{name: "valid lines", in: a + "  bin/runc\n" + b + "  images/pause.tar\n",
			want: map[string]string{"bin/runc": a, "images/pause.tar": b}},
		{name: "blank lines and CRLF", in: "\n" + a + "  bin/runc\r\n\n   \n" + b + "  bin/shim",
			want: map[string]string{"bin/runc": a, "bin/shim": b}},
		{name: "name with spaces", in: a + "  bin/my prog\n", want: map[string]string{"bin/my prog": a}},
		{name: "single space separator", in: a + " bin/runc\n", wantErr: "line 1: malformed"},
		{name: "no name", in: a + "  \n", wantErr: "line 1: malformed"},
		{name: "short sum", in: a[:63] + "  bin/runc\n", wantErr: "line 1: malformed"},
		{name: "long sum", in: a + "0  bin/runc\n", wantErr: "line 1: malformed"},
		{name: "dot-dot path", in: a + "  bin/../../etc/passwd\n", wantErr: "malformed"},
		{name: "leading dot-dot", in: a + "  ../runc\n", wantErr: "malformed"},
		{name: "bad hex", in: strings.Repeat("z", 64) + "  bin/runc\n", wantErr: "line 1"},
		{name: "error names its line", in: a + "  bin/runc\n" + "garbage\n", wantErr: "line 2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseSums([]byte(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("parseSums error %v, want one containing %q (got %v)", err, tt.wantErr, got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Fatalf("parseSums = %v, want %v", got, tt.want)
			}
		})
	}
}

// assetFS builds an assets tree like the build's: the payloads in one
// compressed tar, SHA256SUMS over the uncompressed content. sums overrides
// manifest entries.
func assetFS(t *testing.T, payloads map[string][]byte, sums map[string]string) fstest.MapFS {
	t.Helper()
	fsys := fstest.MapFS{BundlePath: &fstest.MapFile{Data: compress(t, tarOf(t, payloads)), Mode: 0o644}}
	var manifest strings.Builder
	for _, k := range slices.Sorted(maps.Keys(payloads)) {
		s := sumOf(payloads[k])
		if o, ok := sums[k]; ok {
			s = o
		}
		fmt.Fprintf(&manifest, "%s  %s\n", s, k)
	}
	fsys["assets/SHA256SUMS"] = &fstest.MapFile{Data: []byte(manifest.String()), Mode: 0o644}
	return fsys
}

var payloads = map[string][]byte{
	"bin/runc":              []byte("#!runc\x00binary"),
	"bin/shim":              bytes.Repeat([]byte("shim"), 10000),
	"bin/empty":             {},
	"images/pause-3.10.tar": []byte("pause tarball"),
	"images/demo-v1.tar":    bytes.Repeat([]byte{0, 1, 2, 3}, 5000),
	"other/ignored":         []byte("not a binary"),
}

func readDir(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func TestExtract(t *testing.T) {
	t.Parallel()
	fsys := assetFS(t, payloads, nil)
	dir := filepath.Join(t.TempDir(), "bin", "v1")
	names, err := extract(fsys, "bin", dir)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"empty", "runc", "shim"}; !slices.Equal(names, want) {
		t.Fatalf("extract names %v, want %v", names, want)
	}
	if got := readDir(t, dir); !slices.Equal(got, names) {
		t.Fatalf("directory holds %v, want exactly %v (no temp files)", got, names)
	}
	if st, err := os.Stat(dir); err != nil || st.Mode().Perm() != 0o755 {
		t.Fatalf("dir: %v, %v", st, err)
	}
	for _, n := range names {
		p := filepath.Join(dir, n)
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(data, payloads["bin/"+n]) {
			t.Errorf("%s: wrong content", n)
		}
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o755 || !st.Mode().IsRegular() {
			t.Errorf("%s: mode %v, want 0755", n, st.Mode())
		}
	}
}

func TestExtractKeepsAndReplaces(t *testing.T) {
	t.Parallel()
	fsys := assetFS(t, payloads, nil)
	dir := t.TempDir()
	if _, err := extract(fsys, "bin", dir); err != nil {
		t.Fatal(err)
	}
	old := time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC)
	for _, n := range []string{"runc", "shim"} {
		if err := os.Chtimes(filepath.Join(dir, n), old, old); err != nil {
			t.Fatal(err)
		}
	}
	// Corrupt shim; leave runc correct.
	if err := os.WriteFile(filepath.Join(dir, "shim"), []byte("tampered"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(filepath.Join(dir, "shim"), old, old); err != nil {
		t.Fatal(err)
	}
	if _, err := extract(fsys, "bin", dir); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(dir, "runc"))
	if err != nil {
		t.Fatal(err)
	}
	if !st.ModTime().Equal(old) {
		t.Errorf("runc was rewritten although its checksum was right (mtime %v)", st.ModTime())
	}
	st, err = os.Stat(filepath.Join(dir, "shim"))
	if err != nil {
		t.Fatal(err)
	}
	if st.ModTime().Equal(old) {
		t.Error("corrupted shim was not replaced")
	}
	if st.Mode().Perm() != 0o755 {
		t.Errorf("replaced shim mode %v", st.Mode())
	}
	if data, _ := os.ReadFile(filepath.Join(dir, "shim")); !bytes.Equal(data, payloads["bin/shim"]) {
		t.Error("replaced shim has the wrong content")
	}
}

func TestExtractErrors(t *testing.T) {
	t.Parallel()
	wrong := sumOf([]byte("something else"))
	// The manifest lists runc but the bundle does not carry it.
	missingPayload := assetFS(t, map[string][]byte{"bin/shim": []byte("shim")}, nil)
	missingPayload["assets/SHA256SUMS"].Data = append(missingPayload["assets/SHA256SUMS"].Data, sumOf([]byte("runc"))+"  bin/runc\n"...)
	noBundle := assetFS(t, map[string][]byte{"bin/runc": []byte("runc")}, nil)
	delete(noBundle, BundlePath)
	notZstd := assetFS(t, map[string][]byte{"bin/runc": []byte("runc")}, nil)
	notZstd[BundlePath] = &fstest.MapFile{Data: []byte("this is not zstd")}
	notTar := assetFS(t, map[string][]byte{"bin/runc": []byte("runc")}, nil)
	notTar[BundlePath] = &fstest.MapFile{Data: compress(t, bytes.Repeat([]byte("not a tar "), 100))}
	tests := []struct {
		name     string
		fsys     fs.FS
		is       error
		contains string
	}{
		{name: "manifest sum wrong", fsys: assetFS(t, payloads, map[string]string{"bin/runc": wrong}), contains: "checksum"},
		{name: "no manifest", fsys: fstest.MapFS{"assets/README.md": {Data: []byte("x")}}, is: ErrNoAssets},
		{name: "malformed manifest", fsys: fstest.MapFS{"assets/SHA256SUMS": {Data: []byte("nonsense\n")}}, contains: "malformed"},
		{name: "payload missing from bundle", fsys: missingPayload, contains: "has no bin/runc"},
		{name: "no bundle", fsys: noBundle, contains: "bundle.tar.zst"},
		{name: "bundle not zstd", fsys: notZstd, contains: "bundle.tar.zst"},
		{name: "bundle not a tar", fsys: notTar, contains: "bundle.tar.zst"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			_, err := extract(tt.fsys, "bin", dir)
			if err == nil {
				t.Fatal("extract succeeded")
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Fatalf("error %v, want %v", err, tt.is)
			}
			if !strings.Contains(err.Error(), tt.contains) {
				t.Fatalf("error %q does not contain %q", err, tt.contains)
			}
			// Nothing unverified (nor any temporary file) is left behind
			// under the name of the failed payload.
			if _, err := os.Stat(filepath.Join(dir, "runc")); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("runc exists after a failed extract (stat err %v)", err)
			}
			for _, n := range readDir(t, dir) {
				if strings.HasPrefix(n, ".") {
					t.Fatalf("temporary file %s left behind", n)
				}
			}
		})
	}
}

func TestImages(t *testing.T) {
	t.Parallel()
	fsys := assetFS(t, payloads, nil)
	imgs, err := images(fsys)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, im := range imgs {
		names = append(names, im.Name)
	}
	if want := []string{"demo-v1", "pause-3.10"}; !slices.Equal(names, want) {
		t.Fatalf("images %v, want %v", names, want)
	}
	for _, im := range imgs {
		r, err := im.Open()
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(r)
		if err != nil {
			t.Fatalf("%s: %v", im.Name, err)
		}
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(data, payloads["images/"+im.Name+".tar"]) {
			t.Fatalf("%s: wrong content", im.Name)
		}
	}

	if _, err := images(fstest.MapFS{}); !errors.Is(err, ErrNoAssets) {
		t.Fatalf("images without assets: %v, want ErrNoAssets", err)
	}
}

func TestImageOpenChecksum(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		sum     string
		wantErr bool
	}{
		{name: "matching", sum: sumOf(payloads["images/demo-v1.tar"])},
		{name: "mismatch", sum: sumOf([]byte("other")), wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fsys := assetFS(t, map[string][]byte{"images/demo-v1.tar": payloads["images/demo-v1.tar"]},
				map[string]string{"images/demo-v1.tar": tt.sum})
			imgs, err := images(fsys)
			if err != nil || len(imgs) != 1 {
				t.Fatalf("images: %v, %v", imgs, err)
			}
			r, err := imgs[0].Open()
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			data, err := io.ReadAll(r)
			if tt.wantErr {
				if err == nil || !strings.Contains(err.Error(), "checksum") {
					t.Fatalf("ReadAll error %v, want a checksum error", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(data, payloads["images/demo-v1.tar"]) {
				t.Fatal("wrong content")
			}
		})
	}
}

func TestImageOpenMissing(t *testing.T) {
	t.Parallel()
	fsys := assetFS(t, map[string][]byte{"images/y.tar": []byte("y")}, nil)
	fsys["assets/SHA256SUMS"].Data = []byte(sumOf([]byte("x")) + "  images/x.tar\n")
	imgs, err := images(fsys)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := imgs[0].Open(); err == nil {
		t.Fatal("Open of a missing payload succeeded")
	}
}

// TestEmbeddedManifest checks the assets compiled into this binary, if
// any: every manifest entry has its payload.
func TestEmbeddedManifest(t *testing.T) {
	want, err := Sums()
	if errors.Is(err, ErrNoAssets) {
		if _, err := Version(); !errors.Is(err, ErrNoAssets) {
			t.Fatalf("Version without assets: %v", err)
		}
		t.Skip("built without assets")
	}
	if err != nil {
		t.Fatal(err)
	}
	b, err := openBundle(assets)
	if err != nil {
		t.Fatal(err)
	}
	defer b.close()
	for {
		hdr, err := b.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := want[hdr.Name]; !ok {
			t.Errorf("bundle entry %s is not in the manifest", hdr.Name)
		}
		delete(want, hdr.Name)
	}
	for k := range want {
		t.Errorf("manifest entry %s has no payload in the bundle", k)
	}
	v, err := Version()
	if err != nil {
		t.Fatal(err)
	}
	if len(v) != 12 {
		t.Fatalf("Version %q, want 12 hex digits", v)
	}
	if _, err := hex.DecodeString(v); err != nil {
		t.Fatal(err)
	}
}
