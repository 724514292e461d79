#!/usr/bin/env bash
# bench/deploy.sh: treectl deployments next to `ostree admin` (Debian's ostree 2022.7).
#
# Scenarios (same run, a fresh journaled ext4 from ../shared/corpus/benchfs.sh, medians):
#   1. deploy corpus v1 from an already-populated local repository into a sysroot that
#      already has a deployment of v1 (so the /etc merge runs)     goal: >= 1.5x faster
#        treectl deploy --sysroot S V1        vs  ostree admin deploy --os=bench --retain
#                                                 --no-prune --karg-none V1
#   2. upgrade to v2 end to end over HTTP on loopback, as a client machine does: pull v2
#      from a server holding v1 and v2 into a sysroot that has v1 deployed, then deploy it
#                                                                   goal: >= 2x faster
#        treectl: `treectl serve` of a signed archive repository; the sysroot installed
#        from it (install --url URL --trusted-key K origin:os/stable) while v1 is
#        published, then v2 published:
#          treectl upgrade --sysroot S        vs  ostree pull origin bench/v2 +
#        ostree: nginx serving the archive        ostree admin deploy --os=bench ... origin:bench/v2
#        repository (with a summary)              (timed together)
# Both trees keep /etc as /usr/etc (ostree admin deploy requires it; treectl reads its
# defaults from /usr/etc when the tree has no /etc) and get the same dummy kernel, /usr/lib/modules/6.1.0-bench/{vmlinuz,initramfs.img}:
# ostree admin deploy refuses a tree without one. Both tools write boot entries without a
# boot loader installed (ostree: none detected; treectl: BLS entries under boot/loader).
#
# Usage: bench/deploy.sh [--runs N] [--no-doc]
# Environment: TREECTL=PATH (default: cargo build --release of treectl and treectl-server;
#   `treectl serve` runs the treectl-server beside TREECTL), TREECTL_CORPUS=DIR
#   (default /var/tmp/treectl-corpus), BENCH_RUNS (default 5), BENCH_DIR (default
#   /mnt/deploy-bench), BENCH_FS_SIZE (default 8G). Needs root, ostree and nginx.
# Rewrites the section of docs/benchmarks.md between "<!-- bench/deploy.sh begin -->"
# and "<!-- bench/deploy.sh end -->".
set -euo pipefail
export LC_ALL=C
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CORPUS=${TREECTL_CORPUS:-/var/tmp/treectl-corpus}
BENCH_DIR=${BENCH_DIR:-/mnt/deploy-bench}
FS_SIZE=${BENCH_FS_SIZE:-8G}
RUNS=${BENCH_RUNS:-5}
NO_DOC=0
DOC=$ROOT/docs/benchmarks.md
BEGIN_MARK='<!-- bench/deploy.sh begin -->'
END_MARK='<!-- bench/deploy.sh end -->'
while (($#)); do
  case $1 in
    --runs) RUNS=$2; shift ;;
    --no-doc) NO_DOC=1 ;;
    -h|--help) sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench/deploy.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
die() { printf 'bench/deploy.sh: error: %s\n' "$*" >&2; exit 1; }
say() { printf '[bench] %s\n' "$*" >&2; }
((EUID == 0)) || die "needs root (loop mount, corpus owners)"
[[ -f $CORPUS/corpus-v1.done && -f $CORPUS/corpus-v2.done ]] || die "no corpus in $CORPUS: run ../shared/corpus/build.sh"
command -v ostree >/dev/null || die "ostree not installed (apt-get install ostree)"
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
[[ -x $NGINX ]] || die "nginx not installed (apt-get install nginx)"
if [[ -z ${TREECTL:-} ]]; then
  (cd "$ROOT" && cargo build --release --quiet -p treectl -p treectl-server) || die "cargo build failed"
  TREECTL=$ROOT/target/release/treectl
fi
export TREECTL_MIN_FREE=0

BENCHFS=$ROOT/../shared/corpus/benchfs.sh
PIDS=()
MOUNTED=0
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  if ((MOUNTED)); then "$BENCHFS" umount "$BENCH_DIR" >&2 || true; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
"$BENCHFS" mount "$BENCH_DIR" "$FS_SIZE" >&2
MOUNTED=1
B=$BENCH_DIR
now() { date +%s.%N; }
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
timed() { local t0 t1; sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true; t0=$(now); "$@" >/dev/null; t1=$(now); echo "$t1 - $t0" | bc -l; }

# --- the two trees, with the same dummy kernel ---------------------------------------
for v in 1 2; do
  say "copying corpus v$v"
  cp -a "$CORPUS/corpus-v$v" "$B/tree-v$v"
  mkdir -p "$B/tree-v$v/usr/lib/modules/6.1.0-bench"
  mv "$B/tree-v$v/etc" "$B/tree-v$v/usr/etc"   # ostree needs the defaults in /usr/etc
