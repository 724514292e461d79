#!/usr/bin/env bash
# bench/load.sh: `treectl serve` against nginx serving the same repository
# directory, under wrk (64 connections, loopback), then `treectl serve`
# under load while a push of corpus v2 and its publish run.
#
#   1. small objects: GETs of every object of corpus v1 up to 16 KiB
#      (round robin), requests/s;
#   2. large objects: GETs of every object of at least 512 KiB, bytes/s;
#   each measured LOAD_ROUNDS times (default 3) for LOAD_SECONDS (default
#   10), the two servers alternating; medians and ratios reported.
#   3. the push under load: 64 clients fetch every object of v1 for 30 s
#      while `treectl push` uploads and publishes v2.
# Reports errors (non-2xx and socket errors: any fails the run) and the
# server's peak RSS (VmHWM), and rewrites its own section of
# docs/benchmarks.md (between the bench/load.sh markers). Needs root
# (benchfs mount), `wrk` and nginx (Debian packages; wrk is installed when
# missing).
#
#   bench/load.sh                  # full run, rewrites the docs section
#   bench/load.sh --no-doc         # print only
#   LOAD_SECONDS=5 LOAD_ROUNDS=1 bench/load.sh --no-doc
#   TREECTL=/path/to/treectl bench/load.sh   # (treectl-server must be beside it)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

DOC=1
[[ "${1:-}" == "--no-doc" ]] && DOC=0
SECS=${LOAD_SECONDS:-10}
ROUNDS=${LOAD_ROUNDS:-3}
PUSH_SECS=30
CLIENTS=${LOAD_CLIENTS:-64}
CORPUS=${TREECTL_CORPUS:-/var/tmp/treectl-corpus}
MNT=${LOAD_DIR:-/mnt/load-bench}
BENCHFS=$ROOT/../shared/corpus/benchfs.sh
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

[[ -e "$CORPUS/corpus-v1.done" && -e "$CORPUS/corpus-v2.done" ]] || {
  echo "corpus not built at $CORPUS: run ../shared/corpus/build.sh" >&2; exit 1; }
[[ $(id -u) == 0 ]] || { echo "run as root (benchfs mount)" >&2; exit 1; }
[[ -x $NGINX ]] || { echo "nginx is not installed (apt-get install nginx)" >&2; exit 1; }
command -v wrk >/dev/null || { apt-get install -y -qq wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }; }

if [[ -z "${TREECTL:-}" ]]; then
  cargo build --release --quiet -p treectl -p treectl-server
  TREECTL=$ROOT/target/release/treectl
fi
[[ -x "$(dirname "$TREECTL")/treectl-server" ]] || { echo "no treectl-server beside $TREECTL" >&2; exit 1; }

SERVER_PID=
NGINX_PID=
cleanup() {
  [[ -n "$SERVER_PID" ]] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null || true
  [[ -n "$NGINX_PID" ]] && kill "$NGINX_PID" 2>/dev/null && wait "$NGINX_PID" 2>/dev/null || true
  mountpoint -q "$MNT" && bash "$BENCHFS" umount "$MNT" >/dev/null 2>&1 || true
}
trap cleanup EXIT

bash "$BENCHFS" mount "$MNT" 8G >/dev/null
W=$MNT/work
mkdir -p "$W"
T() { timeout 900 "$TREECTL" "$@"; }

echo "== setup (untimed): commit v1 and v2, start the servers, push and publish v1"
T --repo "$W/src" init --mode archive >/dev/null
T --repo "$W/srv" init --mode archive >/dev/null
T keygen --out "$W/key" >/dev/null
TOKEN=load-bench-token
cat > "$W/tokens.toml" <<EOF
[[token]]
name = "bench"
scope = "publish"
sha256 = "$(printf %s "$TOKEN" | sha256sum | cut -d' ' -f1)"
EOF
T --repo "$W/src" commit --ref os/stable --tree "$CORPUS/corpus-v1" --metadata version=1 >/dev/null
"$TREECTL" serve --repo "$W/srv" --listen 127.0.0.1:0 --sign-key "$W/key" --tokens "$W/tokens.toml" \
  > "$W/server.out" 2> "$W/server.log" &
