// Package embedded carries the programs and images shipped inside the
// skiff binary: runc, the containerd runc shim and the CNI plugins (built
// from pinned upstream modules by embedded/build) and Skiff's own OCI
// images (images/), as one zstd-compressed tar (assets/bundle.tar.zst)
// with a manifest of their checksums (assets/SHA256SUMS). The build (scripts/
// build-assets.sh) fills assets/; a binary built without them says so
// when the agent starts instead of failing later.
package embedded
