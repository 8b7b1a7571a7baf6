#!/usr/bin/env bash
# Hostile and broken input against sipedge's SIP over TCP and TLS listeners (embedded
# registrar), while a good client stays registered over TCP and answers nothing but its
# own CRLF keepalives, and after every case a new client registers over TCP and TLS
# from another address ("other clients never notice"):
#   a request without Content-Length (TCP and TLS) -> 400, then EOF;
#   a Content-Length larger than the body, then silence -> closed after
#     stream.message_timeout (not before);
#   a connection that sends nothing -> closed after stream.first_message_timeout;
#   a 1 MiB header block, 16 connections at once -> each closed long before 1 MiB is
#     sent (513 when readable), sipedge's RSS grows by far less than what was sent;
#   half a TLS ClientHello, then silence -> closed after stream.tls_handshake_timeout;
#   plain SIP text on the TLS port -> closed, nothing SIP back;
#   500 connections at once from one address -> exactly max_connections_per_ip of them
#     are served (CRLF answered), every other one is closed;
#   300 connections one after another from one address -> at most the accept burst
#     plus the rate are served, the rest closed.
# Each case shows in its counter of sipedge's "stats stream" line.
. "$(dirname "$0")/lib.sh"
it_init stream_bad_input
. "$IT_LIB_DIR/clients/ws_lib.sh" # ws_make_cert
need_cmd python3 openssl
need_sipedge

PUB=$(it_addr 1)
CORE=$(it_addr 2)
REG=$(it_addr 4)
GOOD=$(it_addr 10)  # the client held registered through everything
NEW=$(it_addr 11)   # the new clients after each case
BAD=$(it_addr 20)   # the broken clients
FLOOD=$(it_addr 21) # 500 connections at once
RATE=$(it_addr 22)  # connections one after another
TCP_PORT=$(free_tcp_port "$PUB")
TLS_PORT=$(free_tcp_port "$PUB")
TOOLS=$IT_LIB_DIR/clients/stream_tools.py

MSG_TO=2
FIRST_TO=3
HS_TO=2
MAXC=20
CPS=50 # accept rate per address; the burst is twice that
ws_make_cert "$IT_TMP"
make_users "$IT_TMP/users.txt"
test_policy_dir "$IT_TMP/policy" "$(printf 'guard:
  limits:
    per_ip: {rate: 1000000, burst: 1000000}
    per_ip_port: {rate: 1000000, burst: 1000000}
    per_aor_register: {rate: 1000, burst: 1000}
stream:
  max_message_bytes: 65536
  first_message_timeout: %s
  message_timeout: %s
  tls_handshake_timeout: %s
  max_connections_per_ip: %s
  connections_per_ip_per_s: %s
' $FIRST_TO $MSG_TO $HS_TO $MAXC $CPS)"

# ---- stream counters --------------------------------------------------------------------
# stream_stats: a fresh "stats stream" line (the sum over the workers), without its prefix.
# sval LINE NAME: NAME (or stream_NAME) in a stats line; 0 when absent.
sval() {
    local v
    v=$(printf '%s\n' "$1" | tr ' ' '\n' | sed -nE "s/^(stream_)?$2=//p" | head -n 1)
    echo "${v:-0}"
}
# has_stat LINE NAME: NAME is in the line at all.
has_stat() { printf '%s\n' "$1" | tr ' ' '\n' | grep -qE "^(stream_)?$2="; }
# grew BEFORE AFTER NAME MIN: NAME went up by at least MIN between the two lines.
grew() {
    has_stat "$2" "$3" || fail "no counter '$3' in sipedge's stats stream line: $2"
    local d=$(($(sval "$2" "$3") - $(sval "$1" "$3")))
    [ "$d" -ge "$4" ] || fail "counter $3 went up by $d, expected >= $4"
    log "counter $3 +$d"
}

rss_kb() { sed -n 's/^VmRSS:[[:space:]]*\([0-9]*\) kB/\1/p' "/proc/$SIPEDGE_PID/status"; }

