#!/usr/bin/env bash
# patch-modules.sh: makes .build/modules/<module>, a patched copy of each
# upstream module Skiff patches: the pristine module from the Go module
# proxy (or cache), with every third_party/patches/<module>/*.patch applied
# in name order. go.mod replaces each such module with its copy, so every
# go command of this module needs this to have run (the Makefile's targets
# run it first). Idempotent: a stamp holds the module version and the
# patches' checksum, and the copy is remade when either changes.
#
# The patched modules are the directories of third_party/patches holding
# patches; each is patched at the version go.mod requires. A patch is kept
# only while upstream lacks what it does; each says why at its top. To
# update a module: bump it in go.mod, then refresh its patches until they
# apply (git apply fails loudly otherwise).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
GO=${GO:-go}

patch_module() { # module version
	local mod=$1 ver=$2
	local dst="$root/.build/modules/$mod" pdir="$root/third_party/patches/$mod"
	local sum src tmp p
	sum=$( (echo "$mod@$ver"; cat "$pdir"/*.patch) | sha256sum | cut -d' ' -f1)
	if [ -f "$dst/.skiff-patched" ] && [ "$(cat "$dst/.skiff-patched")" = "$sum" ]; then
		return 0
	fi
	# Outside this module, so go.mod's replacement is not consulted.
	tmp=$(mktemp -d)
	src=$(cd "$tmp" && GOFLAGS=-mod=mod "$GO" mod download -json "$mod@$ver" |
		sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
	rmdir "$tmp"
	if [ -z "$src" ] || [ ! -f "$src/go.mod" ]; then
		echo "patch-modules: cannot download $mod@$ver" >&2
		return 1
	fi
	rm -rf "$dst"
	mkdir -p "$(dirname "$dst")"
	cp -R "$src" "$dst"
	chmod -R u+w "$dst"
	for p in "$pdir"/*.patch; do
		# The ceiling keeps git from taking this checkout's repository
		# for the patch's: it applies to the copy as plain patch(1) would.
		if ! (cd "$dst" && GIT_CEILING_DIRECTORIES="$root/.build" git apply -p1 "$p"); then
			echo "patch-modules: $p does not apply to $mod@$ver" >&2
			rm -rf "$dst"
			return 1
		fi
	done
	echo "$sum" >"$dst/.skiff-patched"
	echo "patch-modules: $mod@$ver patched ($(ls "$pdir"/*.patch | wc -l) patches)" >&2
}

for mod in $(cd "$root/third_party/patches" && find . -name '*.patch' -exec dirname {} \; | sed 's|^\./||' | sort -u); do
	# The require line (tab, module, version); replace lines start "replace".
	ver=$(awk -v m="$mod" '$1 == m && $2 ~ /^v/ { print $2; exit }' "$root/go.mod")
	if [ -z "$ver" ]; then
		echo "patch-modules: go.mod does not require $mod, which third_party/patches patches" >&2
		exit 1
	fi
	patch_module "$mod" "$ver"
done
