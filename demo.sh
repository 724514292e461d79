#!/usr/bin/env bash
# demo.sh: an end-to-end walk through treectl on local disk, no set-up.
# Builds treectl, commits a small OS-like tree twice, reads history and
# differences, checks out with shared inodes, damages and repairs the store,
# moves a ref back and prunes. Everything happens in a temporary directory.
set -euo pipefail
cd "$(dirname "$0")"

cargo build --release --quiet -p treectl
treectl="$PWD/target/release/treectl"
work=$(mktemp -d /var/tmp/treectl-demo.XXXXXX)
trap 'rm -rf "$work"' EXIT
export TREECTL_REPO="$work/repo"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ treectl %s\n' "$*"; "$treectl" "$@"; }

step "a small OS tree"
root="$work/rootfs"
mkdir -p "$root"/{etc/ssh,usr/bin,usr/lib,var/log}
echo "demo" > "$root/etc/hostname"
echo "PermitRootLogin no" > "$root/etc/ssh/sshd_config"
cp /bin/true "$root/usr/bin/true"
cp /bin/true "$root/usr/bin/also-true"   # identical content is stored once
ln -s usr/bin "$root/bin"
echo "NAME=demo OS" > "$root/usr/lib/os-release"
ln -s ../usr/lib/os-release "$root/etc/os-release"
find "$root" | sed "s|$work/||" | sort

step "init a bare-user repository and commit release 1"
run init --mode bare-user
printf '$ treectl commit --ref os/stable --tree rootfs --subject "release 1" --metadata version=1\n'
v1=$("$treectl" commit --ref os/stable --tree "$root" --subject "release 1" --metadata version=1)
echo "$v1"

step "change the tree and commit release 2"
echo "demo-2" > "$root/etc/hostname"
echo "VERSION=2" >> "$root/usr/lib/os-release"
rm "$root/usr/bin/also-true"
run commit --ref os/stable --tree "$root" --subject "release 2" --metadata version=2

step "history, contents and differences"
run log os/stable
run ls os/stable /usr/bin
run cat os/stable /etc/hostname
run diff os/stable^ os/stable

step "hardlink checkout: identical files share the store's inode"
run checkout os/stable "$work/deploy-a"
run checkout os/stable^ "$work/deploy-b"
stat -c '%i %h %n' "$work/deploy-a/usr/bin/true" "$work/deploy-b/usr/bin/true" | sed "s|$work/||"

step "fsck finds a damaged object, --repair removes it"
victim=$(find "$TREECTL_REPO/objects" -name '*.file' -size +1 | head -n 1)
chmod u+w "$victim"; printf 'X' | dd of="$victim" bs=1 seek=0 conv=notrunc status=none
run fsck || echo "(exit status $?: problems found)"
run fsck --repair || true
run fsck

step "move the ref back to release 1 and prune what is unreachable"
run reset os/stable "$v1"
run prune
run refs
echo
echo "demo finished; everything was in $work (now removed)"