# tool TAG CASE ARGS...: one stream_tools.py case in the foreground (bounded); output in
# $IT_TMP/TAG.out; returns its status.
tool() {
    local tag=$1 rc
    shift
    timeout -k 5 60 python3 "$TOOLS" "$@" >"$IT_TMP/$tag.out" 2>&1
    rc=$?
    log "[$tag] $(grep -E '^RESULT' "$IT_TMP/$tag.out" | tail -1)"
    return $rc
}
expect_ok() { # TAG CASE ARGS...: the case must report ok
    tool "$@" || fail "$1: $(grep -E '^RESULT' "$IT_TMP/$1.out" | tail -1)$(tail -1 "$IT_TMP/$1.out")"
}
# secs_in TAG MIN MAX: the "after N.NNs" of TAG's RESULT line is within MIN..MAX.
secs_in() {
    local s
    s=$(sed -n 's/^RESULT [a-z-]* ok: .*after \([0-9.]*\)s.*/\1/p' "$IT_TMP/$1.out" | head -n 1)
    awk -v s="$s" -v lo="$2" -v hi="$3" 'BEGIN { exit !(s != "" && s >= lo && s <= hi) }' ||
        fail "$1: closed after ${s:-?}s, expected within ${2}..${3}s"
}
# others_fine TAG: the good client is still connected, and new clients register over TCP
# and over TLS from another address.
N_OTHERS=0
others_fine() {
    N_OTHERS=$((N_OTHERS + 1))
    kill -0 "$GOOD_PID" 2>/dev/null || fail "after $1: the held client is gone: $(tail -2 "$IT_TMP/good.out" | tr '\n' ' ')"
    grep -q '^CLOSED' "$IT_TMP/good.out" && fail "after $1: the held client's connection was closed"
    expect_ok "new-tcp-$1" register --src "$NEW" --dst "$PUB:$TCP_PORT" --user bob --password bobpw \
        --domain "$PUB" --timeout 5
    expect_ok "new-tls-$1" register --tls --src "$NEW" --dst "$PUB:$TLS_PORT" --user 1001 \
        --password pw1001 --domain "$PUB" --timeout 5
}

start_sipedge --listen-udp "$PUB:5060" --listen-tcp "$PUB:$TCP_PORT" --listen-tls "$PUB:$TLS_PORT" \
    --tls-cert "$IT_TMP/cert.pem" --tls-key "$IT_TMP/key.pem" --core "$CORE:5070" \
    --registrar-listen "$REG:5080" --users "$IT_TMP/users.txt" --realm sipedge-test \
    --policy "$IT_TMP/policy" --log-level debug

# The good client: registers, then pings every 4 s (each must be answered) for 90 s.
python3 "$TOOLS" register --src "$GOOD" --dst "$PUB:$TCP_PORT" --user alice --password alicepw \
    --domain "$PUB" --hold 90 --ping-every 4 --timeout 10 >"$IT_TMP/good.out" 2>&1 &
GOOD_PID=$!
IT_PIDS+=("$GOOD_PID")
wait_for_line "$IT_TMP/good.out" '^REGISTERED alice ' 10 "$GOOD_PID" ||
    fail "the good client did not register over TCP: $(tail -2 "$IT_TMP/good.out" | tr '\n' ' ')"
others_fine start
s0=$(stream_stats)
log "stream counters at the start: $s0"

# ---- no Content-Length -------------------------------------------------------------------
expect_ok nocl-tcp no-cl --src "$BAD" --dst "$PUB:$TCP_PORT" --domain "$PUB" --timeout 5
expect_ok nocl-tls no-cl --tls --src "$BAD" --dst "$PUB:$TLS_PORT" --domain "$PUB" --timeout 5
grep -q "^RESULT no-cl ok: 'SIP/2.0 400 Missing Content-Length'" "$IT_TMP/nocl-tcp.out" ||
    log "NOTE: the 400 has another reason phrase: $(cat "$IT_TMP/nocl-tcp.out")"
s1=$(stream_stats)
grew "$s0" "$s1" close_no_content_length 2
others_fine nocl

# ---- a body that never completes: message_timeout -------------------------------------------
expect_ok stall stall --src "$BAD" --dst "$PUB:$TCP_PORT" --domain "$PUB" --timeout $((MSG_TO + 10))
# The deadline is checked on a one-second tick: up to two seconds late, never early.
secs_in stall "$(awk -v t=$MSG_TO 'BEGIN { print t - 0.5 }')" $((MSG_TO + 2))
s2=$(stream_stats)
grew "$s1" "$s2" close_message_timeout 1
others_fine stall

