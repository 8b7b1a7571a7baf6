#!/usr/bin/env bash
# Worker scaling: tools/sipload against sipedge (embedded registrar, regcache on) with 1 and
# up to WORKERS_MAX edge workers (--workers N), USERS users per run:
#   cached  cached refreshes answered per second: open loop, one request in flight per
#           client socket, DURATION seconds, after every user registered
#   relay   first registrations relayed to the embedded registrar per second (401 then
#           200, two REGISTERs each; fresh users every run, which the cache cannot answer)
#   paced   sipedge CPU per REGISTER at RATE cached refreshes per second offered: utime +
#           stime from /proc/PID/stat over the refresh phase, divided by the answers
# A flow caches at most 8 registrations (FLOW_REGS_MAX), so the users are spread over
# USERS/USERS_PER_SOCKET client sockets on SRCS source addresses in 127.0.0.0/8, picked
# so that source-address steering (src/transport/reuseport_steer.c) gives every worker
# the same number of addresses. 1 worker: sipedge on one CPU, sipload on another.
# N workers: sipedge and sipload both on all CPUs (sipload shares them).
# Then, during a cached run with WORKERS_MAX workers: perf record (the share of samples in
# mutex/futex code and in the atomics of the handoff queue), perf stat (futex syscalls and
# context switches per REGISTER) and perf c2c (cache lines written by two CPUs, HITM)
# where the machine has the memory events; each is skipped with a message otherwise.
# Prints one table: figure, each worker count, ratio of the most workers to one worker,
# with sipload's own CPU per message.
#
# Env: USERS (20000), DURATION (10), RATE (10000), WORKERS_MAX (2), SRCS (16),
#      USERS_PER_SOCKET (8), PERF (1; 0 skips perf), PERF_SECONDS (5), QUIET_WAIT (60: at
#      most this many seconds to wait before each run for other work to leave the CPUs),
#      ROUNDS (2: every run is repeated, and the table shows the least disturbed round),
#      SIPEDGE_BIN, SIPLOAD_BIN (build/sipedge, build/tools/sipload; built in Release
#      when missing), BENCH_KEEP=1 keeps the work dir.
# Exit status: 1 when a process died, a run got no answers or the build failed; missed
# targets are reported, not failed. Loopback only; every run is bounded by `timeout`;
# every process is stopped by PID.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
root=$(pwd)

USERS=${USERS:-20000}
DURATION=${DURATION:-10}
RATE=${RATE:-10000}
WORKERS_MAX=${WORKERS_MAX:-2}
SRCS=${SRCS:-16}
USERS_PER_SOCKET=${USERS_PER_SOCKET:-8}
PERF=${PERF:-1}
PERF_SECONDS=${PERF_SECONDS:-5}
QUIET_WAIT=${QUIET_WAIT:-60}
ROUNDS=${ROUNDS:-2}
SIPEDGE_BIN=${SIPEDGE_BIN:-$root/build/sipedge}
SIPLOAD_BIN=${SIPLOAD_BIN:-$root/build/tools/sipload}

for c in taskset python3 mkfifo timeout; do
    command -v "$c" >/dev/null || { echo "bench_workers: missing $c" >&2; exit 1; }
done
if [ ! -x "$SIPEDGE_BIN" ] || [ ! -x "$SIPLOAD_BIN" ]; then
    scripts/build.sh build -DCMAKE_BUILD_TYPE=Release -DSIPEDGE_BUILD_TESTS=OFF || exit 1
fi
HAS_WORKERS=0
"$SIPEDGE_BIN" --help 2>&1 | grep -q -- '--workers' && HAS_WORKERS=1

read -r -a CPUS < <(python3 -c 'import os; print(*sorted(os.sched_getaffinity(0)))')
if [ "${#CPUS[@]}" -ge 2 ]; then
    EDGE1_CPU=${CPUS[1]}
    LOAD1_CPU=${CPUS[0]}
else
    echo "bench_workers: WARNING: one CPU; sipedge and sipload share it in every run" >&2
    EDGE1_CPU=${CPUS[0]}
    LOAD1_CPU=${CPUS[0]}
fi
ALL_CPUS=$(IFS=,; echo "${CPUS[*]}")
CLK_TCK=$(getconf CLK_TCK)

NET=127.79.$(($$ % 250 + 1))
PUB=$NET.1
CORE=$NET.2
REG=$NET.4
SRC_NET=127.80.$(($$ % 250 + 1))
WORK=$(mktemp -d /tmp/sipedge-bench-workers.XXXXXX)
# shellcheck source=scripts/bench_lib.sh
. "$root/scripts/bench_lib.sh"
FAIL=0

