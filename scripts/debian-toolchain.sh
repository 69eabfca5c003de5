#!/usr/bin/env bash
# Makes (once) and prints the path of a bigger Debian 12 root tree for `cargo xtask bench
# --big-root`: the standard variant (priority required, important and standard) with
# build-essential, git and cmake, about 900 MB. Cached outside the clone like scripts/debian-minbase.sh,
# and safe to run concurrently the same way.
#
#   scripts/debian-toolchain.sh [CACHE_DIR]     (default: /var/cache/stackbuild)
set -euo pipefail
cache=${1:-${STACKBUILD_CACHE:-/var/cache/stackbuild}}
root="$cache/debian-12-toolchain"
mkdir -p "$cache"
exec 9>"$cache/debian-12-toolchain.lock"
flock 9
if [[ -f "$root.complete" ]]; then
    echo "$root"
    exit 0
fi
mirror=$("$(dirname "$0")/debian-mirror.sh")
tmp="$cache/.debian-12-toolchain.tmp.$$"
rm -rf "$tmp"
trap 'rm -rf "$tmp"' EXIT
mmdebstrap --quiet --variant=standard --include=build-essential,git,cmake bookworm "$tmp" "$mirror" >&2
rm -rf "$root" "$root.complete"
mv "$tmp" "$root"
touch "$root.complete"
trap - EXIT
echo "$root"
