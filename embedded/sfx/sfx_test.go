package sfx

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ulikunitz/xz"
)

func xzCompress(_ context.Context, b []byte) ([]byte, error) {
	var buf bytes.Buffer
	w, err := xz.NewWriter(&buf)
	if err != nil {
		return nil, err
	}
	if _, err := w.Write(b); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// payload is compressible but not trivially so.
func payload(n int) []byte {
	r := rand.New(rand.NewPCG(1, 2))
	b := make([]byte, n)
	for i := range b {
		b[i] = "abcdefgh"[r.IntN(8)]
	}
	return b
}

func build(t testing.TB, data []byte, chunk int) ([]byte, Index) {
	t.Helper()
	var buf bytes.Buffer
	ix, err := Write(context.Background(), &buf, []byte("#!launcher\n"), "skiff", data, chunk, 2, xzCompress)
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), ix
}

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		size, cs   int
		wantChunks int
	}{
		{"one byte", 1, 1000, 1},
		{"smaller than a chunk", 999, 1000, 1},
		{"exact multiple", 3000, 1000, 3},
		{"remainder", 3001, 1000, 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := payload(tt.size)
			art, ix := build(t, data, tt.cs)
			if len(ix.Chunks) != tt.wantChunks {
				t.Fatalf("%d chunks, want %d", len(ix.Chunks), tt.wantChunks)
			}
			if !bytes.HasPrefix(art, []byte("#!launcher\n")) || !bytes.HasSuffix(art, []byte(Magic)) {
				t.Fatal("artifact does not start with the launcher and end with the magic")
			}
			a, err := Open(bytes.NewReader(art), int64(len(art)))
			if err != nil {
				t.Fatal(err)
			}
			if a.Index.SHA256 != ix.SHA256 || a.Index.Size != int64(tt.size) {
				t.Fatalf("index %+v, written %+v", a.Index, ix)
			}
			dst := filepath.Join(t.TempDir(), "x", "skiff")
			if err := a.Extract(context.Background(), dst, 3); err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(dst)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, data) {
				t.Fatal("extracted content differs")
			}
			if st, _ := os.Stat(dst); st.Mode().Perm() != 0o755 {
				t.Fatalf("mode %v, want 0755", st.Mode())
			}
		})
	}
}

// withIndex replaces the index of an artifact.
func withIndex(t *testing.T, art []byte, edit func(*Index)) []byte {
	t.Helper()
	n := binary.LittleEndian.Uint64(art[len(art)-trailerLen:])
	at := len(art) - trailerLen - int(n)
	var ix Index
	if err := json.Unmarshal(art[at:len(art)-trailerLen], &ix); err != nil {
		t.Fatal(err)
	}
	edit(&ix)
	js, _ := json.Marshal(ix)
	out := append(bytes.Clone(art[:at]), js...)
	out = binary.LittleEndian.AppendUint64(out, uint64(len(js)))
	return append(out, Magic...)
}