# steer_index A.B.C.D N: the worker reuseport_steer_index() gives an IPv4 source.
steer_index() {
    local IFS=. a b c d
    read -r a b c d <<<"$1"
    local k=$(((a << 24 | b << 16 | c << 8 | d) * 0x9E3779B1 & 0xffffffff))
    echo $(((k ^ (k >> 16)) % $2))
}

# SRCS addresses, each worker of WORKERS_MAX steering the same number (give or take one).
pick_sources() {
    local want=$(((SRCS + WORKERS_MAX - 1) / WORKERS_MAX)) n=() i w list=()
    for ((i = 0; i < WORKERS_MAX; i++)); do n[i]=0; done
    for ((i = 10; i < 255 && ${#list[@]} < SRCS; i++)); do
        w=$(steer_index "$SRC_NET.$i" "$WORKERS_MAX")
        [ "${n[w]}" -lt "$want" ] || continue
        n[w]=$((n[w] + 1))
        list+=("$SRC_NET.$i")
    done
    SRC_LIST=$(IFS=,; echo "${list[*]}")
    SRC_SPLIT=$(IFS=/; echo "${n[*]}")
}
pick_sources
SOCKETS=$(((USERS + USERS_PER_SOCKET - 1) / USERS_PER_SOCKET))

# The default policy with the guard's limits raised as scripts/bench.sh does (every user
# comes from SRCS addresses), room for every binding, and the cache on.
bench_policy "$WORK/policy" "registrar:
  max_bindings: $((USERS * 2 + 1000))
regcache:
  enabled: true"
# Four blocks of users per round and worker count (relay, cached, paced, perf): every
# run's users are new to the registrar.
BLOCKS=$((4 * WORKERS_MAX * ROUNDS))
seq 100000 $((100000 + BLOCKS * USERS - 1)) | awk '{ print "u" $1 ":pwu" $1 }' >"$WORK/users.txt"
# block_start ROUND WORKERS KIND: the first user of a run.
block_start() { echo $((100000 + ((($1 - 1) * WORKERS_MAX + $2 - 1) * 4 + $3) * USERS)); }

# cpu_ticks PID: utime + stime of the whole process (every thread), in clock ticks.
cpu_ticks() {
    local s
    s=$(<"/proc/$1/stat") || return 1
    s=${s##*) }
    local f
    read -r -a f <<<"$s"
    echo $((f[11] + f[12]))
}

# thread_ticks PID: "tid comm ticks" per thread.
thread_ticks() {
    local t s f comm
    for t in /proc/"$1"/task/*; do
        { s=$(<"$t/stat"); } 2>/dev/null || continue
        comm=${s#*(}
        comm=${comm%%)*}
        s=${s##*) }
        read -r -a f <<<"$s"
        echo "${t##*/} ${comm// /_} $((f[11] + f[12]))"
    done
}

# host_ticks: "busy steal" clock ticks summed over the CPUs the benchmark runs on (busy is
# user, nice, system, irq and softirq: softirq time of loopback delivery is not always
# charged to a process).
host_ticks() {
    local busy=0 steal=0 c f
    for c in "${CPUS[@]}"; do
        read -r -a f < <(grep "^cpu$c " /proc/stat)
        busy=$((busy + f[1] + f[2] + f[3] + f[6] + f[7]))
        steal=$((steal + f[8]))
    done
    echo "$busy $steal"
}

# other_ticks PID...: CPU ticks of every process but the given ones (with the children
# they have reaped), kernel threads included: other work that skews a run.
other_ticks() {
    local sum=0 f s p skip=" $* "
    for f in /proc/[0-9]*/stat; do
        p=${f#/proc/}
        p=${p%/stat}
        [[ $skip == *" $p "* ]] && continue
        { s=$(<"$f"); } 2>/dev/null || continue
        s=${s##*) }
        read -r -a s <<<"$s"
        sum=$((sum + s[11] + s[12] + s[13] + s[14]))
    done
    echo "$sum"
}

# quiet_wait: before a run, wait (at most QUIET_WAIT seconds) until the benchmark's CPUs
# are idle, under 0.15 CPUs busy over one second, so other work does not skew it.
quiet_wait() {
    local h0 h1 b0 b1 busy said=0 t=0
    while [ "$t" -lt "$QUIET_WAIT" ]; do
        h0=$(host_ticks)
        sleep 1
        h1=$(host_ticks)
        read -r b0 _ <<<"$h0"
        read -r b1 _ <<<"$h1"
        busy=$(((b1 - b0) * 100 / CLK_TCK))
        [ "$busy" -lt 15 ] && return 0
        [ "$said" = 0 ] && echo "bench_workers: other work keeps $busy% of a CPU busy; waiting up to ${QUIET_WAIT}s" >&2
        said=1
        t=$((t + 1))
    done
    echo "bench_workers: WARNING: still $busy% of a CPU busy by other work; measuring anyway" >&2
}

# start_edge W: sipedge with W workers (1 worker on one CPU, more on all); sets EPID.
start_edge() {
    local w=$1 cpus=$ALL_CPUS wargs=()
    [ "$w" = 1 ] && cpus=$EDGE1_CPU
    [ "$HAS_WORKERS" = 1 ] && wargs=(--workers "$w")
    EDGE_LOG=$WORK/sipedge-w$w-$2.log
    taskset -c "$cpus" "$SIPEDGE_BIN" "${wargs[@]}" --listen-udp "$PUB:5060" \
        --core "$CORE:5070" --registrar-listen "$REG:5080" --users "$WORK/users.txt" \
        --realm bench --policy "$WORK/policy" --log-level info >"$EDGE_LOG" 2>&1 &
    EPID=$!
    PIDS+=("$EPID")
    for _ in $(seq 200); do
        grep -q 'sipedge: ready' "$EDGE_LOG" && return 0
        kill -0 "$EPID" 2>/dev/null || break
        sleep 0.05
    done
    echo "bench_workers: sipedge ($w workers) did not start; log:" >&2
    tail -20 "$EDGE_LOG" >&2
    return 1
}

# edge_counters PID LOG: SIGUSR1, then the new stats lines (after the load, so the
# workers' pause for the stats falls outside every measurement).
edge_counters() {
    local before
    before=$(grep -c 'stats edge ' "$2")
    kill -USR1 "$1" 2>/dev/null || return 1
    for _ in $(seq 100); do
        [ "$(grep -c 'stats edge ' "$2")" -gt "$before" ] && break
        sleep 0.05
    done
    grep 'stats edge ' "$2" | tail -n "$3"
    grep 'stats udp ' "$2" | tail -n 1
}

# load TAG EPID CPUS FROM SIPLOAD_ARGS...: one sipload run. sipedge's CPU time is read
# FROM "start" (before sipload starts) or "refresh" (when sipload starts refreshing, on
# its stderr line, read through a FIFO so nothing polls) until sipload has exited.
# ON_REFRESH, when set, is called with EPID at the start of the refresh phase.
# Writes $WORK/TAG.out (sipload's key=value lines plus edge_cpu_us, edge_wall_us).
load() {
    local tag=$1 epid=$2 cpus=$3 from=$4
    shift 4
    rm -f "$WORK/$tag.err" "$WORK/$tag".fifo
    local fifo=$WORK/$tag.fifo c0='' c1 t0='' t1 lpid fd line h0 h1 o0 o1 child=
    mkfifo "$fifo"
    if [ "$from" = start ]; then
        o0=$(other_ticks "$epid" $$)
        h0=$(host_ticks)
        c0=$(cpu_ticks "$epid")
        t0=$(date +%s%N)
        thread_ticks "$epid" >"$WORK/$tag.threads0"
    fi
    taskset -c "$cpus" timeout -k 5 $((DURATION + PERF_SECONDS + 90)) "$SIPLOAD_BIN" \
        --to "$PUB:5060" --users "$USERS" --sockets "$SOCKETS" --src "$SRC_LIST" \
        --expires 3600 --timeout 2000 --register-timeout 60 --max-outstanding 1 "$@" \
        >"$WORK/$tag.out" 2>"$fifo" &
    lpid=$!
    PIDS+=("$lpid")
    exec {fd}<"$fifo"
    while IFS= read -r -u "$fd" line; do
        printf '%s\n' "$line" >>"$WORK/$tag.err"
        if [ -z "$c0" ] && [[ $line == *refreshing* ]]; then
            child=$(cat "/proc/$lpid/task/$lpid/children" 2>/dev/null)
            # shellcheck disable=SC2086 # child: the PIDs of sipload under timeout
            o0=$(other_ticks "$epid" $$ "$lpid" $child)
            h0=$(host_ticks)
            c0=$(cpu_ticks "$epid")
            t0=$(date +%s%N)
            thread_ticks "$epid" >"$WORK/$tag.threads0"
            [ -n "${ON_REFRESH:-}" ] && "$ON_REFRESH" "$epid" "$tag"
        fi
    done
    exec {fd}<&-
    wait "$lpid"
    local rc=$? b0 s0 b1 s1
    stop "$lpid"
    t1=$(date +%s%N)
    h1=$(host_ticks)
    # shellcheck disable=SC2086
    o1=$(other_ticks "$epid" $$ "$lpid" $child)
    if ! c1=$(cpu_ticks "$epid"); then
        echo "bench_workers: $tag: sipedge died" >&2
        FAIL=1
        return 1
    fi
    thread_ticks "$epid" >"$WORK/$tag.threads1"
    if [ -z "$c0" ]; then
        echo "bench_workers: $tag: sipload never reached the refresh phase (status $rc)" >&2
        tail -5 "$WORK/$tag.err" >&2
        FAIL=1
        return 1
    fi
    {
        echo "edge_cpu_us=$(((c1 - c0) * 1000000 / CLK_TCK))"
        echo "edge_wall_us=$(((t1 - t0) / 1000))"
        echo "sipload_status=$rc"
        read -r b0 s0 <<<"$h0"
        read -r b1 s1 <<<"$h1"
        echo "host_busy_us=$(((b1 - b0) * 1000000 / CLK_TCK))"
        echo "host_steal_us=$(((s1 - s0) * 1000000 / CLK_TCK))"
        echo "other_cpu_us=$(((o1 - o0) * 1000000 / CLK_TCK))"
    } >>"$WORK/$tag.out"
    grep '^# sipload' "$WORK/$tag.out" | sed "s/^# /  $tag: /" >&2
    case $rc in
        0 | 1) ;;
        *) echo "bench_workers: $tag: sipload exit status $rc" >&2; FAIL=1 ;;
    esac
    [ "$rc" = 1 ] && echo "bench_workers: $tag: not every user registered" >&2
    return 0
}

# noisy TAG: true when other processes used more than 0.15 CPUs during run TAG.
noisy() {
    local o w
    o=$(sed -n 's/^other_cpu_us=//p' "$WORK/$1.out")
    w=$(sed -n 's/^edge_wall_us=//p' "$WORK/$1.out")
    [ -n "$o" ] && [ -n "$w" ] && [ "$w" -gt 0 ] && [ $((o * 100 / w)) -gt 15 ]
}

# run_kind W KIND ROUND: run_once, and once more when other work skewed the first attempt.
run_kind() {
    run_once "$@" || return 1
    [ "$2" = perf ] && return 0
    if noisy "w$1-$2-r$3"; then
        echo "bench_workers: w$1-$2-r$3: other processes were busy during the run; once more" >&2
        run_once "$@"
    fi
    return 0
}

# run_once W KIND ROUND: a fresh sipedge with W workers, one load of KIND, the counters,
# stop. Files: $WORK/wW-KIND-rROUND.* (the perf run: $WORK/wW-perf.*).
run_once() {
    local w=$1 kind=$2 round=$3 cpus=$ALL_CPUS tag=w$1-$2-r$3 k
    [ "$kind" = perf ] && tag=w$1-perf
    [ "$w" = 1 ] && cpus=$LOAD1_CPU
    case $kind in relay) k=0 ;; cached) k=1 ;; paced) k=2 ;; perf) k=3 ;; esac
    local start
    start=$(block_start "$round" "$w" "$k")
    quiet_wait
    start_edge "$w" "$kind" || { FAIL=1; return 1; }
    case $kind in
        relay) load "$tag" "$EPID" "$cpus" start --start "$start" --open-loop --duration 0 ;;
        cached) load "$tag" "$EPID" "$cpus" refresh --start "$start" --open-loop \
                    --duration "$DURATION" ;;
        paced) load "$tag" "$EPID" "$cpus" refresh --start "$start" --rate "$RATE" \
                   --duration "$DURATION" ;;
        perf) ON_REFRESH=perf_start load "$tag" "$EPID" "$cpus" refresh --start "$start" \
                  --open-loop --duration $((PERF_SECONDS + 2)) ;;
    esac
    local lines=1
    [ "$w" -gt 1 ] && lines=$((w + 1))
    if kill -0 "$EPID" 2>/dev/null; then
        edge_counters "$EPID" "$EDGE_LOG" "$lines" >"$WORK/$tag.stats"
        stop "$EPID"
    else
        echo "bench_workers: $tag: sipedge died; log:" >&2
        tail -20 "$EDGE_LOG" >&2
        FAIL=1
    fi
    [ "$kind" = perf ] && perf_finish "$tag"
    return 0
}

