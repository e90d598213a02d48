// Package embedded will carry the assets and helper binaries shipped inside
// the skiff binary (runc, the containerd shim, CNI plugins, images, bundled
// manifests). It is a placeholder until the agent issue lands.
package embedded
