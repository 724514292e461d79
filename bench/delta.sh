#!/usr/bin/env bash
# bench/delta.sh: treectl static deltas vs `ostree static-delta`, on the shared corpus.
#
#   bench/delta.sh              # BENCH_RUNS (default 5) runs, rewrites the docs/benchmarks.md section
#   bench/delta.sh --quick      # 1 run, prints only
#   TREECTL=/path/to/treectl bench/delta.sh
#
# Needs root (benchfs.sh mounts a fresh ext4 image), the corpus
# (../shared/corpus/build.sh), ostree and nginx. Measures, with medians:
#   1. the corpus v1 -> v2 delta: its size, and the time to generate it
#      (`treectl delta generate` vs `ostree static-delta generate`, archive repositories);
#   2. a bare-user client that has v1 pulling v2 through the delta, both from nginx
#      serving the archive repository (ostree's with the delta and an updated summary);
#      time and bytes served (nginx's access log), and the upgraded checkout against corpus-v2.
# The section between "<!-- bench/delta.sh begin -->" and "<!-- bench/delta.sh end -->"
# of docs/benchmarks.md is rewritten on a full run.
set -euo pipefail
NAME=delta
# shellcheck source=bench/common.sh
source "$(dirname "$0")/common.sh"

# --- repositories ---------------------------------------------------------------------
say "preparing treectl repositories (srv1: v1; srv2: v1 + v2), signed"
"$TREECTL" keygen --out "$W/key" >>"$LOG"
T --repo "$W/srv1" init --mode archive
C1=$("$TREECTL" --repo "$W/srv1" commit --ref os/stable --tree "$CORPUS/corpus-v1" --timestamp $TS --metadata version=1)
T publish "$W/srv1" os/stable "$C1" --sign-key "$W/key"
cp -a "$W/srv1" "$W/srv2"
C2=$("$TREECTL" --repo "$W/srv2" commit --ref os/stable --tree "$CORPUS/corpus-v2" --timestamp $TS --metadata version=2)
say "preparing ostree repositories (archive)"
ostree --repo="$W/osrv1" init --mode=archive >>"$LOG" 2>&1
O1=$(ostree --repo="$W/osrv1" commit -b stable --tree=dir="$CORPUS/corpus-v1" --timestamp=$TS 2>>"$LOG")
ostree --repo="$W/osrv1" summary -u >>"$LOG" 2>&1
cp -a "$W/osrv1" "$W/osrv2"
O2=$(ostree --repo="$W/osrv2" commit -b stable --tree=dir="$CORPUS/corpus-v2" --timestamp=$TS 2>>"$LOG")

# --- 1. generation ----------------------------------------------------------------------
for run in $(seq "$RUNS"); do
  say "generation, run $run of $RUNS"
  rm -rf "$W/srv2/deltas"
  sync; t0=$(now)
  T --repo "$W/srv2" delta generate "$C1" "$C2" || die "treectl delta generate failed; see $LOG"
  add gen:treectl "$(since "$t0")"
  ostree --repo="$W/osrv2" static-delta delete "$O1-$O2" >>"$LOG" 2>&1 || true
  sync; t0=$(now)
  ostree --repo="$W/osrv2" static-delta generate --from="$O1" --to="$O2" >>"$LOG" 2>&1 || die "ostree static-delta generate failed; see $LOG"
  add gen:ostree "$(since "$t0")"
done
T_SIZE=$(stat -c %s "$W/srv2/deltas/$C1-$C2.delta")
O_SIZE=$(find "$W/osrv2/deltas" -type f -printf '%s\n' | awk '{s += $1} END {print s + 0}')
# Publishing v2 lists the delta (already there: deltas are immutable) in the signed index.
T publish "$W/srv2" os/stable "$C2" --sign-key "$W/key"
grep -q 'deltas' "$W/srv2/summary.json" || die "the published index lists no delta"
ostree --repo="$W/osrv2" summary -u >>"$LOG" 2>&1

# --- nginx ------------------------------------------------------------------------------
start_nginx