# ---- perf ---------------------------------------------------------------------------------

PERF_PIDS=()
C2C_OK=0
perf_probe() {
    PERF_NOTE=
    if ! command -v perf >/dev/null; then
        PERF_NOTE="perf not installed"
        return 1
    fi
    if ! perf record -o "$WORK/probe.data" -- true >/dev/null 2>&1; then
        PERF_NOTE="perf record does not work here (perf_event_paranoid, no permission?)"
        return 1
    fi
    local out
    out=$(timeout 20 perf c2c record -o "$WORK/c2c-probe.data" -- true 2>&1)
    if [ -s "$WORK/c2c-probe.data" ] && ! grep -qi 'not supported' <<<"$out"; then
        C2C_OK=1
    else
        C2C_NOTE="perf c2c: $(head -n 1 <<<"$out") (no memory-sampling events: usual in a VM)"
    fi
    return 0
}

# perf_start EPID TAG: perf record, perf stat and perf c2c on EPID for PERF_SECONDS.
# shellcheck disable=SC2317 # called through ON_REFRESH
perf_start() {
    local epid=$1 tag=$2
    timeout -k 5 $((PERF_SECONDS + 30)) perf record -F 999 -g -p "$epid" -o "$WORK/$tag.data" \
        -- sleep "$PERF_SECONDS" >"$WORK/$tag.record.log" 2>&1 &
    PERF_PIDS+=($!)
    PIDS+=($!)
    timeout -k 5 $((PERF_SECONDS + 30)) perf stat -x, -o "$WORK/$tag.stat" \
        -e task-clock,context-switches,cpu-migrations \
        -e syscalls:sys_enter_futex,syscalls:sys_enter_recvmmsg \
        -e syscalls:sys_enter_sendmmsg,syscalls:sys_enter_sendmsg,syscalls:sys_enter_epoll_wait \
        -p "$epid" -- sleep "$PERF_SECONDS" >"$WORK/$tag.stat.log" 2>&1 &
    PERF_PIDS+=($!)
    PIDS+=($!)
    if [ "$C2C_OK" = 1 ]; then
        timeout -k 5 $((PERF_SECONDS + 30)) perf c2c record -o "$WORK/$tag.c2c" -p "$epid" \
            -- sleep "$PERF_SECONDS" >"$WORK/$tag.c2c.log" 2>&1 &
        PERF_PIDS+=($!)
        PIDS+=($!)
    fi
}

