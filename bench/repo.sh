#!/usr/bin/env bash
# bench/repo.sh: treectl next to OSTree (Debian's ostree 2022.7) on the shared corpus.
#
# Scenarios (same run, same fresh journaled ext4, warm page cache, alternating order):
#   1. commit corpus-v1 into a fresh archive repo          goal: treectl >= 4x faster
#   2. commit corpus-v1 into a fresh bare-user repo        goal: treectl >= 1.5x faster
#   3. incremental commit of a hardlink checkout of v1
#      turned into v2 by replacing the changed files      goal: treectl >= 1.5x faster
#   4. hardlink checkout of v1 from a bare-user repo,
#      with `cp -al` as the physical floor                goal: treectl <= 1.15x cp -al
#
# Prints the result tables and (full runs) rewrites the section of docs/benchmarks.md
# between "<!-- bench/repo.sh begin -->" and "<!-- bench/repo.sh end -->".
#
# Usage: bench/repo.sh [--quick] [--runs N] [--scenarios LIST] [--doc FILE | --no-doc]
#   --quick          1 run of each measurement (a smoke test); does not touch the doc
#                    unless --doc FILE is given (neither does a run where treectl is skipped)
#   --runs N         runs per measurement (default $BENCH_RUNS, else 5; at most 50)
#   --scenarios L    comma-separated subset of 1,2,3,4 (default: all)
#   --doc FILE       write the section into FILE (default docs/benchmarks.md)
#   --no-doc         only print the tables
# Environment:
#   TREECTL=PATH        use this binary instead of `cargo build --release -p treectl`
#   TREECTL_CORPUS=DIR  corpus location (default /var/tmp/treectl-corpus)
#   BENCH_RUNS=N        runs per measurement (default 5)
#   BENCH_DIR=DIR       mount point of the scratch filesystem (default /var/tmp/treectl-bench)
#   BENCH_FS_SIZE=SIZE  size of the scratch filesystem image (default 8G)
#   BENCH_TIMEOUT=SECS  limit for any single timed command (default 900)
#   BENCH_IDLE_WAIT=SECS  before measuring, wait at most this long for the machine to be idle
#                       (other processes using < BENCH_IDLE_PCT% of all CPUs; default 300 s, 25%)
#   BENCH_CMD_IDLE_WAIT=SECS  before each timed command, wait at most this long for the same
#                       (default 15 s)
# Needs root (the scratch filesystem is a loop mount; the corpus has non-root owners).
set -euo pipefail
export LC_ALL=C

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SHARED_CORPUS_TOOLS=${BENCH_CORPUS_TOOLS:-$ROOT/../shared/corpus}
CORPUS=${TREECTL_CORPUS:-/var/tmp/treectl-corpus}
BENCH_DIR=${BENCH_DIR:-/var/tmp/treectl-bench}
FS_SIZE=${BENCH_FS_SIZE:-8G}
TIMEOUT=${BENCH_TIMEOUT:-900}
IDLE_WAIT=${BENCH_IDLE_WAIT:-300}
IDLE_PCT=${BENCH_IDLE_PCT:-25}
CMD_IDLE_WAIT=${BENCH_CMD_IDLE_WAIT:-15}
RUNS=${BENCH_RUNS:-5}
SCENARIOS=1,2,3,4
DOC=$ROOT/docs/benchmarks.md
DOC_SET=0 NO_DOC=0 QUICK=0
TS=2024-01-01T00:00:00Z
BEGIN_MARK='<!-- bench/repo.sh begin -->'
END_MARK='<!-- bench/repo.sh end -->'

usage() { sed -n '2,33p' "$0" | sed 's/^# \{0,1\}//'; }
die() { printf 'bench/repo.sh: error: %s\n' "$*" >&2; exit 1; }
say() { printf '[bench] %s\n' "$*" >&2; }

