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
NAME=pull
# shellcheck source=bench/common.sh
source "$(dirname "$0")/common.sh"

# --- servers' repositories --------------------------------------------------------------
say "preparing treectl repositories (v1; v1 + v2), signed"
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
start_nginx

# --- measuring ----------------------------------------------------------------------------
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
  tpull "$W/tc" next:os/stable --no-delta; add inc:treectl "$ELAPSED"; add inc:treectl:bytes "$BYTES"
  m=$(log_mark)
  tpull "$W/tp" next:os/stable --no-delta; add inc:treectl-packs "$ELAPSED"
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

mib() { echo "scale=1; $1 / 1048576" | bc; }

FO=$(med full:ostree); FT=$(med full:treectl); IO=$(med inc:ostree); IT=$(med inc:treectl)
FULL_X=$(ratio "$FO" "$FT"); INC_X=$(ratio "$IO" "$IT")
FP=$(med full:treectl-packs); FP_REQ=$(med full:treectl-packs:req); PACK_X=$(ratio "$FP" "$FT")
IB=$(med inc:treectl:bytes); BYTES_X=$(echo "scale=3; $IB / $T_ADDED" | bc)
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
write_section "$SECTION"