perf_finish() {
    local tag=$1 p
    for p in "${PERF_PIDS[@]}"; do
        wait "$p" 2>/dev/null
        stop "$p"
    done
    PERF_PIDS=()
    timeout 120 perf report -i "$WORK/$tag.data" --stdio --no-children --sort sym -g none \
        --percent-limit 0 >"$WORK/$tag.report" 2>/dev/null
    timeout 120 perf report -i "$WORK/$tag.data" --stdio --no-children --sort pid -g none \
        >"$WORK/$tag.comm" 2>/dev/null
    if [ "$C2C_OK" = 1 ] && [ -s "$WORK/$tag.c2c" ]; then
        timeout 120 perf c2c report -i "$WORK/$tag.c2c" --stdio >"$WORK/$tag.c2c.report" 2>&1
    fi
}

# ---- runs ---------------------------------------------------------------------------------

WS=()
for ((w = 1; w <= WORKERS_MAX; w++)); do
    if [ "$w" -gt 1 ] && [ "$HAS_WORKERS" = 0 ]; then
        echo "bench_workers: this sipedge has no --workers; only 1 worker is measured" >&2
        break
    fi
    WS+=("$w")
done
echo "bench_workers: $USERS users per run over $SOCKETS sockets on $SRCS sources" \
    "(split $SRC_SPLIT over $WORKERS_MAX workers), ${DURATION}s per run, paced at $RATE/s;" \
    "1 worker: sipedge on CPU $EDGE1_CPU, sipload on CPU $LOAD1_CPU; more: both on $ALL_CPUS" >&2