while (($#)); do
  case $1 in
    --quick) QUICK=1; RUNS=1 ;;
    --runs) [[ $# -ge 2 ]] || die "--runs needs a number"; RUNS=$2; shift ;;
    --runs=*) RUNS=${1#--runs=} ;;
    --scenarios) [[ $# -ge 2 ]] || die "--scenarios needs a list such as 1,4"; SCENARIOS=$2; shift ;;
    --scenarios=*) SCENARIOS=${1#--scenarios=} ;;
    --doc) [[ $# -ge 2 ]] || die "--doc needs a file"; DOC=$2; DOC_SET=1; shift ;;
    --doc=*) DOC=${1#--doc=}; DOC_SET=1 ;;
    --no-doc) NO_DOC=1 ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
  shift
done
[[ $RUNS =~ ^[0-9]+$ ]] && ((RUNS >= 1 && RUNS <= 50)) || die "runs must be 1..50, got '$RUNS'"
[[ $SCENARIOS =~ ^[1-4](,[1-4])*$ ]] || die "--scenarios takes a list of 1,2,3,4, got '$SCENARIOS'"
[[ $TIMEOUT =~ ^[0-9]+$ ]] || die "BENCH_TIMEOUT must be seconds, got '$TIMEOUT'"
[[ $IDLE_WAIT =~ ^[0-9]+$ && $IDLE_PCT =~ ^[0-9]+$ && $CMD_IDLE_WAIT =~ ^[0-9]+$ ]] ||
  die "BENCH_IDLE_WAIT, BENCH_IDLE_PCT and BENCH_CMD_IDLE_WAIT must be integers"
((QUICK && !DOC_SET)) && NO_DOC=1
want() { [[ ,$SCENARIOS, == *,$1,* ]]; }

((EUID == 0)) || die "run as root (the scratch filesystem is a loop mount and the corpus keeps non-root owners)"
for c in mkfs.ext4 losetup timeout flock diff awk git; do
  command -v "$c" >/dev/null || die "missing command: $c"
done

# --- logs, lock ---------------------------------------------------------------
LOGDIR=$ROOT/target/bench
mkdir -p "$LOGDIR"
LOG=$LOGDIR/repo-$(date -u +%Y%m%dT%H%M%SZ).log
: >"$LOG"
say "log: $LOG"
exec 9>"$BENCH_DIR.lock"
flock -n 9 || die "another bench/repo.sh holds $BENCH_DIR.lock"

# --- scratch filesystem, cleanup ------------------------------------------------
MOUNTED=0
cleanup() {
  local rc=$?
  cd /
  if ((MOUNTED)); then
    local i
    for i in 1 2 3; do
      if "$SHARED_CORPUS_TOOLS/benchfs.sh" umount "$BENCH_DIR" >>"$LOG" 2>&1; then
        MOUNTED=0; break
      fi
      sleep 1
    done
    ((MOUNTED)) && say "WARNING: could not unmount $BENCH_DIR; run: $SHARED_CORPUS_TOOLS/benchfs.sh umount $BENCH_DIR"
  fi
  rm -f "$BENCH_DIR.lock"
  ((rc == 0)) || say "failed (exit $rc); see $LOG"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- corpus -------------------------------------------------------------------------
[[ -x $SHARED_CORPUS_TOOLS/build.sh && -x $SHARED_CORPUS_TOOLS/benchfs.sh ]] ||
  die "corpus tools not found in $SHARED_CORPUS_TOOLS (set BENCH_CORPUS_TOOLS)"
say "corpus: $SHARED_CORPUS_TOOLS/build.sh (builds once, then reuses $CORPUS)"
TREECTL_CORPUS=$CORPUS "$SHARED_CORPUS_TOOLS/build.sh" >>"$LOG" 2>&1 ||
  die "corpus build failed; see $LOG"
V1=$CORPUS/corpus-v1 V2=$CORPUS/corpus-v2 CHANGES=$CORPUS/changes.txt
[[ -d $V1 && -d $V2 && -f $CHANGES ]] || die "corpus incomplete in $CORPUS"

# --- tools ------------------------------------------------------------------------------
command -v ostree >/dev/null || { say "installing ostree"; { apt-get update && apt-get install -y ostree; } >>"$LOG" 2>&1; }
command -v ostree >/dev/null || die "ostree is not installed and apt-get install ostree failed"
OSTREE_VERSION=$(ostree --version | sed -n "s/^ *Version: *'\{0,1\}\([^']*\)'\{0,1\}$/\1/p" | head -n 1)
OSTREE_NAME="ostree ${OSTREE_VERSION:-?}"

TREECTL_OK=0 TREECTL_WHY="" TREECTL_FROM="built by \`cargo build --release -p treectl\`"
if [[ -n ${TREECTL:-} ]]; then
  TREECTL_FROM="binary given as TREECTL=$TREECTL"
  if [[ -x $TREECTL ]] && "$TREECTL" --version >>"$LOG" 2>&1; then TREECTL_OK=1
  else TREECTL_WHY="TREECTL=$TREECTL is not a working executable"; fi
else
  say "building treectl: cargo build --release -p treectl"
  if (cd "$ROOT" && timeout 3600 cargo build --release -p treectl) >>"$LOG" 2>&1; then
    TREECTL=$ROOT/target/release/treectl
    if "$TREECTL" --version >>"$LOG" 2>&1; then TREECTL_OK=1
    else TREECTL_WHY="the built $TREECTL does not run"; fi
  else
    TREECTL_WHY="cargo build --release -p treectl failed (see $LOG)"
    tail -n 15 "$LOG" | sed 's/^/    /' >&2
  fi
fi
if ((TREECTL_OK)); then
  TREECTL=$(readlink -f "$TREECTL")
  TREECTL_VERSION=$("$TREECTL" --version 2>/dev/null | head -n 1)
else
  TREECTL_VERSION="(not available)"
  say "************************************************************"
  say "SKIPPING treectl measurements: $TREECTL_WHY"
  say "only ostree and cp -al are measured in this run"
  say "************************************************************"
fi
GIT_COMMIT=$(git -C "$ROOT" rev-parse --short=12 HEAD 2>/dev/null || echo "none (no commit yet)")
[[ -n $(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null) ]] &&
  GIT_COMMIT="$GIT_COMMIT + uncommitted changes"

# --- mount the scratch filesystem and copy the corpus in -----------------------
if mountpoint -q "$BENCH_DIR"; then
  say "unmounting a stale $BENCH_DIR from an earlier run"
  "$SHARED_CORPUS_TOOLS/benchfs.sh" umount "$BENCH_DIR" >>"$LOG" 2>&1 || die "cannot unmount stale $BENCH_DIR"
fi
say "mounting a fresh journaled ext4 ($FS_SIZE) at $BENCH_DIR"
MOUNTED=1
"$SHARED_CORPUS_TOOLS/benchfs.sh" mount "$BENCH_DIR" "$FS_SIZE" >>"$LOG" 2>&1 || die "benchfs.sh mount failed; see $LOG"
M=$BENCH_DIR
FS_DESC="$(findmnt -no FSTYPE --target "$M") on $(findmnt -no SOURCE --target "$M"), $FS_SIZE image, fresh (benchfs.sh)"
say "copying corpus-v1 into the scratch filesystem"
cp -a "$V1" "$M/corpus-v1"
SRC=$M/corpus-v1
sync

# --- machine load ------------------------------------------------------------------------
# cpu_busy SECS: percent of all CPUs busy over SECS seconds (from /proc/stat)
cpu_busy() {
  local a b
  a=$(head -n 1 /proc/stat); sleep "$1"; b=$(head -n 1 /proc/stat)
  awk -v a="$a" -v b="$b" 'BEGIN {
    na = split(a, x); split(b, y); t = 0; idle = 0
    for (i = 2; i <= na && i <= 9; i++) { d = y[i] - x[i]; t += d; if (i == 5 || i == 6) idle += d }
    printf "%d", (t > 0) ? 100 * (t - idle) / t + 0.5 : 0 }'
}
BUSY_SAMPLES=()
wait_idle() {
  local waited=0 b
  b=$(cpu_busy 2)
  while ((b >= IDLE_PCT && waited < IDLE_WAIT)); do
    ((waited == 0)) && say "the machine is busy ($b% CPU used by other processes); waiting up to ${IDLE_WAIT}s for it to settle"
    b=$(cpu_busy 5); waited=$((waited + 5))
  done
  ((b < IDLE_PCT)) || say "WARNING: still $b% CPU busy after ${IDLE_WAIT}s; measuring anyway (noted in the report)"
  START_BUSY=$b
}

# --- timing -----------------------------------------------------------------------------
declare -A TIMES=()     # key "scenario:tool" -> space-separated seconds
LASTOUT=""
# timed KEY CMD...: runs CMD once (bounded by BENCH_TIMEOUT), appends its wall time to TIMES[KEY]
timed() {
  local key=$1; shift
  local out=$M/.timed.out t0 t1 rc=0
  printf '+ [%s] %s\n' "$key" "$*" >>"$LOG"
  local b w=0
  b=$(cpu_busy 0.5)
  while ((b >= IDLE_PCT && w < CMD_IDLE_WAIT)); do b=$(cpu_busy 1); w=$((w + 1)); done
  BUSY_SAMPLES+=("$b")
  printf '  (other processes: %s%% CPU)\n' "$b" >>"$LOG"
  t0=$EPOCHREALTIME
  timeout "$TIMEOUT" "$@" >"$out" 2>>"$LOG" || rc=$?
  t1=$EPOCHREALTIME
  cat "$out" >>"$LOG"
  ((rc == 0)) || die "timed command failed (exit $rc): $* (see $LOG)"
  LASTOUT=$(<"$out"); rm -f "$out"
  local dt
  dt=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.4f", b - a }')
  TIMES[$key]="${TIMES[$key]:-} $dt"
  printf '  %-22s run %2d/%d  %8.3f s\n' "$key" "$RUN" "$RUNS" "$dt" >&2
}
# quiet CMD...: untimed preparation, output to the log
quiet() { printf '+ %s\n' "$*" >>"$LOG"; timeout "$TIMEOUT" "$@" >>"$LOG" 2>&1 || die "failed: $* (see $LOG)"; }
settle() { sync; }
# order I A B [C]: the tools in rotated order for run I (alternates who goes first)
order() {
  local i=$1; shift
  local n=$# k
  for ((k = 0; k < n; k++)); do
    local idx=$(((i + k) % n + 1))
    printf '%s\n' "${!idx}"
  done
}
stat_of() { # KEY -> "median min max n" (or "- - - 0")
  local v=${TIMES[$1]:-}
  [[ -n ${v// /} ]] || { echo "- - - 0"; return; }
  tr ' ' '\n' <<<"$v" | awk 'NF' | sort -g | awk '
    { a[NR] = $1 }
    END { med = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2
          printf "%.3f %.3f %.3f %d\n", med, a[1], a[NR], NR }'
}
median_of() { local s; s=$(stat_of "$1"); echo "${s%% *}"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b + 0 == 0) print "-"; else printf "%.2f", a / b }'; }

TOOLS=(ostree)
((TREECTL_OK)) && TOOLS+=(treectl)

# --- the operations, per tool ----------------------------------------------------------
init_repo() { # TOOL REPO MODE
  rm -rf "$2"
  case $1 in
    ostree) quiet ostree --repo="$2" init --mode="$3" ;;
    treectl) quiet "$TREECTL" --repo "$2" init --mode "$3" ;;
  esac
}
commit_cmd() { # TOOL REPO REF TREE [incremental] -> prints nothing; sets CMD array
  case $1 in
    ostree)
      CMD=(ostree --repo="$2" commit -b "$3" --tree=dir="$4" --subject=bench --timestamp="$TS")
      if [[ ${5:-} == incremental ]]; then CMD+=(--link-checkout-speedup); fi ;;
    treectl)
      CMD=("$TREECTL" --repo "$2" commit --ref "$3" --tree "$4" --subject bench --timestamp "$TS") ;;
  esac
}
checkout_cmd() { # TOOL REPO REV DEST
  case $1 in
    ostree) CMD=(ostree --repo="$2" checkout -U -H "$3" "$4") ;;
    treectl) CMD=("$TREECTL" --repo "$2" checkout "$3" "$4") ;;
    cp) CMD=(cp -al "$SRC" "$4") ;;
  esac
}

