#!/usr/bin/env bash
# Prints the Debian mirror this machine's apt uses: the first URIs: of a deb822 .sources
# file, else the first deb line of sources.list. The one place the project reads it, so no
# host name ever lives in the project.
set -euo pipefail
for f in /etc/apt/sources.list.d/*.sources; do
    [[ -f $f ]] || continue
    mirror=$(awk '/^URIs:/ { print $2; exit }' "$f")
    if [[ -n $mirror ]]; then
        echo "$mirror"
        exit 0
    fi
done
if [[ -f /etc/apt/sources.list ]]; then
    mirror=$(awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /:\/\//) { print $i; exit } }' /etc/apt/sources.list)
    if [[ -n $mirror ]]; then
        echo "$mirror"
        exit 0
    fi
fi
echo "debian-mirror: no Debian mirror in the apt configuration" >&2
exit 1
