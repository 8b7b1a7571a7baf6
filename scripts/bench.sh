#!/usr/bin/env bash
# REGISTER benchmark: the same Kamailio registrar reached
#   (a) direct      sipp -> Kamailio registrar
#   (b) sipedge     sipp -> sipedge -> Kamailio registrar
#   (c) kam-edge    sipp -> Kamailio edge (tests/integration/kamailio/edge.cfg) -> registrar
#   (d) udpfwd      sipp -> a bare recvmmsg/sendmmsg forwarder (tools/udpfwd) -> registrar
# and, per target, the latency of sequential REGISTERs timed in microseconds
# (tests/bench/latency.py), whose difference to "direct" is the hop's added latency.
# Each target climbs a ladder of REGISTER rates (STEP_SECONDS each, USERS distinct users
# by csv injection) until a step has a failed call or a retransmission. Servers run on
# CPU 0, sipp on CPU 1 (taskset). Prints, per step: calls ok/failed, retransmissions,
# p50/p99 response time, edge and registrar CPU microseconds per REGISTER, edge memory.
#
# Env: RATES ("2000 4000 6000 8000 10000 14000"), STEP_SECONDS (10), USERS (20000),
#      TARGETS ("direct udpfwd sipedge kam-edge"; "sipedge-state" is sipedge with
#      --state-dir, for the cost of persistence; "sipedge-ref" is SIPEDGE_REF_BIN, another
#      build, e.g. of an earlier commit, so two builds are compared in one run),
#      SIPEDGE_BIN (build/sipedge; built in Release when missing), BENCH_KEEP=1 keeps the
#      work dir.
#      SOCKETS (1): client sockets sipp spreads the users over (flows at the edge).
#      BENCH_POLICY: sipedge policy dir. Default: policies/default plus an overlay that
#      lifts the guard's rate limits (one sipp source sends everything; the buckets are
#      still evaluated, they just never trip), so the edge's relay cost is measured.
# Bounded: every sipp run has -timeout; every process is stopped by PID.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
root=$(pwd)

RATES=${RATES:-2000 4000 6000 8000 10000 14000}
STEP_SECONDS=${STEP_SECONDS:-10}
USERS=${USERS:-20000}
TARGETS=${TARGETS:-direct udpfwd sipedge kam-edge}
BENCH_POLICY=${BENCH_POLICY:-}
# One client socket by default; SOCKETS=N spreads the users over N sockets (N flows at
# the edge), which is what the per-flow state (journal, snapshots) is measured with.
SOCKETS=${SOCKETS:-1}
if [ "$SOCKETS" -gt 1 ]; then SIPP_SOCKETS="-t un -max_socket $SOCKETS"; else SIPP_SOCKETS="-t u1"; fi
UDPFWD_BIN=${UDPFWD_BIN:-$root/build/tools/udpfwd}
SIPEDGE_BIN=${SIPEDGE_BIN:-$root/build/sipedge}
SIPEDGE_REF_BIN=${SIPEDGE_REF_BIN:-}
KAM_CFG_DIR=$root/tests/integration/kamailio
SIPP_DIR=$root/tests/integration/sipp

for c in sipp kamailio kamcmd taskset python3; do
    command -v "$c" >/dev/null || { echo "bench: missing $c (scripts/deps-debian.sh test)" >&2; exit 1; }
done
if { [[ " $TARGETS " == *" sipedge "* ]] && [ ! -x "$SIPEDGE_BIN" ]; } ||
   { [[ " $TARGETS " == *" udpfwd "* ]] && [ ! -x "$UDPFWD_BIN" ]; }; then
    scripts/build.sh build -DCMAKE_BUILD_TYPE=Release -DSIPEDGE_BUILD_TESTS=OFF || exit 1
fi
if [[ " $TARGETS " == *" sipedge-ref "* ]] && [ ! -x "$SIPEDGE_REF_BIN" ]; then
    echo "bench: target sipedge-ref needs SIPEDGE_REF_BIN (a sipedge binary)" >&2; exit 1
fi
ncpu=$(nproc)
SRV_CPU=0
CLI_CPU=$((ncpu > 1 ? 1 : 0))

NET=127.77.$(($$ % 250 + 1))
REG=$NET.3
PUB=$NET.1
CORE=$NET.2
KEDGE=$NET.5
CLI=$NET.10
WORK=$(mktemp -d /tmp/sipedge-bench.XXXXXX)
# shellcheck source=scripts/bench_lib.sh
. "$root/scripts/bench_lib.sh"