# mkparents DEST_DIR V2_DIR: create missing directories of DEST_DIR with v2's owner and mode
mkparents() {
  local d=$1 s=$2
  [[ -d $d ]] && return 0
  mkparents "${d%/*}" "${s%/*}"
  mkdir "$d"
  chown --reference="$s" "$d"
  chmod --reference="$s" "$d"
}
# apply_changes DIR: turn a checkout of v1 into v2 by replacement (never writing into a
# file that may be a hardlink to a repository object).
apply_changes() {
  local dir=$1 st p n=0 dst src tmp
  while IFS=$'\t' read -r st p; do
    [[ -n $st ]] || continue
    p=${p#./}
    [[ -n $p && $p != /* && /$p/ != */../* ]] || die "bad path in $CHANGES: '$p'"
    dst=$dir/$p src=$V2/$p
    case $st in
      M|A)
        [[ -e $src || -L $src ]] || die "$CHANGES lists $st $p but $src is missing"
        mkparents "${dst%/*}" "${src%/*}"
        tmp=${dst%/*}/.bench-new.${dst##*/}
        if [[ -e $tmp || -L $tmp ]]; then rm -rf "$tmp"; fi
        cp -a "$src" "$tmp"
        if [[ -d $dst && ! -L $dst ]]; then rm -rf "$dst"; fi
        mv -fT "$tmp" "$dst" ;;
      D) rm -rf "$dst" ;;
      *) die "unknown change '$st' in $CHANGES" ;;
    esac
    n=$((n + 1))
  done <"$CHANGES"
  printf 'applied %d changes to %s\n' "$n" "$dir" >>"$LOG"
}

