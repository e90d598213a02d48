#!/usr/bin/env bash
# Builds what the skiff binary carries into embedded/assets: runc (static,
# cgo for its nsenter), the containerd runc shim and the CNI plugins from
# the versions pinned in embedded/build/go.mod (the shim with Skiff's
# node-wide grouping, embedded/build/shim), and Skiff's own images
# (images/: pause in C, demo in Go) as OCI tarballs. Outputs are cached in $ASSET_CACHE by the
# pinned versions, so a warm rebuild takes a second.
set -euo pipefail
# runc links libseccomp statically: Debian's libseccomp-dev.
if [ ! -f /usr/lib/$(gcc -print-multiarch)/libseccomp.a ] && [ ! -f /usr/lib/libseccomp.a ]; then
	echo "build-assets: libseccomp.a missing; install it: sudo apt-get install -y libseccomp-dev pkg-config" >&2
	exit 1
fi
cd "$(dirname "$0")/.."
GO=${GO:-go}
out=embedded/assets
work=${ASSET_CACHE:-$HOME/.cache/skiff-assets}
# Built helpers are cached by their inputs; the packed output also by the
# packer's (scripts/pack and the bundle format in embedded/embedded.go).
bkey=$(cat embedded/build/go.sum embedded/build/shim/*.go scripts/build-assets.sh images/*/*.go images/pause/pause.c | sha256sum | cut -c1-16)-$($GO env GOARCH)
key=$bkey-$(cat scripts/pack/main.go embedded/embedded.go | sha256sum | cut -c1-16)
dir=$work/$bkey
if [ ! -f "$dir/.done" ]; then
	mkdir -p "$dir"
	(cd embedded/build &&
		CGO_ENABLED=1 $GO build -trimpath -tags 'seccomp netgo osusergo' -ldflags '-s -w -extldflags -static' -o "$dir/runc" github.com/opencontainers/runc &&
		CGO_ENABLED=0 $GO build -trimpath -ldflags '-s -w' -o "$dir/containerd-shim-runc-v2" ./shim &&
		for p in github.com/containernetworking/plugins/plugins/main/bridge \
			github.com/containernetworking/plugins/plugins/ipam/host-local; do
			CGO_ENABLED=0 $GO build -trimpath -ldflags '-s -w' -o "$dir/$(basename $p)" "$p"
		done)
	mkdir -p "$dir/img"
	# The sandbox process: C, static (one per pod; see images/pause).
	${CC:-gcc} -static -Os -s -o "$dir/img/pause" images/pause/pause.c
	CGO_ENABLED=0 $GO build -trimpath -ldflags '-s -w' -o "$dir/img/demo" ./images/demo
	touch "$dir/.done"
fi
if [ ! -f "$out/SHA256SUMS" ] || [ "$(cat $out/.key 2>/dev/null)" != "$key" ]; then
	# One compressed stream: similar programs side by side (the CNI
	# plugins share most of their code), measured smallest in this order.
	$GO run ./scripts/pack -out "$out" \
		-bin bridge="$dir/bridge" -bin host-local="$dir/host-local" \
		-image skiff.local/demo:v1="$dir/img/demo,tar,rm" \
		-bin containerd-shim-runc-v2="$dir/containerd-shim-runc-v2" \
		-image skiff.local/pause:3.10="$dir/img/pause" \
		-bin runc="$dir/runc"
	echo "$key" > "$out/.key"
fi
