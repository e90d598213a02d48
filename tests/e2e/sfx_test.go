package e2e

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestSelfExtractingArtifact builds the downloadable artifact the way
// `make dist` does (a fast xz preset to save time) from the binary under
// test, and runs it: the first run extracts the binary under the data dir
// and executes it with the same arguments; later runs reuse it; a
// corrupted artifact fails clearly and leaves nothing executable behind.
func TestSelfExtractingArtifact(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("xz"); err != nil {
		t.Skip("xz (xz-utils) not installed: `make dist` needs it; .ci/run installs it")
	}
	dir := t.TempDir()
	launcher, art := filepath.Join(dir, "skiff-sfx"), filepath.Join(dir, "skiff")
	run := func(name string, args ...string) string {
		t.Helper()
		cmd := exec.Command(name, args...)
		cmd.Dir = "../.."
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	run("go", "build", "-trimpath", "-ldflags=-s -w", "-o", launcher, "./cmd/skiff-sfx")
	run("go", "run", "./scripts/sfx", "-launcher", launcher, "-payload", skiffBin, "-out", art, "-preset", "0", "-dict", "", "-chunk", "50000000")
	bin, err := os.ReadFile(skiffBin)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(art)
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() >= int64(len(bin))/2 {
		t.Fatalf("artifact is %d bytes for a %d-byte binary", st.Size(), len(bin))
	}
	sum := sha256.Sum256(bin)
	id := filepath.Join("bin", hex.EncodeToString(sum[:8]), "skiff")

	exe := func(env []string, args ...string) (string, string, error) {
		cmd := exec.Command(art, args...)
		cmd.Env = append(os.Environ(), env...)
		var o, e bytes.Buffer
		cmd.Stdout, cmd.Stderr = &o, &e
		err := cmd.Run()
		return o.String(), e.String(), err
	}
	want, err := exec.Command(skiffBin, "--version").Output()
	if err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "data")
	env := []string{"SKIFF_DATA_DIR=" + data}
	out, errOut, err := exe(env, "--version")
	if err != nil || out != string(want) {
		t.Fatalf("first run: %v: stdout %q (want %q), stderr %s", err, out, want, errOut)
	}
	if !strings.Contains(errOut, "extracted "+filepath.Join(data, id)) {
		t.Fatalf("first run did not say where it extracted: %q", errOut)
	}
	got, err := os.ReadFile(filepath.Join(data, id))
	if err != nil || !bytes.Equal(got, bin) {
		t.Fatalf("extracted binary differs from the one packed (read err %v)", err)
	}

	// Arguments reach the binary unchanged; the extracted copy is reused.
	out, errOut, err = exe(env, "kubectl", "version", "--client", "-o", "json")
	if err != nil {
		t.Fatalf("kubectl through the artifact: %v: %s", err, errOut)
	}
	var v struct {
		ClientVersion struct{ GitVersion string } `json:"clientVersion"`
	}
	if err := json.Unmarshal([]byte(out), &v); err != nil || !strings.HasPrefix(v.ClientVersion.GitVersion, "v1.37") {
		t.Fatalf("kubectl version through the artifact: %v: %s", err, out)
	}
	if errOut != "" {
		t.Fatalf("second run wrote to stderr (extracted again?): %q", errOut)
	}

	// --data-dir given to server chooses where it extracts, as it chooses
	// the server's state directory.
	other := filepath.Join(dir, "other")
	if _, errOut, err := exe(nil, "server", "--data-dir", other, "--help"); err != nil {
		t.Fatalf("server --help through the artifact: %v: %s", err, errOut)
	}
	if _, err := os.Stat(filepath.Join(other, id)); err != nil {
		t.Fatalf("server --data-dir %s: not extracted there: %v", other, err)
	}

	// A damaged download: one byte flipped in the middle of the payload.
	b, err := os.ReadFile(art)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)-len(b)/4] ^= 0xff
	bad := filepath.Join(dir, "bad")
	if err := os.WriteFile(art, b, 0o755); err != nil {
		t.Fatal(err)
	}
	_, errOut, err = exe([]string{"SKIFF_DATA_DIR=" + bad}, "--version")
	if err == nil || !strings.Contains(errOut, "skiff: extract to ") || !strings.Contains(errOut, "chunk") {
		t.Fatalf("corrupted artifact: err %v, stderr %q; want a failed extraction naming the chunk", err, errOut)
	}
	if _, err := os.Stat(filepath.Join(bad, id)); !os.IsNotExist(err) {
		t.Fatalf("corrupted artifact left %s behind (stat err %v)", filepath.Join(bad, id), err)
	}
}
