#!/usr/bin/env bash
# Load test of examples/server: wrk against 127.0.0.1 only, one allocator
# and route at a time, bounded in time. Prints one markdown table.
#
#   scripts/load.sh                  # 10 s per route and allocator, then 30 s of smallmid /count
#   DURATION=5 LONG=0 scripts/load.sh
#
# Per route (/count: arena after the body is read; /stream: arena across
# every await; /spawn: a spawned task owns a SharedArena) and allocator
# that serves it: a 3 s warm-up, then DURATION seconds of wrk (2 threads,
# 64 connections, a ~4 KiB text body); the server's RSS is sampled every
# second. Then smallmid runs LONG more seconds on /count (aim: over a
# million requests) to show memory stays flat: RSS growth after warm-up and
# the mmaps counted by /stats.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10}
LONG=${LONG:-30}
PORT=${PORT:-18080}

if ! command -v wrk >/dev/null; then
  (apt-get install -y wrk || (apt-get update && apt-get install -y wrk)) >/dev/null
fi
cargo build --release --example server >/dev/null 2>&1 || cargo build --release --example server

work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
body=$(for i in $(seq 1 700); do printf 'w%d ' $(( (i * 7919) % 301 )); done)
cat > "$work/post.lua" <<LUA
wrk.method = "POST"
wrk.body = "$body"
wrk.headers["Content-Type"] = "text/plain"
LUA

rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
field() { sed -n "s/.*\"$2\":\([0-9]*\).*/\1/p" <<<"$1"; }

run() {
  local alloc=$1 secs=$2 route=$3
  ./target/release/examples/server --port "$PORT" --alloc "$alloc" >/dev/null &
  local pid=$!
  for _ in $(seq 50); do curl -s "127.0.0.1:$PORT/stats" >/dev/null && break; sleep 0.1; done
  (while kill -0 "$pid" 2>/dev/null; do rss "$pid" >>"$work/$alloc.rss" 2>/dev/null || true; sleep 1; done) &
  local sampler=$!
  : >"$work/$alloc.rss"
  wrk -t2 -c64 -d3s -s "$work/post.lua" "http://127.0.0.1:$PORT$route" >/dev/null
  local rss_warm stats_warm
  rss_warm=$(rss "$pid")
  stats_warm=$(curl -s "127.0.0.1:$PORT/stats")
  wrk -t2 -c64 -d"${secs}s" --latency -s "$work/post.lua" "http://127.0.0.1:$PORT$route" >"$work/$alloc.wrk"
  local rss_end stats_end peak
  rss_end=$(rss "$pid")
  stats_end=$(curl -s "127.0.0.1:$PORT/stats")
  peak=$(sort -n "$work/$alloc.rss" | tail -1)
  kill "$pid" "$sampler" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  local rps p50 p99 total
  rps=$(awk '/Requests\/sec/ {print $2}' "$work/$alloc.wrk")
  p50=$(awk '$1 == "50%" {print $2}' "$work/$alloc.wrk")
  p99=$(awk '$1 == "99%" {print $2}' "$work/$alloc.wrk")
  total=$(awk '/requests in/ {print $1}' "$work/$alloc.wrk")
  local mmaps="n/a"
  if [ "$alloc" = smallmid ]; then
    mmaps="$(( $(field "$stats_end" mmaps) - $(field "$stats_warm" mmaps) ))"
  fi
  printf '| %s | %s | %s s | %s | %s | %s | %s | %.1f | %.1f | %.1f | %+.1f%% | %s |\n' \
    "$route" "$alloc" "$secs" "$total" "$rps" "$p50" "$p99" \
    "$(bc -l <<<"$peak/1024")" "$(bc -l <<<"$rss_warm/1024")" "$(bc -l <<<"$rss_end/1024")" \
    "$(bc -l <<<"($rss_end-$rss_warm)*100/$rss_warm")" "$mmaps"
}

command -v bc >/dev/null || (apt-get install -y bc || (apt-get update && apt-get install -y bc)) >/dev/null
echo "| route | allocator | run | requests | req/s | p50 | p99 | peak RSS MiB | RSS after warm-up MiB | RSS at end MiB | growth | mmaps after warm-up |"
echo "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
for alloc in smallmid system mimalloc-heap bumpalo; do
  run "$alloc" "$DURATION" /count
done
for route in /stream /spawn; do
  for alloc in smallmid system; do # the others answer 501 (thread-bound or !Sync)
    run "$alloc" "$DURATION" "$route"
  done
done
if [ "$LONG" -gt 0 ]; then
  run smallmid "$LONG" /count
fi