# meta_list DIR: type, mode, owner, size (files), target (symlinks) and path of every entry
meta_list() {
  (cd "$1" && find . -mindepth 1 \( -type f -printf '%y %#m %U:%G %s %P\n' \) -o \
    \( -type l -printf '%y - %U:%G - %P -> %l\n' \) -o \( -type d -printf '%y %#m %U:%G - %P\n' \)) | sort
}
CHECKS=()
check_tree() { # LABEL DIR REFERENCE [nometa]
  local label=$1 dir=$2 ref=$3 nd nm=0
  nd=$( (diff -r --no-dereference -q "$ref" "$dir" 2>&1 || true) | tee -a "$LOG" | wc -l)
  [[ ${4:-} == nometa ]] ||
    nm=$(diff <(meta_list "$ref") <(meta_list "$dir") | tee -a "$LOG" | grep -c '^[<>]' || true)
  if ((nd == 0)); then CHECKS+=("$label: \`diff -r\` against ${ref##*/}: identical content: **pass**")
  else CHECKS+=("$label: \`diff -r\` against ${ref##*/}: $nd differences: **FAIL** (see log)"); FAILED=1; fi
  if [[ ${4:-} == nometa ]]; then :
  elif ((nm == 0)); then CHECKS+=("$label: type, mode, owner and symlink targets match ${ref##*/}")
  else CHECKS+=("$label: type/mode/owner/symlink listing differs from ${ref##*/} in $nm lines (informational; see log)"); fi
}
FAILED=0
declare -A IDS=()
note_id() { IDS[$1]="${IDS[$1]:-} ${LASTOUT//[$'\n ']/}"; }