read -r load1 _ </proc/loadavg
if awk -v l="$load1" 'BEGIN { exit !(l > 0.5) }'; then
    echo "bench_workers: WARNING: load average $load1 before start; other work skews the numbers" >&2
fi
for ((round = 1; round <= ROUNDS; round++)); do
    for w in "${WS[@]}"; do
        for kind in relay cached paced; do
            echo "== round $round, $w worker(s): $kind" >&2
            run_kind "$w" "$kind" "$round"
        done
    done
done
PERF_W=${WS[-1]}
PERF_NOTE=
C2C_NOTE=
if [ "$PERF" = 1 ] && perf_probe; then
    echo "== $PERF_W worker(s): perf during a cached run" >&2
    run_kind "$PERF_W" perf 1
elif [ "$PERF" = 1 ]; then
    echo "bench_workers: perf skipped: $PERF_NOTE" >&2
fi

python3 - "$WORK" "${WS[*]}" "$RATE" "$PERF_W" "$PERF_SECONDS" "$C2C_NOTE" "$SRC_SPLIT" \
    "$ROUNDS" <<'PY' || FAIL=1
import os, re, sys
work, ws, rate, perf_w, perf_s, c2c_note, split, rounds = sys.argv[1:9]
ws = [int(w) for w in ws.split()]
rate, perf_s, rounds = int(rate), float(perf_s), int(rounds)

def kv(path):
    d = {}
    try:
        for line in open(path):
            if "=" in line and not line.startswith("#"):
                k, v = line.rstrip("\n").split("=", 1)
                d[k] = v
    except OSError:
        pass
    return d

def num(d, k):
    try:
        return float(d[k])
    except (KeyError, ValueError):
        return None