done
head -c 8388608 /dev/zero | tr '\0' 'k' >"$B/tree-v1/usr/lib/modules/6.1.0-bench/vmlinuz"
head -c 16777216 /dev/zero | tr '\0' 'i' >"$B/tree-v1/usr/lib/modules/6.1.0-bench/initramfs.img"
cp "$B/tree-v1/usr/lib/modules/6.1.0-bench/"* "$B/tree-v2/usr/lib/modules/6.1.0-bench/"

# --- origins: treectl archive repo and ostree archive repo with v1 and v2 -------------
say "committing origins"
"$TREECTL" --repo "$B/tc-origin" init --mode archive >/dev/null
TC1=$("$TREECTL" --repo "$B/tc-origin" commit --ref os/stable --tree "$B/tree-v1" --timestamp 2024-01-01T00:00:00Z --metadata version=1)
TC2=$("$TREECTL" --repo "$B/tc-origin" commit --ref os/v2 --tree "$B/tree-v2" --timestamp 2024-02-01T00:00:00Z --metadata version=2)
ostree --repo="$B/os-origin" init --mode=archive
OS1=$(ostree --repo="$B/os-origin" commit -b bench/v1 --tree=dir="$B/tree-v1" --timestamp=2024-01-01T00:00:00Z -s v1)
OS2=$(ostree --repo="$B/os-origin" commit -b bench/v2 --tree=dir="$B/tree-v2" --timestamp=2024-02-01T00:00:00Z -s v2)
ostree --repo="$B/os-origin" summary -u >/dev/null

# --- servers on loopback: treectl serve (signed index) and nginx (ostree) -------------
"$TREECTL" keygen --out "$B/key" >/dev/null
tc_publish() { "$TREECTL" publish "$B/tc-origin" os/release "$1" --sign-key "$B/key" >/dev/null; }
tc_publish "$TC1"
"$TREECTL" serve --repo "$B/tc-origin" --listen 127.0.0.1:0 >"$B/serve.out" 2>"$B/serve.err" &
PIDS+=($!)
for _ in $(seq 200); do grep -q listening "$B/serve.out" 2>/dev/null && break; sleep 0.05; done
TC_URL=$(sed -n 's/^listening on //p' "$B/serve.out")
[[ -n $TC_URL ]] || die "treectl serve did not start: $(cat "$B/serve.err")"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$B/nginx"
cat >"$B/nginx/nginx.conf" <<EOF
daemon off; master_process off; worker_processes 1;
pid $B/nginx/nginx.pid; error_log $B/nginx/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $B/nginx/body; proxy_temp_path $B/nginx/proxy;
  fastcgi_temp_path $B/nginx/fastcgi; uwsgi_temp_path $B/nginx/uwsgi; scgi_temp_path $B/nginx/scgi;
  default_type application/octet-stream; sendfile on; keepalive_requests 1000000;
  server { listen 127.0.0.1:$PORT; root $B; disable_symlinks on; }
}
EOF
"$NGINX" -p "$B/nginx" -e "$B/nginx/error.log" -c "$B/nginx/nginx.conf" >/dev/null 2>&1 &
PIDS+=($!)
OS_URL=http://127.0.0.1:$PORT/os-origin
for _ in $(seq 200); do curl -sf -o /dev/null "$OS_URL/config" && break; sleep 0.05; done
curl -sf -o /dev/null "$OS_URL/config" || die "nginx did not start"
say "servers: treectl serve at $TC_URL, nginx at $OS_URL"

