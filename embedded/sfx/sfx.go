// Package sfx reads and writes Skiff's self-extracting artifact, the one
// file a user downloads. As k3s does, the downloadable is small because
// its payload is compressed: a launcher executable (cmd/skiff-sfx) comes
// first, then the skiff binary as independently xz-compressed chunks, a
// JSON index and a fixed trailer:
//
//	[launcher][chunk 0]...[chunk n-1][index JSON][index length: 8 bytes LE]["SKIFFSFX"]
//
// The launcher extracts the binary once to <dir>/bin/<sha256 prefix>/skiff
// (decompressing the chunks in parallel and checking each chunk's sha256
// before the file is renamed into place) and then executes it with the
// same arguments, so every later start costs a stat and an exec.
//
// Chunks are compressed independently so that extraction uses every core
// (an xz stream decodes sequentially); with 48 MiB chunks this costs ~1%
// of the compressed size against one stream.
package sfx

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/ulikunitz/xz"
	"golang.org/x/sync/errgroup"
)

// Magic ends every artifact.
const Magic = "SKIFFSFX"

// trailerLen is the index length and Magic.
const trailerLen = 8 + len(Magic)

// maxIndexLen bounds the index a reader accepts.
const maxIndexLen = 1 << 20

// Index describes the payload.
type Index struct {
	// Name of the extracted file ("skiff").
	Name string `json:"name"`
	// Size and SHA256 (hex) of the extracted file.
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
	// Chunks in payload order.
	Chunks []Chunk `json:"chunks"`
}

// Chunk is one xz stream of the payload.
type Chunk struct {
	// Offset of the compressed stream from the start of the payload and
	// its compressed Length.
	Offset int64 `json:"offset"`
	Length int64 `json:"length"`
	// Size and SHA256 (hex) of the decompressed chunk.
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// ID names an extracted payload: a prefix of its sha256.
func (ix Index) ID() string {
	if len(ix.SHA256) < 16 {
		return ix.SHA256
	}
	return ix.SHA256[:16]
}

// Compressor compresses one chunk into a complete xz stream.
type Compressor func(ctx context.Context, chunk []byte) ([]byte, error)

// Write writes an artifact: launcher, then payload (named name) cut into
// chunks of chunkSize bytes and compressed by compress, up to parallel at
// a time.
func Write(ctx context.Context, w io.Writer, launcher []byte, name string, payload []byte, chunkSize, parallel int, compress Compressor) (Index, error) {
	if chunkSize <= 0 || parallel <= 0 {
		return Index{}, errors.New("sfx: chunk size and parallelism must be positive")
	}
	sum := sha256.Sum256(payload)
	ix := Index{Name: name, Size: int64(len(payload)), SHA256: hex.EncodeToString(sum[:])}
	var parts [][]byte
	for off := 0; off < len(payload); off += chunkSize {
		parts = append(parts, payload[off:min(off+chunkSize, len(payload))])
	}
	out := make([][]byte, len(parts))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(parallel)
	for i, p := range parts {
		g.Go(func() error {
			c, err := compress(gctx, p)
			if err != nil {
				return fmt.Errorf("sfx: compress chunk %d: %w", i, err)
			}
			out[i] = c
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return Index{}, err
	}
	if _, err := w.Write(launcher); err != nil {
		return Index{}, fmt.Errorf("sfx: write launcher: %w", err)
	}
	var off int64
	for i, c := range out {
		s := sha256.Sum256(parts[i])
		ix.Chunks = append(ix.Chunks, Chunk{Offset: off, Length: int64(len(c)), Size: int64(len(parts[i])), SHA256: hex.EncodeToString(s[:])})
		if _, err := w.Write(c); err != nil {
			return Index{}, fmt.Errorf("sfx: write chunk %d: %w", i, err)
		}
		off += int64(len(c))
	}
	js, err := json.Marshal(ix)
	if err != nil {
		return Index{}, fmt.Errorf("sfx: index: %w", err)
	}
	trailer := binary.LittleEndian.AppendUint64(nil, uint64(len(js)))
	trailer = append(trailer, Magic...)
	if _, err := w.Write(append(js, trailer...)); err != nil {
		return Index{}, fmt.Errorf("sfx: write index: %w", err)
	}
	return ix, nil
}

// Artifact is an opened artifact.
type Artifact struct {
	Index Index
	r     io.ReaderAt
	// payload is the file offset of the first chunk.
	payload int64
}

// ErrNoPayload is returned by Open for a file that is not an artifact.
var ErrNoPayload = errors.New("sfx: no payload (not a self-extracting artifact)")

// Open reads the index of the artifact r of the given size and checks that
// the chunks it lists lie inside the file.
func Open(r io.ReaderAt, size int64) (*Artifact, error) {
	if size < int64(trailerLen) {
		return nil, ErrNoPayload
	}
	tr := make([]byte, trailerLen)
	if _, err := r.ReadAt(tr, size-int64(trailerLen)); err != nil {
		return nil, fmt.Errorf("sfx: read trailer: %w", err)
	}
	if string(tr[8:]) != Magic {
		return nil, ErrNoPayload
	}
	n := binary.LittleEndian.Uint64(tr[:8])
	if n == 0 || n > maxIndexLen || int64(n) > size-int64(trailerLen) {
		return nil, fmt.Errorf("sfx: corrupt artifact: index length %d", n)
	}
	js := make([]byte, n)
	idxAt := size - int64(trailerLen) - int64(n)
	if _, err := r.ReadAt(js, idxAt); err != nil {
		return nil, fmt.Errorf("sfx: read index: %w", err)
	}
	var ix Index
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&ix); err != nil {
		return nil, fmt.Errorf("sfx: corrupt artifact: index: %w", err)
	}
	if err := ix.validate(); err != nil {
		return nil, err
	}
	var clen int64
	for _, c := range ix.Chunks {
		clen += c.Length
	}
	if clen > idxAt {
		return nil, fmt.Errorf("sfx: corrupt artifact: chunks (%d bytes) exceed the file", clen)
	}
	return &Artifact{Index: ix, r: r, payload: idxAt - clen}, nil
}

func (ix Index) validate() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("sfx: corrupt artifact: "+format, a...)
	}
	if ix.Name == "" || ix.Name != filepath.Base(ix.Name) || ix.Name == "." || ix.Name == ".." {
		return bad("payload name %q", ix.Name)
	}
	if _, err := hex.DecodeString(ix.SHA256); err != nil || len(ix.SHA256) != 64 {
		return bad("payload sha256 %q", ix.SHA256)
	}
	if len(ix.Chunks) == 0 {
		return bad("no chunks")
	}
	var off, size int64
	for i, c := range ix.Chunks {
		if c.Offset != off || c.Length <= 0 || c.Size <= 0 || len(c.SHA256) != 64 {
			return bad("chunk %d: offset %d length %d size %d", i, c.Offset, c.Length, c.Size)
		}
		off += c.Length
		size += c.Size
	}
	if size != ix.Size {
		return bad("chunks add up to %d bytes, index says %d", size, ix.Size)
	}
	return nil
}

