// Command skiff-sfx is the launcher at the front of Skiff's downloadable
// artifact (see embedded/sfx and `make dist`): it extracts the skiff
// binary carried behind it on first use, into the data dir skiff would
// use (or the user's cache directory when not root), and then executes it
// with the same arguments and environment. It takes no flags of its own.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"syscall"

	"github.com/skiff-sh/skiff/embedded/sfx"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "skiff:", err)
		os.Exit(1)
	}
}

func run() error {
	// Each stream decodes into a 48 MiB dictionary; collect often so that
	// extracting on a small board needs little more than those.
	debug.SetGCPercent(20)
	// /proc/self/exe is this file even when reached through a symlink or
	// renamed meanwhile.
	f, err := os.Open("/proc/self/exe")
	if err != nil {
		return err
	}
	st, err := f.Stat()
	if err != nil {
		return err
	}
	a, err := sfx.Open(f, st.Size())
	if err != nil {
		return err
	}
	base, err := sfx.BaseDir(sfx.Env{Args: os.Args, Getenv: os.Getenv, Euid: os.Geteuid(), CacheDir: os.UserCacheDir, Getwd: os.Getwd})
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	path, extracted, err := a.Prepare(ctx, base, runtime.NumCPU())
	stop()
	if err != nil {
		return err
	}
	f.Close()
	if extracted {
		fmt.Fprintf(os.Stderr, "skiff: extracted %s (%d MB)\n", path, a.Index.Size>>20)
	}
	if err := syscall.Exec(path, os.Args, os.Environ()); err != nil {
		return fmt.Errorf("exec %s: %w", path, err)
	}
	return nil
}
