#!/usr/bin/env bash
# bench/compose.sh: compose corpus v1 from already-imported components, next to
# `dpkg-deb -x` of the same packages followed by `ostree commit` of the result
# into an archive repository; then recompose after the v2 bump (9 packages
# changed, components already imported) next to the first compose.
#
# Each run starts from a hardlink copy (`cp -al`, untimed) of a repository that
# holds every v1 and v2 component but no compose, so every first compose writes
# its merged trees and starts with an empty compose cache; the recompose runs in
# the same copy right after it (cache warm from v1), as a CI bot's would.
#
# Runs on a fresh journaled filesystem (../shared/corpus/benchfs.sh) mounted at
# $BENCH_DIR (default /mnt/compose-bench), reports medians of $BENCH_RUNS runs
# (default 5), and replaces its own section of docs/benchmarks.md. Every timing
# ends with `sync`. Checks once that the recompose (cache warm) gives the same
# commit as composing v2 with the cache cleared.
#
# Needs root, the corpus (../shared/corpus/build.sh), dpkg-deb and ostree.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
shared=${SHARED_DIR:-$here/../shared}
corpus=${CORPUS_DIR:-/var/tmp/treectl-corpus}
runs=${BENCH_RUNS:-5}
mnt=${BENCH_DIR:-/mnt/compose-bench}
doc=$here/docs/benchmarks.md

die() { echo "bench/compose.sh: $*" >&2; exit 1; }
[[ $(id -u) == 0 ]] || die "needs root (benchfs mount, dpkg-deb owners)"
[[ -f $corpus/lists/pkgs-v1.txt ]] || die "corpus not found at $corpus; build it with $shared/corpus/build.sh"
command -v dpkg-deb >/dev/null || die "dpkg-deb is missing"
command -v ostree >/dev/null || die "ostree is missing (apt-get install ostree)"

