#!/usr/bin/env bash
# SIP over TCP and TLS benchmark: figures, with a reference run in the same invocation.
#   memory   idle registered connections held (TCP, then TLS; one user each, embedded
#            open registrar): sipedge's VmRSS before and while they are held, per
#            connection with its flow state. Targets: < 8 KiB per idle TCP connection,
#            < 24 KiB per idle TLS connection.
#   tls      TLS handshakes per second against sipedge's TLS listener, full handshakes
#            (openssl s_time -new) and with session reuse (-reuse, TLS 1.3 and 1.2),
#            TIME seconds each, with how many sessions were actually resumed.
#   cpu      sipedge CPU time (utime + stime, /proc/PID/stat) per relayed REGISTER, sipp
#            over TCP (one connection) and the reference over UDP, the same scenario
#            (tests/integration/sipp/reg_uac.xml) at the same rate, the embedded registrar
#            (regcache off: every REGISTER is relayed).
# Prints one table; missed targets are reported, not failed.
#
# usage: scripts/bench_tcp.sh [BUILD_DIR]
#   env: TCP_CONNS (10000) TLS_CONNS (5000): capped by RLIMIT_NOFILE - 1000 (the client
#        and sipedge each need a descriptor per connection) and at 20000;
#        HOLD (5 s), TIME (5 s, s_time), REGS (20000 REGISTERs per cpu run), RATE (2000/s),
#        SETUP_MAX (120 s to set up the held connections), WORKERS (1: sipedge --workers),
#        SIPEDGE_BIN (BUILD_DIR/sipedge), BENCH_KEEP=1 keeps the work dir.
# Loopback only; every client is bounded in count and by `timeout`; every process is
# stopped by PID.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
root=$(pwd)
BUILD=${1:-$root/build}
SIPEDGE_BIN=${SIPEDGE_BIN:-$BUILD/sipedge}
TOOLS=$root/tests/integration/clients/stream_tools.py

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
NOFILE=$(ulimit -n)
CAP=$((NOFILE - 1000))
[ "$CAP" -gt 20000 ] && CAP=20000
TCP_CONNS=${TCP_CONNS:-10000}
TLS_CONNS=${TLS_CONNS:-5000}
[ "$TCP_CONNS" -gt "$CAP" ] && TCP_CONNS=$CAP
[ "$TLS_CONNS" -gt "$CAP" ] && TLS_CONNS=$CAP
HOLD=${HOLD:-5}
TIME=${TIME:-5}
REGS=${REGS:-20000}
RATE=${RATE:-2000}
SETUP_MAX=${SETUP_MAX:-120}
WORKERS=${WORKERS:-1}

for c in python3 openssl sipp timeout; do
    command -v "$c" >/dev/null || { echo "bench_tcp: missing $c" >&2; exit 1; }
done
[ -x "$SIPEDGE_BIN" ] || { echo "bench_tcp: no sipedge at $SIPEDGE_BIN (build first)" >&2; exit 1; }

NET=127.83.$(($$ % 250 + 1))
PUB=$NET.1
CORE=$NET.2
REG=$NET.4
CLI=$NET.10
SRCS=$(for i in $(seq 20 39); do printf '%s.%s,' "$NET" "$i"; done)
SRCS=${SRCS%,}
WORK=$(mktemp -d /tmp/sipedge-bench-tcp.XXXXXX)
# shellcheck source=scripts/bench_lib.sh
. "$root/scripts/bench_lib.sh"
FAIL=0
CLK_TCK=$(getconf CLK_TCK)

openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=localhost \
    -keyout "$WORK/key.pem" -out "$WORK/cert.pem" >/dev/null 2>&1 || { echo "bench_tcp: openssl req failed" >&2; exit 1; }
bench_policy "$WORK/policy" "registrar:
  max_bindings: 200000
regcache:
  enabled: false
