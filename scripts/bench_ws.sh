#!/usr/bin/env bash
# WebSocket load benchmark: registrations per second and memory per idle registered
# connection, for ws and wss, with tools/wsload against sipedge and its embedded
# registrar (no authentication). Each run starts a fresh sipedge, opens N connections
# from 10 loopback source addresses, registers one user per connection, keeps them idle
# (CRLF keepalives) for HOLD seconds, then reads sipedge's VmRSS.
#
# usage: scripts/bench_ws.sh [BUILD_DIR]
#   env: COUNTS="5000 18000"  connection counts (bounded by RLIMIT_NOFILE: the client
#                             and sipedge each need one descriptor per connection)
#        PROTOS="ws wss"  HOLD=10  RATE=1000 (connects/s)  NET=127.77.0
#        INSTANCES=1  sipedge processes sharing the ws/wss listen ports (SO_REUSEPORT), each
#                     with its own core address and embedded registrar
#        LOADERS=1    wsload processes sharing the connections
#   One process may hold at most RLIMIT_NOFILE connections; runs past it take several of
#   each, e.g. INSTANCES=3 LOADERS=4 COUNTS=50000. Memory is then the sum of the
#   instances' RSS, read by this script halfway through the idle hold.
# Prints a table; the raw wsload lines stay in the temp dir it names.
set -uo pipefail

SRC=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-$SRC/build}
SIPEDGE=$BUILD/sipedge
COUNTS=${COUNTS:-5000 18000}
PROTOS=${PROTOS:-ws wss}
HOLD=${HOLD:-10}
RATE=${RATE:-1000}
INSTANCES=${INSTANCES:-1}
LOADERS=${LOADERS:-1}
NET=${NET:-127.77.0}
TMP=$(mktemp -d /tmp/sipedge-bench-ws.XXXXXX)
SE_PID=
SE_PIDS=()
LOAD_PIDS=()

die() { echo "bench_ws: $*" >&2; exit 1; }
cleanup() {
    local p
    for p in "${LOAD_PIDS[@]}" "${SE_PIDS[@]}" $SE_PID; do
        kill "$p" 2>/dev/null && wait "$p" 2>/dev/null
    done
    return 0
}
trap cleanup EXIT

[ -x "$SIPEDGE" ] || die "no sipedge at $SIPEDGE (build first)"
WSLOAD=$BUILD/tools/wsload
if [ ! -x "$WSLOAD" ]; then
    WSLOAD=$TMP/wsload
    # shellcheck disable=SC2046
    cc -std=gnu17 -O2 -o "$WSLOAD" "$SRC/tools/wsload.c" \
        $(pkg-config --cflags --libs libwebsockets libuv) -lssl -lcrypto || die "cannot build wsload"
fi

ulimit -n "$(ulimit -Hn)" || true
NOFILE=$(ulimit -n)
for n in $COUNTS; do
    # SO_REUSEPORT spreads connections by hash: allow 5% over the even share.
    per_se=$(((n + INSTANCES - 1) / INSTANCES * 105 / 100))
    per_load=$(((n + LOADERS - 1) / LOADERS))
    [ "$per_se" -le $((NOFILE - 200)) ] && [ "$per_load" -le $((NOFILE - 200)) ] ||
        die "$n connections over $INSTANCES sipedge and $LOADERS wsload processes need RLIMIT_NOFILE > $(( (per_se > per_load ? per_se : per_load) + 200 )); hard limit is $(ulimit -Hn) (raise INSTANCES and LOADERS)"
done

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=localhost \
    -addext "subjectAltName=IP:$NET.1" -keyout "$TMP/key.pem" -out "$TMP/cert.pem" \
    >/dev/null 2>&1 || die "openssl failed"
