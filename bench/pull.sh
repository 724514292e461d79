#!/usr/bin/env bash
# bench/pull.sh: treectl pull vs ostree pull, on the shared corpus, over loopback.
#
#   bench/pull.sh              # BENCH_RUNS (default 5) runs, rewrites the docs/benchmarks.md section
#   bench/pull.sh --quick      # 1 run, prints only
#   TREECTL=/path/to/treectl bench/pull.sh
#
# Needs root (benchfs.sh mounts a fresh ext4 image), the corpus
# (../shared/corpus/build.sh), ostree and nginx. Measures, with medians:
#   1. full pull of corpus v1 into a fresh bare-user repository: treectl from
#      `treectl serve` (batched fetch), treectl from nginx with packs (Range
#      requests) and without (`--no-packs`, plain GETs), and `ostree pull` from
#      nginx serving an archive repository of the same content;
#   2. the incremental v1 -> v2 pull: time, requests and bytes, against the
#      compressed size of the objects v2 adds (from `treectl serve`, and from
#      nginx with packs).
# The section between "<!-- bench/pull.sh begin -->" and "<!-- bench/pull.sh end -->"
# of docs/benchmarks.md is rewritten on a full run.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHARED=${SHARED_CORPUS_TOOLS:-$ROOT/../shared/corpus}
CORPUS=${TREECTL_CORPUS:-/var/tmp/treectl-corpus}
M=${BENCH_DIR:-/mnt/pull-bench}
FS_SIZE=${BENCH_FS_SIZE:-8G}
RUNS=${BENCH_RUNS:-5}
DOC=$ROOT/docs/benchmarks.md
QUICK=0
BEGIN_MARK='<!-- bench/pull.sh begin -->'
END_MARK='<!-- bench/pull.sh end -->'
TS=2024-01-01T00:00:00Z

die() { printf 'bench/pull.sh: error: %s\n' "$*" >&2; exit 1; }
say() { printf '[bench] %s\n' "$*" >&2; }
[[ ${1:-} == --quick ]] && { QUICK=1; RUNS=1; }
[[ ${1:-} == -h || ${1:-} == --help ]] && { sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0; }

[[ $(id -u) == 0 ]] || die "run as root (benchfs.sh mounts a filesystem image)"
[[ -e $CORPUS/corpus-v1.done && -e $CORPUS/corpus-v2.done ]] || die "no corpus at $CORPUS; run $SHARED/build.sh"
command -v ostree >/dev/null || die "ostree is not installed (apt-get install ostree)"
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
[[ -x $NGINX ]] || die "nginx is not installed (apt-get install nginx)"

if [[ -z ${TREECTL:-} ]]; then
  say "building treectl (release)"
  (cd "$ROOT" && cargo build --release -q -p treectl -p treectl-server) || die "cargo build failed"
  TREECTL=$ROOT/target/release/treectl
fi
VERSION=$("$TREECTL" --version)

PIDS=()
MOUNTED=0
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if ((MOUNTED)); then "$SHARED/benchfs.sh" umount "$M" >/dev/null 2>&1 || say "WARNING: could not unmount $M"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if mountpoint -q "$M"; then "$SHARED/benchfs.sh" umount "$M" >/dev/null 2>&1 || die "cannot unmount stale $M"; fi
"$SHARED/benchfs.sh" mount "$M" "$FS_SIZE" >/dev/null || die "benchfs.sh mount $M failed"
MOUNTED=1
FS_DESC="$(findmnt -no FSTYPE --target "$M") on $(findmnt -no SOURCE --target "$M"), $FS_SIZE image, fresh (benchfs.sh)"
W=$M/work
mkdir -p "$W"
LOG=$W/bench.log
: >"$LOG"

# --- servers' repositories --------------------------------------------------------------
say "preparing treectl repositories (v1; v1 + v2), signed"
T() { "$TREECTL" "$@" >>"$LOG" 2>&1; }
"$TREECTL" keygen --out "$W/key" >>"$LOG"
T --repo "$W/srv1" init --mode archive
C1=$("$TREECTL" --repo "$W/srv1" commit --ref os/stable --tree "$CORPUS/corpus-v1" --timestamp $TS --metadata version=1)
T publish "$W/srv1" os/stable "$C1" --sign-key "$W/key"
cp -a "$W/srv1" "$W/srv2"
C2=$("$TREECTL" --repo "$W/srv2" commit --ref os/stable --tree "$CORPUS/corpus-v2" --timestamp $TS --metadata version=2)
T publish "$W/srv2" os/stable "$C2" --sign-key "$W/key"
say "preparing ostree repositories (archive)"
ostree --repo="$W/osrv1" init --mode=archive >>"$LOG" 2>&1
ostree --repo="$W/osrv1" commit -b stable --tree=dir="$CORPUS/corpus-v1" --timestamp=$TS >>"$LOG" 2>&1
ostree --repo="$W/osrv1" summary -u >>"$LOG" 2>&1
cp -a "$W/osrv1" "$W/osrv2"
ostree --repo="$W/osrv2" commit -b stable --tree=dir="$CORPUS/corpus-v2" --timestamp=$TS >>"$LOG" 2>&1
ostree --repo="$W/osrv2" summary -u >>"$LOG" 2>&1

