// Package containerd runs the node's container runtime: upstream
// containerd v2 with its CRI plugin, carried inside the skiff binary and
// started as a child process of it (the binary re-executes itself under
// the name ProcessName, see package child). Skiff's containerd has its own root,
// state directory, sockets and cgroup-less shims, so a host that already
// runs Docker or containerd is not disturbed.
//
// The package also imports Skiff's embedded images (pause, demo) and any
// air-gap image tarballs into the CRI namespace.
package containerd
