package sfx

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// DefaultDataDir is skiff's --data-dir default.
const DefaultDataDir = "/var/lib/skiff"

// dataDirCommands take --data-dir (-d); for other commands (kubectl ...)
// -d may mean something else.
var dataDirCommands = map[string]bool{"server": true, "agent": true, "killall": true}

// Env is what BaseDir reads from the process.
type Env struct {
	Args   []string
	Getenv func(string) string
	Euid   int
	// CacheDir is os.UserCacheDir.
	CacheDir func() (string, error)
	// Getwd resolves a relative --data-dir.
	Getwd func() (string, error)
}

// BaseDir is the directory under which the launcher extracts, chosen as
// skiff chooses its data dir: --data-dir (-d) given to server, agent or
// killall, else $SKIFF_DATA_DIR, else /var/lib/skiff for root; other users
// extract into their cache directory (…/skiff), as k3s extracts into the
// home directory of a user who is not root.
func BaseDir(e Env) (string, error) {
	dir := ""
	if len(e.Args) > 1 && dataDirCommands[e.Args[1]] {
		dir = flagValue(e.Args[2:], "data-dir", "d")
	}
	if dir == "" {
		dir = e.Getenv("SKIFF_DATA_DIR")
	}
	if dir == "" && e.Euid == 0 {
		dir = DefaultDataDir
	}
	if dir == "" {
		c, err := e.CacheDir()
		if err != nil {
			return "", fmt.Errorf("sfx: no directory to extract to (set SKIFF_DATA_DIR): %w", err)
		}
		dir = filepath.Join(c, "skiff")
	}
	if !filepath.IsAbs(dir) {
		wd, err := e.Getwd()
		if err != nil {
			return "", fmt.Errorf("sfx: data dir %q: %w", dir, err)
		}
		dir = filepath.Join(wd, dir)
	}
	return filepath.Clean(dir), nil
}

// flagValue finds the last value of a flag named long or short in args in
// the forms urfave/cli accepts (-x v, -x=v, --x v, --x=v), up to "--".
func flagValue(args []string, long, short string) string {
	v := ""
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			break
		}
		if !strings.HasPrefix(a, "-") {
			continue
		}
		name, val, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if name != long && name != short {
			continue
		}
		if hasVal {
			v = val
		} else if i+1 < len(args) {
			v = args[i+1]
			i++
		}
	}
	return v
}

// Path is where the payload of a is extracted under base:
// <base>/bin/<id>/<name>.
func (a *Artifact) Path(base string) string {
	return filepath.Join(base, "bin", a.Index.ID(), a.Index.Name)
}

// Prepare returns the path of the extracted payload under base,
// extracting it first unless a complete copy is already there. After an
// extraction, the payloads of other versions are removed (a process still
// running one keeps its file until it exits).
func (a *Artifact) Prepare(ctx context.Context, base string, parallel int) (path string, extracted bool, err error) {
	path = a.Path(base)
	if st, err := os.Stat(path); err == nil && st.Mode().IsRegular() && st.Size() == a.Index.Size {
		return path, false, nil
	}
	if err := a.Extract(ctx, path, parallel); err != nil {
		return "", false, fmt.Errorf("extract to %s: %w", path, err)
	}
	removeOthers(filepath.Dir(filepath.Dir(path)), a.Index.ID())
	return path, true, nil
}

// removeOthers removes the directories of other payload versions in dir
// (names of ID length in lower-case hex), best effort.
func removeOthers(dir, keep string) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		n := e.Name()
		if !e.IsDir() || n == keep || len(n) != len(keep) || strings.Trim(n, "0123456789abcdef") != "" {
			continue
		}
		_ = os.RemoveAll(filepath.Join(dir, n))
	}
}