# ---- nothing at all: first_message_timeout -----------------------------------------------
expect_ok silent silent --src "$BAD" --dst "$PUB:$TCP_PORT" --timeout $((FIRST_TO + 10))
secs_in silent "$(awk -v t=$FIRST_TO 'BEGIN { print t - 0.5 }')" $((FIRST_TO + 2))
s3=$(stream_stats)
grew "$s2" "$s3" close_first_message_timeout 1

# ---- 1 MiB header blocks, 16 at once --------------------------------------------------------
BIGN=16
rss0=$(rss_kb)
pids=()
for ((i = 0; i < BIGN; i++)); do
    timeout -k 5 60 python3 "$TOOLS" big-header --src "$BAD" --dst "$PUB:$TCP_PORT" --domain "$PUB" \
        --bytes $((1 << 20)) --timeout 30 >"$IT_TMP/big-$i.out" 2>&1 &
    pids+=($!)
    IT_PIDS+=($!)
done
rc_all=0
for p in "${pids[@]}"; do wait "$p" || rc_all=1; done
rss1=$(rss_kb)
log "big-header: $(grep -h '^RESULT' "$IT_TMP"/big-*.out | sed 's/.*: //' | sort | uniq -c | head -5 | tr '\n' ';')"
[ "$rc_all" = 0 ] || fail "big-header: $(grep -h '^RESULT .* fail' "$IT_TMP"/big-*.out | head -1)"
# Closed long before 1 MiB: at most a quarter of it sent (the cap is 64 KiB; the rest is
# what the two socket buffers held when the close came).
for ((i = 0; i < BIGN; i++)); do
    sent=$(sed -n 's/^RESULT big-header ok: closed (.*) after \([0-9]*\) of .*/\1/p' "$IT_TMP/big-$i.out")
    [ -n "$sent" ] && [ "$sent" -lt $((256 * 1024)) ] ||
        fail "big-header $i: ${sent:-?} bytes sent before sipedge closed the connection, expected < 256 KiB"
done
grep -h '^RESULT' "$IT_TMP"/big-*.out | grep -q "status 'SIP/2.0 513" ||
    log "NOTE: no 513 was readable on any of the $BIGN connections (closed with a reset)"
log "sipedge RSS ${rss0} kB before, ${rss1} kB after $BIGN x 1 MiB header blocks"
[ $((rss1 - rss0)) -lt $((6 * 1024)) ] ||
    fail "sipedge's RSS grew by $((rss1 - rss0)) kB for $BIGN unterminated header blocks (buffered?)"
s4=$(stream_stats)
grew "$s3" "$s4" close_too_big $BIGN
# The reassembly buffers never held more than the cap (64 KiB) and a read chunk each.
bmax=$(sval "$s4" rx_buffered_max)
has_stat "$s4" rx_buffered_max && [ "$bmax" -le $((BIGN * 2 * 65536)) ] ||
    fail "receive buffers peaked at $bmax bytes for $BIGN header blocks, expected <= $((BIGN * 2 * 65536))"
[ "$(sval "$s4" rx_buffered_bytes)" = 0 ] ||
    fail "stream_rx_buffered_bytes=$(sval "$s4" rx_buffered_bytes) with no message in flight"
sipedge_alive || fail "sipedge died under 1 MiB header blocks"
others_fine big

# ---- TLS: half a ClientHello, and plain text --------------------------------------------------
expect_ok hello hello-stall --src "$BAD" --dst "$PUB:$TLS_PORT" --timeout $((HS_TO + 10))
secs_in hello "$(awk -v t=$HS_TO 'BEGIN { print t - 0.5 }')" $((HS_TO + 2))
s5=$(stream_stats)
grew "$s4" "$s5" close_tls_handshake_timeout 1
expect_ok plain plain-tls --src "$BAD" --dst "$PUB:$TLS_PORT" --domain "$PUB" --timeout 5
secs_in plain 0 2
s6=$(stream_stats)
# Plain text is a failed handshake (close_tls_error counts record errors after one).
grew "$s5" "$s6" tls_handshake_errors 1
others_fine tls

# ---- 500 connections at once from one address ------------------------------------------------
FLOODN=500
timeout -k 5 60 python3 "$TOOLS" flood --src "$FLOOD" --dst "$PUB:$TCP_PORT" --conns $FLOODN \
    --timeout 5 --hold 4 >"$IT_TMP/flood.out" 2>&1 &