stream:
  max_connections_per_ip: 1000000
  connections_per_ip_per_s: 100000
  first_message_timeout: 60
  idle_timeout: 3600"

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
cpu_ticks() {
    local s f
    s=$(<"/proc/$1/stat") || return 1
    s=${s##*) }
    read -r -a f <<<"$s"
    echo $((f[11] + f[12]))
}

# start_edge TAG: a fresh sipedge (UDP, TCP and TLS on $PUB:5060/5060/5061, embedded
# registrar without users: open); sets EPID, ELOG.
start_edge() {
    ELOG=$WORK/sipedge-$1.log
    "$SIPEDGE_BIN" --workers "$WORKERS" --listen-udp "$PUB:5060" --listen-tcp "$PUB:5060" --listen-tls "$PUB:5061" \
        --tls-cert "$WORK/cert.pem" --tls-key "$WORK/key.pem" --core "$CORE:5070" \
        --registrar-listen "$REG:5080" --policy "$WORK/policy" --log-level info >"$ELOG" 2>&1 &
    EPID=$!
    PIDS+=("$EPID")
    for _ in $(seq 100); do
        grep -q 'sipedge: ready' "$ELOG" && return 0
        kill -0 "$EPID" 2>/dev/null || break
        sleep 0.05
    done
    echo "bench_tcp: sipedge did not start ($1):" >&2
    tail -5 "$ELOG" >&2
    exit 1
}

# edge_counter NAME: NAME from a fresh "stats edge" line (SIGUSR1).
edge_counter() {
    local n re='Z [a-z]+ +stats edge '
    n=$(grep -cE "$re" "$ELOG")
    kill -USR1 "$EPID"
    for _ in $(seq 100); do
        [ "$(grep -cE "$re" "$ELOG")" -gt "$n" ] && break
        sleep 0.05
    done
    grep -E "$re" "$ELOG" | tail -n 1 | tr ' ' '\n' | sed -n "s/^$1=//p" | head -n 1
}

declare -A R

# ---- memory per idle registered connection ---------------------------------------------------
mem_run() { # PROTO COUNT
    local proto=$1 n=$2 flags=() port=5060 rss0 rss1 out=$WORK/hold-$1.out cpid
    [ "$proto" = tls ] && flags=(--tls) && port=5061
    start_edge "mem-$proto"
    sleep 0.5
    rss0=$(rss_kib "$EPID")
    timeout -k 5 $((SETUP_MAX + HOLD + 30)) python3 "$TOOLS" hold-many "${flags[@]}" --src "$SRCS" \
        --dst "$PUB:$port" --conns "$n" --user "m$proto" --domain bench --hold $((HOLD + 5)) \
        --timeout "$SETUP_MAX" >"$out" 2>&1 &
    cpid=$!
    PIDS+=("$cpid")
    for _ in $(seq $((SETUP_MAX * 10 + 100))); do
        grep -q '^HELD ' "$out" && break
        kill -0 "$cpid" 2>/dev/null || break
        sleep 0.1
    done
    grep -q '^HELD ' "$out" || { echo "bench_tcp: $proto client: $(tail -2 "$out")" >&2; FAIL=1; stop "$cpid"; stop "$EPID"; return; }
    sleep "$HOLD"
    rss1=$(rss_kib "$EPID")
    local held reg setup
    held=$(sed -n 's/^HELD n=\([0-9]*\) .*/\1/p' "$out")
    reg=$(sed -n 's/^HELD .* registered=\([0-9]*\) .*/\1/p' "$out")
    setup=$(sed -n 's/^HELD .* setup_s=\([0-9.]*\)$/\1/p' "$out")
    kill -0 "$EPID" 2>/dev/null || { echo "bench_tcp: sipedge died holding $proto connections" >&2; FAIL=1; }
    R[$proto.n]=$held
    R[$proto.reg]=$reg
    R[$proto.setup]=$setup
    R[$proto.rss0]=$rss0
    R[$proto.rss1]=$rss1
    R[$proto.kib]=$(awk -v a="$rss0" -v b="$rss1" -v n="$reg" 'BEGIN { if (n > 0) printf "%.2f", (b - a) / n; else print "-" }')
    wait "$cpid" 2>/dev/null
    stop "$EPID"
}
mem_run tcp "$TCP_CONNS"
mem_run tls "$TLS_CONNS"

# ---- TLS handshakes per second -------------------------------------------------------------------
start_edge tls-rate
# s_time prints a progress mark per connection: 'r' for a resumed session, '*' (or the
# version letter) for a full handshake. The rate is the count over the wall time of the
# run. TLS 1.3 resumption needs the ticket the server sends after the handshake, which
# s_time does not wait for, so resumption is also measured with TLS 1.2 (session ids or
# tickets in the handshake).
for mode in new reuse reuse12; do
    args=(-"${mode%12}")
    [ "$mode" = reuse12 ] && args+=(-tls1_2)
    t0=$EPOCHREALTIME
    timeout -k 5 $((TIME + 30)) openssl s_time -connect "$PUB:5061" "${args[@]}" -time "$TIME" \
        >"$WORK/s_time-$mode.out" 2>&1
    t1=$EPOCHREALTIME
    n=$(sed -n 's/^\([0-9]*\) connections in [0-9.]*s;.*/\1/p' "$WORK/s_time-$mode.out" | head -n 1)
    marks=$(grep -vE ' |^$' "$WORK/s_time-$mode.out" | tr -d '\n')
    reused=$(printf '%s' "$marks" | tr -cd r | wc -c)
    [ "$reused" -gt "${n:-0}" ] && reused=${n:-0} # the session-fetching first connection
    R[hs.$mode]=$(awk -v n="${n:-0}" -v a="$t0" -v b="$t1" 'BEGIN { if (n > 0) printf "%.0f", n / (b - a); else print "-" }')
    R[hs.$mode.reused]="$reused/${n:-0}"
done
stop "$EPID"

# ---- CPU per relayed REGISTER: TCP vs UDP ------------------------------------------------------
seq 1 "$REGS" | awk 'BEGIN { print "SEQUENTIAL" } { print "c" $1 }' >"$WORK/users.csv"
cpu_run() { # PROTO
    local proto=$1 t=() r0 r1 c0 c1 rc
    [ "$proto" = tcp ] && t=(-t t1)
    start_edge "cpu-$proto"
    r0=$(edge_counter relayed_register)
    c0=$(cpu_ticks "$EPID")
    (cd "$WORK" && timeout -k 5 $((REGS / RATE + 60)) sipp -nostdin "${t[@]}" \
        -sf "$root/tests/integration/sipp/reg_uac.xml" -inf "$WORK/users.csv" -key domain bench \
        -key expires 3600 -i "$CLI" -p "$(python3 -c 'import socket,sys; s=socket.socket(); s.bind((sys.argv[1],0)); print(s.getsockname()[1])' "$CLI")" \
        -m "$REGS" -r "$RATE" -l 1000 -recv_timeout 5000 -max_socket 2000 \
        -trace_stat -stf "$WORK/sipp-$proto.csv" -fd 1 "$PUB:5060" >"$WORK/sipp-$proto.out" 2>&1)
    rc=$?
    c1=$(cpu_ticks "$EPID")
    r1=$(edge_counter relayed_register)
    R[$proto.sipp_rc]=$rc
    R[$proto.relayed]=$((r1 - r0))
    R[$proto.us_per_reg]=$(awk -v c=$((c1 - c0)) -v n=$((r1 - r0)) -v hz="$CLK_TCK" \
        'BEGIN { if (n > 0) printf "%.1f", c * 1e6 / hz / n; else print "-" }')
    [ "$rc" = 0 ] || { echo "bench_tcp: sipp over $proto exit status $rc (see $WORK/sipp-$proto.out)" >&2; FAIL=1; }
    stop "$EPID"
}
cpu_run udp
cpu_run tcp

# ---- table ------------------------------------------------------------------------------------------
target() { awk -v v="$1" -v t="$2" 'BEGIN { if (v == "-") print "n/a"; else if (v + 0 < t) print "ok"; else print "MISSED" }'; }
printf '\nbench_tcp (%s, %s, workers %s, RLIMIT_NOFILE %s)\n' "$(date -u +%FT%TZ)" "$SIPEDGE_BIN" "$WORKERS" "$NOFILE"
printf '%-44s %14s %14s %10s\n' figure tcp tls "tls/tcp"
printf '%-44s %14s %14s\n' "idle connections held (registered)" "${R[tcp.reg]:-0}/${R[tcp.n]:-0}" "${R[tls.reg]:-0}/${R[tls.n]:-0}"
printf '%-44s %14s %14s\n' "setup time (s)" "${R[tcp.setup]:--}" "${R[tls.setup]:--}"
printf '%-44s %14s %14s\n' "sipedge RSS before (KiB)" "${R[tcp.rss0]:--}" "${R[tls.rss0]:--}"
printf '%-44s %14s %14s\n' "sipedge RSS held (KiB)" "${R[tcp.rss1]:--}" "${R[tls.rss1]:--}"
printf '%-44s %14s %14s %10s\n' "KiB per idle connection (target 8 / 24)" "${R[tcp.kib]:--}" "${R[tls.kib]:--}" \
    "$(awk -v a="${R[tcp.kib]:--}" -v b="${R[tls.kib]:--}" 'BEGIN { if (a > 0 && b != "-") printf "%.1fx", b / a; else print "-" }')"
printf '%-44s %14s %14s\n' "  target" "$(target "${R[tcp.kib]:--}" 8)" "$(target "${R[tls.kib]:--}" 24)"
printf '\n%-44s %14s %14s %14s\n' figure "full (-new)" "-reuse" "-reuse tls1.2"
printf '%-44s %14s %14s %14s\n' "TLS handshakes/s (openssl s_time)" "${R[hs.new]:--}" "${R[hs.reuse]:--}" "${R[hs.reuse12]:--}"
printf '%-44s %14s %14s %14s\n' "  sessions resumed" "${R[hs.new.reused]:--}" "${R[hs.reuse.reused]:--}" "${R[hs.reuse12.reused]:--}"
printf '\n%-44s %14s %14s %10s\n' figure "udp (ref)" tcp "tcp/udp"
printf '%-44s %14s %14s\n' "REGISTERs relayed" "${R[udp.relayed]:--}" "${R[tcp.relayed]:--}"
printf '%-44s %14s %14s %10s\n' "sipedge CPU per relayed REGISTER (us)" "${R[udp.us_per_reg]:--}" "${R[tcp.us_per_reg]:--}" \
    "$(awk -v a="${R[udp.us_per_reg]:--}" -v b="${R[tcp.us_per_reg]:--}" 'BEGIN { if (a > 0 && b > 0) printf "%.2fx", b / a; else print "-" }')"
printf '(%d REGISTERs at %d/s each; sipp over TCP on one connection; the embedded registrar runs in the same process)\n' "$REGS" "$RATE"
[ "${BENCH_KEEP:-0}" = 1 ] && echo "work dir: $WORK"
exit "$FAIL"
