#!/usr/bin/env bash
# Makes (once) and prints the path of a Debian 12 minbase root tree, cached outside the
# clone so tests and benchmarks share it between runs. Safe to run concurrently: the first
# caller builds under a lock, the others wait and reuse.
#
#   scripts/debian-minbase.sh [CACHE_DIR]     (default: /var/cache/stackbuild)
#
# The mirror is read from this machine's apt configuration at run time (deb822
# debian.sources, else sources.list); no host name lives in the project.
set -euo pipefail
cache=${1:-${STACKBUILD_CACHE:-/var/cache/stackbuild}}
root="$cache/debian-12-minbase"
mkdir -p "$cache"
exec 9>"$cache/debian-12-minbase.lock"
flock 9
if [[ -f "$root.complete" ]]; then
    echo "$root"
    exit 0
fi
mirror=$("$(dirname "$0")/debian-mirror.sh")
tmp="$cache/.debian-12-minbase.tmp.$$"
rm -rf "$tmp"
trap 'rm -rf "$tmp"' EXIT
if command -v mmdebstrap >/dev/null; then
    mmdebstrap --quiet --variant=minbase bookworm "$tmp" "$mirror" >&2
else
    debootstrap --variant=minbase bookworm "$tmp" "$mirror" >&2
fi
rm -rf "$root" "$root.complete"
mv "$tmp" "$root"
touch "$root.complete"
trap - EXIT
echo "$root"
