// Package build pins the external programs Skiff carries inside its binary
// (runc, the containerd runc shim and the CNI plugins) as Go tool
// dependencies of a module of their own, so their version sets never mix
// with the skiff binary's. The Makefile builds them with `go build` from
// this module and compresses them into embedded/assets.
package build