mkdir -p "$TMP/policy"
cp "$SRC"/policies/default/*.yaml "$TMP/policy/"
# Sorted after the defaults so that it overrides them: the load comes from 10 addresses.
cat >"$TMP/policy/zz-bench.yaml" <<YAML
ws:
  max_connections_per_ip: 1000000
  handshakes_per_ip_per_s: 100000
  # wsload and sipedge share the CPUs: at the top of a ramp a REGISTER may be late.
  first_message_timeout: 120
guard:
  limits:
    per_ip: {rate: 1000000, burst: 1000000}
    registrar: {rate: 1000000, burst: 1000000, reserved_percent: 30}
YAML
"$SIPEDGE" --policy "$TMP/policy" --check-config >/dev/null || die "bench policy rejected"

SRCS=$(for i in $(seq 10 19); do printf '%s.%s,' "$NET" "$i"; done)
SRCS=${SRCS%,}

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

# run_multi PROTO N: INSTANCES sipedge processes on the same ws/wss ports, LOADERS wsload
# processes; sets MULTI_LINE to one wsload-style line with the sums. Not run in a
# subshell: a failure must reach the EXIT trap with the processes it started.
run_multi() {
    local proto=$1 n=$2 port i j
    port=$([ "$proto" = wss ] && echo 8443 || echo 8080)
    SE_PIDS=()
    for ((i = 0; i < INSTANCES; i++)); do
        local log=$TMP/sipedge-$proto-$n-$i.log
        "$SIPEDGE" --workers 1 --listen-udp "$NET.1:$((5060 + 2 * i))" --core "$NET.2:$((5070 + i))" \
            --registrar-listen "$NET.4:$((5080 + i))" \
            --listen-ws "$NET.1:8080" --listen-wss "$NET.1:8443" \
            --tls-cert "$TMP/cert.pem" --tls-key "$TMP/key.pem" \
            --policy "$TMP/policy" --log-level info 2>"$log" >/dev/null &
        SE_PIDS+=($!)
        for _ in $(seq 50); do grep -q 'sipedge: ready' "$log" && break; sleep 0.1; done
        grep -q 'sipedge: ready' "$log" || die "sipedge $i did not start (see $log)"
    done
    # Warm-up: the kernel picks the instance, so a few connections per instance.
    "$WSLOAD" --url "ws://$NET.1:8080" --conns $((4 * INSTANCES)) --hold 0 --prefix warm >/dev/null 2>&1
    "$WSLOAD" --url "wss://$NET.1:8443" --conns $((4 * INSTANCES)) --hold 0 --prefix warmt >/dev/null 2>&1
    local rss0=0 rss1=0 p
    for p in "${SE_PIDS[@]}"; do rss0=$((rss0 + $(rss_kib "$p"))); done
    echo "bench_ws: $proto $n connections, $INSTANCES sipedge and $LOADERS wsload processes ..." >&2
    LOAD_PIDS=()
    for ((j = 0; j < LOADERS; j++)); do
        local c=$((n / LOADERS + (j < n % LOADERS ? 1 : 0)))
        timeout $((n / 50 + 180 + HOLD)) "$WSLOAD" --url "$proto://$NET.1:$port" \
            --conns "$c" --src "$SRCS" --rate $(((RATE + LOADERS - 1) / LOADERS)) \
            --prefix "l${j}u" --hold "$HOLD" --ping 25 --timeout $((n / 50 + 120)) \
            >"$TMP/wsload-$proto-$n-$j.out" 2>"$TMP/wsload-$proto-$n-$j.err" &
        LOAD_PIDS+=($!)
    done
    # Every loader is idle (all its connections settled): read memory halfway through.
    local deadline=$((SECONDS + n / 50 + 150)) idle
    while [ "$SECONDS" -lt "$deadline" ]; do
        idle=0
        for ((j = 0; j < LOADERS; j++)); do
            grep -q 'idle for' "$TMP/wsload-$proto-$n-$j.err" && idle=$((idle + 1))
        done
        [ "$idle" -eq "$LOADERS" ] && break
        sleep 1
    done
    sleep $((HOLD / 2))
    local per=() live_srv
    for p in "${SE_PIDS[@]}"; do
        rss1=$((rss1 + $(rss_kib "$p")))
        per+=("$(find "/proc/$p/fd" -mindepth 1 -maxdepth 1 | wc -l)")
    done
    live_srv=$(ss -Htn state established "( sport = :$port )" | wc -l)
    echo "bench_ws: descriptors per sipedge instance: ${per[*]}; established at the server: $live_srv" >&2
    for p in "${LOAD_PIDS[@]}"; do wait "$p"; done
    LOAD_PIDS=()
    for p in "${SE_PIDS[@]}"; do kill "$p"; wait "$p" 2>/dev/null; done
    SE_PIDS=()
    MULTI_LINE=$(cat "$TMP"/wsload-"$proto"-"$n"-*.out | awk -v r0="$rss0" -v r1="$rss1" '
        { for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] += kv[2];
              if (kv[1] == "setup_s" && kv[2] > setup) setup = kv[2] } }
        END { printf "wsload: conns=%d registered=%d live=%d failed=%d setup_s=%.2f reg_per_s=%.0f rss_before_kib=%d rss_after_kib=%d kib_per_conn=%.2f\n",
              v["conns"], v["registered"], v["live"], v["failed"], setup,
              (setup > 0 ? v["registered"] / setup : 0), r0, r1,
              (v["registered"] > 0 ? (r1 - r0) / v["registered"] : 0) }')
}

rows=()
for proto in $PROTOS; do
    if [ "$INSTANCES" -gt 1 ] || [ "$LOADERS" -gt 1 ]; then
        for n in $COUNTS; do
            run_multi "$proto" "$n"
            line=$MULTI_LINE
            echo "$line" >"$TMP/wsload-$proto-$n.out"
            rows+=("$proto $line")
        done
        continue
    fi
    for n in $COUNTS; do
        port=$([ "$proto" = wss ] && echo 8443 || echo 8080)
        log=$TMP/sipedge-$proto-$n.log
        "$SIPEDGE" --workers 1 --listen-udp "$NET.1:5060" --core "$NET.2:5070" --registrar-listen "$NET.4:5080" \
            --listen-ws "$NET.1:8080" --listen-wss "$NET.1:8443" \
            --tls-cert "$TMP/cert.pem" --tls-key "$TMP/key.pem" \
            --policy "$TMP/policy" --log-level info 2>"$log" >/dev/null &
        SE_PID=$!
        for _ in $(seq 50); do grep -q 'sipedge: ready' "$log" && break; sleep 0.1; done
        grep -q 'sipedge: ready' "$log" || die "sipedge did not start (see $log)"
        # Warm-up: one connection each way, so that lazily built state is not charged
        # to the measured connections.
        "$WSLOAD" --url "ws://$NET.1:8080" --conns 1 --hold 0 --prefix warm >/dev/null 2>&1
        "$WSLOAD" --url "wss://$NET.1:8443" --conns 1 --hold 0 --prefix warmt >/dev/null 2>&1
        echo "bench_ws: $proto $n connections ..." >&2
        line=$(timeout $((n / 50 + 180 + HOLD)) "$WSLOAD" --url "$proto://$NET.1:$port" \
            --conns "$n" --src "$SRCS" --rate "$RATE" --hold "$HOLD" --ping 25 \
            --timeout $((n / 50 + 120)) --pid "$SE_PID" 2>"$TMP/wsload-$proto-$n.err")
        echo "$line" >"$TMP/wsload-$proto-$n.out"
        rows+=("$proto $line")
        kill "$SE_PID"
        wait "$SE_PID" 2>/dev/null
        SE_PID=
    done
done

printf '\n%-5s %8s %10s %8s %8s %10s %12s %12s %12s\n' proto conns registered live failed \
    reg/s "rss0 MiB" "rss MiB" "KiB/conn"
for r in "${rows[@]}"; do
    proto=${r%% *}
    get() { printf '%s\n' "$r" | tr ' ' '\n' | sed -n "s/^$1=//p"; }
    printf '%-5s %8s %10s %8s %8s %10s %12.1f %12.1f %12s\n' "$proto" "$(get conns)" \
        "$(get registered)" "$(get live)" "$(get failed)" "$(get reg_per_s)" \
        "$(awk -v k="$(get rss_before_kib)" 'BEGIN { print k / 1024 }')" \
        "$(awk -v k="$(get rss_after_kib)" 'BEGIN { print k / 1024 }')" "$(get kib_per_conn)"
done
echo "raw output: $TMP" >&2