# kam NAME CFG ADDR [DEFINES...]: Kamailio on CPU 0; sets KPID.
kam() {
    local name=$1 cfg=$2 addr=$3
    shift 3
    local dir=$WORK/$name
    mkdir -p "$dir/run"
    local args=(-DD -E -f "$cfg" -l "udp:$addr:5060" -Y "$dir/run" -w "$dir" -m 256 -M 16
        -n 1 -a no -A "CTL_SOCK=\"unix:$dir/ctl\"")
    local d
    for d in "$@"; do args+=(-A "$d"); done
    taskset -c "$SRV_CPU" kamailio "${args[@]}" >"$dir/log" 2>&1 &
    local pid=$!
    PIDS+=("$pid")
    for _ in $(seq 100); do
        kamcmd -s "unix:$dir/ctl" core.version >/dev/null 2>&1 && { KPID=$pid; return 0; }
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    echo "bench: kamailio $name did not start; log:" >&2
    tail -20 "$dir/log" >&2
    return 1
}

# start_server NAME: a server on CPU 0 (the rest of the arguments are its command line),
# logging to $WORK/NAME.log; waits for "NAME: ready" there and sets SPID.
start_server() {
    local name=$1
    shift
    taskset -c "$SRV_CPU" "$@" >"$WORK/$name.log" 2>&1 &
    local pid=$!
    PIDS+=("$pid")
    for _ in $(seq 100); do
        grep -q "$name: ready" "$WORK/$name.log" && { SPID=$pid; return 0; }
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    echo "bench: $name did not start; log:" >&2
    tail -20 "$WORK/$name.log" >&2
    return 1
}

start_sipedge() {
    start_server sipedge "$SIPEDGE_BIN" --workers 1 --listen-udp "$PUB:5060" --core "$CORE:5070" \
        --registrar "$REG:5060" --policy "$BENCH_POLICY" --log-level info
}

# The same with persistence on: edge snapshots every 5 s and the ban state in a fresh
# state directory, so "sipedge" vs "sipedge-state" in one run is persistence's cost.
start_sipedge_state() {
    rm -rf "$WORK/state"
    start_server sipedge "$SIPEDGE_BIN" --workers 1 --listen-udp "$PUB:5060" --core "$CORE:5070" \
        --registrar "$REG:5060" --policy "$BENCH_POLICY" --log-level info --state-dir "$WORK/state"
}

# The reference build: the same flags, another binary.
start_sipedge_ref() {
    start_server sipedge "$SIPEDGE_REF_BIN" --listen-udp "$PUB:5060" --core "$CORE:5070" \
        --registrar "$REG:5060" --policy "$BENCH_POLICY" --log-level info
}

start_udpfwd() { start_server udpfwd "$UDPFWD_BIN" "$PUB:5060" "$REG:5060"; }

# The default policy's guard limits are sized for the public internet; a load test from
# one address would trip them, so the benchmark raises them (the buckets are still checked).
if [ -z "$BENCH_POLICY" ]; then
    BENCH_POLICY=$WORK/policy
    bench_policy "$BENCH_POLICY"
fi

# Users 100000.. so they never clash with the integration tests' users.
{
    echo SEQUENTIAL
    for ((u = 100000; u < 100000 + USERS; u++)); do echo "$u;pw$u;"; done
} >"$WORK/users.csv"

usage() { [ -n "$1" ] && python3 "$root/tests/bench/proc_usage.py" "$1" || echo "0 0 0"; }

results=$WORK/results.tsv
printf 'target\trate\tok\tfailed\tretrans\tp50_ms\tp99_ms\tedge_us_per_reg\treg_us_per_reg\tedge_pss_kib\tedge_rss_kib\n' >"$results"