wait_idle

# --- scenario 1 and 2: commit v1 into a fresh repository ----------------------------
commit_fresh() { # SCENARIO MODE
  local s=$1 mode=$2 tool
  say "scenario $s: commit corpus-v1 into a fresh $mode repo ($RUNS runs)"
  for ((RUN = 1; RUN <= RUNS; RUN++)); do
    mapfile -t ORDER < <(order "$RUN" "${TOOLS[@]}")
    for tool in "${ORDER[@]}"; do
      local r=$M/s$s-$tool
      init_repo "$tool" "$r" "$mode"
      settle
      commit_cmd "$tool" "$r" bench "$SRC"
      timed "$s:$tool" "${CMD[@]}"
      note_id "$tool"
      rm -rf "$r"
    done
  done
}
want 1 && commit_fresh 1 archive
want 2 && commit_fresh 2 bare-user

# --- scenario 3: incremental commit of a modified hardlink checkout ------------------
if want 3; then
  say "scenario 3: incremental commit of a v1 checkout changed into v2 ($RUNS runs, fresh repo + checkout each)"
  for ((RUN = 1; RUN <= RUNS; RUN++)); do
    mapfile -t ORDER < <(order "$RUN" "${TOOLS[@]}")
    for tool in "${ORDER[@]}"; do
      r=$M/s3-$tool d=$M/s3-$tool-co
      rm -rf "$d"
      init_repo "$tool" "$r" bare-user
      commit_cmd "$tool" "$r" bench "$SRC"; quiet "${CMD[@]}"
      checkout_cmd "$tool" "$r" bench "$d"; quiet "${CMD[@]}"
      apply_changes "$d"
      settle
      commit_cmd "$tool" "$r" bench2 "$d" incremental
      timed "3:$tool" "${CMD[@]}"
      if ((RUN == RUNS)); then   # verify the last run's result once
        checkout_cmd "$tool" "$r" bench2 "$M/s3-verify"; quiet "${CMD[@]}"
        # ostree -U checkouts are user-mode (owners and setuid bits dropped): compare content only
        check_tree "scenario 3, $tool commit of the changed checkout (fresh checkout of bench2)" \
          "$M/s3-verify" "$V2" "$([[ $tool == ostree ]] && echo nometa || true)"
        rm -rf "$M/s3-verify"
      fi
      rm -rf "$r" "$d"
    done
  done
