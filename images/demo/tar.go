package main

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// tarMain is the image's /bin/tar (a link to /demo), enough of tar(1) for
// `kubectl cp`: `tar cf - PATH` writes PATH to stdout, `tar [-]xmf - [-C
// DIR]` (with kubectl's --no-same-* flags) extracts stdin into DIR.
func tarMain(args []string) int {
	var create, extract bool
	dir := "."
	var paths []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "-C" && i+1 < len(args):
			dir = args[i+1]
			i++
		case strings.HasPrefix(a, "--"):
			// --no-same-permissions, --no-same-owner: what this tar does anyway.
		case a == "-" || (strings.Trim(a, "-cxmfv") == "" && a != ""):
			if strings.Contains(a, "c") {
				create = true
			}
			if strings.Contains(a, "x") {
				extract = true
			}
		default:
			paths = append(paths, a)
		}
	}
	var err error
	switch {
	case create && !extract:
		err = tarCreate(os.Stdout, paths)
	case extract && !create:
		err = tarExtract(os.Stdin, dir)
	default:
		err = errors.New("usage: tar cf - PATH... | tar xmf - [-C DIR]")
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "tar:", err)
		return 2
	}
	return 0
}

func tarCreate(w io.Writer, paths []string) error {
	tw := tar.NewWriter(w)
	for _, p := range paths {
		err := filepath.WalkDir(p, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			info, err := d.Info()
			if err != nil {
				return err
			}
			link := ""
			if info.Mode()&fs.ModeSymlink != 0 {
				if link, err = os.Readlink(path); err != nil {
					return err
				}
			}
			hdr, err := tar.FileInfoHeader(info, link)
			if err != nil {
				return err
			}
			hdr.Name = strings.TrimPrefix(path, "/")
			if err := tw.WriteHeader(hdr); err != nil {
				return err
			}
			if info.Mode().IsRegular() {
				f, err := os.Open(path)
				if err != nil {
					return err
				}
				defer f.Close()
				if _, err := io.Copy(tw, f); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return tw.Close()
}

func tarExtract(r io.Reader, dir string) error {
	tr := tar.NewReader(r)
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		name := filepath.Clean(strings.TrimPrefix(hdr.Name, "/"))
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := root.MkdirAll(name, 0o755); err != nil {
				return err
			}
		case tar.TypeReg:
			if d := filepath.Dir(name); d != "." {
				if err := root.MkdirAll(d, 0o755); err != nil {
					return err
				}
			}
			f, err := root.OpenFile(name, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, fs.FileMode(hdr.Mode)&0o777)
			if err != nil {
				return err
			}
			_, err = io.Copy(f, tr)
			f.Close()
			if err != nil {
				return err
			}
		}
	}
}

// rmMain is the image's /bin/rm (a link to /demo): `rm -rf PATH...`, what
// Skiff's volume clean-up helper pods run. It refuses "/".
func rmMain(args []string) int {
	code := 0
	for _, a := range args {
		if strings.HasPrefix(a, "-") {
			continue
		}
		if filepath.Clean(a) == "/" {
			fmt.Fprintln(os.Stderr, "rm: refusing to remove /")
			code = 1
			continue
		}
		if err := os.RemoveAll(a); err != nil {
			fmt.Fprintln(os.Stderr, "rm:", err)
			code = 1
		}
	}
	return code
}