// Extract decompresses the payload to path, up to parallel chunks at a
// time, and checks every chunk's sha256. The file is written beside path
// and renamed into place only when complete and checked, so a concurrent
// or interrupted extraction never leaves a partial file at path.
func (a *Artifact) Extract(ctx context.Context, path string, parallel int) (err error) {
	if parallel <= 0 {
		parallel = 1
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("sfx: %w", err)
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("sfx: %w", err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if err := f.Truncate(a.Index.Size); err != nil {
		return fmt.Errorf("sfx: %w", err)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(parallel)
	var at int64
	for i, c := range a.Index.Chunks {
		dst := io.NewOffsetWriter(f, at)
		at += c.Size
		g.Go(func() error {
			if err := a.extractChunk(gctx, c, dst); err != nil {
				return fmt.Errorf("sfx: chunk %d: %w", i, err)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	if err := f.Chmod(0o755); err != nil {
		return fmt.Errorf("sfx: %w", err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sfx: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("sfx: %w", err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("sfx: %w", err)
	}
	return nil
}

func (a *Artifact) extractChunk(ctx context.Context, c Chunk, dst io.Writer) error {
	// The decoder reads a byte at a time: buffer the file.
	src := bufio.NewReaderSize(io.NewSectionReader(a.r, a.payload+c.Offset, c.Length), 1<<20)
	zr, err := xz.ReaderConfig{SingleStream: true}.NewReader(src)
	if err != nil {
		return fmt.Errorf("xz: %w", err)
	}
	h := sha256.New()
	// Read one byte past the expected size to catch a chunk that
	// decompresses to more than the index says.
	n, err := io.Copy(io.MultiWriter(dst, h), &ctxReader{ctx: ctx, r: io.LimitReader(zr, c.Size+1)})
	if err != nil {
		return fmt.Errorf("xz: %w", err)
	}
	if n != c.Size {
		return fmt.Errorf("decompressed %d bytes, want %d", n, c.Size)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != c.SHA256 {
		return fmt.Errorf("sha256 %s, want %s", got, c.SHA256)
	}
	return nil
}

// ctxReader stops a long copy when ctx ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (r *ctxReader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	return r.r.Read(p)
}
