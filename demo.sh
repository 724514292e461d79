#!/usr/bin/env bash
# demo.sh: the life of an OS release on one machine, on local disk and
# loopback, with no set-up. It builds a small OS from components (real
# Debian packages when they are at hand, bundled sample components
# always), serves it with `treectl serve`, installs a client sysroot,
# publishes an update, upgrades with --stage and finalizes, reverts the
# release on the server and follows the revert, rolls back, and prints
# `treectl status` after each step. Everything lives in a temporary
# directory that is removed at the end.
set -euo pipefail
cd "$(dirname "$0")"

cargo build --release --quiet -p treectl -p treectl-server
treectl="$PWD/target/release/treectl"
work=$(mktemp -d /var/tmp/treectl-demo.XXXXXX)
server_pid=""
cleanup() {
  if [[ -n $server_pid ]]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ treectl %s\n' "$*" | sed "s|$work/||g"; "$treectl" "$@" 2>&1 | sed "s|$work/||g"; }
status() { run status --sysroot "$sysroot"; }

release="$work/release"        # the release engineers' repository
served="$work/served"          # what the server publishes
sysroot="$work/machine"        # a client machine's root
lock="$work/os.lock"
export TREECTL_MIN_FREE=0      # the demo's machine is a directory on a busy disk

step "components: bundled samples, plus real Debian packages when available"
comp="$work/components"
mkdir -p "$comp/base/etc" "$comp/base/usr/bin" "$comp/base/var/lib" "$comp/app/usr/bin" "$comp/app/etc"
printf 'NAME="treectl demo OS"\n' > "$comp/base/etc/os-release"
printf 'Welcome to the treectl demo.\n' > "$comp/base/etc/motd"
cp /bin/true "$comp/base/usr/bin/true"
printf '#!/bin/sh\necho "hello from release 1"\n' > "$comp/app/usr/bin/hello"
chmod 755 "$comp/app/usr/bin/hello"
printf 'greeting = release 1\n' > "$comp/app/etc/app.conf"
debs=()
corpus_debs="${TREECTL_CORPUS:-/var/tmp/treectl-corpus}/debs"
mkdir -p "$work/debs"
for pkg in hostname netbase; do
  if compgen -G "$corpus_debs/${pkg}_*.deb" >/dev/null; then
    cp "$(ls "$corpus_debs/${pkg}"_*.deb | head -n 1)" "$work/debs/"
  elif command -v apt-get >/dev/null; then
    (cd "$work/debs" && timeout 60 apt-get download -q "$pkg" >/dev/null 2>&1) || true
  fi
done
for f in "$work"/debs/*.deb; do [[ -e $f ]] && debs+=("$f"); done
if ((${#debs[@]})); then echo "real packages: ${debs[*]##*/}"; else echo "no .deb at hand: bundled components only"; fi

step "release 1: lock the components and compose os/stable"
run --repo "$release" init --mode archive
for d in "${debs[@]}"; do run --repo "$release" lock add --lockfile "$lock" --deb "$d"; done
run --repo "$release" lock add --lockfile "$lock" --dir "$comp/base" --name base
run --repo "$release" lock add --lockfile "$lock" --dir "$comp/app" --name app
# Two packages and two directories are not a whole Debian system (no dpkg):
# compose them as a plain merge, without the configure step.
sed -i 's/^\[compose\]$/[compose]\nconfigure = false/' "$lock"
run --repo "$release" compose --lockfile "$lock" --ref os/stable
run --repo "$release" show --components os/stable

step "serve it: a signing key, a publish token, treectl serve on loopback"
run keygen --out "$work/release.key"
token="demo-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
printf '%s\n' "$token" > "$work/publish.token"
printf '[[token]]\nname = "release-engineer"\nscope = "publish"\nsha256 = "%s"\n' \
  "$(printf '%s' "$token" | sha256sum | cut -d' ' -f1)" > "$work/tokens.toml"