# Compressed size of the objects v2 adds (what an ideal incremental pull moves).
added_bytes() { # OLD NEW -> bytes of object files in NEW/objects not in OLD/objects
  comm -13 <(cd "$1/objects" && find . -type f | sort) <(cd "$2/objects" && find . -type f | sort) |
    (cd "$2/objects" && xargs -r stat -c %s) | awk '{s += $1} END {print s + 0}'
}
T_ADDED=$(added_bytes "$W/srv1" "$W/srv2")
O_ADDED=$(added_bytes "$W/osrv1" "$W/osrv2")
T_OBJS=$(find "$W/srv1/objects" -type f | wc -l)
O_OBJS=$(find "$W/osrv1/objects" -type f | wc -l)

# --- servers ----------------------------------------------------------------------------
start_serve() { # REPO -> sets URL
  local out=$W/serve-$RANDOM.out
  "$TREECTL" serve --repo "$1" --listen 127.0.0.1:0 >"$out" 2>>"$LOG" &
  PIDS+=($!)
  for _ in $(seq 100); do grep -q listening "$out" 2>/dev/null && break; sleep 0.05; done
  URL=$(sed -n 's/^listening on //p' "$out")
  [[ -n $URL ]] || die "treectl serve did not start"
}
start_serve "$W/srv1"; SERVE1=$URL
start_serve "$W/srv2"; SERVE2=$URL
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$W/nginx"
cat >"$W/nginx/nginx.conf" <<EOF
daemon off; master_process off; worker_processes 1;
pid $W/nginx/nginx.pid; error_log $W/nginx/error.log;
events { worker_connections 1024; }
http {
  log_format bytes '\$request_uri \$bytes_sent';
  access_log $W/nginx/access.log bytes;
  client_body_temp_path $W/nginx/body; proxy_temp_path $W/nginx/proxy;
  fastcgi_temp_path $W/nginx/fastcgi; uwsgi_temp_path $W/nginx/uwsgi; scgi_temp_path $W/nginx/scgi;
  default_type application/octet-stream; sendfile on; keepalive_requests 1000000;
  server { listen 127.0.0.1:$PORT; root $W; disable_symlinks on;
    location ~ /(tmp|state|lock|refs)(/|$) { return 404; } }
}
EOF
"$NGINX" -p "$W/nginx" -e "$W/nginx/error.log" -c "$W/nginx/nginx.conf" >>"$LOG" 2>&1 &
PIDS+=($!)
NG=http://127.0.0.1:$PORT
for _ in $(seq 100); do curl -sf -o /dev/null "$NG/srv1/config" && break; sleep 0.05; done
ALOG=$W/nginx/access.log