SERVER_PID=$!
for _ in $(seq 100); do grep -q listening "$W/server.out" 2>/dev/null && break; sleep 0.1; done
URL=$(sed -n 's/^listening on //p' "$W/server.out")
[[ -n "$URL" ]] || { cat "$W/server.log"; exit 1; }
TREECTL_TOKEN=$TOKEN T --repo "$W/src" push "$URL" os/stable >/dev/null 2>&1
T --repo "$W/src" commit --ref os/stable --tree "$CORPUS/corpus-v2" --metadata version=2 >/dev/null

# nginx as a static mirror would run it: one worker per CPU, sendfile, no
# access log (its fastest configuration), serving the same directory.
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$W/nginx"
cat > "$W/nginx/nginx.conf" <<EOF
daemon off; worker_processes auto;
pid $W/nginx/nginx.pid; error_log $W/nginx/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $W/nginx/body; proxy_temp_path $W/nginx/proxy;
  fastcgi_temp_path $W/nginx/fastcgi; uwsgi_temp_path $W/nginx/uwsgi; scgi_temp_path $W/nginx/scgi;
  default_type application/octet-stream; sendfile on; keepalive_requests 1000000;
  server { listen 127.0.0.1:$PORT; root $W/srv; disable_symlinks on;
    location ~ /(tmp|state|lock|refs)(/|\$) { return 404; } }
}
EOF
"$NGINX" -p "$W/nginx" -e "$W/nginx/error.log" -c "$W/nginx/nginx.conf" 2>> "$W/nginx/error.log" &
NGINX_PID=$!
NG=http://127.0.0.1:$PORT
for _ in $(seq 100); do curl -sf -o /dev/null "$NG/config" && break; sleep 0.05; done

# The objects of v1 by size, as path lists for wrk.
(cd "$W/srv" && find objects -type f -printf '%s /%p\n' | sort -k2) > "$W/objects.txt"
awk '{print $2}' "$W/objects.txt" > "$W/all.txt"
awk '$1 <= 16384 {print $2}' "$W/objects.txt" > "$W/small.txt"
awk '$1 >= 524288 {print $2}' "$W/objects.txt" > "$W/large.txt"
NOBJ=$(wc -l < "$W/all.txt")
NSMALL=$(wc -l < "$W/small.txt")
NLARGE=$(wc -l < "$W/large.txt")
LARGE_MIB=$(awk '$1 >= 524288 {s += $1} END {printf "%.1f", s / 1048576}' "$W/objects.txt")
# Both servers answer with the bytes on disk.
for p in "$(head -1 "$W/small.txt")" "$(head -1 "$W/large.txt")"; do
  curl -sf "$URL$p" | cmp -s - "$W/srv$p" || { echo "treectl serve: $p differs from the file" >&2; exit 1; }
  curl -sf "$NG$p" | cmp -s - "$W/srv$p" || { echo "nginx: $p differs from the file" >&2; exit 1; }
done