# The .deb files of a corpus list.
debs_of() {
  local name version arch f
  while read -r name version arch; do
    [[ -n $name ]] || continue
    f=$corpus/debs/${name}_${version//:/%3a}_${arch}.deb
    [[ -f $f ]] || die "missing $f"
    echo "$f"
  done <"$corpus/lists/$1"
}
mapfile -t debs1 < <(debs_of pkgs-v1.txt)
mapfile -t debs2 < <(debs_of pkgs-v2.txt)
changed=$(comm -13 <(printf '%s\n' "${debs1[@]}" | sort) <(printf '%s\n' "${debs2[@]}" | sort) | wc -l)

(cd "$here" && cargo build --release -q -p treectl)
treectl=$here/target/release/treectl

"$shared/corpus/benchfs.sh" mount "$mnt" 8G >/dev/null
trap '"$shared/corpus/benchfs.sh" umount "$mnt" >/dev/null' EXIT

now() { echo "$EPOCHREALTIME"; }
since() { echo "$(now) - $1" | bc; }
median() { sort -n | awk '{a[NR]=$1} END {m=int((NR+1)/2); printf "%.3f\n", (NR%2) ? a[m] : (a[m]+a[m+1])/2}'; }

# Untimed: a repository with every component of both versions, and the two
# lockfiles (the corpus keeps /var's packaged contents: no removals; the
# plain merge: bench/configure.sh measures configuring).
rm -rf "${mnt:?}"/*
"$treectl" --repo "$mnt/template" init --mode bare-user >/dev/null
for v in 1 2; do
  printf 'version = 1\n[compose]\nremove = []\nconfigure = false\n' >"$mnt/v$v.lock"
done
"$treectl" --repo "$mnt/template" lock add --lockfile "$mnt/v1.lock" --deb "${debs1[@]}" >/dev/null
"$treectl" --repo "$mnt/template" lock add --lockfile "$mnt/v2.lock" --deb "${debs2[@]}" >/dev/null
lock_changes=$("$treectl" --repo "$mnt/template" lock diff "$mnt/v1.lock" "$mnt/v2.lock" | grep -c . || true)
sync

t_first=() t_re=() t_ostree=()
for ((i = 1; i <= runs; i++)); do
  rm -rf "${mnt:?}/run" "${mnt:?}/root" "${mnt:?}/ostree"
  cp -al "$mnt/template" "$mnt/run"
  rm -rf "$mnt/run/state/compose-cache"
  sync
  s=$(now)
  "$treectl" --repo "$mnt/run" compose --lockfile "$mnt/v1.lock" --ref os/v1 >/dev/null
  sync
  t_first+=("$(since "$s")")

  s=$(now)
  "$treectl" --repo "$mnt/run" compose --lockfile "$mnt/v2.lock" --ref os/v2 >/dev/null
  sync
  t_re+=("$(since "$s")")

  ostree --repo="$mnt/ostree" init --mode=archive
  sync
  s=$(now)
  for f in "${debs1[@]}"; do dpkg-deb -x "$f" "$mnt/root"; done
  ostree --repo="$mnt/ostree" commit -b os/v1 --tree=dir="$mnt/root" >/dev/null
  sync
  t_ostree+=("$(since "$s")")
  echo "run $i: compose ${t_first[-1]} s, recompose ${t_re[-1]} s, dpkg-deb -x + ostree commit ${t_ostree[-1]} s" >&2
done

# Correctness, once: the cached recompose equals an uncached compose of v2.
warm=$("$treectl" --repo "$mnt/run" rev-parse os/v2)
rm -rf "$mnt/run/state/compose-cache"
cold=$("$treectl" --repo "$mnt/run" compose --lockfile "$mnt/v2.lock" --ref os/v2-cold)
[[ $warm == "$cold" ]] || die "recompose with the cache gave $warm, without it $cold"
stats=$("$treectl" --repo "$mnt/run" compose --lockfile "$mnt/v1.lock" --ref os/v1-stats --json)
rm -rf "$mnt/run/state/compose-cache"
cold_stats=$("$treectl" --repo "$mnt/run" compose --lockfile "$mnt/v1.lock" --ref os/v1-cold --json)
rm -rf "$mnt/run/state/compose-cache"
"$treectl" --repo "$mnt/run" compose --lockfile "$mnt/v1.lock" --ref os/v1-again >/dev/null
re_stats=$("$treectl" --repo "$mnt/run" compose --lockfile "$mnt/v2.lock" --ref os/v2-stats --json)
merged_first=$(jq .stats.merged_dirs <<<"$cold_stats")
merged_re=$(jq .stats.merged_dirs <<<"$re_stats")
cached_re=$(jq .stats.cached_subtrees <<<"$re_stats")
[[ $(jq .commit <<<"$stats") == $(jq .commit <<<"$cold_stats") ]] || die "v1 compose differs with and without the cache"

m_first=$(printf '%s\n' "${t_first[@]}" | median)
m_re=$(printf '%s\n' "${t_re[@]}" | median)
m_ostree=$(printf '%s\n' "${t_ostree[@]}" | median)
vs_ostree=$(echo "scale=1; $m_ostree / $m_first" | bc)
vs_first=$(echo "scale=1; $m_first / $m_re" | bc)

section=$(cat <<EOF
<!-- bench/compose.sh begin -->
## Composing an OS tree (bench/compose.sh)

Corpus v1: ${#debs1[@]} packages, components already imported into a bare-user
repository; v2 changes $changed of them (\`lock diff\` lists $lock_changes). Medians of $runs runs on a fresh
journaled ext4 (benchfs.sh), $(nproc) cores, $(date -u +%Y-%m-%d). Each timing ends with
\`sync\`; every run starts from an untimed hardlink copy of the repository without any
compose and with an empty compose cache.

| what | median (s) | |
| --- | --- | --- |
| \`treectl compose\` of v1 (first compose, cache empty) | $m_first | |
| \`dpkg-deb -x\` of the same ${#debs1[@]} packages + \`ostree commit\` into an archive repo | $m_ostree | compose is ${vs_ostree}x as fast |
| \`treectl compose\` of v2 right after v1 (the recompose, cache warm) | $m_re | ${vs_first}x as fast as the first compose |

Directories opened and merged: $merged_first for the first compose, $merged_re for the
recompose ($cached_re merged subtrees taken from the compose cache). The recompose gives
the same commit as composing v2 with the cache cleared (checked by the script).

Goals (issue 4, acceptance 5): compose at least 20x faster than \`dpkg-deb -x\` +
\`ostree commit\`; the recompose at least 5x faster than the first compose.
<!-- bench/compose.sh end -->
EOF
)

mkdir -p "$(dirname "$doc")"
[[ -f $doc ]] || printf '# Benchmarks\n\n' >"$doc"
if grep -q '<!-- bench/compose.sh begin -->' "$doc"; then
  SECTION=$section perl -0pi -e 's/<!-- bench\/compose\.sh begin -->.*?<!-- bench\/compose\.sh end -->/$ENV{SECTION}/s' "$doc"
else
  printf '\n%s\n' "$section" >>"$doc"
fi
echo "$section"