def stats(tag):
    """Summed and per-worker edge counters from the SIGUSR1 lines."""
    tot, per = {}, []
    try:
        for line in open(f"{work}/{tag}.stats"):
            vals = dict(re.findall(r"(\w+)=(\d+)", line))
            if re.search(r"worker \d+ stats edge", line):
                per.append(vals)
            else:
                tot.update(vals)
    except OSError:
        pass
    return tot, per

def threads(tag):
    a, b = {}, {}
    for name, d in (("threads0", a), ("threads1", b)):
        try:
            for line in open(f"{work}/{tag}.{name}"):
                tid, comm, t = line.split()
                d[tid] = (comm, int(t))
        except OSError:
            pass
    hz = os.sysconf("SC_CLK_TCK")
    out = []
    for tid, (comm, t1) in sorted(b.items(), key=lambda x: int(x[0])):
        t0 = a.get(tid, (comm, 0))[1]
        out.append(f"{comm}[{tid}] {(t1 - t0) / hz:.2f}s")
    return ", ".join(out)

def answered_refresh(d):
    """Answers after the registration phase: all answers minus a 401 and a 200 per user."""
    a = sum(num(d, k) or 0 for k in ("ok_200", "challenged_401", "other_final"))
    return a - 2 * (num(d, "registered") or 0)

def cpu_per(d, n):
    c = num(d, "edge_cpu_us")
    return c / n if c is not None and n and n > 0 else None

def relay_rate(d):
    try:
        return num(d, "registered") / num(d, "register_seconds")
    except (TypeError, ZeroDivisionError):
        return None

# Per worker count and kind, the round least disturbed: the highest rate (relay, cached),
# the lowest CPU per REGISTER (paced). Other work only ever makes these worse.
HEADLINE = {
    "relay": (relay_rate, max),
    "cached": (lambda d: num(d, "rate_200"), max),
    "paced": (lambda d: cpu_per(d, answered_refresh(d)), min),
}
R, T, ALL = {}, {}, {}
failed = False
for w in ws:
    for kind in ("relay", "cached", "paced"):
        runs = []
        for r in range(1, rounds + 1):
            tag = f"w{w}-{kind}-r{r}"
            d = kv(f"{work}/{tag}.out")
            answered = (num(d, "ok_200") or 0) + (num(d, "challenged_401") or 0) + \
                       (num(d, "other_final") or 0)
            if not d or answered == 0:
                print(f"bench_workers: {tag}: no answers", file=sys.stderr)
                failed = True
                continue
            runs.append((tag, d))
        f, pick = HEADLINE[kind]
        scored = [(f(d), tag, d) for tag, d in runs if f(d) is not None]
        ALL[(w, kind)] = [v for v, _, _ in scored]
        if scored:
            _, T[(w, kind)], R[(w, kind)] = pick(scored, key=lambda x: x[0])
        else:
            T[(w, kind)], R[(w, kind)] = f"w{w}-{kind}-r1", {}

rows = []
def row(name, f, fmt="{:.0f}"):
    vals = []
    for w in ws:
        try:
            vals.append(f(R[(w, "relay")], R[(w, "cached")], R[(w, "paced")]))
        except (TypeError, ZeroDivisionError, KeyError):
            vals.append(None)
    rows.append((name, vals, fmt))

row("cached refreshes answered/s (open loop)", lambda r, c, p: num(c, "rate_200"))
row("relayed first registrations/s (users)",
    lambda r, c, p: num(r, "registered") / num(r, "register_seconds"))
row("  relayed REGISTERs/s (401 + 200 each)",
    lambda r, c, p: (num(r, "ok_200") + num(r, "challenged_401")) / num(r, "register_seconds"))
row(f"sipedge CPU us per REGISTER, {rate}/s paced cached",
    lambda r, c, p: cpu_per(p, answered_refresh(p)), "{:.2f}")
row("  answered/s in that paced run", lambda r, c, p: num(p, "rate_200"))
row("sipedge CPU us per REGISTER, cached open loop",
    lambda r, c, p: cpu_per(c, answered_refresh(c)), "{:.2f}")
row("sipedge CPU us per relayed REGISTER",
    lambda r, c, p: cpu_per(r, num(r, "ok_200") + num(r, "challenged_401")), "{:.2f}")
row("cached answers/s per sipedge CPU (1e6 / CPU us per REGISTER)",
    lambda r, c, p: 1e6 / cpu_per(c, answered_refresh(c)))
row("sipedge CPUs busy, cached open loop",
    lambda r, c, p: num(c, "edge_cpu_us") / num(c, "edge_wall_us"), "{:.2f}")
row("host CPUs busy, cached open loop",
    lambda r, c, p: num(c, "host_busy_us") / num(c, "edge_wall_us"), "{:.2f}")