run_target() {
    local target=$1 dst reg_pid edge_pid=
    kam registrar "$KAM_CFG_DIR/registrar.cfg" "$REG" || return 1
    reg_pid=$KPID
    case $target in
        direct) dst=$REG:5060 ;;
        sipedge) start_sipedge || return 1; edge_pid=$SPID; dst=$PUB:5060 ;;
        sipedge-state) start_sipedge_state || return 1; edge_pid=$SPID; dst=$PUB:5060 ;;
        sipedge-ref) start_sipedge_ref || return 1; edge_pid=$SPID; dst=$PUB:5060 ;;
        udpfwd) start_udpfwd || return 1; edge_pid=$SPID; dst=$PUB:5060 ;;
        kam-edge) kam edge "$KAM_CFG_DIR/edge.cfg" "$KEDGE" "REGISTRAR=\"sip:$REG:5060\"" || return 1
                  edge_pid=$KPID; dst=$KEDGE:5060 ;;
    esac
    local lat
    lat=$(taskset -c "$CLI_CPU" python3 "$root/tests/bench/latency.py" "$dst" "$CLI" "${LAT_COUNT:-2000}")
    printf '%s\t%s\n' "$target" "$lat" >>"$WORK/latency.tsv"
    echo "latency $target: n p50_us p90_us p99_us = $lat" >&2
    local rate
    for rate in $RATES; do
        local calls=$((rate * STEP_SECONDS)) tag=$target-$rate
        local e0 r0 e1 r1
        read -r e0 _ _ < <(usage "$edge_pid")
        read -r r0 _ _ < <(usage "$reg_pid")
        # shellcheck disable=SC2086 # SIPP_SOCKETS is two or four words
        (cd "$WORK" && taskset -c "$CLI_CPU" timeout -k 5 $((STEP_SECONDS * 3 + 20)) sipp -nostdin \
            -sf "$SIPP_DIR/reg_uac.xml" -inf "$WORK/users.csv" -key domain "$REG" -key expires 3600 \
            -i "$CLI" -p 5099 $SIPP_SOCKETS -r "$rate" -m "$calls" -l $((rate * 2)) \
            -max_retrans 2 -recv_timeout 4000 -timeout $((STEP_SECONDS * 3 + 10))s \
            -trace_stat -stf "$WORK/$tag.csv" -fd 1 -trace_rtt -rtt_freq 1000 \
            -buff_size 4194304 "$dst") >"$WORK/$tag.out" 2>&1
        read -r e1 _ _ < <(usage "$edge_pid")
        read -r r1 _ _ < <(usage "$reg_pid")
        local pss=0 rss=0
        [ -n "$edge_pid" ] && read -r _ pss rss < <(usage "$edge_pid")
        local ok failed retr
        read -r ok failed retr < <(python3 - "$WORK/$tag.csv" <<'PY'
import sys
try:
    rows = [l.rstrip("\n").split(";") for l in open(sys.argv[1]) if l.strip()]
    h = rows[0]; last = rows[-1]
    print(last[h.index("SuccessfulCall(C)")], last[h.index("FailedCall(C)")],
          last[h.index("Retransmissions(C)")])
except Exception:
    print("0 ? ?")
PY
)
        local rtt
        rtt=$(python3 "$root/tests/bench/rtt_stats.py" "$WORK"/reg_uac_*_rtt.csv)
        rm -f "$WORK"/reg_uac_*_rtt.csv
        local p50 p99
        read -r _ p50 p99 _ <<<"$rtt"
        local edge_us=- reg_us=-
        if [ "${ok:-0}" -gt 0 ] 2>/dev/null; then
            [ -n "$edge_pid" ] && edge_us=$(((e1 - e0) / ok))
            reg_us=$(((r1 - r0) / ok))
        fi
        [ -n "$edge_pid" ] || { pss=-; rss=-; }
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$target" "$rate" "$ok" "$failed" \
            "$retr" "$p50" "$p99" "$edge_us" "$reg_us" "$pss" "$rss" | tee -a "$results" >&2
        if [ "$failed" != 0 ] || [ "$retr" != 0 ] || [ "$ok" != "$calls" ]; then
            break
        fi
    done
    [ -n "$edge_pid" ] && stop "$edge_pid"
    stop "$reg_pid"
}

echo "bench: servers on CPU $SRV_CPU, sipp on CPU $CLI_CPU; rates: $RATES; ${STEP_SECONDS}s per step; $USERS users" >&2
read -r load1 _ </proc/loadavg
if awk -v l="$load1" 'BEGIN { exit !(l > 0.5) }'; then
    echo "bench: WARNING: load average $load1 before start; other work on this host skews the numbers" >&2
fi
for t in $TARGETS; do
    echo "== $t" >&2
    run_target "$t" || echo "bench: target $t could not start" >&2
    cleanup
done

python3 - "$results" "$WORK/latency.tsv" <<'PY'
import sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
lat = {}
try:
    for l in open(sys.argv[2]):
        t, v = l.rstrip("\n").split("\t")
        lat[t] = v.split()