# --- measuring ----------------------------------------------------------------------------
declare -A R  # key -> space-separated values
add() { R[$1]="${R[$1]:-} $2"; }
now() { date +%s.%N; }
log_mark() { wc -l <"$ALOG"; }
log_since() { # LINE -> "requests bytes"
  tail -n +$(($1 + 1)) "$ALOG" | awk '{n++; b += $2} END {print n + 0, b + 0}'
}
tpull() { # REPO TARGET [ARGS...] -> the done line's bytes_fetched in $BYTES; time in $ELAPSED
  local t0 t1 out repo=$1 target=$2
  shift 2
  sync
  t0=$(now)
  out=$("$TREECTL" --repo "$repo" pull "$target" --json "$@" 2>>"$LOG" | tail -1) || die "treectl pull $target failed; see $LOG"
  t1=$(now)
  ELAPSED=$(echo "$t1 - $t0" | bc)
  BYTES=$(echo "$out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["bytes_fetched"])')
}
opull() { # REPO REMOTE
  local t0 t1
  sync
  t0=$(now)
  ostree --repo="$1" pull "$2" stable >>"$LOG" 2>&1 || die "ostree pull failed; see $LOG"
  t1=$(now)
  ELAPSED=$(echo "$t1 - $t0" | bc)
}
for run in $(seq "$RUNS"); do
  say "run $run of $RUNS"
  rm -rf "$W/tc" "$W/tn" "$W/tp" "$W/oc"
  # Full pulls.
  T --repo "$W/tc" init --mode bare-user
  T --repo "$W/tc" remote add origin "$SERVE1" --trusted-key "$W/key.pub"
  T --repo "$W/tc" remote add next "$SERVE2" --trusted-key "$W/key.pub"
  tpull "$W/tc" origin:os/stable; add full:treectl "$ELAPSED"; add full:treectl:bytes "$BYTES"
  T --repo "$W/tn" init --mode bare-user
  T --repo "$W/tn" remote add origin "$NG/srv1" --trusted-key "$W/key.pub"
  m=$(log_mark)
  tpull "$W/tn" origin:os/stable --no-packs; add full:treectl-nginx "$ELAPSED"
  read -r n _ < <(log_since "$m"); add full:treectl-nginx:req "$n"
  T --repo "$W/tp" init --mode bare-user
  T --repo "$W/tp" remote add origin "$NG/srv1" --trusted-key "$W/key.pub"
  T --repo "$W/tp" remote add next "$NG/srv2" --trusted-key "$W/key.pub"
  m=$(log_mark)
  tpull "$W/tp" origin:os/stable; add full:treectl-packs "$ELAPSED"
  read -r n b < <(log_since "$m"); add full:treectl-packs:req "$n"; add full:treectl-packs:bytes "$b"
  ostree --repo="$W/oc" init --mode=bare-user >>"$LOG" 2>&1
  ostree --repo="$W/oc" remote add --no-gpg-verify o1 "$NG/osrv1" >>"$LOG" 2>&1
  ostree --repo="$W/oc" remote add --no-gpg-verify o2 "$NG/osrv2" >>"$LOG" 2>&1
  m=$(log_mark)
  opull "$W/oc" o1; add full:ostree "$ELAPSED"
  read -r n b < <(log_since "$m"); add full:ostree:req "$n"; add full:ostree:bytes "$b"
  # Incremental v1 -> v2.
  tpull "$W/tc" next:os/stable; add inc:treectl "$ELAPSED"; add inc:treectl:bytes "$BYTES"
  m=$(log_mark)
  tpull "$W/tp" next:os/stable; add inc:treectl-packs "$ELAPSED"
  read -r n b < <(log_since "$m"); add inc:treectl-packs:req "$n"; add inc:treectl-packs:bytes "$b"
  m=$(log_mark)
  opull "$W/oc" o2; add inc:ostree "$ELAPSED"
  read -r n b < <(log_since "$m"); add inc:ostree:req "$n"; add inc:ostree:bytes "$b"
done
# Correctness: the pulled checkouts equal the corpus.
CHECK=ok
for c in tc tp; do
  "$TREECTL" --repo "$W/$c" checkout next:os/stable "$W/co-$c" >>"$LOG" 2>&1
  diff -r --no-dereference "$CORPUS/corpus-v2" "$W/co-$c" >>"$LOG" 2>&1 || CHECK="$c DIFFERS (see log)"
  "$TREECTL" --repo "$W/$c" fsck >>"$LOG" 2>&1 || CHECK="$CHECK; $c fsck FAILED"
done

med() { echo "${R[$1]}" | tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR] = $1} END {if (NR) print a[int((NR + 1) / 2)]; else print "-"}'; }
mn() { echo "${R[$1]}" | tr ' ' '\n' | grep -v '^$' | sort -g | head -1; }
mx() { echo "${R[$1]}" | tr ' ' '\n' | grep -v '^$' | sort -g | tail -1; }
ratio() { printf "%.2f" "$(echo "scale=4; $1 / $2" | bc)"; }
row() { printf '| %s | %.3f | %.3f | %.3f | %s |\n' "$1" "$(med "$2")" "$(mn "$2")" "$(mx "$2")" "$3"; }
mib() { echo "scale=1; $1 / 1048576" | bc; }