# A treectl sysroot with v1 deployed from the origin (os/stable at v1).
tc_sysroot() {
  rm -rf "$1"
  "$TREECTL" --repo "$B/tc-origin" reset os/stable "$TC1" >/dev/null
  "$TREECTL" install --sysroot "$1" --from-repo "$B/tc-origin" os/stable >/dev/null
}
# A treectl sysroot with v1 installed over HTTP from `treectl serve` (v1 published).
tc_sysroot_http() {
  rm -rf "$1"
  tc_publish "$TC1"
  "$TREECTL" install --sysroot "$1" --url "$TC_URL" --trusted-key "$B/key.pub" origin:os/release >/dev/null
}
# An ostree sysroot with v1 deployed from the origin remote (URL, default file://).
os_rm() { chattr -i "$1"/ostree/deploy/*/deploy/* 2>/dev/null || true; rm -rf "$1"; }
os_sysroot() {
  os_rm "$1"; mkdir -p "$1"
  ostree admin init-fs "$1" >/dev/null
  ostree admin os-init --sysroot="$1" bench >/dev/null
  ostree --repo="$1/ostree/repo" remote add --no-gpg-verify origin "${2:-file://$B/os-origin}"
  ostree --repo="$1/ostree/repo" pull origin bench/v1 >/dev/null
  ostree admin deploy --sysroot="$1" --os=bench --karg-none origin:bench/v1 >/dev/null
}

declare -a T1 O1 T2 O2
say "scenario 1: deploy v1 from a populated repository ($RUNS runs)"
tc_sysroot "$B/tc-s1"; os_sysroot "$B/os-s1"
for ((i = 0; i < RUNS; i++)); do
  T1+=("$(timed "$TREECTL" deploy --sysroot "$B/tc-s1" "$TC1")")
  "$TREECTL" rollback --sysroot "$B/tc-s1" >/dev/null; "$TREECTL" cleanup --sysroot "$B/tc-s1" >/dev/null
  O1+=("$(timed ostree admin deploy --sysroot="$B/os-s1" --os=bench --retain --no-prune --karg-none "$OS1")")
  ostree admin undeploy --sysroot="$B/os-s1" 0 >/dev/null
  say "  run $i: treectl ${T1[-1]} s, ostree ${O1[-1]} s"
done
say "scenario 2: upgrade to v2 end to end over HTTP ($RUNS runs)"
for ((i = 0; i < RUNS; i++)); do
  tc_sysroot_http "$B/tc-s2"
  tc_publish "$TC2"
  T2+=("$(timed "$TREECTL" upgrade --sysroot "$B/tc-s2")")
  [[ $("$TREECTL" status --sysroot "$B/tc-s2" --json | grep -m1 '"commit"') == *"$TC2"* ]] || die "treectl did not deploy v2"
  rm -rf "$B/tc-s2"
  os_sysroot "$B/os-s2" "$OS_URL"
  O2+=("$(timed bash -c "ostree --repo='$B/os-s2/ostree/repo' pull origin bench/v2 && ostree admin deploy --sysroot='$B/os-s2' --os=bench --karg-none origin:bench/v2")")
  os_rm "$B/os-s2"
  say "  run $i: treectl ${T2[-1]} s, ostree ${O2[-1]} s"
done

m() { printf '%s\n' "$@" | median; }
t1=$(m "${T1[@]}") o1=$(m "${O1[@]}") t2=$(m "${T2[@]}") o2=$(m "${O2[@]}")
r1=$(echo "$o1 / $t1" | bc -l) r2=$(echo "$o2 / $t2" | bc -l)
section=$(cat <<EOT
## treectl vs OSTree: deployments (bench/deploy.sh)

Measured $(date -u '+%Y-%m-%d %H:%M UTC') by \`bench/deploy.sh\` ($RUNS runs each, medians, page cache
dropped before each timed command) on a fresh journaled ext4 (\`benchfs.sh\`), corpus v1/v2
(in both trees /etc moved to /usr/etc and the same dummy 8 MiB kernel and 16 MiB
initramfs added, both of which \`ostree admin deploy\` requires), ostree $(ostree --version | awk -F"'" '/Version/ {print $2}').

| Scenario | treectl | ostree | ostree/treectl | goal |
|---|---:|---:|---:|---:|
| 1. deploy v1 from a populated repo (hardlink checkout, /etc merge, boot entries) | $(printf '%.2f' "$t1") s | $(printf '%.2f' "$o1") s | $(printf '%.2fx' "$r1") | >= 1.5x |
| 2. upgrade to v2 end to end over HTTP on loopback (pull + deploy) | $(printf '%.2f' "$t2") s | $(printf '%.2f' "$o2") s | $(printf '%.2fx' "$r2") | >= 2x |

Runs (seconds): scenario 1 treectl ${T1[*]}; ostree ${O1[*]}. Scenario 2 treectl ${T2[*]};
ostree ${O2[*]}.
Commands: 1. \`treectl deploy --sysroot S V1\` vs \`ostree admin deploy --os=bench --retain
--no-prune --karg-none V1\` (both sysroots already hold a deployment of v1). 2. \`treectl
upgrade --sysroot S\` (the sysroot installed with \`install --url URL --trusted-key K\`
from \`treectl serve\` of a signed archive repository while v1 was published, then v2
published; the upgrade pulls the signed index and the static delta from v1 that the
publish made, over loopback HTTP, then deploys: on loopback, rebuilding a delta costs more
CPU than the bytes it saves, so \`--no-delta\` upgrades a little faster here) vs \`ostree pull origin bench/v2\` (nginx serving an archive repository with a
summary, \`--no-gpg-verify\`) then \`ostree admin deploy --os=bench --karg-none
origin:bench/v2\`, timed together. Servers, clients and repositories are on the same benchfs.
EOT
)
printf '%s\n' "$section"
if ((!NO_DOC)); then
  tmp=$(mktemp)
  if grep -qF "$BEGIN_MARK" "$DOC"; then
    SEC=$section awk -v b="$BEGIN_MARK" -v e="$END_MARK" '
      $0 == b { print; print ENVIRON["SEC"]; skip = 1; next }
      $0 == e { skip = 0 }
      !skip { print }' "$DOC" >"$tmp"
  else
    { cat "$DOC"; echo; echo "$BEGIN_MARK"; printf '%s\n' "$section"; echo "$END_MARK"; } >"$tmp"
  fi
  cat "$tmp" >"$DOC"; rm -f "$tmp"
fi