# --- 2. pulling v2 through the delta ----------------------------------------------------
for run in $(seq "$RUNS"); do
  say "pull, run $run of $RUNS"
  rm -rf "$W/tc" "$W/oc"
  T --repo "$W/tc" init --mode bare-user
  T --repo "$W/tc" remote add v1 "$NG/srv1" --trusted-key "$W/key.pub"
  T --repo "$W/tc" remote add v2 "$NG/srv2" --trusted-key "$W/key.pub"
  T --repo "$W/tc" pull v1:os/stable
  m=$(log_mark); sync; t0=$(now)
  out=$("$TREECTL" --repo "$W/tc" pull v2:os/stable --json 2>>"$LOG" | tail -1) || die "treectl pull failed; see $LOG"
  add pull:treectl "$(since "$t0")"
  echo "$out" | grep -q '"delta"' || die "treectl did not use the delta: $out"
  echo "$out" | grep -q '"error"' && die "treectl's delta failed: $out"
  read -r n b < <(log_since "$m"); add pull:treectl:req "$n"; add pull:treectl:bytes "$b"
  ostree --repo="$W/oc" init --mode=bare-user >>"$LOG" 2>&1
  ostree --repo="$W/oc" remote add --no-gpg-verify o "$NG/osrv1" >>"$LOG" 2>&1
  ostree --repo="$W/oc" pull o stable >>"$LOG" 2>&1 || die "ostree pull v1 failed; see $LOG"
  # The same remote, now serving v2 with its delta: ostree pulls from the commit it has.
  ostree --repo="$W/oc" config set 'remote "o".url' "$NG/osrv2" >>"$LOG" 2>&1
  m=$(log_mark); sync; t0=$(now)
  ostree --repo="$W/oc" pull o stable >>"$LOG" 2>&1 || die "ostree pull v2 failed; see $LOG"
  add pull:ostree "$(since "$t0")"
  read -r n b < <(log_since "$m"); add pull:ostree:req "$n"; add pull:ostree:bytes "$b"
  tail -n "$n" "$ALOG" | grep -q '/deltas/' || die "ostree did not use its delta; see $ALOG"
done
# Correctness: the upgraded checkout equals the corpus.
"$TREECTL" --repo "$W/tc" checkout v2:os/stable "$W/co" >>"$LOG" 2>&1
CHECK=ok
diff -r --no-dereference "$CORPUS/corpus-v2" "$W/co" >>"$LOG" 2>&1 || CHECK="DIFFERS (see log)"
"$TREECTL" --repo "$W/tc" fsck >>"$LOG" 2>&1 || CHECK="$CHECK; fsck FAILED"

mb() { echo "scale=2; $1 / 1000000" | bc; }

GEN_X=$(ratio "$(med gen:ostree)" "$(med gen:treectl)")
PULL_X=$(ratio "$(med pull:ostree)" "$(med pull:treectl)")
SECTION=$W/section.md
{
  echo "$BEGIN_MARK"
  echo "## Static deltas: treectl vs ostree static-delta (bench/delta.sh)"
  echo
  echo "Measured $(date -u '+%Y-%m-%d %H:%M UTC') by \`bench/delta.sh\`; every number is from this one run."
  echo
  echo "- machine: $(nproc) CPUs, $(free -g | awk '/Mem:/ {print $2}') GiB RAM, kernel $(uname -r)"
  echo "- filesystem: $FS_DESC; servers and clients on it, over 127.0.0.1"
  echo "- treectl: $VERSION; peer: $(ostree --version | sed -n 2p | tr -d ' '), nginx $("$NGINX" -v 2>&1 | sed 's/.*: //') serving both archive repositories"
  echo "- method: $RUNS run(s), the **median** is the headline; generation into archive repositories holding v1 and v2 (the delta removed before each run); pulls into a fresh bare-user client that pulled v1 first (untimed), \`sync\` before each timed command, wall-clock time"
  echo "- check: the upgraded treectl checkout equals corpus-v2 and fsck is clean: $CHECK"
  echo
  echo "### 1. The v1 → v2 delta"
  echo
  echo "| tool | size (bytes) | generation median (s) | min (s) | max (s) |"
  echo "|---|---:|---:|---:|---:|"
  printf '| ostree static-delta generate | %s | %.3f | %.3f | %.3f |\n' "$O_SIZE" "$(med gen:ostree)" "$(mn gen:ostree)" "$(mx gen:ostree)"
  printf '| treectl delta generate | %s | %.3f | %.3f | %.3f |\n' "$T_SIZE" "$(med gen:treectl)" "$(mn gen:treectl)" "$(mx gen:treectl)"
  echo
  echo "- size: treectl $(mb "$T_SIZE") MB, ostree $(mb "$O_SIZE") MB; goal ≤ 2.0 MB: $(yes_no "$T_SIZE <= 2000000")."
  echo "- generation: ostree ÷ treectl = **${GEN_X}x**; goal ≥ 10x: $(yes_no "$GEN_X >= 10")."
  echo
  echo "### 2. A client with v1 pulls v2 through the delta (both from nginx)"
  echo
  echo "| tool | median (s) | min (s) | max (s) | served (median) |"
  echo "|---|---:|---:|---:|---:|"
  row "ostree pull" pull:ostree "$(med pull:ostree:bytes) bytes, $(med pull:ostree:req) requests"
  row "treectl pull" pull:treectl "$(med pull:treectl:bytes) bytes, $(med pull:treectl:req) requests"
  echo
  echo "- time: ostree ÷ treectl = **${PULL_X}x**; goal ≥ 3x: $(yes_no "$PULL_X >= 3")."
  echo "$END_MARK"
} >"$SECTION"
write_section "$SECTION"