fi

# --- scenario 4: hardlink checkout of v1 ---------------------------------------------
if want 4; then
  say "scenario 4: hardlink checkout of corpus-v1 ($RUNS runs, fresh destination each)"
  for tool in "${TOOLS[@]}"; do
    init_repo "$tool" "$M/s4-$tool" bare-user
    commit_cmd "$tool" "$M/s4-$tool" bench "$SRC"; quiet "${CMD[@]}"
  done
  for ((RUN = 1; RUN <= RUNS; RUN++)); do
    mapfile -t ORDER < <(order "$RUN" cp "${TOOLS[@]}")
    for tool in "${ORDER[@]}"; do
      d=$M/s4-$tool-co
      rm -rf "$d"
      settle
      checkout_cmd "$tool" "$M/s4-$tool" bench "$d"
      timed "4:$tool" "${CMD[@]}"
      if [[ $tool == treectl ]] && ((RUN == RUNS)); then
        check_tree "scenario 4, treectl checkout" "$d" "$V1"
      fi
      rm -rf "$d"
    done
  done
  rm -rf "$M/s4-ostree" "$M/s4-treectl"
fi

# commit ids: the same tree must give the same id in every run and both modes
for tool in "${TOOLS[@]}"; do
  [[ -n ${IDS[$tool]:-} ]] || continue
  nid=$(tr ' ' '\n' <<<"${IDS[$tool]}" | awk 'NF' | sort -u | wc -l)
  first=$(tr ' ' '\n' <<<"${IDS[$tool]}" | awk 'NF' | head -n 1)
  if ((nid == 1)); then CHECKS+=("$tool: every commit of corpus-v1 (scenarios 1-2, all runs) gave commit id \`${first:0:16}…\`")
  else CHECKS+=("$tool: commits of corpus-v1 gave $nid different commit ids across runs/modes (see log)"); fi
done