func TestOpenErrors(t *testing.T) {
	t.Parallel()
	art, _ := build(t, payload(2500), 1000)
	trailer := func(n uint64) []byte {
		return append(binary.LittleEndian.AppendUint64([]byte("launcher"), n), Magic...)
	}
	tests := []struct {
		name string
		art  []byte
		want string
	}{
		{"empty file", nil, ErrNoPayload.Error()},
		{"plain executable", []byte("\x7fELF and no payload at all"), ErrNoPayload.Error()},
		{"zero index length", trailer(0), "index length 0"},
		{"index longer than file", trailer(1 << 19), "index length"},
		{"index not JSON", append(append([]byte("xx{nope"), binary.LittleEndian.AppendUint64(nil, 5)...), Magic...), "index"},
		{"unknown field", withIndexJSON(`{"name":"skiff","size":1,"sha256":"` + strings.Repeat("a", 64) + `","chunks":[],"extra":1}`), "unknown field"},
		{"no chunks", withIndex(t, art, func(ix *Index) { ix.Chunks = nil }), "no chunks"},
		{"name with a slash", withIndex(t, art, func(ix *Index) { ix.Name = "../skiff" }), "payload name"},
		{"name dot-dot", withIndex(t, art, func(ix *Index) { ix.Name = ".." }), "payload name"},
		{"bad sha256", withIndex(t, art, func(ix *Index) { ix.SHA256 = "zz" }), "payload sha256"},
		{"gap between chunks", withIndex(t, art, func(ix *Index) { ix.Chunks[1].Offset++ }), "chunk 1"},
		{"sizes do not add up", withIndex(t, art, func(ix *Index) { ix.Size++ }), "add up"},
		{"chunks beyond the file", withIndex(t, art, func(ix *Index) { ix.Chunks[2].Length += 1 << 20 }), "exceed the file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Open(bytes.NewReader(tt.art), int64(len(tt.art)))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Open error %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func withIndexJSON(js string) []byte {
	out := append([]byte("launcher"), js...)
	out = binary.LittleEndian.AppendUint64(out, uint64(len(js)))
	return append(out, Magic...)
}

func TestExtractCorrupt(t *testing.T) {
	t.Parallel()
	art, ix := build(t, payload(5000), 1000)
	a0, err := Open(bytes.NewReader(art), int64(len(art)))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		art  []byte
		want string
	}{
		{"flipped byte in a chunk", func() []byte {
			b := bytes.Clone(art)
			b[int(a0.payload+ix.Chunks[3].Offset+ix.Chunks[3].Length/2)] ^= 0xff
			return b
		}(), "chunk 3"},
		{"wrong chunk checksum", withIndex(t, art, func(ix *Index) { ix.Chunks[1].SHA256 = strings.Repeat("0", 64) }), "chunk 1: sha256"},
		{"chunk larger than indexed", withIndex(t, art, func(ix *Index) { ix.Chunks[0].Size--; ix.Size-- }), "chunk 0: decompressed"},
		{"chunk smaller than indexed", withIndex(t, art, func(ix *Index) { ix.Chunks[4].Size++; ix.Size++ }), "chunk 4: decompressed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := Open(bytes.NewReader(tt.art), int64(len(tt.art)))
			if err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			err = a.Extract(context.Background(), filepath.Join(dir, "skiff"), 2)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Extract error %v, want one containing %q", err, tt.want)
			}
			// Neither the target nor a temporary file is left behind.
			if entries, _ := os.ReadDir(dir); len(entries) != 0 {
				t.Fatalf("left behind: %v", entries)
			}
		})
	}
}