FLOOD_PID=$!
IT_PIDS+=("$FLOOD_PID")
wait_for_line "$IT_TMP/flood.out" '^FLOOD ' 30 "$FLOOD_PID" || fail "flood: $(tail -1 "$IT_TMP/flood.out")"
log "flood: $(grep '^FLOOD' "$IT_TMP/flood.out")"
# While the flood holds its connections, other clients are served.
others_fine flood
wait "$FLOOD_PID" || fail "flood: $(grep '^RESULT' "$IT_TMP/flood.out")"
pong=$(sed -n 's/^FLOOD pong=\([0-9]*\) .*/\1/p' "$IT_TMP/flood.out")
closed=$(sed -n 's/^FLOOD .* closed=\([0-9]*\) .*/\1/p' "$IT_TMP/flood.out")
[ "$pong" = $MAXC ] || fail "flood: $pong of $FLOODN connections from one address were served, expected $MAXC"
[ "$closed" = $((FLOODN - MAXC)) ] || fail "flood: $closed connections closed, expected $((FLOODN - MAXC))"
s7=$(stream_stats)
has_stat "$s7" refused_conns_per_ip || fail "no counter refused_conns_per_ip: $s7"
has_stat "$s7" refused_conn_rate || fail "no counter refused_conn_rate: $s7"
d_cap=$(($(sval "$s7" refused_conns_per_ip) - $(sval "$s6" refused_conns_per_ip)))
d_rate=$(($(sval "$s7" refused_conn_rate) - $(sval "$s6" refused_conn_rate)))
log "flood refused: $d_cap over max_connections_per_ip, $d_rate over the accept rate"
[ "$d_cap" -ge 1 ] || fail "no connection of the flood was counted as over max_connections_per_ip"
[ $((d_cap + d_rate)) -ge $((FLOODN - MAXC)) ] ||
    fail "flood: $((d_cap + d_rate)) refusals counted, $((FLOODN - MAXC)) connections closed"

# ---- 300 connections one after another: the accept rate ---------------------------------------
RATEN=300
expect_ok rate rate --src "$RATE" --dst "$PUB:$TCP_PORT" --conns $RATEN
rpong=$(sed -n 's/^RESULT rate ok: pong=\([0-9]*\) .*/\1/p' "$IT_TMP/rate.out")
rclosed=$(sed -n 's/^RESULT rate ok: .* closed=\([0-9]*\) .*/\1/p' "$IT_TMP/rate.out")
rsecs=$(sed -n 's/^RESULT rate ok: .* in \([0-9.]*\)s$/\1/p' "$IT_TMP/rate.out")
rmax=$(awk -v s="$rsecs" -v r=$CPS 'BEGIN { printf "%d\n", 2 * r + r * (s + 1) }')
[ "$rpong" -le "$rmax" ] || fail "rate: $rpong of $RATEN connections in ${rsecs}s served, expected <= $rmax (rate $CPS/s, burst $((2 * CPS)))"
[ "$rpong" -ge $((CPS)) ] || fail "rate: only $rpong connections served, expected >= $CPS"
[ "$rclosed" -ge 1 ] || fail "rate: no connection refused over the accept rate"
s8=$(stream_stats)
d_rate=$(($(sval "$s8" refused_conn_rate) - $(sval "$s7" refused_conn_rate)))
[ "$d_rate" -ge "$rclosed" ] || fail "rate: $rclosed connections closed, $d_rate counted as refused_conn_rate"
others_fine rate

# ---- the end: the good client was never disturbed ----------------------------------------------
pings=$(grep -c '^PONG hold' "$IT_TMP/good.out")
[ "$pings" -ge 5 ] || fail "the held client's keepalives were answered $pings times, expected >= 5"
kill -0 "$GOOD_PID" 2>/dev/null || fail "the held client is gone: $(tail -2 "$IT_TMP/good.out" | tr '\n' ' ')"
kill "$GOOD_PID" 2>/dev/null
wait "$GOOD_PID" 2>/dev/null
log "stream counters at the end: $(stream_stats)"
sipedge_alive || fail "sipedge died under bad stream input"
stop_sipedge
log PASS