# --- report -----------------------------------------------------------------------------
fmt_row() { # TOOLNAME KEY RATIO GOAL
  local s
  s=$(stat_of "$2")
  read -r med mn mx n <<<"$s"
  printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$1" "$med" "$mn" "$mx" "$n" "$3" "$4"
}
goal_cell() { # VALUE OP LIMIT -> yes/no/-
  awk -v v="$1" -v op="$2" -v l="$3" 'BEGIN {
    if (v == "-") { print "-"; exit }
    ok = (op == ">=") ? (v + 0 >= l + 0) : (v + 0 <= l + 0)
    print (ok ? "**yes**" : "**no**") }'
}
commit_table() { # SCENARIO TITLE GOAL
  local s=$1 o t r
  o=$(median_of "$s:ostree"); t=$(median_of "$s:treectl")
  r=$(ratio "$o" "$t")
  echo "### $s. $2"
  echo
  echo "| tool | median (s) | min (s) | max (s) | runs | ostree ÷ tool | goal: treectl ≥ ${3}x faster |"
  echo "|---|---:|---:|---:|---:|---:|---|"
  fmt_row "$OSTREE_NAME" "$s:ostree" "1.00x" "-"
  if ((TREECTL_OK)); then fmt_row "treectl" "$s:treectl" "${r}x" "$(goal_cell "$r" ">=" "$3")"
  else echo "| treectl | skipped: $TREECTL_WHY | | | | | |"; fi
  echo
}
{
  echo "$BEGIN_MARK"
  echo "## treectl vs OSTree: commit and checkout (bench/repo.sh)"
  echo
  ((QUICK)) && { echo "**Quick smoke run (1 run per measurement): not a measurement.**"; echo; }
  echo "Measured $(date -u '+%Y-%m-%d %H:%M UTC') by \`bench/repo.sh\`; every number is from this one run."
  echo
  echo "- machine: $(nproc) CPUs ($(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -n 1)), $(free -g | awk '/^Mem:/ {print $2}') GiB RAM (\`free -g\`), kernel $(uname -r)"
  echo "- filesystem: $FS_DESC; the corpus is copied into it first (\`cp -a\`) and both tools read that copy"
  echo "- peer: $(ostree --version | head -n 1 | sed 's/:$//') $OSTREE_VERSION (Debian package), default repository settings"
  echo "- treectl: $TREECTL_VERSION, git commit $GIT_COMMIT, $TREECTL_FROM"
  echo "- corpus: $(find "$SRC" -type f | wc -l) regular files, $(find "$SRC" -type l | wc -l) symlinks, $(du -sm --apparent-size "$SRC" | cut -f1) MiB (corpus-v1); v2 changes $(wc -l <"$CHANGES") paths"
  echo "- method: $RUNS run(s) per measurement, the **median** is the headline number; tools alternate which goes first in each run;"
  echo "  page cache **warm** (not dropped) for both tools; \`sync\` before each timed command; untimed preparation"
  echo "  (init, deleting old repos/checkouts) between runs. Both tools flush their objects (\`syncfs\`) before moving the ref,"
  echo "  so both commits are durable when they return. Wall-clock time of the single command."
  busy=$(printf '%s\n' "${BUSY_SAMPLES[@]:-0}" | sort -n | awk -v l="$IDLE_PCT" '{ a[NR] = $1; if ($1 >= l) n++ }
    END { printf "median %d%%, max %d%%; %d of %d timed commands started at ≥ %d%%", a[int((NR + 1) / 2)], a[NR], n, NR, l }')
  echo "- background load: other processes used $START_BUSY% of the CPUs when measuring began; just before each timed"
  echo "  command (after waiting up to ${CMD_IDLE_WAIT}s for < $IDLE_PCT%): $busy (from \`/proc/stat\`)"
  if ((START_BUSY >= IDLE_PCT)) || (($(printf '%s\n' "${BUSY_SAMPLES[@]:-0}" | sort -n | tail -n 1) >= IDLE_PCT)); then
    echo
    echo "**Warning:** the machine was not idle during this run (other processes used ≥ $IDLE_PCT% of the CPUs at times); the numbers are noisier than usual."
  fi
  echo
  want 1 && commit_table 1 "Commit corpus-v1 into a fresh archive repository" 4
  want 2 && commit_table 2 "Commit corpus-v1 into a fresh bare-user repository" 1.5
  if want 3; then
    commit_table 3 "Incremental commit: a hardlink checkout of v1 changed into v2" 1.5
    echo "Each run starts from a fresh bare-user repository with v1 committed, a fresh hardlink checkout of it"
    echo "(\`ostree checkout -U -H\`, \`treectl checkout\`), and the $(wc -l <"$CHANGES") paths of \`changes.txt\` applied by"
    echo "replacement (\`cp -a\` from corpus-v2 to a temporary name in the same directory, then \`mv -f\` over the old"
    echo "file; never writing into a hardlinked object). Only the commit of that tree to a new ref is timed"
    echo "(ostree with \`--link-checkout-speedup\`; treectl with its defaults)."
    echo
  fi
  if want 4; then
    c=$(median_of "4:cp"); o=$(median_of "4:ostree"); t=$(median_of "4:treectl")
    echo "### 4. Hardlink checkout of corpus-v1 from a bare-user repository"
    echo
    echo "| tool | median (s) | min (s) | max (s) | runs | tool ÷ cp -al | goal: treectl ≤ 1.15x cp -al |"
    echo "|---|---:|---:|---:|---:|---:|---|"
    fmt_row "\`cp -al\` (floor)" "4:cp" "1.00x" "-"
    fmt_row "$OSTREE_NAME \`checkout -U -H\`" "4:ostree" "$(ratio "$o" "$c")x" "-"
    if ((TREECTL_OK)); then
      rt=$(ratio "$t" "$c")
      fmt_row "treectl \`checkout\`" "4:treectl" "${rt}x" "$(goal_cell "$rt" "<=" 1.15)"
    else echo "| treectl | skipped: $TREECTL_WHY | | | | | |"; fi
    echo
    ((TREECTL_OK)) && { echo "ostree ÷ treectl: $(ratio "$o" "$t")x. Each run checks out into a new directory; the previous one is deleted (untimed) and \`sync\`ed first."; echo; }
  fi
  if ((${#CHECKS[@]})); then
    echo "Checks made in this run:"
    echo
    for c in "${CHECKS[@]}"; do echo "- $c"; done
    echo
  fi
  echo "$END_MARK"
} >"$LOGDIR/section.md"

echo
cat "$LOGDIR/section.md"

# --- write the doc section --------------------------------------------------------------
if ((!TREECTL_OK && !DOC_SET && !NO_DOC)); then
  NO_DOC=1
  say "treectl was skipped, so $DOC keeps its earlier numbers; pass --doc FILE to write this report anyway"
fi
if ((NO_DOC)); then
  say "not writing a doc (quick run, --no-doc or treectl skipped); pass --doc FILE to write one"
else
  mkdir -p "$(dirname "$DOC")"
  if [[ ! -f $DOC ]]; then
    cat >"$DOC" <<'EOF'
# Benchmarks

treectl is measured side by side with its peer, OSTree (Debian's `ostree` package), on the
shared corpus (`../shared/corpus/build.sh`: ~9,200 files, 244 MiB of a Debian bookworm server,
plus v2 after a real security update), inside a fresh journaled ext4 filesystem
(`../shared/corpus/benchfs.sh`). Targets come from the issues.

To reproduce, as root, from the workspace root:

    bench/repo.sh                 # 5 runs of everything, rewrites the section below
    BENCH_RUNS=9 bench/repo.sh    # more runs
    bench/repo.sh --quick         # 1 run each, a smoke test; prints only
    TREECTL=/path/to/treectl bench/repo.sh   # measure a given binary instead of building one

See `bench/README.md`. The section between the `bench/repo.sh` markers is rewritten by the
script on every full run; everything else in this file is kept.
EOF
  fi
  tmp=$(mktemp "$DOC.XXXXXX")
  if grep -qF "$BEGIN_MARK" "$DOC" && grep -qF "$END_MARK" "$DOC"; then
    awk -v b="$BEGIN_MARK" -v e="$END_MARK" -v sec="$LOGDIR/section.md" '
      $0 == b { while ((getline l < sec) > 0) print l; skip = 1; next }
      $0 == e && skip { skip = 0; next }
      !skip { print }' "$DOC" >"$tmp"
  else
    { cat "$DOC"; echo; cat "$LOGDIR/section.md"; } >"$tmp"
  fi
  chmod 644 "$tmp"
  mv -f "$tmp" "$DOC"
  say "wrote $DOC"
fi

((FAILED == 0)) || die "a correctness check failed (see the Checks list and $LOG)"
say "done"