FO=$(med full:ostree); FT=$(med full:treectl); IO=$(med inc:ostree); IT=$(med inc:treectl)
FULL_X=$(ratio "$FO" "$FT"); INC_X=$(ratio "$IO" "$IT")
FP=$(med full:treectl-packs); FP_REQ=$(med full:treectl-packs:req); PACK_X=$(ratio "$FP" "$FT")
IB=$(med inc:treectl:bytes); BYTES_X=$(echo "scale=3; $IB / $T_ADDED" | bc)
yes_no() { if [[ $(echo "$1" | bc) == 1 ]]; then echo "**yes**"; else echo "**no**"; fi; }
SECTION=$W/section.md
{
  echo "$BEGIN_MARK"
  echo "## treectl pull vs ostree pull (bench/pull.sh)"
  echo
  echo "Measured $(date -u '+%Y-%m-%d %H:%M UTC') by \`bench/pull.sh\`; every number is from this one run."
  echo
  echo "- machine: $(nproc) CPUs, $(free -g | awk '/Mem:/ {print $2}') GiB RAM, kernel $(uname -r)"
  echo "- filesystem: $FS_DESC; servers and clients on it, over 127.0.0.1"
  echo "- treectl: $VERSION, \`treectl serve\` (batched \`/v1/objects/fetch\`) and nginx (Range requests of the published packs, or plain GETs with \`--no-packs\`), default \`--jobs 8\`, signed index and commits verified"
  echo "- peer: $(ostree --version | sed -n 2p | tr -d ' ') pulling from nginx ($("$NGINX" -v 2>&1 | sed 's/.*: //')), archive repository, \`--no-gpg-verify\`"
  echo "- corpus: v1 = $T_OBJS treectl objects / $O_OBJS ostree objects; v2 adds $(mib "$T_ADDED") MiB of compressed treectl objects ($(mib "$O_ADDED") MiB for ostree)"
  echo "- method: $RUNS run(s), the **median** is the headline; fresh bare-user client repository each run; page cache warm; \`sync\` before each timed command; wall-clock time of the pull command"
  echo "- check: the v2 checkouts of the last run (pulled from \`treectl serve\` and from nginx with packs) equal corpus-v2 and fsck is clean: $CHECK"
  echo
  echo "### 1. Full pull of corpus v1 into a fresh bare-user repository"
  echo
  echo "| tool | median (s) | min (s) | max (s) | requests (median) |"
  echo "|---|---:|---:|---:|---:|"
  row "ostree pull from nginx" full:ostree "$(med full:ostree:req)"
  row "treectl pull from nginx, plain GETs (\`--no-packs\`)" full:treectl-nginx "$(med full:treectl-nginx:req)"
  row "full pull from nginx with packs" full:treectl-packs "$FP_REQ ($(med full:treectl-packs:bytes) bytes)"
  row "treectl pull from treectl serve" full:treectl "batched"
  echo
  echo "- ostree ÷ treectl (serve): **${FULL_X}x**; goal ≥ 3x: $(yes_no "$FULL_X >= 3")."
  echo "- nginx with packs: **$FP_REQ requests**, goal ≤ 100: $(yes_no "$FP_REQ <= 100"); time ÷ treectl (serve) = **${PACK_X}x**, goal ≤ 1.2x: $(yes_no "$PACK_X <= 1.2")."
  echo
  echo "### 2. Incremental pull v1 → v2"
  echo
  echo "| tool | median (s) | min (s) | max (s) | bytes transferred (median) |"
  echo "|---|---:|---:|---:|---:|"
  row "ostree pull from nginx" inc:ostree "$(med inc:ostree:bytes) ($(med inc:ostree:req) requests)"
  row "treectl pull from treectl serve" inc:treectl "$IB"
  row "treectl pull from nginx with packs" inc:treectl-packs "$(med inc:treectl-packs:bytes) ($(med inc:treectl-packs:req) requests)"
  echo
  echo "- time: ostree ÷ treectl = **${INC_X}x**; goal ≥ 2x: $(yes_no "$INC_X >= 2")."
  echo "- bytes: treectl moved $IB bytes (response bodies: index, signature, objects) for $T_ADDED bytes of added compressed objects: **${BYTES_X}x**; goal ≤ 1.1x: $(yes_no "$BYTES_X <= 1.1")."
  echo "$END_MARK"
} >"$SECTION"
cat "$SECTION"
if ((QUICK)); then say "quick run: not writing $DOC"; exit 0; fi
tmp=$(mktemp "$DOC.XXXXXX")
if grep -qF "$BEGIN_MARK" "$DOC" && grep -qF "$END_MARK" "$DOC"; then
  awk -v b="$BEGIN_MARK" -v e="$END_MARK" -v sec="$SECTION" '
    $0 == b { while ((getline l < sec) > 0) print l; skip = 1; next }
    $0 == e && skip { skip = 0; next }
    !skip { print }' "$DOC" >"$tmp"
else
  { cat "$DOC"; echo; cat "$SECTION"; } >"$tmp"
fi
chmod 644 "$tmp"
mv -f "$tmp" "$DOC"
say "wrote $DOC"