except OSError:
    pass
hdr, rows = rows[0], rows[1:]
print()
print("REGISTER benchmark (per step; a step is clean when failed = 0 and retrans = 0; sipp times have 1 ms resolution)")
print(f"{'target':9s} {'rate/s':>7s} {'ok':>7s} {'failed':>6s} {'retr':>6s} {'p50 ms':>7s} {'p99 ms':>7s} "
      f"{'edge us/reg':>11s} {'reg us/reg':>10s} {'edge PSS KiB':>12s} {'edge RSS KiB':>12s}")
for r in rows:
    print(f"{r[0]:9s} {r[1]:>7s} {r[2]:>7s} {r[3]:>6s} {r[4]:>6s} {r[5]:>7s} {r[6]:>7s} "
          f"{r[7]:>11s} {r[8]:>10s} {r[9]:>12s} {r[10]:>12s}")
best = {}
for r in rows:
    clean = r[3] == "0" and r[4] == "0" and r[2] != "0"
    if clean:
        t = r[0]
        if t not in best or int(r[1]) > int(best[t][1]):
            best[t] = r
print()
print("Highest clean rate per target:")
for t in ("direct", "udpfwd", "sipedge", "sipedge-ref", "sipedge-state", "kam-edge"):
    if t in best:
        b = best[t]
        print(f"  {t:9s} {b[1]:>6s}/s  p50 {b[5]} ms  p99 {b[6]} ms  edge {b[7]} us/REGISTER  edge PSS {b[9]} KiB")
    else:
        print(f"  {t:9s} no clean step")
def num(x):
    try:
        return float(x)
    except ValueError:
        return None
if "sipedge" in best and "kam-edge" in best:
    s, k = best["sipedge"], best["kam-edge"]
    print()
    print(f"sipedge / kamailio-edge: max clean rate x{int(s[1]) / int(k[1]):.2f}", end="")
    se, ke = num(s[7]), num(k[7])
    if se and ke:
        print(f", CPU per REGISTER x{se / ke:.2f}", end="")
    sp, kp = num(s[9]), num(k[9])
    if sp and kp:
        print(f", PSS x{sp / kp:.2f}", end="")
    print()
# Persistence's cost: CPU per REGISTER at the same rate, state on vs off.
by = {(r[0], r[1]): r for r in rows}
common = [r[1] for r in rows if r[0] == "sipedge" and ("sipedge-state", r[1]) in by]
for rate in common:
    a, b = num(by[("sipedge", rate)][7]), num(by[("sipedge-state", rate)][7])
    if a and b:
        print(f"persistence on / off at {rate}/s: edge CPU per REGISTER x{b / a:.3f} ({b:.1f} vs {a:.1f} us)")
# Two builds: CPU per REGISTER at the same rate, this build vs the reference.
common = [r[1] for r in rows if r[0] == "sipedge" and ("sipedge-ref", r[1]) in by]
for rate in common:
    a, b = num(by[("sipedge-ref", rate)][7]), num(by[("sipedge", rate)][7])
    if a and b:
        print(f"this build / reference at {rate}/s: edge CPU per REGISTER x{b / a:.3f} ({b:.1f} vs {a:.1f} us)")
if "sipedge" in best and "udpfwd" in best:
    s, u = best["sipedge"], best["udpfwd"]
    se, ue = num(s[7]), num(u[7])
    if se and ue:
        print(f"sipedge / bare forwarder: CPU per REGISTER x{se / ue:.2f} ({s[7]} vs {u[7]} us)")
if lat:
    print()
    print("Sequential REGISTER round trip (us): n p50 p90 p99; added = p50 minus direct's p50")
    d50 = num(lat["direct"][1]) if "direct" in lat else None
    for t in ("direct", "udpfwd", "sipedge", "kam-edge"):
        if t in lat:
            v = lat[t]
            p50 = num(v[1])
            add = f"  added {p50 - d50:+.0f} us" if (p50 is not None and d50 is not None and t != "direct") else ""
            print(f"  {t:9s} n={v[0]} p50={v[1]} p90={v[2]} p99={v[3]}{add}")
if "sipedge" in best and "direct" in best:
    s, d = best["sipedge"], best["direct"]
    print(f"sipedge / direct: max clean rate x{int(s[1]) / int(d[1]):.2f}, "
          f"p50 {s[5]} vs {d[5]} ms, p99 {s[6]} vs {d[6]} ms")
PY
