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
# Prints a table; the raw wsload lines stay in the temp dir it names.
set -uo pipefail

SRC=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-$SRC/build}
SIPEDGE=$BUILD/sipedge
COUNTS=${COUNTS:-5000 18000}
PROTOS=${PROTOS:-ws wss}
HOLD=${HOLD:-10}
RATE=${RATE:-1000}
NET=${NET:-127.77.0}
TMP=$(mktemp -d /tmp/sipedge-bench-ws.XXXXXX)
SE_PID=

die() { echo "bench_ws: $*" >&2; exit 1; }
cleanup() {
    [ -n "$SE_PID" ] && kill "$SE_PID" 2>/dev/null && wait "$SE_PID" 2>/dev/null
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
    [ "$n" -le $((NOFILE - 200)) ] || die "$n connections need RLIMIT_NOFILE > $((n + 200)); hard limit is $(ulimit -Hn)"
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

rows=()
for proto in $PROTOS; do
    for n in $COUNTS; do
        port=$([ "$proto" = wss ] && echo 8443 || echo 8080)
        log=$TMP/sipedge-$proto-$n.log
        "$SIPEDGE" --listen-udp "$NET.1:5060" --core "$NET.2:5070" --registrar-listen "$NET.4:5080" \
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
