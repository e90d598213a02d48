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

func TestForEachImage(t *testing.T) {
	t.Parallel()
	fsys := assetFS(t, payloads, nil)
	got := map[string][]byte{}
	var order []string
	err := forEachImage(fsys, func(name string, r io.Reader) error {
		data, err := io.ReadAll(r)
		if err != nil {
			return err
		}
		got[name] = data
		order = append(order, name)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Bundle order (assetFS writes keys sorted).
	if want := []string{"demo-v1", "pause-3.10"}; !slices.Equal(order, want) {
		t.Fatalf("images %v, want %v", order, want)
	}
	for name, data := range got {
		if !bytes.Equal(data, payloads["images/"+name+".tar"]) {
			t.Fatalf("%s: wrong content", name)
		}
	}
	if err := forEachImage(fstest.MapFS{}, func(string, io.Reader) error { return nil }); !errors.Is(err, ErrNoAssets) {
		t.Fatalf("forEachImage without assets: %v, want ErrNoAssets", err)
	}
}

func TestForEachImageErrors(t *testing.T) {
	t.Parallel()
	demo := payloads["images/demo-v1.tar"]
	missing := assetFS(t, map[string][]byte{"images/y.tar": []byte("y")}, nil)
	missing["assets/SHA256SUMS"].Data = append(missing["assets/SHA256SUMS"].Data, sumOf([]byte("x"))+"  images/x.tar\n"...)
	stop := errors.New("stop")
	tests := []struct {
		name string
		fsys fs.FS
		fn   func(string, io.Reader) error
		want string
		is   error
	}{
		{name: "checksum mismatch seen by the reader",
			fsys: assetFS(t, map[string][]byte{"images/demo-v1.tar": demo}, map[string]string{"images/demo-v1.tar": sumOf([]byte("other"))}),
			fn:   func(_ string, r io.Reader) error { _, err := io.ReadAll(r); return err }, want: "checksum"},
		{name: "checksum mismatch of an unread tarball",
			fsys: assetFS(t, map[string][]byte{"images/demo-v1.tar": demo}, map[string]string{"images/demo-v1.tar": sumOf([]byte("other"))}),
			fn:   func(string, io.Reader) error { return nil }, want: "checksum"},
		{name: "image missing from bundle", fsys: missing,
			fn: func(string, io.Reader) error { return nil }, want: "has no images/x.tar"},
		{name: "callback error returned", fsys: assetFS(t, payloads, nil),
			fn: func(string, io.Reader) error { return stop }, is: stop},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := forEachImage(tt.fsys, tt.fn)
			if err == nil {
				t.Fatal("forEachImage succeeded")
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Fatalf("error %v, want %v", err, tt.is)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q does not contain %q", err, tt.want)
			}
		})
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
	// Every manifest entry is in the bundle with the content it lists.
	err = walkBundle(assets, want, func(key, sum string, r io.Reader) error {
		_, err := io.Copy(io.Discard, &checked{r: r, h: sha256.New(), want: sum, name: key})
		return err
	})
	if err != nil {
		t.Fatal(err)
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
