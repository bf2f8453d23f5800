#!/usr/bin/env bash
# Run a built sse-demo bundle on a "fresh machine": a chroot holding nothing but Debian's libc6
# and zlib1g (the two libraries the bundle takes from the system) and /proc.
#
# Usage: export/desktop/fresh_root.sh BUNDLE_DIR     (e.g. dist/sse-demo; needs root, apt-get, chroot)
set -euo pipefail
bundle=$(cd "$1" && pwd)
root=$(mktemp -d)
cleanup() {
  mountpoint -q "$root/proc" && umount "$root/proc"
  rm -rf "$root"
}
trap cleanup EXIT

mkdir -p "$root/debs" "$root/proc"
arch=$(dpkg --print-architecture)
(cd "$root/debs" && apt-get download -qq -o APT::Sandbox::User=root "libc6:$arch" "zlib1g:$arch")
for deb in "$root"/debs/*.deb; do dpkg -x "$deb" "$root"; done
rm -r "$root/debs"
cp -a "$bundle" "$root/sse-demo"
mount -t proc proc "$root/proc"

printf '%s\n' 'how fast are static embeddings?' 'The cat sat on the mat.' \
  'Static embeddings are fast.' |
  env -i PATH=/usr/bin:/bin "$(command -v chroot)" "$root" /sse-demo/sse-demo
echo "ran in a root of $(du -sh --exclude=proc "$root" | cut -f1) (libc6, zlib1g and the bundle)"