func TestExtractCanceled(t *testing.T) {
	t.Parallel()
	art, _ := build(t, payload(4000), 1000)
	a, err := Open(bytes.NewReader(art), int64(len(art)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	dir := t.TempDir()
	if err := a.Extract(ctx, filepath.Join(dir, "skiff"), 1); !errors.Is(err, context.Canceled) {
		t.Fatalf("Extract error %v, want context.Canceled", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("left behind: %v", entries)
	}
}

func TestPrepare(t *testing.T) {
	t.Parallel()
	data := payload(3000)
	art, ix := build(t, data, 1000)
	a, err := Open(bytes.NewReader(art), int64(len(art)))
	if err != nil {
		t.Fatal(err)
	}
	base := t.TempDir()
	// Another version's payload and an unrelated directory.
	old := filepath.Join(base, "bin", "0123456789abcdef")
	keep := filepath.Join(base, "bin", "not-a-version")
	for _, d := range []string{old, keep} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	path, extracted, err := a.Prepare(context.Background(), base, 2)
	if err != nil || !extracted {
		t.Fatalf("first Prepare: extracted=%v err=%v", extracted, err)
	}
	if want := filepath.Join(base, "bin", ix.SHA256[:16], "skiff"); path != want {
		t.Fatalf("path %s, want %s", path, want)
	}
	if _, err := os.Stat(old); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("old version left behind (stat %v)", err)
	}
	if _, err := os.Stat(keep); err != nil {
		t.Fatalf("unrelated directory removed: %v", err)
	}
	if _, extracted, err := a.Prepare(context.Background(), base, 2); err != nil || extracted {
		t.Fatalf("second Prepare: extracted=%v err=%v, want the existing copy used", extracted, err)
	}
	// A truncated copy (a crash of something else) is replaced.
	if err := os.Truncate(path, 10); err != nil {
		t.Fatal(err)
	}
	if _, extracted, err := a.Prepare(context.Background(), base, 2); err != nil || !extracted {
		t.Fatalf("Prepare over a truncated copy: extracted=%v err=%v", extracted, err)
	}
	if got, _ := os.ReadFile(path); !bytes.Equal(got, data) {
		t.Fatal("re-extracted content differs")
	}
}

func TestBaseDir(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		env  map[string]string
		euid int
		want string
	}{
		{"root default", []string{"skiff", "server"}, nil, 0, "/var/lib/skiff"},
		{"user default", []string{"skiff", "kubectl", "get", "ns"}, nil, 1000, "/home/u/.cache/skiff"},
		{"env", []string{"skiff", "kubectl"}, map[string]string{"SKIFF_DATA_DIR": "/srv/s"}, 1000, "/srv/s"},
		{"--data-dir value", []string{"skiff", "server", "--data-dir", "/d"}, nil, 0, "/d"},
		{"--data-dir=value", []string{"skiff", "agent", "--data-dir=/d"}, nil, 0, "/d"},
		{"-d value", []string{"skiff", "server", "-d", "/d"}, nil, 0, "/d"},
		{"-data-dir=value", []string{"skiff", "killall", "-data-dir=/d"}, nil, 0, "/d"},
		{"flag beats env", []string{"skiff", "server", "-d", "/flag"}, map[string]string{"SKIFF_DATA_DIR": "/env"}, 0, "/flag"},
		{"last flag wins", []string{"skiff", "server", "-d", "/a", "--data-dir", "/b"}, nil, 0, "/b"},
		{"relative", []string{"skiff", "server", "-d", "state"}, nil, 0, "/work/state"},
		{"after -- ignored", []string{"skiff", "server", "--", "-d", "/x"}, nil, 0, "/var/lib/skiff"},
		{"kubectl -d is not ours", []string{"skiff", "kubectl", "-d", "/x"}, nil, 0, "/var/lib/skiff"},
		{"no command", []string{"skiff"}, nil, 0, "/var/lib/skiff"},
		{"flag without value", []string{"skiff", "server", "--data-dir"}, nil, 0, "/var/lib/skiff"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := BaseDir(Env{
				Args:     tt.args,
				Getenv:   func(k string) string { return tt.env[k] },
				Euid:     tt.euid,
				CacheDir: func() (string, error) { return "/home/u/.cache", nil },
				Getwd:    func() (string, error) { return "/work", nil },
			})
			if err != nil || got != tt.want {
				t.Fatalf("BaseDir = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
	_, err := BaseDir(Env{Args: []string{"skiff"}, Getenv: func(string) string { return "" }, Euid: 1000,
		CacheDir: func() (string, error) { return "", errors.New("no home") }})
	if err == nil || !strings.Contains(err.Error(), "SKIFF_DATA_DIR") {
		t.Fatalf("BaseDir without a cache dir: %v, want an error naming SKIFF_DATA_DIR", err)
	}
}

// FuzzOpen: any file ending in the magic is rejected cleanly or opens to
// an index whose chunks lie inside the file.
func FuzzOpen(f *testing.F) {
	art, _ := build(f, payload(1500), 1000)
	f.Add(art)
	f.Add([]byte(Magic))
	f.Add(withIndexJSON(`{"name":"skiff"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := Open(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			return
		}
		var n int64
		for _, c := range a.Index.Chunks {
			n += c.Length
		}
		if a.payload < 0 || a.payload+n > int64(len(b)) {
			t.Fatalf("chunks [%d, %d) outside a %d-byte file", a.payload, a.payload+n, len(b))
		}
	})
}
