#!/usr/bin/env bash
# `make bench` (spec/PERFORMANCE.md): one run, one machine, side by side, same concurrency and
# request mix. Legs: direct (load → stub), nginx (load → nginx → stub), pingora (load → bare pingora
# passthrough, `pg-passthrough` → stub: the proxy stack's own ceiling), guard-allow (load → guard
# → stub) and guard-hold (load → guard, held: 402, no upstream). Closed loop for throughput, open
# loop at a fixed rate for latency; a wrk cross-check; startup time, peak RSS, store bytes per
# decision and audit-chain verification speed. Writes bench/RESULTS.md.
#
# Everything listens on 127.0.0.1 on free ports and is stopped on exit.
# Environment:
#   BENCH_QUICK=1          ~2 s per leg and 100k audit events: a smoke test of about a minute
#   BENCH_CONNECTIONS=32   connections of every leg (closed and open loop, wrk)
#   BENCH_RATE=1000        offered rate of the open-loop legs, requests/s
#   BENCH_RESULTS=path     where the report goes (default bench/RESULTS.md; quick: the temp dir)
#   BENCH_PROFILE=1        also sample the guard with perf during a guard-allow closed loop; builds
#                          and runs the `profiling` profile (release + debuginfo, target/profiling)
#                          instead of the lean `release` one, since perf needs the symbols
#   BENCH_PROFILE_WHOLE=1  with BENCH_PROFILE=1: sample the whole guard process, not only the writer
#   BENCH_PERF_ARGS="..."  extra arguments to perf record (e.g. --call-graph dwarf)
#   BENCH_CACHE_MB=64      the guard's store.cache_mb (redb page cache, MiB)
#   BENCH_SKIP_BUILD=1     do not run cargo build first
#   BENCH_KEEP=1           keep the temporary directory (logs, data dirs)
#   BENCH_GUARD_BIN=path   benchmark another payment-guard binary (an A/B against an older
#                          commit, same minutes); the load generator and stub stay this tree's
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

QUICK=${BENCH_QUICK:-0}
CONNS=${BENCH_CONNECTIONS:-32}
RATE=${BENCH_RATE:-1000}
PROFILE=${BENCH_PROFILE:-0}
CACHE_MB=${BENCH_CACHE_MB:-64}
if [[ $QUICK == 1 ]]; then
  WARMUP=0.5 DURATION=2 OPEN_DURATION=2 WRK_SECS=2 STARTUP_RUNS=2
  AUDIT_EVENTS=100000 AUDIT_BUDGET=40 AUDIT_VERIFY_RUNS=1
else
  WARMUP=2 DURATION=10 OPEN_DURATION=10 WRK_SECS=10 STARTUP_RUNS=5
  AUDIT_EVENTS=1000000 AUDIT_BUDGET=150 AUDIT_VERIFY_RUNS=3
fi

# The shipped binary is lean (no debuginfo); perf work needs the `profiling` profile's symbols.
if [[ $PROFILE == 1 ]]; then CARGO_PROFILE=profiling; else CARGO_PROFILE=release; fi
BIN=$ROOT/target/$CARGO_PROFILE
GUARD=${BENCH_GUARD_BIN:-$BIN/payment-guard}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/pg-bench.XXXXXX")
RESULTS=${BENCH_RESULTS:-}
if [[ -z $RESULTS ]]; then
  if [[ $QUICK == 1 ]]; then RESULTS=$WORK/RESULTS.md; else RESULTS=$ROOT/bench/RESULTS.md; fi
fi
PIDS=()

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Stop what this script started (by pid only), then remove the temp dir.
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  if [[ ${BENCH_KEEP:-0} == 1 ]]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

stop_pid() {
  local pid=$1 i
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 300; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  local kept=()
  for p in "${PIDS[@]}"; do [[ $p == "$pid" ]] || kept+=("$p"); done
  PIDS=("${kept[@]}")
}

# ---- tools ---------------------------------------------------------------------------------

SUDO=""
if [[ $(id -u) != 0 ]] && command -v sudo >/dev/null 2>&1; then SUDO=sudo; fi