row("  CPUs used by other processes, cached open loop",
    lambda r, c, p: num(c, "other_cpu_us") / num(c, "edge_wall_us"), "{:.2f}")
row("  CPUs used by other processes, paced",
    lambda r, c, p: num(p, "other_cpu_us") / num(p, "edge_wall_us"), "{:.2f}")
row("  CPUs stolen by the hypervisor, cached open loop",
    lambda r, c, p: num(c, "host_steal_us") / num(c, "edge_wall_us"), "{:.2f}")
row("sipload CPU us per message, cached", lambda r, c, p: num(c, "cpu_us_per_msg"), "{:.2f}")
row("sipload CPU us per message, relay", lambda r, c, p: num(r, "cpu_us_per_msg"), "{:.2f}")
row("sipload CPU us per message, paced", lambda r, c, p: num(p, "cpu_us_per_msg"), "{:.2f}")
def per_syscall(tag, what):
    tot, _ = stats(tag)
    try:
        return int(tot[f"{what}_datagrams"]) / int(tot[f"{what}_syscalls"])
    except (KeyError, ValueError, ZeroDivisionError):
        return None
for w in ws:
    for kind in ("cached", "paced"):
        R[(w, kind)]["rx_batch"] = per_syscall(T[(w, kind)], "rx")
row("sipedge datagrams per receive call, cached (whole run)", lambda r, c, p: c["rx_batch"],
    "{:.1f}")
row("sipedge datagrams per receive call, paced (whole run)", lambda r, c, p: p["rx_batch"],
    "{:.1f}")
row("refresh latency p50 us, paced", lambda r, c, p: num(p, "refresh_latency_p50_us"))
row("refresh latency p99 us, paced", lambda r, c, p: num(p, "refresh_latency_p99_us"))
row("refresh latency p50 us, cached open loop",
    lambda r, c, p: num(c, "refresh_latency_p50_us"))
row("first registration latency p50 us, relay", lambda r, c, p: num(r, "latency_p50_us"))
row("timeouts relay/cached/paced",
    lambda r, c, p: "/".join(str(int(num(d, "timeouts") or 0)) for d in (r, c, p)), "{}")

hdr = ["figure"] + [f"{w} worker{'s' if w > 1 else ''}" for w in ws]
if len(ws) > 1:
    hdr.append(f"{ws[-1]}w/1w")
width = max(len(r[0]) for r in rows) + 2
print()
print(f"Worker scaling (sipedge with the embedded registrar, regcache on); per column the "
      f"best of {rounds} round(s): highest rate, lowest CPU per REGISTER at {rate}/s")
print(f"{hdr[0]:{width}s}" + "".join(f"{h:>12s}" for h in hdr[1:]))
for name, vals, fmt in rows:
    cells = [fmt.format(v) if v is not None else "-" for v in vals]
    line = f"{name:{width}s}" + "".join(f"{c:>12s}" for c in cells)
    if len(ws) > 1 and all(isinstance(v, float) for v in (vals[0], vals[-1])) and vals[0]:
        line += f"{vals[-1] / vals[0]:>12.2f}"
    print(line)

print("every round: " + "; ".join(
    f"{kind} {w}w " + "/".join(f"{v:.{2 if kind == 'paced' else 0}f}" for v in ALL[(w, kind)])
    for kind in ("cached", "relay", "paced") for w in ws))
for (w, kind), d in sorted(R.items()):
    o, wall = num(d, "other_cpu_us"), num(d, "edge_wall_us")
    if o is not None and wall and o / wall > 0.15:
        print(f"WARNING: other processes used {o / wall:.2f} CPUs during the {w}-worker {kind} "
              "run: its figures are skewed")

print()
for w in ws:
    tot, per = stats(T[(w, "cached")])
    hits = tot.get("regcache_hit")
    d = R[(w, "cached")]
    a = answered_refresh(d)
    share = f"{int(hits) / a * 100:.0f}% of refresh answers" if hits and a > 0 else "-"
    line = f"{w} worker(s), cached run: regcache_hit={hits or '-'} ({share})"
    if per:
        line += "; per worker " + "/".join(p.get("regcache_hit", "-") for p in per)
    print(line)
    print(f"  CPU per thread over the refresh phase: {threads(T[(w, 'cached')])}")
    tot, per = stats(T[(w, "relay")])
    if per:
        print(f"{w} worker(s), relay run: relayed_register per worker "
              + "/".join(p.get("relayed_register", "-") for p in per))
    print(f"  CPU per thread over the relay run: {threads(T[(w, 'relay')])}")
print(f"source addresses per worker (steering, {len(split.split('/'))} workers): {split}")

