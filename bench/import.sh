#!/usr/bin/env bash
# bench/import.sh: import every .deb of corpus v1 into a bare-user repository,
# side by side with `dpkg-deb -x` of the same files into one directory, and with
# `dpkg-deb -x` + `ostree commit` of each package into an archive repository
# (each package its own tree, as treectl makes them).
#
# Runs on a fresh journaled filesystem (../shared/corpus/benchfs.sh) mounted at
# $BENCH_DIR (default /mnt/import-bench), reports medians of $BENCH_RUNS runs
# (default 5), and replaces its own section of docs/benchmarks.md.
#
# Needs root, the corpus (../shared/corpus/build.sh), dpkg-deb and ostree.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
shared=${SHARED_DIR:-$here/../shared}
corpus=${CORPUS_DIR:-/var/tmp/treectl-corpus}
runs=${BENCH_RUNS:-5}
mnt=${BENCH_DIR:-/mnt/import-bench}
list=$corpus/lists/pkgs-v1.txt
doc=$here/docs/benchmarks.md

[[ $(id -u) == 0 ]] || { echo "bench/import.sh: needs root (benchfs mount, dpkg-deb owners)" >&2; exit 1; }
[[ -f $list ]] || { echo "bench/import.sh: corpus not found at $corpus; build it with $shared/corpus/build.sh" >&2; exit 1; }
command -v dpkg-deb >/dev/null || { echo "bench/import.sh: dpkg-deb is missing" >&2; exit 1; }
command -v ostree >/dev/null || { echo "bench/import.sh: ostree is missing (apt-get install ostree)" >&2; exit 1; }

debs=()
while read -r name version arch; do
  [[ -n $name ]] || continue
  f=$corpus/debs/${name}_${version//:/%3a}_${arch}.deb
  [[ -f $f ]] || { echo "bench/import.sh: missing $f" >&2; exit 1; }
  debs+=("$f")
done <"$list"
bytes=$(cat "${debs[@]}" | wc -c)

(cd "$here" && cargo build --release -q -p treectl)
treectl=$here/target/release/treectl

"$shared/corpus/benchfs.sh" mount "$mnt" 8G >/dev/null
trap '"$shared/corpus/benchfs.sh" umount "$mnt" >/dev/null' EXIT

now() { date +%s.%N; }
median() { sort -n | awk '{a[NR]=$1} END {m=int((NR+1)/2); printf "%.2f\n", (NR%2) ? a[m] : (a[m]+a[m+1])/2}'; }

t_import=() t_dpkg=() t_ostree=()
for ((i = 1; i <= runs; i++)); do
  rm -rf "${mnt:?}"/*; sync
  "$treectl" --repo "$mnt/repo" init --mode bare-user >/dev/null
  s=$(now)
  "$treectl" --repo "$mnt/repo" commit --deb "${debs[@]}" >/dev/null
  sync
  t_import+=("$(echo "$(now) - $s" | bc)")

  rm -rf "${mnt:?}"/*; sync
  s=$(now)
  for f in "${debs[@]}"; do dpkg-deb -x "$f" "$mnt/root"; done
  sync
  t_dpkg+=("$(echo "$(now) - $s" | bc)")

  rm -rf "${mnt:?}"/*; sync
  ostree --repo="$mnt/ostree" init --mode=archive
  s=$(now)
  for f in "${debs[@]}"; do
    n=$(basename "$f" .deb)
    mkdir -p "$mnt/x"
    dpkg-deb -x "$f" "$mnt/x/$n"
    ostree --repo="$mnt/ostree" commit --tree=dir="$mnt/x/$n" -b "deb/${n//[^A-Za-z0-9._-]/_}" >/dev/null
  done
  sync
  t_ostree+=("$(echo "$(now) - $s" | bc)")
  echo "run $i: import ${t_import[-1]} s, dpkg-deb -x ${t_dpkg[-1]} s, dpkg-deb -x + ostree commit ${t_ostree[-1]} s" >&2
done

m_import=$(printf '%s\n' "${t_import[@]}" | median)
m_dpkg=$(printf '%s\n' "${t_dpkg[@]}" | median)
m_ostree=$(printf '%s\n' "${t_ostree[@]}" | median)
vs_dpkg=$(echo "scale=2; $m_dpkg / $m_import" | bc)
vs_ostree=$(echo "scale=2; $m_ostree / $m_import" | bc)

section=$(cat <<EOF
<!-- bench/import.sh begin -->
## Importing .deb packages (bench/import.sh)

Corpus v1: ${#debs[@]} .deb files, $((bytes / 1048576)) MiB compressed. Medians of $runs runs on a
fresh journaled ext4 (benchfs.sh), $(nproc) cores, $(date -u +%Y-%m-%d).
Each timing ends with \`sync\`.

| what | median (s) | import is |
| --- | --- | --- |
| \`treectl commit --deb\` (all files, one command) into a bare-user repo | $m_import | |
| \`dpkg-deb -x\` of each file into one directory | $m_dpkg | ${vs_dpkg}x as fast |
| \`dpkg-deb -x\` + \`ostree commit\` of each package into an archive repo | $m_ostree | ${vs_ostree}x as fast |

Goals (issue 3): import no slower than \`dpkg-deb -x\` (1.00x or more), and at least
3x faster than \`dpkg-deb -x\` + \`ostree commit\`.
<!-- bench/import.sh end -->
EOF
)

mkdir -p "$(dirname "$doc")"
[[ -f $doc ]] || printf '# Benchmarks\n\n' >"$doc"
if grep -q '<!-- bench/import.sh begin -->' "$doc"; then
  SECTION=$section perl -0pi -e 's/<!-- bench\/import\.sh begin -->.*?<!-- bench\/import\.sh end -->/$ENV{SECTION}/s' "$doc"
else
  printf '\n%s\n' "$section" >>"$doc"
fi
echo "$section"