install_tools() {
  local missing=()
  command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]] || missing+=(nginx)
  command -v wrk >/dev/null 2>&1 || missing+=(wrk)
  command -v jq >/dev/null 2>&1 || missing+=(jq)
  [[ ${#missing[@]} -eq 0 ]] && return 0
  log "installing ${missing[*]} with apt-get"
  # Debian starts a packaged service on install (nginx on :80); the bench runs its own, so
  # forbid service starts during this install when no policy exists yet.
  local policy=/usr/sbin/policy-rc.d added=0
  if [[ ! -e $policy ]] && [[ $(id -u) == 0 ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && added=1
  fi
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
  if [[ $added == 1 ]]; then rm -f "$policy"; fi
}

# A port nobody listens on, below the ephemeral range, not handed out before in this run.
USED_PORTS=" "
free_port() {
  local p i
  for ((i = 0; i < 500; i++)); do
    p=$((20000 + RANDOM % 12000))
    [[ $USED_PORTS == *" $p "* ]] && continue
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      USED_PORTS+="$p "
      echo "$p"
      return 0
    fi
  done
  die "no free port found"
}

# Wait until 127.0.0.1:PORT accepts, while PID lives (bounded: 30 s).
wait_port() {
  local port=$1 pid=$2 i
  for ((i = 0; i < 600; i++)); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    kill -0 "$pid" 2>/dev/null || die "process $pid exited before listening on $port"
    sleep 0.05
  done
  die "nothing listens on $port after 30 s"
}

# ---- the run -------------------------------------------------------------------------------

install_tools
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

if [[ ${BENCH_SKIP_BUILD:-0} != 1 ]]; then
  log "building ($CARGO_PROFILE profile)"
  cargo build --profile "$CARGO_PROFILE" --workspace >&2
fi
for b in "$GUARD" "$BIN/pg-stub" "$BIN/pg-passthrough" "$BIN/pg-load" "$BIN/pg-startup" "$BIN/pg-audit-bench"; do
  [[ -x $b ]] || die "$b is missing: build failed?"
done

STUB_PORT=$(free_port)
NGINX_PORT=$(free_port)
PINGORA_PORT=$(free_port)
GUARD_PORT=$(free_port)
ADMIN_PORT=$(free_port)
URL_PATH=/v1/payment_intents

log "starting pg-stub on :$STUB_PORT"
"$BIN/pg-stub" --listen "127.0.0.1:$STUB_PORT" --threads 2 2>"$WORK/stub.log" &
STUB_PID=$!
PIDS+=("$STUB_PID")
wait_port "$STUB_PORT" "$STUB_PID"

log "starting nginx on :$NGINX_PORT"
mkdir -p "$WORK/nginx"
sed -e "s#@PREFIX@#$WORK/nginx#g" -e "s#@LISTEN@#127.0.0.1:$NGINX_PORT#g" -e "s#@STUB@#127.0.0.1:$STUB_PORT#g" \
  bench/nginx.conf.template >"$WORK/nginx/nginx.conf"
"$NGINX" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -e "$WORK/nginx/error.log" 2>"$WORK/nginx/stderr.log" &
NGINX_PID=$!
PIDS+=("$NGINX_PID")
wait_port "$NGINX_PORT" "$NGINX_PID"

log "starting pg-passthrough (bare pingora) on :$PINGORA_PORT"
"$BIN/pg-passthrough" --listen "127.0.0.1:$PINGORA_PORT" --upstream "127.0.0.1:$STUB_PORT" --threads 2 \
  >"$WORK/passthrough.log" 2>&1 &
PINGORA_PID=$!
PIDS+=("$PINGORA_PID")
wait_port "$PINGORA_PORT" "$PINGORA_PID"

log "preparing the guard's data dir"
DATA=$WORK/guard-data
"$GUARD" policy validate bench/policies.cedar >&2
ORG=$(printf 'bench-password-1' | "$GUARD" --data-dir "$DATA" init --org Bench --email bench@example.com --password-stdin --json | jq -r .org_id)
AGENT_JSON=$("$GUARD" --data-dir "$DATA" agent create --org "$ORG" --name bench-agent --json)
AGENT=$(jq -r .agent_id <<<"$AGENT_JSON")
TOKEN=$(jq -r .token <<<"$AGENT_JSON")
"$GUARD" --data-dir "$DATA" policy set --org "$ORG" bench/policies.cedar >&2
"$GUARD" --data-dir "$DATA" cap add --org "$ORG" --scope org --currency usd --interval daily --limit 1000000000000 --on-exceed hold >&2
"$GUARD" --data-dir "$DATA" cap add --org "$ORG" --scope "agent:$AGENT" --currency usd --interval monthly --limit 1000000000000 --on-exceed hold >&2
"$GUARD" --data-dir "$DATA" cap add --org "$ORG" --scope org --currency usd --interval per_transaction --limit 500000 --on-exceed hold >&2
printf 'sk_test_bench' | "$GUARD" --data-dir "$DATA" rail set --org "$ORG" >&2

GUARD_ENV=(
  GUARD_STORE_DATA_DIR="$DATA"
  GUARD_PROXY_LISTEN="127.0.0.1:$GUARD_PORT"
  GUARD_ADMIN_LISTEN="127.0.0.1:$ADMIN_PORT"
  GUARD_ADMIN_ORIGIN="http://127.0.0.1:$ADMIN_PORT"
  GUARD_UPSTREAM_BASE_URL="http://127.0.0.1:$STUB_PORT"
  GUARD_PROXY_THREADS=2
)
# store.cache_mb, passed explicitly; a guard older than the setting (BENCH_GUARD_BIN) refuses the
# unknown variable and runs with redb's default cache (1 GiB) instead.
if env GUARD_STORE_CACHE_MB="$CACHE_MB" "$GUARD" --data-dir "$DATA" intent list --org "$ORG" >/dev/null 2>&1; then
  GUARD_ENV+=(GUARD_STORE_CACHE_MB="$CACHE_MB")
  CACHE_NOTE="store.cache_mb = $CACHE_MB"
else
  log "warning: $GUARD does not take store.cache_mb; it runs with redb's default cache"
  CACHE_NOTE="redb's default cache: the guard has no store.cache_mb"
fi

log "startup time over $STARTUP_RUNS starts"
STARTUP=$(env "${GUARD_ENV[@]}" "$BIN/pg-startup" --addr "127.0.0.1:$GUARD_PORT" --runs "$STARTUP_RUNS" \
  --log "$WORK/guard.log" -- "$GUARD" serve)
log "startup: $STARTUP"

# The store is only readable while the guard is stopped: sizes and counts before it starts.
DB_BEFORE=$(stat -c %s "$DATA/guard.redb")
DB_ALLOC_BEFORE=$(( $(stat -c '%b * %B' "$DATA/guard.redb") ))
INTENTS_BEFORE=$("$GUARD" --data-dir "$DATA" intent list --org "$ORG" | wc -l)

log "starting the guard on :$GUARD_PORT"
env "${GUARD_ENV[@]}" "$GUARD" serve >>"$WORK/guard.log" 2>&1 &
GUARD_PID=$!
PIDS+=("$GUARD_PID")
wait_port "$GUARD_PORT" "$GUARD_PID"

# CPU ticks of the guard's threads: "<writer thread> <all threads>". /proc/PID/task/*/stat has the
# thread name in parentheses (it may hold spaces), so fields are counted after the last ')'.
guard_cpu() {
  local t v w=0 all=0
  for t in /proc/"$GUARD_PID"/task/*; do
    v=$(sed 's/.*) //' "$t/stat" 2>/dev/null | awk '{ print $12 + $13 }') || continue
    [[ -n $v ]] || continue
    all=$((all + v))
    if [[ $(cat "$t/comm" 2>/dev/null) == pg-writer ]]; then w=$((w + v)); fi
  done
  echo "$w $all"
}
CLK_TCK=$(getconf CLK_TCK)
CPU_NOTE=""
IO_ROWS=""

# "<bytes the guard wrote to disk> <store commits> <store jobs>" so far (/proc io, /metrics).
guard_io() {
  local bytes commits jobs metrics
  bytes=$(awk '/^write_bytes:/ { print $2 }' "/proc/$GUARD_PID/io" 2>/dev/null || echo 0)
  metrics=$(curl -sf --max-time 2 "http://127.0.0.1:$ADMIN_PORT/metrics" 2>/dev/null || true)
  commits=$(awk '/^guard_store_commits_total / { print $2 }' <<<"$metrics")
  jobs=$(awk '/^guard_store_jobs_total / { print $2 }' <<<"$metrics")
  echo "${bytes:-0} ${commits:-0} ${jobs:-0}"
}

# leg NAME PORT AMOUNT EXPECT [cpu]: closed loop, then open loop; one JSON line each in
# $WORK/NAME.*.json. With "cpu", the guard's CPU use over the closed loop goes to CPU_NOTE.
leg() {
  local name=$1 port=$2 amount=$3 expect=$4 cpu=${5:-}
  local c0 c1 t0 t1
  local common=(--url "http://127.0.0.1:$port$URL_PATH" --token "$TOKEN" --amount "$amount"
    --connections "$CONNS" --expect-status "$expect" --label "$name")
  log "leg $name: closed loop, $CONNS connections, ${DURATION}s after ${WARMUP}s warm-up"
  if [[ -n $cpu ]]; then c0=$(guard_cpu) t0=$(date +%s%N); fi
  local io0="" io1
  if [[ $port == "$GUARD_PORT" ]]; then io0=$(guard_io); fi
  "$BIN/pg-load" "${common[@]}" --mode closed --warmup-secs "$WARMUP" --duration-secs "$DURATION" >"$WORK/$name.closed.json"
  if [[ -n $io0 ]]; then
    io1=$(guard_io)
    # Bytes written per group commit and per writer job (a decision or a settlement).
    IO_ROWS+=$(LC_ALL=C awk -v a="$io0" -v b="$io1" -v n="$name" 'BEGIN {
      split(a, x, " "); split(b, y, " "); w = y[1] - x[1]; c = y[2] - x[2]; j = y[3] - x[3]
      if (c > 0 && j > 0) printf "| `%s` closed loop | %.1f | %.1f | %.1f | %.0f |\n", n, j / c, w / c / 1024, w / j / 1024, w / 1048576 }')$'\n'
  fi
  if [[ -n $cpu ]]; then
    c1=$(guard_cpu) t1=$(date +%s%N)
    CPU_NOTE=$(LC_ALL=C awk -v a="$c0" -v b="$c1" -v ns=$((t1 - t0)) -v hz="$CLK_TCK" 'BEGIN {
      split(a, x, " "); split(b, y, " "); s = ns / 1e9
      printf "all threads %.2f cores; writer thread (pg-writer) %.0f %% of one core", (y[2] - x[2]) / hz / s, (y[1] - x[1]) / hz / s * 100 }')
  fi
  log "  $(jq -c '{rps, errors, p50_us, p99_us, first_error}' "$WORK/$name.closed.json")"
  log "leg $name: open loop at $RATE req/s, ${OPEN_DURATION}s after ${WARMUP}s warm-up"
  "$BIN/pg-load" "${common[@]}" --mode open --rate "$RATE" --warmup-secs "$WARMUP" --duration-secs "$OPEN_DURATION" >"$WORK/$name.open.json"
  log "  $(jq -c '{rps, errors, p50_us, p99_us, p999_us, max_us, first_error}' "$WORK/$name.open.json")"
}

leg direct "$STUB_PORT" 1000 200
leg nginx "$NGINX_PORT" 1000 200
leg pingora "$PINGORA_PORT" 1000 200
leg guard-allow "$GUARD_PORT" 1000 200 cpu
leg guard-hold "$GUARD_PORT" 200000 402

# wrk: total requests, req/s, non-2xx count, p50/p99 in µs. Threads 2 (the machine's cores).
wrk_leg() {
  local name=$1 port=$2
  log "wrk cross-check: $name, $CONNS connections, ${WRK_SECS}s"
  PG_TOKEN=$TOKEN PG_BODY="amount=1000&currency=usd" wrk -t2 -c"$CONNS" -d"${WRK_SECS}s" --latency \
    -s bench/wrk_unique_key.lua "http://127.0.0.1:$port$URL_PATH" >"$WORK/wrk.$name.txt" 2>&1
  awk -v name="$name" '
    function us(v) { if (v ~ /us$/) return v + 0; if (v ~ /ms$/) return v * 1000; if (v ~ /s$/) return v * 1000000; return v }
    /Requests\/sec:/ { rps = $2 }
    /requests in/ { total = $1 }
    /Non-2xx or 3xx responses:/ { bad = $NF }
    /Socket errors:/ { sock = $0 }
    $1 == "50%" { p50 = us($2) }
    $1 == "99%" { p99 = us($2) }
    END { printf "{\"label\":\"%s\",\"requests\":%d,\"rps\":%s,\"non_2xx\":%d,\"p50_us\":%d,\"p99_us\":%d,\"socket_errors\":\"%s\"}\n",
          name, total, (rps == "" ? 0 : rps), bad, p50, p99, sock }' "$WORK/wrk.$name.txt" >"$WORK/wrk.$name.json"
  log "  $(cat "$WORK/wrk.$name.json")"
}
wrk_leg nginx "$NGINX_PORT"
wrk_leg guard-allow "$GUARD_PORT"

PERF_TOP="" PERF_GROUPS="" PERF_WHAT=""
if [[ $PROFILE == 1 ]] && command -v perf >/dev/null 2>&1; then
  # The writer thread when there is one (it is the serial part), else the whole process.
  WRITER_TID=$(grep -lx pg-writer /proc/"$GUARD_PID"/task/*/comm 2>/dev/null | head -1 | cut -d/ -f5 || true)
  if [[ ${BENCH_PROFILE_WHOLE:-0} == 1 ]]; then WRITER_TID=""; fi
  if [[ -n $WRITER_TID ]]; then PERF_TARGET=(-t "$WRITER_TID") PERF_WHAT="writer thread pg-writer"; else PERF_TARGET=(-p "$GUARD_PID") PERF_WHAT="whole guard process"; fi
  log "profiling the guard ($PERF_WHAT) with perf during a ${DURATION}s guard-allow closed loop"
  perf record -F 999 ${BENCH_PERF_ARGS:-} "${PERF_TARGET[@]}" -o "$WORK/perf.data" -- sleep "$DURATION" >/dev/null 2>&1 &
  PERF_PID=$!
  "$BIN/pg-load" --url "http://127.0.0.1:$GUARD_PORT$URL_PATH" --token "$TOKEN" --connections "$CONNS" \
    --warmup-secs 0 --duration-secs "$DURATION" --label profile >"$WORK/profile.json"
  wait "$PERF_PID" || true
  perf report -i "$WORK/perf.data" --no-children --stdio --sort dso,symbol 2>/dev/null |
    grep -E '^ +[0-9.]+%' | sed -E 's/[[:space:]]+-[[:space:]]+-[[:space:]]*$//; s/[[:space:]]+$//' >"$WORK/perf.txt" || true
  PERF_TOP=$(head -25 "$WORK/perf.txt")
  PERF_GROUPS=$(awk '{ p = $1; sub(/%/, "", p); g = "other"
    if ($0 ~ /kernel/) g = "kernel (syscalls: pwrite, fsync; scheduling)"
    else if ($0 ~ /malloc|free|realloc|unlink_chunk|consolidate/) g = "malloc / free"
    else if ($0 ~ /memmove|memcpy|memset|memcmp/) g = "libc mem*"
    else if ($0 ~ /redb::/) g = "redb"
    else if ($0 ~ /cedar/) g = "cedar"
    else if ($0 ~ /serde_json_canonicalizer|jcs/) g = "JCS canonicalizer"
    else if ($0 ~ /serde|indexmap|ryu|itoa/) g = "serde / serde_json"
    else if ($0 ~ /sha2|[Ss]ha256/) g = "SHA-256"
    else if ($0 ~ /hashbrown|sip::|btree::|alloc::|core::fmt|format/) g = "std collections, fmt"
    s[g] += p } END { for (g in s) printf "| %s | %.1f %% |\n", g, s[g] }' "$WORK/perf.txt" | sort -t'|' -k3 -rn)
fi

# /metrics of the admin listener, when the guard serves it (store commit counters).
METRICS=""
if command -v curl >/dev/null 2>&1; then
  METRICS=$(curl -sf --max-time 2 "http://127.0.0.1:$ADMIN_PORT/metrics" 2>/dev/null | grep -iE '^[a-z_]*(store|commit|batch)' | head -30 || true)
fi

RSS_HWM_KB=$(awk '/^VmHWM:/ { print $2 }' "/proc/$GUARD_PID/status")
RSS_NOW_KB=$(awk '/^VmRSS:/ { print $2 }' "/proc/$GUARD_PID/status")
log "guard peak RSS: ${RSS_HWM_KB} kB"
stop_pid "$GUARD_PID"
DB_AFTER=$(stat -c %s "$DATA/guard.redb")
WAL_AFTER=$(stat -c %s "$DATA/guard.wal" 2>/dev/null || echo 0)
DB_ALLOC_AFTER=$(( $(stat -c '%b * %B' "$DATA/guard.redb") ))
INTENTS_AFTER=$("$GUARD" --data-dir "$DATA" intent list --org "$ORG" | wc -l)
DECISIONS=$((INTENTS_AFTER - INTENTS_BEFORE))
GUARD_VERIFY=$("$GUARD" --data-dir "$DATA" audit verify 2>&1 | tr '\n' ' ')
log "guard store: $DECISIONS decisions, $DB_BEFORE → $DB_AFTER bytes; audit verify: $GUARD_VERIFY"

stop_pid "$NGINX_PID"
stop_pid "$STUB_PID"

log "audit-chain verification over $AUDIT_EVENTS events (fill budget ${AUDIT_BUDGET}s)"
AUDIT=$("$BIN/pg-audit-bench" --events "$AUDIT_EVENTS" --fill-budget-secs "$AUDIT_BUDGET" \
  --verify-runs "$AUDIT_VERIFY_RUNS" --policies bench/policies.cedar 2>"$WORK/audit-bench.log")
log "audit: $AUDIT"

# ---- report --------------------------------------------------------------------------------

j() { jq -r "$2" "$WORK/$1.json"; }
fmt_int() { LC_ALL=C awk -v v="$1" 'BEGIN { s = sprintf("%.0f", v); n = length(s); o = "";
  for (i = 1; i <= n; i++) { o = o substr(s, i, 1); if ((n - i) % 3 == 0 && i < n) o = o "," } print o }'; }
calc() { LC_ALL=C awk "BEGIN { printf \"%s\", $1 }"; }

GA_RPS=$(j guard-allow.closed .rps)
NG_RPS=$(j nginx.closed .rps)
PG_RPS=$(j pingora.closed .rps)
PINGORA_RATIO=$(calc "sprintf(\"%.1f\", ($NG_RPS > 0) ? $PG_RPS / $NG_RPS * 100 : 0)")
GA_OF_PINGORA=$(calc "sprintf(\"%.1f\", ($PG_RPS > 0) ? $GA_RPS / $PG_RPS * 100 : 0)")
RATIO=$(calc "sprintf(\"%.1f\", ($NG_RPS > 0) ? $GA_RPS / $NG_RPS * 100 : 0)")
ADD_P50=$(( $(j guard-allow.open .p50_us) - $(j direct.open .p50_us) ))
ADD_P99=$(( $(j guard-allow.open .p99_us) - $(j direct.open .p99_us) ))
ADD_P999=$(( $(j guard-allow.open .p999_us) - $(j direct.open .p999_us) ))
AUDIT_EPS=$(jq -r .events_per_s <<<"$AUDIT")
BYTES_PER_DECISION=$(calc "($DECISIONS > 0) ? ($DB_AFTER - $DB_BEFORE) / $DECISIONS : 0")
ALLOC_PER_DECISION=$(calc "($DECISIONS > 0) ? ($DB_ALLOC_AFTER - $DB_ALLOC_BEFORE) / $DECISIONS : 0")
GH_RPS=$(j guard-hold.closed .rps)
HOLD_RATIO=$(calc "sprintf(\"%.1f\", ($NG_RPS > 0) ? $GH_RPS / $NG_RPS * 100 : 0)")
RSS_HWM_MIB=$(calc "sprintf(\"%.1f\", $RSS_HWM_KB / 1024)")
GUARD_BYTES=$(stat -L -c %s "$GUARD")

# verdict ACTUAL TARGET higher|lower UNIT FORMAT: "**met**" or "**missed** by how much".
verdict() {
  LC_ALL=C awk -v a="$1" -v t="$2" -v d="$3" -v u="$4" -v f="$5" 'BEGIN {
    if (d == "higher" ? a >= t : a <= t) { print "**met**"; exit }
    if (d == "higher") printf "**missed** by " f " %s (%.1f %% of the target)", t - a, u, a / t * 100
    else printf "**missed** by " f " %s (%.1f× the limit)", a - t, u, a / t
  }'
}

HOST_CPU=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
HOST_MEM=$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
DIRTY=$(git status --porcelain 2>/dev/null | head -1)
[[ -n $DIRTY ]] && COMMIT="$COMMIT (with uncommitted changes)"
DISK=$(df -hT "$WORK" | awk 'NR == 2 { print $2 " on " $1 }')

row() {
  local name=$1
  printf '| `%s` | %s | %s | %s | %s | %s | %s | %s |\n' "$name" \
    "$(fmt_int "$(j "$name.closed" .rps)")" "$(j "$name.closed" .p99_us)" \
    "$(j "$name.open" .p50_us)" "$(j "$name.open" .p99_us)" "$(j "$name.open" .p999_us)" "$(j "$name.open" .max_us)" \
    "$(( $(j "$name.closed" .errors) + $(j "$name.open" .errors) ))"
}

# Hand-written notes survive a regeneration between these markers.
NOTES=""
if [[ -f $ROOT/bench/RESULTS.md ]]; then
  NOTES=$(awk '/<!-- BEGIN NOTES -->/ { on = 1; next } /<!-- END NOTES -->/ { on = 0 } on' "$ROOT/bench/RESULTS.md")
fi

{
  echo "# Benchmark results (\`make bench\`)"
  echo
  echo "Generated by \`bench/run.sh\`$([[ $QUICK == 1 ]] && echo ' in quick mode (BENCH_QUICK=1: short legs, not a claim)') on $(date -u '+%Y-%m-%d %H:%M UTC'), commit $COMMIT."
  echo "Method: spec/PERFORMANCE.md. Every figure below comes from this one run."
  echo
  echo "## Machine"
  echo
  echo "| | |"
  echo "|---|---|"
  echo "| CPU | $HOST_CPU, $(nproc) cores (load generator, stub, nginx and guard share them) |"
  echo "| memory | $HOST_MEM |"
  echo "| kernel | $(uname -sr) |"
  echo "| disk of the guard's data dir | $DISK |"
  echo "| nginx | $("$NGINX" -v 2>&1 | sed 's/.*version: //') |"
  echo "| wrk | $(wrk -v 2>&1 | head -1 | awk '{print $2}') |"
  echo
  echo "## Targets"
  echo
  echo "Issue #13 (\"fast\" and \"small\") first, then the earlier targets."
  echo
  echo "| target | measured | verdict |"
  echo "|---|---|---|"
  echo "| guard-allow ≥ 25 % of nginx throughput, closed loop, same concurrency (#13) | $RATIO % ($(fmt_int "$GA_RPS") of $(fmt_int "$NG_RPS") req/s) | $(verdict "$RATIO" 25 higher 'percentage points' %.1f) |"
  echo "| p99 added latency (guard-allow − direct) ≤ 2 ms at $RATE req/s (#13) | $ADD_P99 µs | $(verdict "$ADD_P99" 2000 lower µs %.0f) |"
  echo "| guard-hold ≥ 50 % of nginx throughput, closed loop (#13) | $HOLD_RATIO % ($(fmt_int "$GH_RPS") req/s) | $(verdict "$HOLD_RATIO" 50 higher 'percentage points' %.1f) |"
  echo "| peak RSS under the bench load ≤ 256 MiB, $CACHE_NOTE (#13) | $RSS_HWM_MIB MiB | $(verdict "$RSS_HWM_MIB" 256 lower MiB %.1f) |"
  echo "| store ≤ 1,500 B per decision, allocated on disk (#13) | $(fmt_int "$ALLOC_PER_DECISION") B | $(verdict "$ALLOC_PER_DECISION" 1500 lower B %.0f) |"
  echo "| guard-allow ≥ 35 % of nginx throughput (same concurrency) | $RATIO % | $(verdict "$RATIO" 35 higher 'percentage points' %.1f) |"
  echo "| guard-allow ≥ 5,000 durable decisions/s | $(fmt_int "$GA_RPS") req/s | $(verdict "$GA_RPS" 5000 higher req/s %.0f) |"
  echo "| audit verification ≥ 1,000,000 events/s | $(fmt_int "$AUDIT_EPS") events/s | $(verdict "$AUDIT_EPS" 1000000 higher events/s %.0f) |"
  echo
  echo "## Legs"
  echo
  echo "$CONNS connections everywhere, one request in flight per connection, a unique Idempotency-Key on"
  echo "every request, body \`amount=1000&currency=usd\` (guard-hold: \`amount=200000\`, answered 402)."
  echo "Closed loop: ${DURATION} s after ${WARMUP} s warm-up. Open loop: $RATE req/s offered for ${OPEN_DURATION} s after"
  echo "${WARMUP} s warm-up, latency from the scheduled send time (µs, HDR histogram)."
  echo
  echo "| leg | closed req/s | closed p99 µs | open p50 µs | open p99 µs | open p99.9 µs | open max µs | errors |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|"
  row direct
  row nginx
  row pingora
  row guard-allow
  row guard-hold
  echo
  echo "- \`guard-allow / nginx\` throughput: **$RATIO %**"
  echo "- \`pingora\` (bare pingora forwarding to the stub, \`pg-passthrough\`: the stack's own ceiling) / nginx: **$PINGORA_RATIO %**; guard-allow / pingora: **$GA_OF_PINGORA %**"
  echo "- \`guard-allow − direct\` added latency at $RATE req/s: p50 **$ADD_P50 µs**, p99 **$ADD_P99 µs**, p99.9 $ADD_P999 µs"
  echo "- open-loop achieved rates: direct $(j direct.open .rps), nginx $(j nginx.open .rps), guard-allow $(j guard-allow.open .rps), guard-hold $(j guard-hold.open .rps) req/s"
  echo
  echo "### wrk cross-check (\`wrk -t2 -c$CONNS -d${WRK_SECS}s --latency -s bench/wrk_unique_key.lua\`)"
  echo
  echo "| leg | wrk req/s | pg-load req/s | wrk p50 µs | wrk p99 µs | non-2xx |"
  echo "|---|---:|---:|---:|---:|---:|"
  for n in nginx guard-allow; do
    echo "| \`$n\` | $(fmt_int "$(j "wrk.$n" .rps)") | $(fmt_int "$(j "$n.closed" .rps)") | $(j "wrk.$n" .p50_us) | $(j "wrk.$n" .p99_us) | $(j "wrk.$n" .non_2xx) |"
  done
  echo
  echo "## Guard process and store"
  echo
  echo "| | |"
  echo "|---|---|"
  echo "| guard binary ($CARGO_PROFILE profile) | $(fmt_int "$GUARD_BYTES") bytes ($(calc "$GUARD_BYTES / 1048576" | xargs printf '%.1f') MiB) |"
  echo "| startup (process start → port accepting), $STARTUP_RUNS starts | median $(jq -r .median_ms <<<"$STARTUP") ms (min $(jq -r .min_ms <<<"$STARTUP"), max $(jq -r .max_ms <<<"$STARTUP"); runs $(jq -c .runs_ms <<<"$STARTUP")) |"
  echo "| guard CPU during the guard-allow closed loop | $CPU_NOTE |"
  echo "| peak RSS under load (VmHWM after all legs), $CACHE_NOTE | $RSS_HWM_MIB MiB (VmRSS then: $(calc "$RSS_NOW_KB / 1024" | xargs printf '%.1f') MiB) |"
  echo "| decisions stored by the guard legs (incl. warm-up and wrk) | $(fmt_int "$DECISIONS") |"
  echo "| store file growth | $(fmt_int "$DB_BEFORE") → $(fmt_int "$DB_AFTER") bytes (allocated on disk: $(fmt_int "$DB_ALLOC_BEFORE") → $(fmt_int "$DB_ALLOC_AFTER")) |"
  echo "| write-ahead log file (reused from offset 0 after each checkpoint, not counted above) | $(fmt_int "$WAL_AFTER") bytes |"
  echo "| store bytes per decision | $(fmt_int "$ALLOC_PER_DECISION") B allocated on disk → **$(calc "$ALLOC_PER_DECISION * 1000000 / 1073741824" | xargs printf '%.2f') GiB per 1M decisions** (file length, which includes redb's preallocated sparse space: $(fmt_int "$BYTES_PER_DECISION") B → $(calc "$BYTES_PER_DECISION * 1000000 / 1073741824" | xargs printf '%.2f') GiB) |"
  echo "| guard's audit chain after the run | \`$GUARD_VERIFY\` |"
  echo
  echo "### Disk writes of the group commit (guard's \`/proc/PID/io\` write_bytes, \`/metrics\` counters)"
  echo
  echo "| during | jobs per commit | KiB written per commit | KiB written per job | MiB written |"
  echo "|---|---:|---:|---:|---:|"
  printf '%s' "$IO_ROWS"
  echo
  echo "## Audit-chain verification (\`pg-audit-bench\`, real store)"
  echo
  echo "| | |"
  echo "|---|---|"
  echo "| events verified | $(fmt_int "$(jq -r .events <<<"$AUDIT")") of $(fmt_int "$(jq -r .target_events <<<"$AUDIT")") targeted$(
    [[ $(jq -r .extrapolated <<<"$AUDIT") == true ]] && echo " — **extrapolated**: filling through the public decide/settle API ran out of its ${AUDIT_BUDGET} s budget") |"
  echo "| fill | $(jq -r .fill_secs <<<"$AUDIT") s, $(fmt_int "$(jq -r .fill_events_per_s <<<"$AUDIT")") events/s (decide + settle per payment through the group-commit writer, 256 in flight, tmpfs) |"
  echo "| verification | $(jq -r .verify_secs <<<"$AUDIT") s median of $(jq -c .verify_runs_secs <<<"$AUDIT") → **$(fmt_int "$AUDIT_EPS") events/s** |"
  echo "| time to verify $(fmt_int "$(jq -r .target_events <<<"$AUDIT")") events | $(jq -r .verify_secs_at_target <<<"$AUDIT") s$([[ $(jq -r .extrapolated <<<"$AUDIT") == true ]] && echo ' (extrapolated)') |"
  echo "| store file | $(fmt_int "$(jq -r .file_bytes <<<"$AUDIT")") bytes ($(fmt_int "$(jq -r .allocated_bytes <<<"$AUDIT")") allocated): $(fmt_int "$(jq -r .bytes_per_event <<<"$AUDIT")") B per event (intents, idempotency, spend included); an event alone is $(jq -r .verify_breakdown.avg_event_bytes <<<"$AUDIT") B of canonical JSON |"
  echo
  echo "Where verification time goes (per step, over the first $(fmt_int "$(jq -r .verify_breakdown.events <<<"$AUDIT")") events held in memory):"
  echo
  echo "| step | events/s |"
  echo "|---|---:|"
  echo "| read the raw events out of redb (all events) | $(fmt_int "$(jq -r .verify_breakdown.read_events_per_s <<<"$AUDIT")") |"
  echo "| serde_json parse of an event alone | $(fmt_int "$(jq -r .verify_breakdown.json_parse_events_per_s <<<"$AUDIT")") |"
  echo "| SHA-256 of an event's bytes alone | $(fmt_int "$(jq -r .verify_breakdown.sha256_events_per_s <<<"$AUDIT")") |"
  echo "| \`store::check_event\` (fast path: links from the canonical tail, SHA-256, compare; full RFC 8785 check only on a mismatch), one thread | $(fmt_int "$(jq -r .verify_breakdown.check_event_events_per_s <<<"$AUDIT")") |"
  if [[ -n $PERF_TOP ]]; then
    echo
    echo "## Profile of the guard (BENCH_PROFILE=1: perf on the $PERF_WHAT, guard-allow closed loop)"
    echo
    echo "Pg-load during the profile: $(jq -r .rps "$WORK/profile.json") req/s. Self time by component:"
    echo
    echo "| component | share |"
    echo "|---|---:|"
    echo "$PERF_GROUPS"
    echo
    echo "Top symbols (self time):"
    echo
    echo '```'
    echo "$PERF_TOP"
    echo '```'
  fi
  if [[ -n $METRICS ]]; then
    echo
    echo "## Store counters from /metrics after the legs"
    echo
    echo '```'
    echo "$METRICS"
    echo '```'
  fi
  echo
  echo "## Notes"
  echo
  echo "<!-- BEGIN NOTES -->"
  if [[ -n $NOTES ]]; then echo "$NOTES"; fi
  echo "<!-- END NOTES -->"
  echo
  echo "## Raw output"
  echo
  echo '```'
  for n in direct nginx pingora guard-allow guard-hold; do cat "$WORK/$n.closed.json" "$WORK/$n.open.json"; done
  cat "$WORK/wrk.nginx.json" "$WORK/wrk.guard-allow.json"
  echo "startup: $STARTUP"
  echo "audit: $AUDIT"
  echo '```'
} >"$RESULTS"

if [[ $QUICK == 1 && -z ${BENCH_RESULTS:-} ]]; then
  cat "$RESULTS"
else
  echo
  sed -n '/^## Targets/,/^### wrk/p' "$RESULTS" | sed '$d'
  log "report written to $RESULTS"
fi