if len(ws) > 1:
    a, b = rows[0][1][0], rows[0][1][-1]
    c1, c2 = rows[3][1][0], rows[3][1][-1]
    print()
    if a and b:
        print(f"target: {ws[-1]} workers answer >= 1.6x the cached refreshes of 1 worker: "
              f"x{b / a:.2f} ({'met' if b / a >= 1.6 else 'missed'})")
    # What the CPUs allow when sipload shares them: each answer costs sipedge's CPU plus
    # sipload's for two messages (its request and the answer).
    c = R[(ws[-1], "cached")]
    e, l = cpu_per(c, answered_refresh(c)), num(c, "cpu_us_per_msg")
    ncpu = len(os.sched_getaffinity(0))
    if e and l:
        print(f"ceiling for {ws[-1]} workers sharing {ncpu} CPUs with sipload: {ncpu} CPUs / "
              f"({e:.1f} us sipedge + {2 * l:.1f} us sipload per answer) = "
              f"{ncpu * 1e6 / (e + 2 * l):.0f}/s, x{ncpu * 1e6 / (e + 2 * l) / a:.2f} of 1 worker")
    if c1 and c2:
        print(f"target: CPU per REGISTER at {rate}/s with {ws[-1]} workers within 10% of 1 worker: "
              f"{(c2 / c1 - 1) * 100:+.1f}% ({'met' if c2 <= 1.1 * c1 else 'missed'})")

# perf
tag = f"w{perf_w}-perf"
rep = f"{work}/{tag}.report"
if os.path.exists(rep):
    d = kv(f"{work}/{tag}.out")
    syms = []
    for line in open(rep):
        m = re.match(r"\s*([\d.]+)%\s+\[(.)\]\s+(.+?)\s*$", line)
        if m:
            syms.append((float(m.group(1)), m.group(2), m.group(3)))
    lock_re = re.compile(r"pthread_mutex|pthread_cond|pthread_rwlock|pthread_spin|__lll_lock|"
                         r"lll_lock|futex|sem_wait|sem_post")
    atomic_re = re.compile(r"^(mpsc_|handoff_)|atomic|cmpxchg")
    alloc_re = re.compile(r"^(malloc|free|calloc|realloc|cfree|_int_malloc|_int_free|"
                          r"malloc_consolidate|tcache)")
    def share(rx):
        hit = [(p, s) for p, _, s in syms if rx.search(s)]
        return sum(p for p, _ in hit), hit
    print()
    print(f"perf, {perf_w} worker(s), cached refreshes open loop, {perf_s:.0f} s "
          f"(sipload: {d.get('rate_200', '-')} answers/s with perf attached):")
    for label, rx in (("mutex/futex/lll_lock", lock_re), ("atomics (mpsc_*, handoff_*, *atomic*)",
                      atomic_re), ("allocator (malloc/free)", alloc_re)):
        tot, hit = share(rx)
        top = ", ".join(f"{s} {p:.2f}%" for p, s in sorted(hit, reverse=True)[:6]) or "none"
        print(f"  samples in {label}: {tot:.2f}%  [{top}]")
    kern = sum(p for p, k, _ in syms if k == "k")
    print(f"  samples in the kernel: {kern:.1f}%; top symbols:")
    for p, k, s in syms[:15]:
        print(f"    {p:6.2f}%  [{k}] {s}")
    try:
        comm = [l.strip() for l in open(f"{work}/{tag}.comm") if re.match(r"\s*[\d.]+%", l)]
        print("  samples per thread: " + "; ".join(re.sub(r"\s+", " ", c) for c in comm))
    except OSError:
        pass
    st = {}
    try:
        for line in open(f"{work}/{tag}.stat"):
            f = line.strip().split(",")
            if len(f) > 2 and f[0].replace(".", "").isdigit():
                st[f[2]] = float(f[0])
    except OSError:
        pass
    r200 = num(d, "rate_200")
    if st and r200:
        n = r200 * perf_s
        print(f"  perf stat over {perf_s:.0f} s, per REGISTER answered (~{n:.0f}): " + ", ".join(
            f"{k.replace('syscalls:sys_enter_', '')} {v / n:.4f}" for k, v in st.items()
            if k != "task-clock"))
        if "task-clock" in st:
            print(f"  sipedge CPUs busy under perf: {st['task-clock'] / 1e3 / perf_s:.2f}")
    c2c = f"{work}/{tag}.c2c.report"
    if os.path.exists(c2c):
        print("  perf c2c summary:")
        keep = False
        for line in open(c2c):
            if "Trace Event Information" in line or "Global Shared Cache Line" in line:
                keep = True
            if "Shared Data Cache Line Table" in line:
                keep = False
            if keep:
                print("    " + line.rstrip())
    elif c2c_note:
        print(f"  {c2c_note}")
sys.exit(1 if failed else 0)
PY
exit "$FAIL"
