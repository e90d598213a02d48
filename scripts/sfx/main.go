// Command sfx builds Skiff's downloadable artifact (`make dist`): the
// launcher (cmd/skiff-sfx) followed by the skiff binary in xz-compressed
// chunks (format: embedded/sfx). Chunks are compressed in parallel by the
// xz tool (xz-utils: its LZMA2 encoder compresses ~8% better than any Go
// encoder); the launcher decompresses them with a Go decoder.
//
//	go run ./scripts/sfx -launcher bin/skiff-sfx -payload bin/skiff -out dist/skiff
package main

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"

	"github.com/skiff-sh/skiff/embedded/sfx"
)

func main() {
	launcher := flag.String("launcher", "bin/skiff-sfx", "the launcher executable")
	payload := flag.String("payload", "bin/skiff", "the binary to carry")
	out := flag.String("out", "dist/skiff", "artifact to write")
	chunk := flag.Int("chunk", 48<<20, "uncompressed bytes per xz stream (streams decompress in parallel)")
	preset := flag.String("preset", "9e", "xz preset")
	dict := flag.String("dict", "48MiB", "LZMA2 dictionary size (at most the chunk size is useful; the decoder needs this much memory per stream); empty: the preset's")
	parallel := flag.Int("j", runtime.NumCPU(), "chunks compressed at a time")
	flag.Parse()
	if err := run(*launcher, *payload, *out, *chunk, *parallel, *preset, *dict); err != nil {
		fmt.Fprintln(os.Stderr, "sfx:", err)
		os.Exit(1)
	}
}

func run(launcher, payload, out string, chunk, parallel int, preset, dict string) error {
	if _, err := exec.LookPath("xz"); err != nil {
		return fmt.Errorf("the xz tool is needed (Debian: apt-get install xz-utils): %w", err)
	}
	l, err := os.ReadFile(launcher)
	if err != nil {
		return err
	}
	p, err := os.ReadFile(payload)
	if err != nil {
		return err
	}
	filter := "preset=" + preset
	if dict != "" {
		filter += ",dict=" + dict
	}
	compress := func(ctx context.Context, b []byte) ([]byte, error) {
		var o, e bytes.Buffer
		cmd := exec.CommandContext(ctx, "xz", "--format=xz", "--check=crc64", "--lzma2="+filter, "-T1", "-c")
		cmd.Stdin, cmd.Stdout, cmd.Stderr = bytes.NewReader(b), &o, &e
		if err := cmd.Run(); err != nil {
			return nil, fmt.Errorf("xz: %w: %s", err, e.String())
		}
		return o.Bytes(), nil
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	w := bufio.NewWriterSize(tmp, 1<<20)
	ix, err := sfx.Write(context.Background(), w, l, filepath.Base(payload), p, chunk, parallel, compress)
	if err != nil {
		tmp.Close()
		return err
	}
	if err := w.Flush(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o755); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), out); err != nil {
		return err
	}
	st, err := os.Stat(out)
	if err != nil {
		return err
	}
	fmt.Printf("sfx: %s: %.1f MB (launcher %.1f MB, %d xz streams) carrying %s %.1f MB, sha256 %s\n",
		out, float64(st.Size())/1e6, float64(len(l))/1e6, len(ix.Chunks), filepath.Base(payload), float64(ix.Size)/1e6, ix.ID())
	return nil
}