cat > "$W/paths.lua" <<'EOF'
-- Each thread walks the path list round robin from its own offset.
local paths = {}
for line in io.lines(os.getenv("PATHS")) do paths[#paths + 1] = line end
local threads = 0
setup = function(thread) thread:set("offset", threads * 7919) threads = threads + 1 end
local i = 0
request = function()
  i = i + 1
  return wrk.format("GET", paths[((i + offset) % #paths) + 1])
end
done = function(summary, latency, requests)
  io.write(string.format("requests=%d\n", summary.requests))
  io.write(string.format("bytes=%d\n", summary.bytes))
  io.write(string.format("non2xx=%d\n", summary.errors.status))
  io.write(string.format("socket_errors=%d\n", summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
  io.write(string.format("p50_ms=%.2f\n", latency:percentile(50) / 1000))
  io.write(string.format("p99_ms=%.2f\n", latency:percentile(99) / 1000))
end
EOF

ERRORS=0
declare -A VALS
# run NAME URL LIST SECONDS: one wrk run; keeps requests/s, MiB/s and latency.
run() {
  local name=$1 url=$2 list=$3 secs=$4 out=$W/wrk-$1.out
  PATHS=$list timeout $((secs + 60)) wrk -t2 -c"$CLIENTS" -d"${secs}s" --timeout 30s --latency \
    -s "$W/paths.lua" "$url" > "$out" 2>&1
  local get
  get() { sed -n "s/^$1=//p" "$out"; }
  local non2xx sockerr
  non2xx=$(get non2xx); sockerr=$(get socket_errors)
  ERRORS=$((ERRORS + non2xx + sockerr))
  VALS[$name:rps]+="$(awk -v r="$(get requests)" -v s="$secs" 'BEGIN {printf "%.0f", r / s}') "
  VALS[$name:mibs]+="$(awk -v b="$(get bytes)" -v s="$secs" 'BEGIN {printf "%.0f", b / s / 1048576}') "
  VALS[$name:p99]+="$(get p99_ms) "
  VALS[$name:err]+="$((non2xx + sockerr)) "
}
med() { tr ' ' '\n' <<< "${VALS[$1]}" | sed '/^$/d' | sort -g | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
last() { awk '{print $NF}' <<< "${VALS[$1]}"; }
sum() { tr ' ' '\n' <<< "$1" | awk '{s += $1} END {print s + 0}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }

echo "== small objects ($NSMALL of v1 up to 16 KiB) and large objects ($NLARGE of at least 512 KiB): $ROUNDS rounds of ${SECS}s, $CLIENTS connections"
# Warm-up, not counted: the page cache and both servers' first connections.
for u in "$URL" "$NG"; do
  for l in small large; do
    PATHS=$W/$l.txt timeout 60 wrk -t2 -c"$CLIENTS" -d2s -s "$W/paths.lua" "$u" > /dev/null 2>&1
  done
done
for r in $(seq "$ROUNDS"); do
  run small-treectl "$URL" "$W/small.txt" "$SECS"
  run small-nginx "$NG" "$W/small.txt" "$SECS"
  run large-treectl "$URL" "$W/large.txt" "$SECS"
  run large-nginx "$NG" "$W/large.txt" "$SECS"
  echo "   round $r: small $(last small-treectl:rps) / $(last small-nginx:rps) requests/s, large $(last large-treectl:mibs) / $(last large-nginx:mibs) MiB/s (treectl / nginx)"
done

echo "== push under load: $CLIENTS clients for ${PUSH_SECS}s over all $NOBJ objects, while v2 is pushed and published"
PATHS=$W/all.txt timeout $((PUSH_SECS + 60)) wrk -t2 -c"$CLIENTS" -d"${PUSH_SECS}s" --timeout 30s --latency \
  -s "$W/paths.lua" "$URL" > "$W/wrk-push.out" 2>&1 &
WRK_PID=$!
sleep 2
PUSH_START=$(date +%s.%N)
TREECTL_TOKEN=$TOKEN T --repo "$W/src" push "$URL" os/stable --json > "$W/push.json" 2> "$W/push.err"
PUSH_END=$(date +%s.%N)
wait "$WRK_PID"
getp() { sed -n "s/^$1=//p" "$W/wrk-push.out"; }
PUSH_REQS=$(getp requests); PUSH_ERR=$(( $(getp non2xx) + $(getp socket_errors) ))
ERRORS=$((ERRORS + PUSH_ERR))
PUSH_RPS=$(awk -v r="$PUSH_REQS" -v s="$PUSH_SECS" 'BEGIN {printf "%.0f", r / s}')
PUSH_S=$(awk -v a="$PUSH_START" -v b="$PUSH_END" 'BEGIN {printf "%.1f", b - a}')
UPLOADED=$(sed -n 's/.*"uploaded": \([0-9]*\).*/\1/p' "$W/push.json")
SERIAL=$(curl -s "$URL/v1/health" | sed -n 's/.*"serial":\([0-9]*\).*/\1/p')
HWM_KB=$(awk '/VmHWM/ {print $2}' "/proc/$SERVER_PID/status")
HWM_MIB=$(awk -v k="$HWM_KB" 'BEGIN {printf "%.0f", k / 1024}')
NGINX_HWM_MIB=$(for p in $(pgrep -P "$NGINX_PID") "$NGINX_PID"; do awk '/VmHWM/ {print $2}' "/proc/$p/status"; done |
  awk '{s += $1} END {printf "%.0f", s / 1024}')

S_T=$(med small-treectl:rps); S_N=$(med small-nginx:rps)
L_T=$(med large-treectl:mibs); L_N=$(med large-nginx:mibs)
SECTION=$(cat <<EOF
## Serving under load (bench/load.sh)

Measured $(date -u '+%Y-%m-%d %H:%M UTC') by \`bench/load.sh\`; medians of $ROUNDS rounds, the two servers alternating.

- machine: $(nproc) CPUs, $(free -g | awk '/Mem:/ {print $2}') GiB RAM; repository on a fresh ext4 (benchfs.sh); loopback only; wrk runs on the same CPUs
- treectl: \`treectl serve\` (release build, default 64 MiB cache of small objects), archive repository holding corpus v1 ($NOBJ objects), signing key set
- peer: $("$NGINX" -v 2>&1 | sed 's/.*: //') serving the same directory: \`worker_processes auto\`, \`sendfile on\`, no access log
- load: \`wrk\` with $CLIENTS connections (2 threads) for ${SECS} s per run; small: the $NSMALL objects of v1 up to 16 KiB, round robin; large: the $NLARGE objects of at least 512 KiB ($LARGE_MIB MiB), round robin

| measure | treectl serve | nginx | treectl / nginx |
|---|---|---|---|
| small objects, requests/s | **$S_T** | $S_N | **$(ratio "$S_T" "$S_N")x** |
| small objects, p99 latency | $(med small-treectl:p99) ms | $(med small-nginx:p99) ms | |
| large objects, MiB/s | **$L_T** | $L_N | **$(ratio "$L_T" "$L_N")x** |
| large objects, p99 latency | $(med large-treectl:p99) ms | $(med large-nginx:p99) ms | |
| errors (non-2xx and socket errors, all runs) | $(sum "${VALS[small-treectl:err]}${VALS[large-treectl:err]}") | $(sum "${VALS[small-nginx:err]}${VALS[large-nginx:err]}") | |
| peak RSS (VmHWM, after every run) | **$HWM_MIB MiB** | $NGINX_HWM_MIB MiB (master and workers) | |

Every run: small $(tr -s ' ' <<< "${VALS[small-treectl:rps]}")/ $(tr -s ' ' <<< "${VALS[small-nginx:rps]}")requests/s, large $(tr -s ' ' <<< "${VALS[large-treectl:mibs]}")/ $(tr -s ' ' <<< "${VALS[large-nginx:mibs]}")MiB/s (treectl / nginx).

Push under load: $CLIENTS connections fetch every object of v1 from \`treectl serve\` for $PUSH_SECS s ($PUSH_RPS requests/s, $PUSH_ERR errors) while \`treectl push URL os/stable\` of corpus v2 asks what is missing, uploads $UPLOADED objects and publishes (index serial now $SERIAL): **$PUSH_S s**.
EOF
)
echo "$SECTION"
if ((ERRORS != 0)); then
  echo "load runs had $ERRORS errors; see $W/wrk-*.out and $W/server.log" >&2
  exit 1
fi
if ((DOC)); then
  python3 - "$ROOT/docs/benchmarks.md" "$SECTION" <<'PY'
import sys
path, section = sys.argv[1], sys.argv[2]
begin, end = "<!-- bench/load.sh begin -->", "<!-- bench/load.sh end -->"
text = open(path).read()
block = f"{begin}\n{section}\n{end}"
if begin in text and end in text:
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    text = head + block + tail
else:
    text = text.rstrip("\n") + "\n\n" + block + "\n"
open(path, "w").write(text)
PY
  echo "== wrote the bench/load.sh section of docs/benchmarks.md"
fi