"$treectl" --repo "$served" init --mode archive >/dev/null
"$treectl" serve --repo "$served" --listen 127.0.0.1:0 --sign-key "$work/release.key" \
  --tokens "$work/tokens.toml" > "$work/serve.out" 2> "$work/serve.log" &
server_pid=$!
for _ in $(seq 1 100); do [[ -s $work/serve.out ]] && break; sleep 0.1; done
url=$(sed -n 's/^listening on //p' "$work/serve.out")
[[ -n $url ]] || { echo "treectl serve did not start:"; cat "$work/serve.log"; exit 1; }
echo "serving at $url"
run --repo "$release" push "$url" os/stable --token-file "$work/publish.token"

step "install a machine from the server (signed index, trusted key)"
# The machine's disk will be an ext4 image with this UUID (the boot step).
uuid=5e1f7a52-6b0e-4c7e-9a43-0c2f6d1b9e11
run install --sysroot "$sysroot" --url "$url" --trusted-key "$work/release.key.pub" \
  --root-arg "root=UUID=$uuid" --karg rw origin:os/stable
status

step "the admin edits /etc/app.conf and keeps data in /var"
deployment=$(ls -d "$sysroot"/treectl/deploy/os/*.0 | head -n 1)
printf 'greeting = changed by the admin\n' > "$deployment/etc/app.conf"
mkdir -p "$sysroot/treectl/deploy/os/var/lib/demo"
printf 'precious data\n' > "$sysroot/treectl/deploy/os/var/lib/demo/data"
echo "/etc/app.conf: $(cat "$deployment/etc/app.conf")"

step "release 2: the app component changes; compose and publish"
printf '#!/bin/sh\necho "hello from release 2"\n' > "$comp/app/usr/bin/hello"
run --repo "$release" compose --lockfile "$lock" --ref os/stable
run --repo "$release" push "$url" os/stable --token-file "$work/publish.token"

step "the machine stages the upgrade, and finalizes it at shutdown"
run upgrade --sysroot "$sysroot" --stage
status
run finalize-staged --sysroot "$sysroot"
status
default=$("$treectl" status --sysroot "$sysroot" --json | sed -n 's/.*"path": "\(.*\)".*/\1/p' | head -n 1)
echo "new default: $(sh "$default/usr/bin/hello"); /etc/app.conf: $(cat "$default/etc/app.conf"); /var data: $(cat "$sysroot/treectl/deploy/os/var/lib/demo/data")"

step "release 2 is bad: revert it on the server, the machine follows with no flag"
run revert "$url" os/stable --reason "release 2 breaks the app" --token-file "$work/publish.token"
run history "$url" os/stable
run upgrade --sysroot "$sysroot"
status
default=$("$treectl" status --sysroot "$sysroot" --json | sed -n 's/.*"path": "\(.*\)".*/\1/p' | head -n 1)
echo "default now says: $(sh "$default/usr/bin/hello")"

step "a local rollback returns to the previous deployment"
run rollback --sysroot "$sysroot"
status

step "release 3: a whole Debian system with an initramfs from packages, booted in qemu"
archive=$(sed -n 's/^URIs: *\([^ ]*\).*/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n 1 || true)
suite=$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}")
missing=""
[[ $(id -u) == 0 ]] || missing+=" root"
for tool in bwrap:bubblewrap qemu-system-x86_64:qemu-system-x86 mkfs.ext4:e2fsprogs strip:binutils; do
  command -v "${tool%%:*}" >/dev/null || missing+=" ${tool%%:*} (apt-get install ${tool#*:})"
done
[[ -n $archive && -n $suite ]] || missing+=" apt's Debian archive (URIs: in /etc/apt/sources.list.d/*.sources)"
if [[ -n $missing ]]; then
  echo "skipping the boot: this machine lacks$missing"
else
  boot_lock="$work/bootable.lock"
  minbase=$(apt-cache dumpavail | awk -v RS= '/\nPriority: required/ { sub(/^Package: /, ""); sub(/\n.*/, ""); print }' | sort -u)
  # shellcheck disable=SC2086
  run --repo "$release" lock add --lockfile "$boot_lock" --apt "$archive $suite main" --arch amd64 \
    --with-deps apt $minbase systemd-sysv udev dbus openssh-server kmod linux-image-cloud-amd64 busybox-static \
    | tail -n 3
  run --repo "$release" lock add --lockfile "$boot_lock" --dir "$PWD/client/initramfs/tree" --name treectl-initramfs
  # treectl itself, and a unit that prints its status on the console and
  # powers the VM off once the system is up.
  report="$comp/console-report"
  mkdir -p "$report/usr/bin" "$report/usr/lib/systemd/system/multi-user.target.wants"
  strip -o "$report/usr/bin/treectl" "$treectl"
  printf '%s\n' '[Unit]' 'Description=Print treectl status on the console' 'After=multi-user.target' \
    '[Service]' 'Type=oneshot' 'StandardOutput=tty' 'StandardError=tty' 'TTYPath=/dev/ttyS0' \
    'ExecStart=/bin/sh -c "echo ===== booted: treectl status; treectl status; echo ====="' \
    'ExecStartPost=/usr/bin/systemctl --no-block poweroff' \
    > "$report/usr/lib/systemd/system/treectl-console-status.service"
  ln -sf ../treectl-console-status.service "$report/usr/lib/systemd/system/multi-user.target.wants/"
  run --repo "$release" lock add --lockfile "$boot_lock" --dir "$report" --name console-report
  printf '\n[initramfs]\ncomponents = ["busybox-static", "treectl-initramfs"]\nmodules = ["virtio_pci", "virtio_blk", "ext4"]\n' >> "$boot_lock"
  run --repo "$release" compose --lockfile "$boot_lock" --ref os/stable | tail -n 4
  run --repo "$release" push "$url" os/stable --token-file "$work/publish.token"
  run upgrade --sysroot "$sysroot"
  status
  echo "the machine's disk: mkfs.ext4 -d of its sysroot, UUID $uuid"
  truncate -s 4G "$work/disk.img"
  mkfs.ext4 -q -F -U "$uuid" -d "$sysroot" "$work/disk.img"
  # Play the boot loader: the entry treectl status names as the one it starts.
  # (No getty on the console: its hangup of ttyS0 could cut the report short.)
  entry=$("$treectl" status --sysroot "$sysroot" --json | tr -d '\n ' |
    sed -n 's/.*"loader_default":true,[^{]*"boot_entry":{"file":"\([^"]*\)".*/\1/p')
  [[ -n $entry ]] || { echo "no default boot entry found"; exit 1; }
  conf="$sysroot/boot/loader/entries/$entry"
  linux=$(sed -n 's/^linux  *//p' "$conf"); initrd=$(sed -n 's/^initrd  *//p' "$conf")
  options=$(sed -n 's/^options  *//p' "$conf" | paste -sd' ')
  echo "booting $entry: $options"
  timeout 600 qemu-system-x86_64 -accel tcg -smp 2 -m 1024 -display none -no-reboot -nodefaults -net none \
    -serial "file:$work/console.log" -kernel "$sysroot/boot$linux" -initrd "$sysroot/boot$initrd" \
    -append "$options console=ttyS0 panic=-1 systemd.getty_auto=0" -drive "file=$work/disk.img,format=raw,if=virtio,cache=unsafe" || true
  echo "the VM's console, from the booted system:"
  tr -d '\r' < "$work/console.log" | sed -n '/===== booted/,/^=====$/p' | grep . ||
    { echo "no status on the console; its last lines:"; tail -n 30 "$work/console.log"; exit 1; }
fi

echo
echo "demo finished; everything was in $work (now removed)"
