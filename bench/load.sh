#!/usr/bin/env bash
# bench/load.sh: 64 concurrent clients fetch every object of corpus v1 from
# `treectl serve` over loopback while a push of v2 and its publish run.
# Reports requests/s, errors, the push+publish time and the server's peak
# RSS (VmHWM), and rewrites its own section of docs/benchmarks.md (between
# the bench/load.sh markers). Bounded: the load runs LOAD_SECONDS (default
# 30) and every step has a timeout. Needs root (benchfs mount) and `wrk`
# (Debian package; installed when missing).
#
#   bench/load.sh                  # full run, rewrites the docs section
#   bench/load.sh --no-doc         # print only
#   LOAD_SECONDS=10 LOAD_CLIENTS=64 bench/load.sh
#   TREECTL=/path/to/treectl bench/load.sh   # (treectl-server must be beside it)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

DOC=1
[[ "${1:-}" == "--no-doc" ]] && DOC=0
SECONDS_LOAD=${LOAD_SECONDS:-30}
CLIENTS=${LOAD_CLIENTS:-64}
CORPUS=${TREECTL_CORPUS:-/var/tmp/treectl-corpus}
MNT=${LOAD_DIR:-/mnt/load-bench}
BENCHFS=$ROOT/../shared/corpus/benchfs.sh

[[ -e "$CORPUS/corpus-v1.done" && -e "$CORPUS/corpus-v2.done" ]] || {
  echo "corpus not built at $CORPUS: run ../shared/corpus/build.sh" >&2; exit 1; }
[[ $(id -u) == 0 ]] || { echo "run as root (benchfs mount)" >&2; exit 1; }
command -v wrk >/dev/null || { apt-get install -y -qq wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }; }

if [[ -z "${TREECTL:-}" ]]; then
  cargo build --release --quiet -p treectl -p treectl-server
  TREECTL=$ROOT/target/release/treectl
fi
[[ -x "$(dirname "$TREECTL")/treectl-server" ]] || { echo "no treectl-server beside $TREECTL" >&2; exit 1; }

SERVER_PID=
cleanup() {
  [[ -n "$SERVER_PID" ]] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null || true
  mountpoint -q "$MNT" && bash "$BENCHFS" umount "$MNT" >/dev/null 2>&1 || true
}
trap cleanup EXIT

bash "$BENCHFS" mount "$MNT" 8G >/dev/null
W=$MNT/work
mkdir -p "$W"
T() { timeout 900 "$TREECTL" "$@"; }

echo "== setup (untimed): commit v1 and v2, start the server, push and publish v1"
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

# Every object of v1 as a path list for wrk.
(cd "$W/srv" && find objects -type f | sort) > "$W/paths.txt"
NOBJ=$(wc -l < "$W/paths.txt")
cat > "$W/paths.lua" <<EOF
local paths = {}
for line in io.lines("$W/paths.txt") do paths[#paths + 1] = "/" .. line end
local i = 0
local errors = 0
request = function()
  i = i + 1
  return wrk.format("GET", paths[(i % #paths) + 1])
end
response = function(status, headers, body)
  if status ~= 200 then errors = errors + 1 end
end
done = function(summary, latency, requests)
  io.write(string.format("objects=%d\n", #paths))
  io.write(string.format("non2xx=%d\n", summary.errors.status))
  io.write(string.format("socket_errors=%d\n", summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
  io.write(string.format("requests=%d\n", summary.requests))
  io.write(string.format("bytes=%d\n", summary.bytes))
  io.write(string.format("p50_ms=%.2f\n", latency:percentile(50) / 1000))
  io.write(string.format("p99_ms=%.2f\n", latency:percentile(99) / 1000))
end
EOF

echo "== load: $CLIENTS clients for ${SECONDS_LOAD}s over $NOBJ objects, while v2 is pushed and published"
timeout $((SECONDS_LOAD + 60)) wrk -t2 -c"$CLIENTS" -d"${SECONDS_LOAD}s" --timeout 30s --latency \
  -s "$W/paths.lua" "$URL" > "$W/wrk.out" 2>&1 &
WRK_PID=$!
sleep 2
PUSH_START=$(date +%s.%N)
TREECTL_TOKEN=$TOKEN T --repo "$W/src" push "$URL" os/stable --json > "$W/push.json" 2> "$W/push.err"
PUSH_END=$(date +%s.%N)
wait "$WRK_PID"
HWM_KB=$(awk '/VmHWM/ {print $2}' "/proc/$SERVER_PID/status")
SERIAL=$(curl -s "$URL/v1/health" | sed -n 's/.*"serial":\([0-9]*\).*/\1/p')

get() { sed -n "s/^$1=//p" "$W/wrk.out"; }
REQS=$(get requests); NON2XX=$(get non2xx); SOCKERR=$(get socket_errors); BYTES=$(get bytes)
P50=$(get p50_ms); P99=$(get p99_ms)
RPS=$(awk -v r="$REQS" -v s="$SECONDS_LOAD" 'BEGIN {printf "%.0f", r / s}')
MBPS=$(awk -v b="$BYTES" -v s="$SECONDS_LOAD" 'BEGIN {printf "%.0f", b / s / 1048576}')
PUSH_S=$(awk -v a="$PUSH_START" -v b="$PUSH_END" 'BEGIN {printf "%.1f", b - a}')
UPLOADED=$(sed -n 's/.*"uploaded": \([0-9]*\).*/\1/p' "$W/push.json")
HWM_MIB=$(awk -v k="$HWM_KB" 'BEGIN {printf "%.0f", k / 1024}')

SECTION=$(cat <<EOF
## Serving under load (bench/load.sh)

Measured $(date -u '+%Y-%m-%d %H:%M UTC') by \`bench/load.sh\`; one run.

- machine: $(nproc) CPUs, $(free -g | awk '/Mem:/ {print $2}') GiB RAM; repository on a fresh ext4 (benchfs.sh); loopback only
- server: \`treectl serve\` (release build), archive repository holding corpus v1 ($NOBJ objects), signing key set
- load: \`wrk\` with $CLIENTS connections (2 threads) for ${SECONDS_LOAD} s, each request a GET of the next object of v1 (every object, round robin)
- meanwhile: \`treectl push URL os/stable\` of corpus v2 (asks what is missing, uploads $UPLOADED objects, publishes; index serial now $SERIAL)

| measure | value |
|---|---|
| requests | $REQS in ${SECONDS_LOAD} s: **$RPS requests/s** ($MBPS MiB/s) |
| errors | $NON2XX non-2xx, $SOCKERR socket errors |
| latency | p50 $P50 ms, p99 $P99 ms |
| push + publish of v2 under load | $PUSH_S s |
| server peak RSS (VmHWM) | **$HWM_MIB MiB** |
EOF
)
echo "$SECTION"
if [[ "$NON2XX" != 0 || "$SOCKERR" != 0 ]]; then
  echo "load run had errors; see $W/wrk.out and $W/server.log" >&2
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
