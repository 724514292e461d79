# bench/common.sh: what the side-by-side benchmarks against ostree share,
# sourced by bench/pull.sh and bench/delta.sh after they set NAME (the
# script's name, e.g. "pull"): options (--quick, --help), the checks for
# root, the corpus, ostree and nginx, the treectl build, a fresh benchfs
# mount with cleanup on exit, nginx serving the work directory with an
# access log of request and bytes, the timing and statistics helpers, and
# rewriting the script's section of docs/benchmarks.md.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SHARED=${SHARED_CORPUS_TOOLS:-$ROOT/../shared/corpus}
CORPUS=${TREECTL_CORPUS:-/var/tmp/treectl-corpus}
M=${BENCH_DIR:-/mnt/$NAME-bench}
FS_SIZE=${BENCH_FS_SIZE:-8G}
RUNS=${BENCH_RUNS:-5}
DOC=$ROOT/docs/benchmarks.md
QUICK=0
BEGIN_MARK="<!-- bench/$NAME.sh begin -->"
END_MARK="<!-- bench/$NAME.sh end -->"
TS=2024-01-01T00:00:00Z

die() { printf 'bench/%s.sh: error: %s\n' "$NAME" "$*" >&2; exit 1; }
say() { printf '[bench] %s\n' "$*" >&2; }
[[ ${1:-} == --quick ]] && { QUICK=1; RUNS=1; }
if [[ ${1:-} == -h || ${1:-} == --help ]]; then
  # The script's leading comment.
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
  exit 0
fi

[[ $(id -u) == 0 ]] || die "run as root (benchfs.sh mounts a filesystem image)"
[[ -e $CORPUS/corpus-v1.done && -e $CORPUS/corpus-v2.done ]] || die "no corpus at $CORPUS; run $SHARED/build.sh"
command -v ostree >/dev/null || die "ostree is not installed (apt-get install ostree)"
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
[[ -x $NGINX ]] || die "nginx is not installed (apt-get install nginx)"

if [[ -z ${TREECTL:-} ]]; then
  say "building treectl (release)"
  (cd "$ROOT" && cargo build --release -q -p treectl -p treectl-server) || die "cargo build failed"
  TREECTL=${CARGO_TARGET_DIR:-$ROOT/target}/release/treectl
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
T() { "$TREECTL" "$@" >>"$LOG" 2>&1; }

# start_nginx: nginx serving $W (so $NG/srv1/... is $W/srv1/...), one
# worker, each request logged as "URI BYTES" in $ALOG.
start_nginx() {
  local port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
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
  server { listen 127.0.0.1:$port; root $W; disable_symlinks on;
    location ~ /(tmp|state|lock|refs)(/|$) { return 404; } }
}
EOF
  "$NGINX" -p "$W/nginx" -e "$W/nginx/error.log" -c "$W/nginx/nginx.conf" >>"$LOG" 2>&1 &
  PIDS+=($!)
  NG=http://127.0.0.1:$port
  for _ in $(seq 100); do curl -sf -o /dev/null "$NG/srv1/config" && break; sleep 0.05; done
  ALOG=$W/nginx/access.log
}
log_mark() { wc -l <"$ALOG"; }
log_since() { # LINE -> "requests bytes" logged after LINE
  tail -n +$(($1 + 1)) "$ALOG" | awk '{n++; b += $2} END {print n + 0, b + 0}'
}

# Timings and counts: add KEY VALUE collects, med/mn/mx summarise.
declare -A R  # key -> space-separated values
add() { R[$1]="${R[$1]:-} $2"; }
now() { date +%s.%N; }
since() { echo "$(now) - $1" | bc; }
med() { echo "${R[$1]}" | tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR] = $1} END {if (NR) print a[int((NR + 1) / 2)]; else print "-"}'; }
mn() { echo "${R[$1]}" | tr ' ' '\n' | grep -v '^$' | sort -g | head -1; }
mx() { echo "${R[$1]}" | tr ' ' '\n' | grep -v '^$' | sort -g | tail -1; }
ratio() { printf "%.2f" "$(echo "scale=4; $1 / $2" | bc)"; }
row() { printf '| %s | %.3f | %.3f | %.3f | %s |\n' "$1" "$(med "$2")" "$(mn "$2")" "$(mx "$2")" "$3"; }
yes_no() { if [[ $(echo "$1" | bc) == 1 ]]; then echo "**yes**"; else echo "**no**"; fi; }

# write_section FILE: prints the section and, on a full run, puts it
# between the script's markers in docs/benchmarks.md (appended the first
# time).
write_section() {
  cat "$1"
  if ((QUICK)); then say "quick run: not writing $DOC"; return 0; fi
  local tmp
  tmp=$(mktemp "$DOC.XXXXXX")
  if grep -qF "$BEGIN_MARK" "$DOC" && grep -qF "$END_MARK" "$DOC"; then
    awk -v b="$BEGIN_MARK" -v e="$END_MARK" -v sec="$1" '
      $0 == b { while ((getline l < sec) > 0) print l; skip = 1; next }
      $0 == e && skip { skip = 0; next }
      !skip { print }' "$DOC" >"$tmp"
  else
    { cat "$DOC"; echo; cat "$1"; } >"$tmp"
  fi
  chmod 644 "$tmp"
  mv -f "$tmp" "$DOC"
  say "wrote $DOC"
}
